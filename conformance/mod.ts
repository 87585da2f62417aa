/**
 * `deno task conformance`: the CNI conformance suite.
 *
 *   deno run -A conformance/mod.ts [--part plugin,runtime,libcni,diff,reference]
 *       [--target DIR [--profile NAME]] [--parallel N] [--no-build] [--markdown FILE]
 *
 * By default it builds what it needs (conformance/build.sh: the libcni client
 * and the reference plugins v1.9.x, reused when present), then runs every
 * part against cnichain (dist/cnichain, by its multi-call names) and the
 * plugin-level part against both reference releases. It prints one table row
 * per check with the outcome at every spec version and exits non-zero when
 * cnichain fails anything, or a reference fails anything that is not one of
 * its known gaps (gaps.ts). `--target DIR` runs only the plugin-level part
 * against the plugins in DIR (`--profile` names its known gaps).
 */
import { parseArgs } from "node:util";
import { BUNDLE, multiCallDir } from "../test/helpers.ts";
import { type Check, type Outcome, runChecks, summary, table, tally } from "./harness.ts";
import { CNICHAIN_DEVIATIONS, cnichainDeviation, knownGap, PROFILES } from "./gaps.ts";
import { pluginChecks } from "./plugin_checks.ts";
import { cliRuntime, libcniRuntime, nestedRuntime, runtimeChecks } from "./runtime_checks.ts";
import { libcniChecks } from "./libcni_checks.ts";
import { differentialChecks } from "./differential.ts";
import { leftovers } from "./lab.ts";

const HERE = new URL(".", import.meta.url).pathname;
const BUILD = `${HERE}.build`;
const DEBIAN_DIR = "/usr/lib/cni";
/**
 * What other targets get besides the CNI variables: libcni passes the runtime's
 * own environment, and the reference portmap runs `iptables` from PATH.
 * cnichain is run with the CNI variables alone.
 */
const TARGET_ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" };

const { values } = parseArgs({
  args: Deno.args,
  options: {
    part: { type: "string", default: "plugin,runtime,libcni,diff,reference" },
    target: { type: "string" },
    profile: { type: "string" },
    parallel: { type: "string", default: "4" },
    "no-build": { type: "boolean", default: false },
    "clear-env": { type: "boolean", default: false },
    markdown: { type: "string" },
    only: { type: "string" },
  },
});
const parallel = Number(values.parallel);
const parts = new Set(values.target ? ["target"] : values.part!.split(","));
const only = values.only ? new RegExp(values.only) : undefined;
const pick = (checks: Check[]) => only ? checks.filter((c) => only.test(c.id)) : checks;

