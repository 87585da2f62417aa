import assert from "node:assert/strict";
import { randomHex32, shortHash } from "./hash.ts";
import { seededRandom } from "../test/host_local.ts";

/** FNV-1a 64 written the plain way, to hold shortHash's 32-bit halves to. */
function fnv1a64(text: string): string {
  let h = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(text)) {
    h = ((h ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h.toString(16).padStart(16, "0");
}

Deno.test("shortHash() is 64-bit FNV-1a: the published vectors and a plain BigInt version agree", () => {
  assert.equal(shortHash(""), "cbf29ce484222325");
  assert.equal(shortHash("a"), "af63dc4c8601ec8c");
  assert.equal(shortHash("foobar"), "85944171f73967e8");
  const { seed, int } = seededRandom("shortHash");
  for (let i = 0; i < 500; i++) {
    const text = Array.from({ length: int(80) }, () => String.fromCodePoint(int(0x2fff))).join("");
    assert.equal(shortHash(text), fnv1a64(text), `seed ${seed}, text ${JSON.stringify(text)}`);
  }
});

Deno.test("randomHex32() gives 8 hex digits", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 100; i++) {
    const h = randomHex32();
    assert.match(h, /^[0-9a-f]{8}$/);
    seen.add(h);
  }
  assert.ok(seen.size > 95, `only ${seen.size} distinct of 100`);
});
