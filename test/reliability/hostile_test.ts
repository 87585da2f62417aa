/**
 * Every hostile case of hostile_cases.ts through the real program, as a
 * runtime runs it: dist/cnichain (or a link to it under a plugin's name)
 * exec'd with exactly the case's environment, inside a throwaway netns of
 * this test. Each case must fail cleanly: non-zero exit, exactly one CNI
 * error with an expected code on stdout, no stack trace on stderr, nothing
 * written under the test's temp dir, the host and pod netns unchanged
 * (links, addresses, routes, nftables), under 10 s and 300 MiB peak RSS.
 */
import assert from "node:assert/strict";
import { BUNDLE, listTree, multiCallDir, runProgram } from "../helpers.ts";
import { IS_ROOT, type Snapshot, snapshot, withLab } from "../netns.ts";
import { type CaseContext, type HostileCase, hostileCases } from "./hostile_cases.ts";
import { cniErrorProblem } from "./fuzz.ts";

const IP = "/usr/sbin/ip";
const TIMEOUT = "/usr/bin/timeout";
const TIME = "/usr/bin/time";
const BASH = "/bin/bash";
const ENV = "/usr/bin/env";
const LIMIT_S = 10;
const RSS_LIMIT_KIB = 300 * 1024;
/** Groups whose cases fail while decoding: one kernel snapshot per group is enough for them. */
const DECODE_GROUPS = new Set(["truncated", "malformed", "utf-8", "nesting"]);
/**
 * What a refused run may leave: the chain's attachment lock files (standing state, taken before
 * it acts) and the configured log file, which records the failed run as asked.
 */
const ALLOWED = /^(state\/locks(\/attachment\.\d+(\.lock)?)?|log\/cnichain\.log)$/;

const haveTools = await Promise.all(
  [TIME, BUNDLE].map((p) => Deno.stat(p).then(() => true, () => false)),
);
const why = !IS_ROOT
  ? "needs root (a throwaway netns)"
  : !haveTools[0]
  ? `needs ${TIME} (Debian package "time")`
  : !haveTools[1]
  ? `needs ${BUNDLE}: run "deno task bundle"`
  : "";
if (why) console.warn(`skipping hostile_test.ts: ${why}`);

/** `printf` octal escapes for raw bytes, for a shell assignment. */
function printfBytes(bytes: Uint8Array): string {
  return [...bytes].map((b) => `\\${b.toString(8).padStart(3, "0")}`).join("");
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
  rssKiB: number | undefined;
}

async function runCase(k: HostileCase, host: string, bin: string, cwd: string, rssFile: string) {
  const file = k.invokedAs ? `${bin}/${k.invokedAs}` : BUNDLE;
  let command: string[] = [file];
  let env = k.env;
  if (k.rawEnv) {
    // Deno cannot pass bytes that are not UTF-8 in an environment: the shell makes them.
    const raw = Object.entries(k.rawEnv)
      .map(([name, bytes]) => `${name}="$(printf '${printfBytes(bytes)}')"`).join(" ");
    command = [
      BASH,
      "-c",
      `exec ${ENV} -i ${raw} "$@"`,
      "bash",
      ...Object.entries(k.env).filter(([n]) => !(n in k.rawEnv!)).map(([n, v]) => `${n}=${v}`),
      file,
    ];
    env = {};
  }
  await Deno.remove(rssFile).catch(() => {});
  const began = performance.now();
  const out = await runProgram(TIMEOUT, {
    args: [
      "--kill-after=2",
      String(LIMIT_S),
      IP,
      "netns",
      "exec",
      host,
      TIME,
      "-f",
      "%M",
      "-o",
      rssFile,
      ...command,
    ],
    env,
    stdin: k.stdin,
    cwd,
  });
  const ms = performance.now() - began;
  const text = await Deno.readTextFile(rssFile).catch(() => "");
  const last = text.trim().split("\n").pop() ?? "";
  const rssKiB = /^\d+$/.test(last) ? Number(last) : undefined;
  return { code: out.code, stdout: out.stdout, stderr: out.stderr, ms, rssKiB } satisfies Run;
}

/** Why a run is not a clean failure, or undefined. */
function runProblem(k: HostileCase, r: Run): string | undefined {
  if (r.code === 124 || r.code === 137) return `hung: killed after ${LIMIT_S} s`;
  if (r.code === 0) return `succeeded: ${r.stdout.slice(0, 200)}`;
  if (r.ms > LIMIT_S * 1000) return `took ${r.ms.toFixed(0)} ms`;
  if (r.rssKiB === undefined) return "no peak RSS measured";
  if (r.rssKiB > RSS_LIMIT_KIB) return `peak RSS ${(r.rssKiB / 1024).toFixed(0)} MiB`;
  if (/^ {4}at |error: Uncaught/m.test(r.stderr)) {
    return `stack trace on stderr: ${r.stderr.slice(0, 400)}`;
  }
  if (r.stderr.includes("internal error")) return `internal error: ${r.stderr.slice(0, 300)}`;
  if (r.stdout !== r.stdout.trim() && r.stdout.trim().includes("\n")) {
    return "several lines on stdout";
  }
  return cniErrorProblem(r.stdout, k.codes);
}

