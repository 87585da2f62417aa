/**
 * `deno task bundle`: writes dist/cnichain, one executable file: the bundled
 * program behind a first line that runs it with Deno named by absolute path
 * (the Deno that runs this build unless DENO_BIN says otherwise), so it works
 * with the empty environment runtimes give plugins (no PATH, HOME, DENO_DIR).
 */
import { WASM_TRAILER } from "../policy-wasm/host.ts";
import { fnv64 } from "../chain/hash.ts";
import { ruleStamp } from "../chain/nft_state.ts";
import { MASQUERADE } from "../chain/masquerade.ts";
import { PORTMAP } from "../chain/plugins/portmap/mod.ts";
import { POLICY } from "../chain/plugins/policy/rules.ts";

const root = new URL("..", import.meta.url).pathname;
const deno = Deno.env.get("DENO_BIN") ?? Deno.execPath();
const out = `${root}dist/cnichain`;
const js = `${root}dist/cnichain.js`;

await Deno.mkdir(`${root}dist`, { recursive: true });
const build = await new Deno.Command(Deno.execPath(), {
  // Minified: Deno and V8 pay for every byte of the program and of its code cache on each run
  // (VERSION 16.6 -> 15.7 ms, median of 40 interleaved). Not --keep-names: it renames every
  // function again at start-up (0.6 ms of it); the errors users see name their call anyway.
  args: [
    "bundle",
    "--quiet",
    "--platform",
    "deno",
    "--minify",
    "--output",
    js,
    `${root}main.ts`,
  ],
  cwd: root,
  stdout: "inherit",
  stderr: "inherit",
}).output();
if (!build.success) Deno.exit(build.code || 1);

let body = (await Deno.readTextFile(js)).replace(/^#!.*\n/, "");
// The policy engine travels inside the program, one file to install: its bytes (base64) in a
// comment at the end, which the engine's host reads back from the file when a step needs it.
// Not a string constant: V8 would carry it in the code cache of every run, and the runs that
// need the engine are few (policy/memo.ts remembers its answers): VERSION 17.0 -> 16.5 ms.
const wasm = await Deno.readFile(`${root}policy-wasm/policy.wasm`).catch(() => undefined);
let trailer = "";
if (wasm) {
  let binary = "";
  for (let i = 0; i < wasm.length; i += 0x8000) {
    binary += String.fromCharCode(...wasm.subarray(i, i + 0x8000));
  }
  body = body.replace('"__CNICHAIN_POLICY_WASM__"', JSON.stringify("trailer"));
  trailer = `\n/*${WASM_TRAILER}${btoa(binary)}*/\n`;
  // The same hash engineId() works out when it runs unbundled.
  body = body.replace('"__CNICHAIN_POLICY_WASM_ID__"', JSON.stringify(fnv64(wasm)));
}
// The nftables features' rule stamps, worked out here rather than by every run (nft_state.ts).
const stamps = Object.fromEntries(
  [MASQUERADE, PORTMAP, POLICY].map((feature) => [feature.name, ruleStamp(feature)]),
);
body = body.replace('"__CNICHAIN_RULE_STAMPS__"', JSON.stringify(JSON.stringify(stamps)));
// `env -S` splits the interpreter line into arguments; env is at a fixed path on every Linux.
// --no-config keeps a deno.json in the caller's working directory from changing the program.
// DENO_NO_UPDATE_CHECK: a plugin run is no time to look for Deno releases (and nodes may be offline).
// --ext=js: the file has no extension, and Deno would take it for TypeScript: every run would read
// its transpiled copy (the program again, with a source map, 1.5 MB) from the emit cache.
// --no-lazy: V8 compiles every function when it compiles the program, so the code cache Deno keeps
// for it (made at compile time) holds them all, and a plugin run finds its code compiled; lazily
// (the default) every run would compile again each function it calls.
// --no-enable-lazy-source-positions: the code cache then carries source positions, which V8
// otherwise gets on the first `new Error` of a run by parsing the program again (~10 ms on
// every error path and every "not found" the plugins catch).
// --no-sparkplug: V8's baseline compiler compiles functions that have run a little, in batches;
// a plugin run ends before that pays back (bridge + host-local ADD 6.0 -> 5.3 ms in-process,
// median of 25 interleaved). Long-running commands still get the optimising tiers.
const shebang = `#!/usr/bin/env -S DENO_NO_UPDATE_CHECK=1 ${deno} run --allow-all --no-config ` +
  `--no-lock --quiet --ext=js --v8-flags=--no-lazy,--no-enable-lazy-source-positions,` +
  `--no-sparkplug\n`;
await Deno.writeTextFile(out, shebang + body + trailer, { mode: 0o755 });
await Deno.chmod(out, 0o755);
await Deno.remove(js);
console.error(`wrote ${out} (runs with ${deno})`);
