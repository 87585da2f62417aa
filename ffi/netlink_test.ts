import assert from "node:assert/strict";
import {
  encodeAttrs,
  message,
  nested,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLMSG_ERROR,
  parseAttrs,
  parseError,
  parseReplies,
  str,
  u32,
} from "./netlink.ts";

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const bytes = (h: string) => Uint8Array.from(h.match(/../g)!.map((x) => parseInt(x, 16)));

Deno.test("netlink attributes are laid out and padded as the kernel expects", async (t) => {
  await t.step("a string attribute carries its NUL and pads to 4 bytes", () => {
    assert.equal(hex(encodeAttrs([str(3, "eth0")])), "090003006574683000000000");
  });
  await t.step("a nested attribute sets NLA_F_NESTED and holds its children", () => {
    assert.equal(
      hex(encodeAttrs([nested(18, [str(1, "veth")])])),
      "10001280" + "0900010076657468" + "00000000",
    );
  });
  await t.step("parseAttrs() reads them back, nested flag stripped", () => {
    const attrs = parseAttrs(encodeAttrs([u32(4, 1500), nested(18, [str(1, "bridge")])]));
    assert.deepEqual([...attrs.keys()], [4, 18]);
    assert.equal(
      new DataView(attrs.get(4)!.buffer, attrs.get(4)!.byteOffset).getUint32(0, true),
      1500,
    );
    assert.equal(new TextDecoder().decode(parseAttrs(attrs.get(18)!).get(1)), "bridge\0");
  });
  await t.step("a truncated attribute ends the list instead of reading past the buffer", () => {
    const good = encodeAttrs([u32(4, 1)]);
    const broken = new Uint8Array([...good, 0xff, 0x00, 0x05, 0x00]);
    assert.deepEqual([...parseAttrs(broken).keys()], [4]);
  });
});

Deno.test("netlink messages and replies", async (t) => {
  await t.step("message() writes the header with length, type, flags and sequence", () => {
    const m = message(18, 1, 0x01020304, new Uint8Array(16), [str(3, "eth0")]);
    assert.equal(hex(m.subarray(0, 16)), "2c000000" + "1200" + "0100" + "04030201" + "00000000");
    assert.equal(m.length, 44);
  });
  await t.step("parseReplies() splits a buffer of several messages", () => {
    const a = message(16, 2, 5, new Uint8Array(16));
    const b = message(3, 2, 5, new Uint8Array(4));
    const replies = parseReplies(new Uint8Array([...a, ...b]));
    assert.deepEqual(replies.map((r) => [r.type, r.seq, r.payload.length]), [[16, 5, 16], [
      3,
      5,
      4,
    ]]);
  });
  await t.step("an ACK is an NLMSG_ERROR with errno 0", () => {
    const ack = parseReplies(
      message(NLMSG_ERROR, NLM_F_CAPPED, 9, bytes("00000000" + "10000000100005060900000000000000")),
    );
    assert.deepEqual(parseError(ack[0]), { errno: 0, message: "" });
  });
  await t.step("an error carries its errno and the extended-ack message", () => {
    const payload = new Uint8Array([
      ...bytes("efffffff"), // -17: EEXIST
      ...bytes("10000000100005060900000000000000"), // the echoed request header (capped)
      ...encodeAttrs([str(1, "Device or resource already exists")]),
    ]);
    const [reply] = parseReplies(message(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 9, payload));
    assert.deepEqual(parseError(reply), {
      errno: 17,
      message: "Device or resource already exists",
    });
  });
});
