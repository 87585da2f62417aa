/**
 * `deno task bundle`: writes dist/cnichain, one executable file: the bundled
 * program behind a first line that runs it with Deno named by absolute path
 * (the Deno that runs this build unless DENO_BIN says otherwise), so it works
 * with the empty environment runtimes give plugins (no PATH, HOME, DENO_DIR).
 */
import { WASM_TRAILER } from "../policy-wasm/host.ts";
import { fnv64 } from "../chain/hash.ts";
import { CLI_TRAILER, trailerComment } from "../chain/trailer.ts";
import { featureFacts } from "../chain/nft_state.ts";
import { MASQUERADE } from "../chain/masquerade.ts";
import { PORTMAP } from "../chain/plugins/portmap/mod.ts";
import { POLICY } from "../chain/plugins/policy/rules.ts";
import { SHEBANG_MAX } from "../chain/install.ts";

const root = new URL("..", import.meta.url).pathname;
const deno = Deno.env.get("DENO_BIN") ?? Deno.execPath();
const out = `${root}dist/cnichain`;
const js = `${root}dist/cnichain.js`;

await Deno.mkdir(`${root}dist`, { recursive: true });

/** `deno bundle` of one entry, minified, as text without a #! line. */
async function bundle(entry: string): Promise<string> {
  const build = await new Deno.Command(Deno.execPath(), {
    // Minified: Deno and V8 pay for every byte of the program and of its code cache on each run
    // (VERSION 16.6 -> 15.7 ms, median of 40 interleaved). Not --keep-names: it renames every
    // function again at start-up (0.6 ms of it); the errors users see name their call anyway.
    args: ["bundle", "--quiet", "--platform", "deno", "--minify", "--output", js, entry],
    cwd: root,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!build.success) Deno.exit(build.code || 1);
  const text = (await Deno.readTextFile(js)).replace(/^#!.*\n/, "");
  await Deno.remove(js);
  return text;
}

const wasm = await Deno.readFile(`${root}policy-wasm/policy.wasm`).catch(() => undefined);
// What the nftables features' skeletons say, worked out here rather than by every run (nft_state.ts).
const facts = Object.fromEntries(
  [MASQUERADE, PORTMAP, POLICY].map((feature) => [feature.name, featureFacts(feature)]),
);

/** Fills in the constants a bundled program finds in place of a build's placeholders. */
function settle(code: string): string {
  if (wasm) {
    code = code.replace('"__CNICHAIN_POLICY_WASM__"', JSON.stringify("trailer"))
      // The same hash engineId() works out when it runs unbundled.
      .replace('"__CNICHAIN_POLICY_WASM_ID__"', JSON.stringify(fnv64(wasm)));
  }
  return code.replace('"__CNICHAIN_FEATURE_FACTS__"', JSON.stringify(JSON.stringify(facts)));
}

// The program runtimes run: the plugins. The command line is a bundle of its own (chain/cli.ts
// and everything it uses), gzipped in a trailer, which main.ts compiles when a person runs it.
const body = settle(await bundle(`${root}main.ts`)).replace(
  '"__CNICHAIN_CLI__"',
  JSON.stringify("trailer"),
);
/**
 * The command line's module as the text of an async function that returns its exports, for
 * main.ts to evaluate. Not imported as a module: Deno keeps a code cache entry for every module
 * URL it loads, and the blob: URL such a module would need is new on every run (650 KB more in
 * Deno's cache directory at each command, without end).
 */
function asFunction(module: string): string {
  // The bundler writes one export list, last: `export{a as runCli,...};`.
  const exports = /export\s*\{([^}]*)\};?\s*$/.exec(module);
  if (!exports || (module.match(/\bexport\s*\{/g) ?? []).length !== 1) {
    throw new Error("bundle: the command line's bundle does not end with its one export list");
  }
  const names = exports[1].split(",").map((e) => e.trim()).filter(Boolean).map((e) => {
    const [local, exported = local] = e.split(/\s+as\s+/);
    return `${JSON.stringify(exported)}: ${local}`;
  });
  // import.meta only serves unbundled runs (files next to a module); a function has none.
  const code = module.slice(0, exports.index).replaceAll("import.meta.url", "Deno.mainModule");
  if (code.includes("import.meta")) throw new Error("bundle: the command line uses import.meta");
  return `(async () => {"use strict";\n${code}\nreturn { ${names.join(", ")} };\n})\n` +
    "//# sourceURL=cnichain-cli.js\n";
}

const cli = asFunction(settle(await bundle(`${root}chain/cli.ts`)));
const gzipped = new Uint8Array(
  await new Response(
    new Blob([cli]).stream().pipeThrough(new CompressionStream("gzip")),
  ).arrayBuffer(),
);
// The policy engine travels inside the program too, one file to install; raw, not gzipped: its
// host reads it synchronously, and runs that need it are few (policy/memo.ts remembers answers).
let trailer = `\n${trailerComment(CLI_TRAILER, gzipped)}\n`;
if (wasm) trailer += `${trailerComment(WASM_TRAILER, wasm)}\n`;
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
// --regexp-tier-up-ticks=1000: V8 compiles a regular expression to machine code on its second
// use by default; a plugin run uses dozens of them a few times each, and interpreting them is
// cheaper than compiling (ADD 4.37 -> 4.20 ms in-process, median of 25 interleaved).
// Short flags (-A, -q): Linux reads 255 bytes of the line (SHEBANG_MAX), Deno's path included.
const shebang =
  `#!/usr/bin/env -S DENO_NO_UPDATE_CHECK=1 ${deno} run -A --no-config --no-lock -q ` +
  `--ext=js --v8-flags=--no-lazy,--no-enable-lazy-source-positions,--no-sparkplug,` +
  `--regexp-tier-up-ticks=1000`;
if (new TextEncoder().encode(shebang).length > SHEBANG_MAX) {
  throw new Error(`bundle: Deno's path ${deno} makes the #! line longer than ${SHEBANG_MAX} bytes`);
}
await Deno.writeTextFile(out, `${shebang}\n${body}${trailer}`, { mode: 0o755 });
await Deno.chmod(out, 0o755);
console.error(`wrote ${out} (runs with ${deno})`);
