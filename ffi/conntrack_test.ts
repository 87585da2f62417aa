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
