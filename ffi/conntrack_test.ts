import assert from "node:assert/strict";
import * as ct from "./conntrack.ts";
import { message, parseReplies } from "./netlink.ts";

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("ctnetlink requests and entries", async (t) => {
  const tuple: ct.Tuple = {
    family: 4,
    src: "10.0.0.1",
    dst: "10.0.0.2",
    proto: 17,
    srcPort: 40000,
    dstPort: 53,
  };
  await t.step("a dump asks subsystem 1, message GET, for one family", () => {
    assert.equal(
      hex(ct.dumpRequest(5, 4)),
      "14000000" + "0101" + "0103" + "05000000" + "00000000" + "02000000",
    );
  });
  await t.step("a dump for one port asks the kernel to pick its entries (CTA_FILTER)", () => {
    const text = hex(ct.dumpRequest(5, 4, { proto: 17, dstPort: 53 }));
    assert.equal(text.slice(8, 40), "0101" + "0103" + "05000000" + "00000000" + "02000000");
    assert.ok(
      text.includes(
        "18000180" + "14000280" + "0500010011000000" + "0600030000350000",
      ),
      "CTA_TUPLE_ORIG { CTA_TUPLE_PROTO { udp, port 53 } }",
    );
    assert.ok(
      text.includes("0c001980" + "0800010028000000"),
      "CTA_FILTER { orig flags: protocol and destination port }",
    );
  });
  await t.step("a delete names the original tuple, ports in network byte order", () => {
    const m = ct.deleteRequest(6, tuple);
    assert.equal(hex(m.subarray(4, 8)), "0201" + "0500"); // CT_DELETE, REQUEST|ACK
    const text = hex(m);
    assert.ok(text.includes("080001000a000001" + "080002000a000002"), "CTA_IP_V4_SRC and _DST");
    assert.ok(
      text.includes("0500010011000000" + "060002009c400000" + "0600030000350000"),
      "proto 17, 40000, 53",
    );
  });
  await t.step("parseEntry() reads back the tuple of an entry the kernel sends", () => {
    const del = ct.deleteRequest(1, tuple);
    // An entry has the same nfgenmsg and CTA_TUPLE_ORIG layout as the delete request.
    const [reply] = parseReplies(message(0x100, 2, 1, del.subarray(16)));
    assert.deepEqual(ct.parseEntry(reply), tuple);
  });
});

Deno.test("procEntries() finds a port's connections in /proc/net/nf_conntrack's text", () => {
  const text = [
    "ipv4     2 udp      17 29 src=10.77.0.2 dst=10.77.0.1 sport=51871 dport=18001 [UNREPLIED] " +
    "src=10.77.0.2 dst=10.77.0.1 sport=80 dport=51871 mark=0 zone=0 use=2",
    // The port only in the reply direction: not a connection to it.
    "ipv4     2 udp      17 29 src=10.0.0.9 dst=10.0.0.1 sport=18001 dport=53 src=10.0.0.1 " +
    "dst=10.0.0.9 sport=53 dport=18001 mark=0 zone=0 use=2",
    "ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.0.9 dst=10.0.0.1 sport=40000 dport=18001 " +
    "src=10.0.0.1 dst=10.0.0.9 sport=18001 dport=40000 [ASSURED] mark=0 zone=0 use=2",
    "ipv6     10 udp      17 28 src=fd00:0000:0000:0000:0000:0000:0000:0005 " +
    "dst=fd00:0000:0000:0000:0000:0000:0000:0001 sport=5353 dport=18001 " +
    "src=fd00:0000:0000:0000:0000:0000:0000:0001 dst=fd00:0000:0000:0000:0000:0000:0000:0005 " +
    "sport=18001 dport=5353 mark=0 zone=0 use=2",
    "ipv4     2 icmp     1 29 src=10.0.0.9 dst=10.0.0.1 type=8 code=0 id=7 src=10.0.0.1 " +
    "dst=10.0.0.9 type=0 code=0 id=7 mark=0 zone=0 use=2",
    "",
  ].join("\n");
  assert.deepEqual(ct.procEntries(text, 4, 17, 18001), [
    { family: 4, src: "10.77.0.2", dst: "10.77.0.1", proto: 17, srcPort: 51871, dstPort: 18001 },
  ]);
  const [v6] = ct.procEntries(text, 6, 17, 18001);
  assert.equal(v6.srcPort, 5353);
  // The kernel prints IPv6 addresses in full; a delete request must carry the same 16 bytes.
  assert.ok(hex(ct.deleteRequest(1, v6)).includes("fd000000000000000000000000000005"));
  assert.deepEqual(ct.procEntries(text, 4, 6, 18001).map((t) => t.srcPort), [40000]);
  assert.deepEqual(ct.procEntries(text, 4, 17, 1801), [], "18001 is not 1801");
  assert.deepEqual(ct.procEntries("", 4, 17, 18001), []);
});