async function build(): Promise<string> {
  const out = await new Deno.Command("bash", {
    args: [`${HERE}build.sh`],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error("conformance/build.sh failed");
  return new TextDecoder().decode(out.stdout).trim().split("\n").pop()!;
}

/** A CNI_PATH dir of links to the bundle under every multi-call name (and `cnichain`). */
async function cnichainDir(): Promise<string> {
  await Deno.stat(BUNDLE).catch(() => {
    throw new Error(`${BUNDLE} is missing: run "deno task bundle" first`);
  });
  return await multiCallDir();
}

if (Deno.uid() !== 0) {
  console.error("conformance: needs root (network namespaces, links, nftables)");
  Deno.exit(2);
}
const started = performance.now();
let buildMs = 0;
let refDir = `${BUILD}/plugins-v1.9.1`;
const needsBuild = ["runtime", "libcni", "diff", "reference"].some((p) => parts.has(p));
if (needsBuild && !values["no-build"]) {
  const t = performance.now();
  refDir = await build();
  buildMs = performance.now() - t;
}

const outcomes: Outcome[] = [];
const targetEnv = values["clear-env"] ? {} : TARGET_ENV;
const bin = await cnichainDir();
if (parts.has("target")) {
  const profile = values.profile ? PROFILES[values.profile] : undefined;
  if (values.profile && !profile) {
    throw new Error(`--profile: one of ${Object.keys(PROFILES).join(", ")}`);
  }
  outcomes.push(
    ...await runChecks(
      "plugin@target",
      values.target!,
      pick(pluginChecks(values.target!, targetEnv)),
      {
        parallel,
        gap: profile ? (c, v) => knownGap(profile, c, v) : undefined,
      },
    ),
  );
}
if (parts.has("plugin")) {
  outcomes.push(
    ...await runChecks("plugin", "cnichain", pick(pluginChecks(bin)), {
      parallel,
      xfail: cnichainDeviation,
    }),
  );
}
if (parts.has("runtime")) {
  const runtimes = [cliRuntime(bin), nestedRuntime(bin)];
  if (needsBuild || values["no-build"]) runtimes.push(libcniRuntime(`${BUILD}/libcni-client`));
  for (const rt of runtimes) {
    outcomes.push(
      ...await runChecks(`runtime/${rt.name}`, rt.name, pick(runtimeChecks(rt, bin)), {
        parallel,
      }),
    );
  }
}
if (parts.has("libcni")) {
  outcomes.push(
    ...await runChecks("libcni", "cnichain", pick(libcniChecks(bin, BUILD)), {
      parallel,
      xfail: cnichainDeviation,
    }),
  );
}
if (parts.has("diff")) {
  outcomes.push(
    ...await runChecks("diff", "cnichain", pick(differentialChecks(bin, refDir, DEBIAN_DIR)), {
      parallel: Math.min(parallel, 2),
      xfail: cnichainDeviation,
    }),
  );
}
if (parts.has("reference")) {
  for (const [dir, key] of [[refDir, "plugins-v1.9.1"], [DEBIAN_DIR, "debian-1.1.1"]]) {
    const profile = PROFILES[key];
    outcomes.push(
      ...await runChecks(`plugin@${key}`, dir, pick(pluginChecks(dir, TARGET_ENV)), {
        parallel,
        gap: (c, v) => knownGap(profile, c, v),
      }),
    );
  }
}

const left = await leftovers();
console.log(table(outcomes));
const columns: [string, (part: string) => boolean][] = parts.has("target")
  ? [[values.target!, (p) => p === "plugin@target"]]
  : [
    [
      "cnichain",
      (p) => ["plugin", "diff", "libcni"].includes(p) || p.startsWith("runtime/cnichain"),
    ],
    ["libcni runtime", (p) => p === "runtime/libcni"],
    ["v1.9.1", (p) => p === "plugin@plugins-v1.9.1"],
    ["Debian 1.1.1", (p) => p === "plugin@debian-1.1.1"],
  ];
const text = summary(outcomes, columns);
console.log(`\n${text}`);
const failures = outcomes.filter((o) => o.status === "fail");
const gaps = outcomes.filter((o) => o.status === "gap");
const xfails = outcomes.filter((o) => o.status === "xfail");
if (xfails.length) {
  console.log("\nKnown cnichain deviations (xfail: listed in gaps.ts, to fix):");
  for (const id of new Set(xfails.map((o) => o.check.id))) {
    const versions = xfails.filter((o) => o.check.id === id).map((o) => o.version);
    console.log(`- ${id} @${versions.join(",")}: ${CNICHAIN_DEVIATIONS[id]}`);
  }
}
const fixed = Object.keys(CNICHAIN_DEVIATIONS).filter((id) =>
  outcomes.some((o) => o.check.id === id && o.target !== "" && !o.part.startsWith("plugin@")) &&
  !xfails.some((o) => o.check.id === id)
);
if (fixed.length) {
  console.log(`\nNow passing, remove from CNICHAIN_DEVIATIONS in gaps.ts: ${fixed.join(", ")}`);
}
if (failures.length) {
  console.log("\nFailures:");
  for (const o of failures) {
    console.log(`- [${o.part}] ${o.check.id} @${o.version} (${o.check.section}): ${o.detail}`);
  }
}
if (gaps.length) {
  console.log("\nKnown gaps of the references (not failures of the run):");
  const seen = new Map<string, string[]>();
  for (const o of gaps) {
    const key = `${o.part}: ${o.detail.replace(/^known gap \(([^)]*)\).*/, "$1")}`;
    seen.set(key, [...(seen.get(key) ?? []), `${o.check.id}@${o.version}`]);
  }
  for (const [k, list] of seen) {
    console.log(
      `- ${k}: ${list.length} runs (${list.slice(0, 4).join(", ")}${
        list.length > 4 ? ", ..." : ""
      })`,
    );
  }
}
const byPart = new Map<string, Outcome[]>();
for (const o of outcomes) byPart.set(o.part, [...(byPart.get(o.part) ?? []), o]);
console.log("");
for (const [part, list] of byPart) {
  const t = tally(list);
  console.log(
    `${part}: ${t.checks} checks, ${t.runs} runs: ${t.pass} pass, ${t.fail} fail, ${t.gap} known gap, ${t.xfail} xfail, ${t.na} n/a`,
  );
}
const all = tally(outcomes);
const points = new Set(outcomes.map((o) => o.check.id)).size;
console.log(
  `total: ${points} distinct checks, ${all.runs} runs, ${all.fail} failures; build ${
    (buildMs / 1000).toFixed(1)
  } s, whole run ${((performance.now() - started) / 1000).toFixed(1)} s`,
);
if (left.length) console.log(`netns left behind: ${left.join(", ")}`);
if (values.markdown) await Deno.writeTextFile(values.markdown, text + "\n");
Deno.exit(failures.length || left.length ? 1 : 0);
