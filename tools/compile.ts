/**
 * `deno task compile`: a standalone binary (dist/cnichain-bin) from `deno compile`.
 * It needs Deno's `denort` runtime, which `deno compile` downloads or takes from
 * DENORT_BIN. Where neither works (our build machines cannot download it), this
 * says so and exits non-zero; dist/cnichain from `deno task bundle` is the
 * program to install there.
 */
const root = new URL("..", import.meta.url).pathname;
const out = `${root}dist/cnichain-bin`;
const build = await new Deno.Command(Deno.execPath(), {
  // The policy engine is read next to its host module at run time, and main.ts imports the
  // command line by a specifier the compiler cannot see: --include puts both in the binary.
  args: [
    "compile",
    "--allow-all",
    "--no-config",
    "--no-lock",
    "--include",
    `${root}policy-wasm/policy.wasm`,
    "--include",
    `${root}chain/cli.ts`,
    "--output",
    out,
    `${root}main.ts`,
  ],
  cwd: root,
  stdout: "inherit",
  stderr: "piped",
}).output();
const stderr = new TextDecoder().decode(build.stderr);
if (!build.success) {
  console.error(stderr.trim());
  const runtime = Deno.env.get("DENORT_BIN");
  console.error(
    runtime
      ? `cnichain: deno compile failed with DENORT_BIN=${runtime}`
      : "cnichain: deno compile needs Deno's denort runtime and could not download it; " +
        "set DENORT_BIN to a denort binary of this Deno version, or install dist/cnichain from `deno task bundle`",
  );
  Deno.exit(1);
}
console.error(`wrote ${out}`);