function diff(before: Snapshot, after: Snapshot): string | undefined {
  const changed = (Object.keys(before) as (keyof Snapshot)[]).filter((key) =>
    JSON.stringify(before[key]) !== JSON.stringify(after[key])
  );
  if (!changed.length) return undefined;
  return changed.map((key) => {
    const added = after[key].filter((l) => !before[key].includes(l));
    const gone = before[key].filter((l) => !after[key].includes(l));
    return `${key}: +[${added.join(", ")}] -[${gone.join(", ")}]`;
  }).join("; ");
}

Deno.test({
  name: "hostile input through the real program: a clean CNI error, nothing changed",
  ignore: why !== "",
  fn: async (t) => {
    await withLab(async (lab) => {
      const pod = await lab.addPod("pod");
      const tmp = `${lab.dir}/hostile`;
      for (const d of ["state", "data", "log", "cwd", "dir"]) {
        await Deno.mkdir(`${tmp}/${d}`, { recursive: true });
      }
      const bin = await multiCallDir();
      await Deno.writeTextFile(`${tmp}/file`, "not a netns\n");
      const ctx: CaseContext = {
        stateDir: `${tmp}/state`,
        dataDir: `${tmp}/data`,
        logFile: `${tmp}/log/cnichain.log`,
        policyFile: `${tmp}/policy.json`,
        netns: pod.path,
        cniPath: bin,
        regularFile: `${tmp}/file`,
        directory: `${tmp}/dir`,
      };
      await Deno.writeTextFile(ctx.policyFile, "[]");
      const rssFile = `${lab.dir}/rss`;
      const tree = await listTree(tmp);
      // After a case changes the kernel, later cases are judged from the new state, so that one
      // failure is reported once, not again by every case after it.
      let hostBefore = await snapshot(lab.host);
      let podBefore = await snapshot(pod.name);
      const defaults = ["/var/lib/cni/networks/hostile", "/var/lib/cni/cnichain/results"];
      // Other tests may use the default dirs at the same time: only this test's network counts.
      const mine = async () =>
        (await Promise.all(defaults.map((d) => listTree(d)))).flat().filter((f) =>
          f.includes("hostile")
        );
      const defaultsBefore = await mine();
      const cases = hostileCases(ctx);
      const groups = [...new Set(cases.map((k) => k.group))];
      let slowest = 0, peak = 0;
      for (const group of groups) {
        await t.step(group, async () => {
          const failures: string[] = [];
          const kernelEach = !DECODE_GROUPS.has(group);
          for (const k of cases.filter((c) => c.group === group)) {
            const r = await runCase(k, lab.host, ctx.cniPath, `${tmp}/cwd`, rssFile);
            slowest = Math.max(slowest, r.ms);
            peak = Math.max(peak, r.rssKiB ?? 0);
            const problems: string[] = [];
            const p = runProblem(k, r);
            if (p) problems.push(p);
            const now = (await listTree(tmp)).filter((f) => !ALLOWED.test(f));
            if (JSON.stringify(now) !== JSON.stringify(tree)) {
              problems.push(`wrote ${now.filter((f) => !tree.includes(f)).join(", ")}`);
              for (const f of now.filter((f) => !tree.includes(f)).reverse()) {
                await Deno.remove(`${tmp}/${f}`, { recursive: true }).catch(() => {});
              }
            }
            if (kernelEach) {
              const [hostNow, podNow] = [await snapshot(lab.host), await snapshot(pod.name)];
              const h = diff(hostBefore, hostNow);
              const q = diff(podBefore, podNow);
              if (h) problems.push(`host netns changed: ${h}`);
              if (q) problems.push(`pod netns changed: ${q}`);
              if (h || q) {
                // Take away the links the case left, so that the next cases start clean.
                for (
                  const [ns, was, now] of [[lab.host, hostBefore, hostNow], [
                    pod.name,
                    podBefore,
                    podNow,
                  ]] as const
                ) {
                  for (const line of now.links.filter((l) => !was.links.includes(l))) {
                    await runProgram(IP, { args: ["-n", ns, "link", "del", line.split(" ")[0]] });
                  }
                }
                [hostBefore, podBefore] = [await snapshot(lab.host), await snapshot(pod.name)];
              }
            }
            if (problems.length) failures.push(`${k.name}: ${problems.join("; ")}`);
          }
          const hostNow = await snapshot(lab.host);
          const h = diff(hostBefore, hostNow);
          if (h) failures.push(`after the group, host netns changed: ${h}`);
          hostBefore = hostNow;
          assert.deepEqual(failures, [], `${failures.length} hostile ${group} cases failed`);
        });
      }
      await t.step("the default store and state dirs were not touched", async () => {
        assert.deepEqual(await mine(), defaultsBefore);
      });
      console.log(
        `${cases.length} hostile cases; slowest ${slowest.toFixed(0)} ms, peak RSS ${
          (peak / 1024).toFixed(0)
        } MiB`,
      );
    });
  },
});
