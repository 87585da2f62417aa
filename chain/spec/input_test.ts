import assert from "node:assert/strict";
import { decodeJson, decodeObject, jsonDepth, MAX_JSON_DEPTH, readBounded } from "./input.ts";
import { CniError } from "./errors.ts";

function code6(fn: () => unknown, message: RegExp) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof CniError);
    assert.equal(e.code, 6);
    assert.match(e.message, message);
    return true;
  });
}

const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test("decodeJson() bounds and checks what it reads", async (t) => {
  await t.step("jsonDepth() ignores brackets inside strings", () => {
    assert.equal(jsonDepth('{"a":"[[[{{{","b":[1,[2]]}'), 3);
    assert.equal(jsonDepth('{"a":"\\"[["}'), 1);
  });
  await t.step(`${MAX_JSON_DEPTH} levels decode, one more is code 6`, () => {
    const nest = (n: number) => "[".repeat(n) + "]".repeat(n);
    decodeJson(bytes(nest(MAX_JSON_DEPTH)));
    code6(() => decodeJson(bytes(nest(MAX_JSON_DEPTH + 1))), /deeper than the limit of 64/);
    // Many brackets, little depth (the quick count of brackets is not the answer), and depth
    // past the limit among brackets in strings.
    decodeJson(bytes(`[${"[],".repeat(500)}[]]`));
    const deep = `{"s":"${"[".repeat(100)}","d":${nest(MAX_JSON_DEPTH + 1)}}`;
    code6(() => decodeJson(bytes(deep)), /deeper than the limit of 64/);
  });
  await t.step("malformed and truncated JSON is code 6", () => {
    code6(() => decodeJson(bytes('{"cniVersion": "1.0.0"')), /stdin is not valid JSON/);
    code6(() => decodeJson(bytes("{cniVersion: 1}")), /not valid JSON/);
  });
  await t.step(
    "empty stdin is code 6",
    () => code6(() => decodeJson(bytes("  \n")), /stdin is empty/),
  );
  await t.step("non-UTF-8 bytes are code 6", () => {
    code6(() => decodeJson(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), /not valid UTF-8/);
  });
  await t.step("decodeObject() wants an object at the top", () => {
    code6(() => decodeObject(bytes("[1]")), /must hold a JSON object, not an array/);
    code6(() => decodeObject(bytes("null")), /not null/);
  });
});

Deno.test("readBounded() stops at the limit without reading the rest", async () => {
  let pulled = 0;
  const endless = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulled++;
      controller.enqueue(new Uint8Array(64 * 1024));
    },
  });
  await assert.rejects(() => readBounded(endless, 1024 * 1024), (e: unknown) => {
    assert.ok(e instanceof CniError);
    assert.equal(e.code, 6);
    assert.match(e.message, /larger than the 1 MiB limit/);
    return true;
  });
  // 1 MiB is 16 chunks; the reader stops at the 17th instead of draining an endless stream.
  assert.ok(pulled <= 18, `pulled ${pulled} chunks`);
  const small = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(bytes("ab"));
      c.enqueue(bytes("c"));
      c.close();
    },
  });
  assert.equal(new TextDecoder().decode(await readBounded(small)), "abc");
});
