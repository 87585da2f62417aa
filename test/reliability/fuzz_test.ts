/**
 * Property-based hostile input (fuzz.ts): thousands of mutated configs of
 * every built-in plugin and chain in-process through dispatch() on a memory
 * system, then a sample through the real program in a throwaway netns.
 *
 * CNICHAIN_TEST_SEED replays a run (the seed is printed at the start);
 * CNICHAIN_FUZZ_CASES sets the in-process count (default 10,000),
 * CNICHAIN_FUZZ_PROCESS_CASES the real-process sample (default 50).
 */
import assert from "node:assert/strict";
import { BUNDLE, listTree, multiCallDir, runProgram } from "../helpers.ts";
import { IS_ROOT, snapshot, withLab } from "../netns.ts";
import { cniErrorProblem, envCount, fuzzCase, fuzzOne, fuzzSeed, runFuzz } from "./fuzz.ts";
import { validSeeds } from "./hostile_cases.ts";

const seed = fuzzSeed();
const CASES = envCount("CNICHAIN_FUZZ_CASES", 10000);
const PROCESS_CASES = envCount("CNICHAIN_FUZZ_PROCESS_CASES", 50);
console.log(
  `fuzz seed ${seed} (replay with CNICHAIN_TEST_SEED=${seed}); ${CASES} in-process cases`,
);

Deno.test("fuzz: every seed config is valid (ADD succeeds in the memory system)", async () => {
  const { runInProcess, fuzzEnv } = await import("./fuzz.ts");
  const seeds = validSeeds({
    stateDir: "/fuzz/state",
    dataDir: "/fuzz/data",
    logFile: "/fuzz/log/cnichain.log",
    policyFile: "/fuzz/policy.json",
  });
  for (const s of seeds) {
    const env = { ...fuzzEnv("ADD"), ...(s.ifname ? { CNI_IFNAME: s.ifname } : {}) };
    const out = await runInProcess(env, JSON.stringify(s.config), s.invokedAs);
    assert.equal(out.code, 0, `${s.name}: ${out.stdout.join("")}`);
  }
});

Deno.test("fuzz: mutated configs in-process keep the invariants", async () => {
  const figures = await runFuzz(CASES, seed);
  console.log(
    `fuzz in-process: ${figures.cases} cases, ${figures.failures} failures, ${figures.accepted} ` +
      `accepted as valid, ${(figures.ms / 1000).toFixed(1)} s (seed ${seed})`,
  );
  assert.deepEqual(figures.examples, [], `${figures.failures} of ${figures.cases} cases failed`);
});

Deno.test("fuzz: a replayed case is the same case", () => {
  const seeds = validSeeds({ stateDir: "/s", dataDir: "/d", logFile: "/l/f", policyFile: "/p" });
  assert.deepEqual(fuzzCase(seed, 7, seeds), fuzzCase(seed, 7, seeds));
});

const haveBundle = await Deno.stat(BUNDLE).then(() => true, () => false);

/**
 * What a failed run may leave, as in the in-process cases (fuzz.ts): the log, locks, directories
 * (a rollback removes what the steps made, not the directories it went in) and host-local's
 * store-wide hints, which the reference keeps too. Any other new file is a leak.
 */
async function mayStay(path: string, relative: string): Promise<boolean> {
  if (/^log\/cnichain\.log$|(^|\/)lock$|\.lock$/.test(relative)) return true;
  if (/^data\/[^/]+\/(last_reserved_ip\.\d+|\.cnichain\/seal)$/.test(relative)) return true;
  return (await Deno.lstat(path)).isDirectory;
}

