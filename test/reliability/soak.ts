/**
 * The reliability soak: the fault-injection, reboot, load and locking
 * scenarios at full size (their *_test.ts files run them small in CI), and
 * the hostile-input fuzzer (mutated configs, in-process), then one table of
 * figures. Exits non-zero when any scenario fails or finds a leak.
 *
 * ```
 * deno task bundle && deno run --allow-all test/reliability/soak.ts [--crashes 300]
 *   [--reboot-pods 50] [--load-ops 200] [--load-procs 16] [--load-rounds 5]
 *   [--locking-rounds 40] [--fuzz 20000] [--seed N] [--only faults,reboot,load,locking,fuzz]
 * ```
 * `--seed` (or CNICHAIN_TEST_SEED) replays every scenario's randomness; each
 * prints the seed it used.
 */
import { parseArgs } from "node:util";
import { ensureBundle } from "../host_local.ts";
import { IS_ROOT } from "../netns.ts";
import { runFaults } from "./faults.ts";
import { runReboot } from "./reboot.ts";
import { runLoad } from "./load.ts";
import { runLocking } from "./locking.ts";
import { ScenarioError } from "./faults_harness.ts";
import { runFuzz } from "./fuzz.ts";

interface Row {
  scenario: string;
  size: string;
  cases: number;
  crashes: number;
  operations: number;
  leaks: number;
  failed: string;
  seconds: number;
  notes: string[];
}

const { values } = parseArgs({
  options: {
    crashes: { type: "string", default: "300" },
    "fault-pods": { type: "string", default: "8" },
    "reboot-pods": { type: "string", default: "50" },
    "load-ops": { type: "string", default: "200" },
    "load-procs": { type: "string", default: "16" },
    "load-rounds": { type: "string", default: "5" },
    "locking-rounds": { type: "string", default: "40" },
    fuzz: { type: "string", default: "20000" },
    seed: { type: "string" },
    only: { type: "string" },
  },
});

const num = (name: keyof typeof values) => {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < 0) {
    throw new Error(`--${name}: a whole number, not ${values[name]}`);
  }
  return n;
};
const seed = values.seed === undefined ? undefined : num("seed");
const only = values.only?.split(",");
const wanted = (name: string) => !only || only.includes(name);

async function scenario(
  name: string,
  size: string,
  run: () => Promise<
    { cases: number; crashes: number; operations: number; leaks: number; notes: string[] }
  >,
): Promise<Row> {
  const row: Row = {
    scenario: name,
    size,
    cases: 0,
    crashes: 0,
    operations: 0,
    leaks: 0,
    failed: "",
    seconds: 0,
    notes: [],
  };
  console.log(`--- ${name} (${size})`);
  const began = performance.now();
  try {
    const fig = await run();
    Object.assign(row, {
      cases: fig.cases,
      crashes: fig.crashes,
      operations: fig.operations,
      leaks: fig.leaks,
      notes: fig.notes,
    });
  } catch (err) {
    if (err instanceof ScenarioError) {
      const fig = err.figures;
      Object.assign(row, {
        cases: fig.cases,
        crashes: fig.crashes,
        operations: fig.operations,
        leaks: fig.leaks,
      });
    }
    row.failed = err instanceof Error ? err.message : String(err);
    // A scenario stops at the first problem it finds; it counts as (at least) one.
    row.leaks = Math.max(row.leaks, 1);
    console.error(`${name} FAILED: ${err instanceof Error ? err.stack ?? err.message : err}`);
  }
  row.seconds = (performance.now() - began) / 1000;
  for (const note of row.notes) console.log(note);
  return row;
}

if (!IS_ROOT) {
  console.error("soak: the scenarios need root (network namespaces, links, nftables)");
  Deno.exit(2);
}
await ensureBundle();
const rows: Row[] = [];
if (wanted("faults")) {
  const rounds = num("crashes");
  const pods = num("fault-pods");
  rows.push(
    await scenario(
      "faults",
      `${rounds} kills wanted, ${pods} pods`,
      () => runFaults({ rounds, minCrashes: rounds, pods, seed }),
    ),
  );
}
if (wanted("reboot")) {
  const pods = num("reboot-pods");
  rows.push(await scenario("reboot", `${pods} pods`, () => runReboot({ pods, seed })));
}
if (wanted("load")) {
  const [ops, procs, rounds] = [num("load-ops"), num("load-procs"), num("load-rounds")];
  rows.push(
    await scenario(
      "load",
      `${ops} ops x ${rounds} rounds, ${procs} procs`,
      () => runLoad({ ops, procs, rounds, seed }),
    ),
  );
}
if (wanted("locking")) {
  const rounds = num("locking-rounds");
  rows.push(await scenario("locking", `${rounds} races`, () => runLocking({ rounds, seed })));
}
if (wanted("fuzz")) {
  const count = num("fuzz");
  rows.push(
    await scenario("fuzz", `${count} mutated configs`, async () => {
      const f = await runFuzz(count, seed);
      return {
        cases: f.cases,
        crashes: 0,
        operations: f.cases,
        leaks: f.failures,
        notes: [
          `fuzz: ${f.cases} cases, ${f.accepted} accepted, ${f.failures} failures; seed=${f.seed}`,
          ...f.examples.slice(0, 5),
        ],
      };
    }),
  );
}

const header = ["scenario", "size", "cases", "crashes", "operations", "leaks", "result", "s"];
const lines = rows.map((r) => [
  r.scenario,
  r.size,
  String(r.cases),
  String(r.crashes),
  String(r.operations),
  String(r.leaks),
  r.failed ? "FAILED" : "ok",
  r.seconds.toFixed(0),
]);
const total = rows.reduce(
  (t, r) => ({
    cases: t.cases + r.cases,
    crashes: t.crashes + r.crashes,
    operations: t.operations + r.operations,
    leaks: t.leaks + r.leaks,
    seconds: t.seconds + r.seconds,
  }),
  { cases: 0, crashes: 0, operations: 0, leaks: 0, seconds: 0 },
);
lines.push([
  "total",
  "",
  String(total.cases),
  String(total.crashes),
  String(total.operations),
  String(total.leaks),
  rows.some((r) => r.failed) ? "FAILED" : "ok",
  total.seconds.toFixed(0),
]);
const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
const format = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
console.log(
  `\n${format(header)}\n|${widths.map((w) => "-".repeat(w + 2)).join("|")}|\n${
    lines.map(format).join("\n")
  }`,
);
for (const r of rows.filter((r) => r.failed)) {
  console.log(`\n${r.scenario} failed: ${r.failed.slice(0, 4000)}`);
}
Deno.exit(total.leaks > 0 || rows.some((r) => r.failed) ? 1 : 0);
