import assert from "node:assert/strict";
import * as rt from "./rtnetlink.ts";
import { message, parseReplies } from "./netlink.ts";

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("rtnetlink requests, byte for byte", async (t) => {
  await t.step("RTM_GETLINK by name", () => {
    assert.equal(
      hex(rt.getLinkByName(1, "eth0")),
      "34000000" + "1200" + "0100" + "01000000" + "00000000" + // header
        "00000000" + "00000000" + "00000000" + "00000000" + // ifinfomsg
        "0900030065746830" + "00000000" + // IFLA_IFNAME "eth0"
        "08001d0008000000", // IFLA_EXT_MASK RTEXT_FILTER_SKIP_STATS
    );
  });
  await t.step("RTM_SETLINK of an interface's IPv4 setting, by name", () => {
    assert.equal(
      hex(rt.setInetConf(2, "eth0", rt.INET_CONF.arp_notify, 1)),
      "40000000" + "1300" + "0500" + "02000000" + "00000000" + // SETLINK, REQUEST|ACK
        "00000000" + "00000000" + "00000000" + "00000000" + // ifinfomsg, no index
        "0900030065746830" + "00000000" + // IFLA_IFNAME "eth0"
        "14001a80" + "10000280" + "0c000180" + "0800160001000000", // AF_SPEC/AF_INET/CONF/22 = 1
    );
  });
  await t.step("RTM_NEWADDR for IPv4 carries local, address and broadcast", () => {
    assert.equal(
      hex(rt.changeAddress(7, false, 2, "10.1.0.1", 24)),
      "30000000" + "1400" + "0506" + "07000000" + "00000000" + // NEWADDR, REQUEST|ACK|EXCL|CREATE
        "02180000" + "02000000" + // AF_INET /24, index 2
        "080002000a010001" + "080001000a010001" + "080004000a0100ff",
    );
  });
  await t.step("RTM_NEWADDR for IPv6 without DAD sets IFA_F_NODAD in both places", () => {
    const m = rt.changeAddress(1, false, 3, "fd00::2", 64, rt.IFA_F_NODAD);
    assert.equal(hex(m.subarray(16, 24)), "0a400200" + "03000000");
    assert.equal(hex(m.subarray(m.length - 8)), "08000800" + "02000000"); // IFA_FLAGS
  });
  await t.step("RTM_NEWROUTE default via a gateway", () => {
    assert.equal(
      hex(
        rt.changeRoute(3, false, {
          family: 4,
          dst: "0.0.0.0",
          dstPrefix: 0,
          gw: "10.1.0.1",
          oif: 5,
        }),
      ),
      "34000000" + "1800" + "0506" + "03000000" + "00000000" +
        "02000000" + "fe030001" + "00000000" + // AF_INET, dst_len 0, table main, boot, universe, unicast
        "080005000a010001" + "0800040005000000" + "0800 0f00 fe000000".replace(/ /g, ""),
    );
  });
  await t.step(
    "RTM_NEWLINK veth puts the peer's name and namespace fd inside VETH_INFO_PEER",
    () => {
      const m = rt.newVeth(1, "veth0", "eth0", 9, { mtu: 1400 });
      const text = hex(m);
      assert.ok(text.includes("0a0003007665746830000000"), "IFLA_IFNAME veth0");
      assert.ok(
        text.includes("0900030065746830000000000800" + "1c00" + "09000000"),
        "peer IFLA_IFNAME eth0 then IFLA_NET_NS_FD 9",
      );
      assert.ok(text.includes("0900010076657468"), "IFLA_INFO_KIND veth");
    },
  );
  await t.step("setLink() changes only the flags it names", () => {
    const m = rt.setLink(1, 4, { up: true });
    assert.equal(hex(m.subarray(16, 32)), "00000000" + "04000000" + "01000000" + "01000000");
    const down = rt.setLink(1, 4, { up: false, master: 7 });
    assert.equal(hex(down.subarray(16, 32)), "00000000" + "04000000" + "00000000" + "01000000");
    assert.equal(hex(down.subarray(32)), "0800" + "0a00" + "07000000");
  });
});

Deno.test("rtnetlink replies parse into links, addresses and routes", async (t) => {
  await t.step("a link", () => {
    const body = Uint8Array.of(0, 0, 1, 0, 7, 0, 0, 0, 0x43, 0x10, 1, 0, 0, 0, 0, 0);
    const [reply] = parseReplies(
      message(16, 0, 1, body, [
        { type: 3, data: new TextEncoder().encode("cni0\0") },
        { type: 4, data: Uint8Array.of(0xdc, 0x05, 0, 0) },
        { type: 1, data: Uint8Array.of(0x02, 0x42, 0xac, 0x11, 0, 2) },
        { type: 10, data: Uint8Array.of(3, 0, 0, 0) },
      ]),
    );
    const link = rt.parseLink(reply);
    assert.deepEqual(link, {
      index: 7,
      flags: 0x11043,
      name: "cni0",
      mtu: 1500,
      mac: "02:42:ac:11:00:02",
      master: 3,
    });
  });
  await t.step("an address", () => {
    const [reply] = parseReplies(message(20, 0, 1, Uint8Array.of(10, 64, 0x80, 0, 3, 0, 0, 0), [
      { type: 2, data: rt.ipBytes("fd00::5") },
      { type: 8, data: Uint8Array.of(0x82, 0, 0, 0) },
    ]));
    assert.deepEqual(rt.parseAddress(reply), {
      family: 6,
      prefix: 64,
      flags: 0x82,
      scope: 0,
      index: 3,
      address: "fd00::5",
    });
  });
  await t.step("a route reads back what changeRoute() wrote", () => {
    const m = rt.changeRoute(1, false, {
      family: 6,
      dst: "fd00:1::",
      dstPrefix: 64,
      gw: "fd00::1",
      oif: 2,
      priority: 100,
      mtu: 1400,
    });
    const [reply] = parseReplies(m);
    const route = rt.parseRoute(reply);
    assert.deepEqual(
      {
        dst: route.dst,
        dstPrefix: route.dstPrefix,
        gw: route.gw,
        oif: route.oif,
        priority: route.priority,
        mtu: route.mtu,
        table: route.table,
      },
      {
        dst: "fd00:1::",
        dstPrefix: 64,
        gw: "fd00::1",
        oif: 2,
        priority: 100,
        mtu: 1400,
        table: 254,
      },
    );
  });
  await t.step("MAC and IP helpers round-trip", () => {
    assert.equal(rt.formatMac(rt.macBytes("0A:1b:2c:3d:4e:5f")), "0a:1b:2c:3d:4e:5f");
    assert.throws(() => rt.macBytes("0a:1b"), /not a MAC address/);
    assert.equal(rt.ipFromBytes(rt.ipBytes("2001:db8::1")), "2001:db8::1");
    assert.equal(hex(rt.ipBytes("192.168.1.2")), "c0a80102");
  });
});