Deno.test({
  name: "fuzz: a sample through the real program fails cleanly and changes nothing",
  ignore: !IS_ROOT || !haveBundle || PROCESS_CASES === 0,
  fn: async () => {
    await withLab(async (lab) => {
      const pod = await lab.addPod("fuzz");
      const tmp = `${lab.dir}/fuzz`;
      for (const d of ["state", "data", "log", "cwd"]) {
        await Deno.mkdir(`${tmp}/${d}`, { recursive: true });
      }
      const bin = await multiCallDir();
      await Deno.writeTextFile(`${tmp}/policy.json`, "[]");
      const seeds = validSeeds({
        stateDir: `${tmp}/state`,
        dataDir: `${tmp}/data`,
        logFile: `${tmp}/log/cnichain.log`,
        policyFile: `${tmp}/policy.json`,
      });
      const memSeeds = validSeeds({
        stateDir: "/fuzz/state",
        dataDir: "/fuzz/data",
        logFile: "/fuzz/log/cnichain.log",
        policyFile: "/fuzz/policy.json",
      });
      const before = await snapshot(lab.host);
      const podBefore = await snapshot(pod.name);
      const tree = await listTree(tmp);
      const failures: string[] = [];
      let run = 0;
      // Only cases that fail in-process: a mutation that is still valid would really ADD.
      for (let i = 0; run < PROCESS_CASES && i < PROCESS_CASES * 20; i++) {
        if ((await fuzzOne(seed, i, memSeeds)) === "accepted") continue;
        const c = fuzzCase(seed, i, seeds);
        if (c.env.CNI_COMMAND === "VERSION") continue;
        run++;
        const env = {
          ...c.env,
          CNI_NETNS: c.env.CNI_NETNS === "/var/run/netns/cnichain-fuzz-pod"
            ? pod.path
            : c.env.CNI_NETNS,
          CNI_PATH: bin,
        };
        const real = (vars: Record<string, string>, stdin: string) =>
          runProgram("/usr/bin/timeout", {
            args: [
              "--kill-after=2",
              "10",
              "/usr/sbin/ip",
              "netns",
              "exec",
              lab.host,
              c.invokedAs ? `${bin}/${c.invokedAs}` : BUNDLE,
            ],
            env: vars,
            stdin,
            cwd: `${tmp}/cwd`,
          });
        const out = await real(env, c.stdin);
        const where = `seed ${seed} case ${i} (${c.label}: ${c.what})`;
        if (out.code === 0) {
          // In-process refused, the real program accepted: a process environment cannot carry
          // everything a case can (a lone surrogate in CNI_IFNAME arrives as U+FFFD). Not a
          // failure, but what it made is undone as a runtime would, so that what is left at the
          // end is what failed runs left.
          if (c.env.CNI_COMMAND !== "ADD") continue; // the other verbs make nothing to undo
          const conf = { ...JSON.parse(c.stdin), prevResult: JSON.parse(out.stdout) };
          const del = await real({ ...env, CNI_COMMAND: "DEL" }, JSON.stringify(conf));
          if (del.code !== 0) failures.push(`${where}: accepted, then DEL failed: ${del.stdout}`);
          continue;
        }
        const problem = cniErrorProblem(out.stdout) ??
          (/^ {4}at |error: Uncaught|internal error/m.test(out.stderr)
            ? out.stderr.slice(0, 300)
            : undefined);
        if (problem) failures.push(`${where}: ${problem}`);
        const wrote = [];
        for (const f of (await listTree(tmp)).filter((f) => !tree.includes(f))) {
          if (!(await mayStay(`${tmp}/${f}`, f))) wrote.push(f);
        }
        if (wrote.length) failures.push(`${where}: wrote ${wrote.join(", ")}`);
      }
      // A bridge stays once made, as the reference's does (other pods share it), with what is
      // on it; the in-process leftovers allow the same. Anything else left is a leak.
      const after = await snapshot(lab.host);
      const made = after.links.filter((l) => l.endsWith(" bridge") && !before.links.includes(l))
        .map((l) => l.slice(0, l.indexOf(" ")));
      const onMade = (e: string) =>
        made.some((b) => e.startsWith(`${b} `) || e.includes(` dev ${b} `));
      assert.deepEqual(
        {
          ...after,
          links: after.links.filter((l) => !onMade(l)),
          addresses: after.addresses.filter((a) => !onMade(a)),
          routes: after.routes.filter((r) => !onMade(r)),
        },
        before,
        "the host netns changed",
      );
      assert.deepEqual(await snapshot(pod.name), podBefore, "the pod netns changed");
      console.log(`fuzz real process: ${run} failing cases run (seed ${seed})`);
      assert.deepEqual(failures, []);
    });
  },
});

