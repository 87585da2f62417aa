import assert from "node:assert/strict";
import * as nn from "./nft_netlink.ts";
import { attr, message, nested, parseReplies } from "./netlink.ts";

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const text = (s: string) => hex(new TextEncoder().encode(s));

const TYPES = nn.setTypes([
  "add set inet t masq4 { type ipv4_addr; }",
  "add set inet t nomasq4 { type ipv4_addr . ipv4_addr; flags interval; }",
  "add map inet t pm_dnat4 { type inet_proto . inet_service : ipv4_addr . inet_service; }",
  "add chain inet t masq { type nat hook postrouting priority srcnat; policy accept; }",
]);

Deno.test("nf_tables set elements as netlink messages", async (t) => {
  await t.step("setTypes() reads key, value and interval from the skeleton's lines", () => {
    assert.deepEqual(Object.fromEntries(TYPES), {
      masq4: { key: ["ipv4_addr"], interval: false },
      nomasq4: { key: ["ipv4_addr", "ipv4_addr"], interval: true },
      pm_dnat4: {
        key: ["inet_proto", "inet_service"],
        value: ["ipv4_addr", "inet_service"],
        interval: false,
      },
    });
  });
  await t.step("a concatenation pads each field to 4 bytes; a prefix becomes start and end", () => {
    const k = nn.encodeData(["ipv4_addr", "ipv4_addr"], "10.77.0.10 . 10.77.0.0/16", true);
    assert.equal(hex(k.start), "0a4d000a" + "0a4d0000");
    assert.equal(hex(k.end), "0a4d000a" + "0a4dffff");
    assert.equal(
      hex(nn.encodeData(["inet_proto", "inet_service"], "udp . 8080").start),
      "11000000" + "1f900000",
    );
    assert.equal(
      hex(nn.encodeData(["ipv6_addr"], "fd00::1").start),
      "fd00" + "0".repeat(26) + "01",
    );
    assert.equal(hex(nn.encodeData(["inet_service"], "53").start), "0035", "alone: no padding");
  });
  await t.step("bad keys are errors, not garbage in the kernel", () => {
    assert.throws(() => nn.encodeData(["ipv4_addr"], "fd00::1"), /not an ipv4_addr/);
    assert.throws(() => nn.encodeData(["ipv4_addr"], "10.0.0.0/8"), /not a key/);
    assert.throws(() => nn.encodeData(["ipv4_addr", "ipv4_addr"], "10.0.0.1"), /does not fit/);
    assert.throws(() => nn.encodeData(["inet_service"], "70000"), /not a port/);
    assert.throws(
      () => nn.elementMessage("add", 1, "t", TYPES, { set: "nope", key: "1" }),
      /unknown/,
    );
  });
  await t.step("an add is NEWSETELEM with CREATE, the element as libnftables sends it", () => {
    const m = nn.elementMessage("add", 9, "cnichain", TYPES, {
      set: "masq4",
      key: "10.77.0.10",
      comment: "pf c20 eth0",
    });
    assert.equal(hex(m.subarray(4, 8)), "0c0a" + "0504", "NFT NEWSETELEM, REQUEST|ACK|CREATE");
    assert.equal(hex(m.subarray(16, 20)), "01000000", "nfgenmsg: inet");
    // LIST_ELEM { KEY { VALUE 10.77.0.10 }, USERDATA { comment, 12 bytes } }, as seen in strace
    // of nft's own batch.
    assert.ok(
      hex(m).endsWith(
        "28000380" + "24000180" + "0c000180" + "080001000a4d000a" + "12000600" + "000c" +
          text("pf c20 eth0") + "00" + "0000",
      ),
      hex(m),
    );
    const create = nn.elementMessage("create", 9, "cnichain", TYPES, {
      set: "masq4",
      key: "10.0.0.1",
    });
    assert.equal(hex(create.subarray(6, 8)), "0506", "create adds EXCL");
  });
  await t.step("an interval concatenation carries KEY_END; a map element its value", () => {
    const m = hex(
      nn.elementMessage("add", 1, "t", TYPES, { set: "nomasq4", key: "10.0.0.2 . 10.0.0.0/8" }),
    );
    assert.ok(m.includes("10000a80" + "0c000100" + "0a000002" + "0affffff"), m);
    const d = hex(nn.elementMessage("add", 1, "t", TYPES, {
      set: "pm_dnat4",
      key: "tcp . 80",
      value: "10.0.0.2 . 8080",
    }));
    assert.ok(d.includes("10000280" + "0c000100" + "0a000002" + "1f900000"), d);
    assert.throws(
      () => nn.elementMessage("add", 1, "t", TYPES, { set: "pm_dnat4", key: "tcp . 80" }),
      /value/,
    );
  });
  await t.step("a delete and a lookup carry the key only", () => {
    const del = nn.elementMessage("delete", 1, "t", TYPES, {
      set: "masq4",
      key: "10.0.0.1",
      comment: "x",
    });
    assert.equal(hex(del.subarray(4, 8)), "0e0a" + "0500");
    const keyOnly = "14000380" + "10000180" + "0c000180" + "08000100" + "0a000001";
    assert.ok(hex(del).endsWith(keyOnly), hex(del));
    const get = nn.getElementMessage(1, "t", TYPES, {
      set: "masq4",
      key: "10.0.0.1",
      comment: "x",
    });
    assert.equal(hex(get.subarray(4, 8)), "0d0a" + "0500");
    assert.ok(hex(get).endsWith(keyOnly), hex(get));
  });
  await t.step("GETCHAIN asks for one chain by table and name, with an ACK", () => {
    const m = nn.chainMessage(5, "t", "pi_ab");
    assert.equal(hex(m.subarray(4, 8)), "040a" + "0500", "NFT_MSG_GETCHAIN, REQUEST|ACK");
    assert.equal(hex(m.subarray(16, 20)), "01000000", "nfgenmsg: inet");
    assert.equal(
      hex(m.subarray(20)),
      "06000100" + text("t") + "00" + "0000" + "0a000300" + text("pi_ab") + "00" + "0000",
    );
  });
  await t.step("batch markers name the nf_tables subsystem", () => {
    assert.equal(
      hex(nn.batchBegin(3)),
      "14000000" + "1000" + "0100" + "03000000" + "00000000" + "0000000a",
    );
    assert.equal(hex(nn.batchEnd(4).subarray(4, 6)), "1100");
  });
  await t.step("comments come back out of rule and element replies", () => {
    const udata = Uint8Array.of(0, 4, ...new TextEncoder().encode("abc"), 0);
    const rule = message(0x0a06, 0, 1, Uint8Array.of(1, 0, 0, 0), [attr(7, udata)]);
    assert.equal(nn.ruleComment(parseReplies(rule)[0]), "abc");
    const plain = message(0x0a06, 0, 1, Uint8Array.of(1, 0, 0, 0), []);
    assert.equal(nn.ruleComment(parseReplies(plain)[0]), undefined);
    const elem = message(0x0a0c, 0, 1, Uint8Array.of(1, 0, 0, 0), [
      nested(3, [nested(1, [attr(6, udata)])]),
    ]);
    assert.equal(nn.elementComment(parseReplies(elem)[0]), "abc");
  });
});
