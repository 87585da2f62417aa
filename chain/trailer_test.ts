import assert from "node:assert/strict";
import { findTrailer, trailerComment } from "./trailer.ts";

Deno.test("trailers: what trailerComment writes, findTrailer reads back, by name", () => {
  const engine = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 7) & 0xff);
  const cli = new TextEncoder().encode("export const x = '*/ stays inside the base64';");
  const program = `#!/usr/bin/env deno\nconsole.log("hello");\n` +
    `${trailerComment("cnichain-cli", cli)}\n${trailerComment("cnichain-policy-wasm", engine)}\n`;
  assert.deepEqual(findTrailer(program, "cnichain-cli"), cli);
  assert.deepEqual(findTrailer(program, "cnichain-policy-wasm"), engine);
  assert.equal(findTrailer(program, "cnichain"), undefined, "a name is matched whole");
  assert.equal(findTrailer("console.log(1);\n", "cnichain-cli"), undefined);
});