/** Bugs the hostile suite found, each kept as an in-process case (root-free, fast). */
Deno.test("fuzz regressions: found bugs stay fixed", async (t) => {
  const { runInProcess, fuzzEnv } = await import("./fuzz.ts");
  const { ptpStatic, fullChain, policyFromFile } = await import("./hostile_cases.ts");
  const d = {
    stateDir: "/fuzz/state",
    dataDir: "/fuzz/data",
    logFile: "/fuzz/log/cnichain.log",
    policyFile: "/fuzz/policy.json",
  };
  const ptp = ptpStatic(d) as { ipam: Record<string, unknown> };
  const chain = fullChain(d) as { plugins: { ipam?: Record<string, unknown> }[] };
  const cases: [string, unknown, number, string?, Record<string, string>?][] = [
    [
      "a million-element ranges list (push(...) overflowed the stack: 999)",
      {
        ...chain,
        plugins: [{
          ...chain.plugins[0],
          ipam: { ...chain.plugins[0].ipam, ranges: Array(1_000_000).fill(0) },
        }],
      },
      7,
    ],
    [
      "20,000 range sets (quadratic overlap check: 48 s)",
      {
        ...chain,
        plugins: [{
          ...chain.plugins[0],
          ipam: {
            ...chain.plugins[0].ipam,
            ranges: Array.from(
              { length: 20_000 },
              (_, i) => [{ subnet: `10.${i >> 8 & 255}.${i & 255}.0/24` }],
            ),
          },
        }],
      },
      7,
    ],
    [
      "duplicate static addresses (kernel EEXIST after the veth existed: 999)",
      {
        ...ptp,
        ipam: {
          ...ptp.ipam,
          addresses: [{ address: "10.98.0.5/24" }, { address: "10.98.0.5/24" }],
        },
      },
      7,
      "ptp",
    ],
    [
      "duplicate routes (kernel EEXIST after the veth existed: 999)",
      { ...ptp, ipam: { ...ptp.ipam, routes: [{ dst: "0.0.0.0/0" }, { dst: "0.0.0.0/0" }] } },
      7,
      "ptp",
    ],
    [
      "a 300-character network name (ENAMETOOLONG mid-ADD: 999)",
      { ...ptp, name: "n".repeat(300) },
      7,
      "ptp",
    ],
    [
      "portmap runtimeConfig past the mapping limit (no limit: one huge batch)",
      {
        ...chain,
        runtimeConfig: {
          portMappings: Array.from(
            { length: 5000 },
            (_, i) => ({ hostPort: i + 1, containerPort: 80 }),
          ),
        },
      },
      7,
    ],
    [
      "args.cni.labels refused by step 3 after steps 1-2 ran (left their store files)",
      { ...chain, args: { cni: { labels: 42 } } },
      7,
    ],
    [
      "a policyFile that cannot be read, after ptp ran (rollback made the state dir)",
      {
        ...policyFromFile(d),
        plugins: [(policyFromFile(d) as { plugins: unknown[] }).plugins[0], {
          type: "policy",
          policyFile: "/fuzz/missing.json",
        }],
      },
      7,
    ],
    [
      "a lone surrogate in CNI_IFNAME (its host-local owner read back as U+FFFD: leaked on rollback)",
      { ...chain, plugins: [...chain.plugins, chain.plugins[0]] },
      4,
      undefined,
      { CNI_IFNAME: "eth\ud800" },
    ],
  ];
  for (const [name, config, code, invokedAs, env] of cases) {
    await t.step(name, async () => {
      const out = await runInProcess(
        { ...fuzzEnv("ADD"), ...env },
        JSON.stringify(config),
        invokedAs,
      );
      assert.equal(out.code, 1);
      assert.equal(JSON.parse(out.stdout[0]).code, code, out.stdout[0]);
      assert.deepEqual(out.stderr, []);
      assert.deepEqual(out.left, []);
      assert.ok(out.ms < 2000, `took ${out.ms.toFixed(0)} ms`);
      // The rollback's DEL of steps that recorded nothing must not make the state directory.
      const made = out.effects.filter((e) => e.target.startsWith("/fuzz/state"));
      assert.deepEqual(made, []);
    });
  }
});
