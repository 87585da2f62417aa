/**
 * Property-based hostile input, the reusable part: valid configs of every
 * built-in plugin and of chains, a seeded mutator (delete a field, change a
 * type, swap in a hostile string, truncate, duplicate, nest), and the
 * invariants every run must keep, checked in-process through `dispatch()`
 * with `memorySystem()`:
 * - no exception escapes `dispatch()`;
 * - a failure prints exactly one CNI error (`{cniVersion, code, msg[, details]}`)
 *   with a code from the spec's list or 100+ (999, "internal", is a bug);
 * - a failure leaves nothing behind in the memory system (no file, directory,
 *   link, address, route or nftables batch that is not undone).
 *
 * The generator is a small seeded one (mulberry32) rather than fast-check, so
 * that one integer replays a whole run and the shared lock file stays as is.
 * The soak runner calls {@linkcode runFuzz} with a count.
 */
import { dispatch } from "../../chain/dispatcher.ts";
import { builtinRegistry } from "../../chain/registry.ts";
import { memorySystem } from "../../chain/system_record.ts";
import type { Effect } from "../../chain/system.ts";
import { CHAIN_VERSIONS, type Json, validSeeds } from "./hostile_cases.ts";

/**
 * The spec's error codes; 100+ are plugin-specific (999 included: cnichain uses
 * it, as the reference does, for a full range or a failed CHECK; an exception
 * that is not a CniError is caught by the "internal error" on stderr instead).
 */
export const SPEC_CODES: readonly number[] = [1, 2, 3, 4, 5, 6, 7, 11, 50, 51];

export function acceptableCode(code: unknown): boolean {
  return typeof code === "number" && Number.isInteger(code) &&
    (SPEC_CODES.includes(code) || code >= 100);
}

/** Why `stdout` is not exactly one valid CNI error, or undefined when it is. */
export function cniErrorProblem(stdout: string, codes?: readonly number[]): string | undefined {
  let err: unknown;
  try {
    err = JSON.parse(stdout);
  } catch {
    return `stdout is not one JSON document: ${JSON.stringify(stdout.slice(0, 200))}`;
  }
  if (typeof err !== "object" || err === null || Array.isArray(err)) return "not an object";
  const e = err as Record<string, unknown>;
  const extra = Object.keys(e).filter((k) => !["cniVersion", "code", "msg", "details"].includes(k));
  if (extra.length) return `unexpected keys ${extra.join(", ")}`;
  if (typeof e.cniVersion !== "string" || !CHAIN_VERSIONS.includes(e.cniVersion)) {
    return `cniVersion ${JSON.stringify(e.cniVersion)}`;
  }
  if (!acceptableCode(e.code)) return `code ${JSON.stringify(e.code)} is not a spec code or 100+`;
  if (codes && !codes.includes(e.code as number)) {
    return `code ${e.code}, expected ${codes.join(" or ")} (msg ${JSON.stringify(e.msg)})`;
  }
  if (typeof e.msg !== "string" || e.msg === "") return "msg is not a non-empty string";
  if (e.details !== undefined && typeof e.details !== "string") return "details is not a string";
  return undefined;
}

// ---------------------------------------------------------------- random

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
}

/** The seed: CNICHAIN_TEST_SEED when set (to replay), else a fresh one. */
export function fuzzSeed(): number {
  const given = Deno.env.get("CNICHAIN_TEST_SEED");
  if (given !== undefined && given !== "") {
    const n = Number(given);
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
      throw new Error(`CNICHAIN_TEST_SEED: must be an integer from 0 to 4294967295 (got ${given})`);
    }
    return n;
  }
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

/** An integer from the environment variable `name`, or `fallback`. */
export function envCount(name: string, fallback: number): number {
  const given = Deno.env.get(name);
  if (given === undefined || given === "") return fallback;
  const n = Number(given);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name}: must be a count (got ${given})`);
  return n;
}

// ---------------------------------------------------------------- mutation

/** Strings a runtime or an attacker might put anywhere. */
export const HOSTILE_STRINGS: readonly string[] = [
  "",
  " ",
  "; rm -rf /tmp/cnichain-pwned",
  "$(touch /tmp/cnichain-pwned)",
  "`touch /tmp/cnichain-pwned`",
  "a | cat /etc/passwd",
  "a\nb",
  "a\r\nb",
  "a\tb",
  "..",
  "../../../../etc/passwd",
  "/../../etc",
  "./relative",
  "relative/path",
  "a\u0000b",
  "\u0000",
  "\ud800",
  "\u202e\u0644\u0627",
  "%s%n%x",
  "${IFS}",
  "__proto__",
  "constructor",
  "toString",
  "x".repeat(5000),
  "é".repeat(600),
  "0x10",
  "1e400",
  "-1",
  "10.0.0.1/33",
  "::ffff:10.0.0.1",
  "999.999.999.999",
  "/dev/null",
  "/proc/self/fd/0",
];

const WRONG_TYPES: readonly Json[] = [
  0,
  -1,
  1.5,
  65536,
  4294967296,
  1e300,
  true,
  false,
  null,
  "",
  "true",
  "1",
  [],
  [null],
  {},
  { "": "" },
];

type Path = (string | number)[];

function allPaths(value: Json, at: Path = [], out: Path[] = []): Path[] {
  out.push(at);
  if (Array.isArray(value)) value.forEach((v, i) => allPaths(v, [...at, i], out));
  else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) allPaths(v, [...at, k], out);
  }
  return out;
}

function getAt(value: Json, path: Path): Json {
  let v: Json = value;
  for (const p of path) v = (v as Record<string, Json>)[p as string];
  return v;
}

/** `value` with the node at `path` replaced by `f(node)` (undefined deletes it). */
function setAt(value: Json, path: Path, f: (node: Json) => Json | undefined): Json {
  if (path.length === 0) return f(value) ?? null;
  const [head, ...rest] = path;
  if (Array.isArray(value)) {
    const copy = [...value];
    if (rest.length > 0) copy[head as number] = setAt(copy[head as number], rest, f);
    else {
      const replaced = f(copy[head as number]);
      if (replaced === undefined) copy.splice(head as number, 1);
      else copy[head as number] = replaced;
    }
    return copy;
  }
  const copy = { ...(value as Record<string, Json>) };
  if (rest.length === 0) {
    const replaced = f(copy[head as string]);
    if (replaced === undefined) delete copy[head as string];
    else copy[head as string] = replaced;
  } else copy[head as string] = setAt(copy[head as string], rest, f);
  return copy;
}

export interface Mutant {
  /** How the seed was changed, to show in a failure. */
  what: string;
  stdin: string;
}

/** Applies 1 to 3 random mutations to `config`. */
export function mutate(rng: Rng, config: Json): Mutant {
  let value = config;
  const steps: string[] = [];
  const rounds = 1 + rng.int(3);
  for (let r = 0; r < rounds; r++) {
    const paths = allPaths(value);
    const path = rng.pick(paths.length > 1 ? paths.slice(1) : paths);
    const where = path.join(".") || "(top)";
    const kind = rng.int(7);
    if (kind === 0) {
      value = setAt(value, path, () => undefined);
      steps.push(`delete ${where}`);
    } else if (kind === 1) {
      const to = rng.pick(WRONG_TYPES);
      value = setAt(value, path, () => to);
      steps.push(`${where} = ${JSON.stringify(to)}`);
    } else if (kind === 2) {
      const to = rng.pick(HOSTILE_STRINGS);
      value = setAt(value, path, () => to);
      steps.push(`${where} = ${JSON.stringify(to).slice(0, 60)}`);
    } else if (kind === 3) {
      const node = getAt(value, path);
      const times = rng.pick([1, 2, 10, 70]);
      value = setAt(value, path, () => {
        let n = node;
        for (let i = 0; i < times; i++) n = rng.int(2) ? [n] : { x: n };
        return n;
      });
      steps.push(`nest ${where} ${times} deep`);
    } else if (kind === 4) {
      const parent = getAt(value, path.slice(0, -1));
      const node = getAt(value, path);
      if (Array.isArray(parent)) {
        value = setAt(value, path.slice(0, -1), (p) => [...(p as Json[]), node, node]);
        steps.push(`duplicate ${where}`);
      } else {
        value = setAt(value, path, (n) => Array.isArray(n) ? [...n, ...n] : [n, n]);
        steps.push(`${where} as a list of two`);
      }
    } else if (kind === 5) {
      const extra = rng.pick(["__proto__", "constructor", "cniVersion", "type", "plugins", "zz"]);
      const to = rng.pick([...WRONG_TYPES, ...HOSTILE_STRINGS.slice(0, 8)]);
      value = setAt(
        value,
        path,
        (n) => n !== null && typeof n === "object" && !Array.isArray(n) ? { ...n, [extra]: to } : n,
      );
      steps.push(`add ${where}.${extra} = ${JSON.stringify(to).slice(0, 40)}`);
    } else {
      const node = getAt(value, path);
      const to = typeof node === "number"
        ? rng.pick([0, -node, node + 1, node * 1000, Number.MAX_SAFE_INTEGER])
        : typeof node === "string"
        ? rng.pick([node.toUpperCase(), `${node}x`, node.slice(1), `${node}/..`, ` ${node}`])
        : typeof node === "boolean"
        ? !node
        : rng.pick(WRONG_TYPES);
      value = setAt(value, path, () => to);
      steps.push(`tweak ${where} = ${JSON.stringify(to).slice(0, 40)}`);
    }
  }
  let stdin = JSON.stringify(value);
  const textual = rng.int(10);
  if (textual === 0) {
    const at = rng.int(stdin.length);
    stdin = stdin.slice(0, at);
    steps.push(`truncate at ${at}`);
  } else if (textual === 1) {
    // A duplicate key in the text: JSON.parse keeps the last, as Go's decoder does.
    stdin = stdin.replace(/^\{/, '{"cniVersion":"0.0.0-bad",');
    steps.push("duplicate key cniVersion in the text");
  }
  return { what: steps.join("; "), stdin };
}

// ---------------------------------------------------------------- in-process run

export const FUZZ_NETNS = "/var/run/netns/cnichain-fuzz-pod";
export const FUZZ_POLICY_FILE = "/fuzz/policy.json";

export interface InProcessOutcome {
  code: number;
  stdout: string[];
  stderr: string[];
  effects: Effect[];
  /** What the memory system still holds after the run, one line each (empty: nothing). */
  left: string[];
  ms: number;
}

/**
 * host-local keeps its round-robin hint (and so its store directory) when a
 * rolled-back ADD releases the address, as the reference does: the next ADD
 * should not hand the same address out again at once. cnichain's seal of the
 * store stays with it (store.ts). Only a step that ran leaves them (under
 * whatever dataDir the config names); a config refused before any step runs
 * leaves nothing.
 */
const HINT = /^file \/.*\/(last_reserved_ip\.\d+|\.cnichain\/seal)$/;

/** The memory system's net state: files and directories written, kernel objects not undone. */
function leftovers(system: ReturnType<typeof memorySystem>): string[] {
  const left: string[] = [];
  for (const e of system.effects) {
    if (e.op === "create directory") left.push(`directory ${e.target}`);
    if ((e.op === "write file" || e.op === "create file") && system.files.stat(e.target)) {
      left.push(`file ${e.target}`);
    }
  }
  const stepRan = system.effects.some((e) =>
    e.op !== "create directory" && e.op !== "append log lines to"
  );
  // A bridge stays once made, as the reference's does: other pods share it.
  const bridges = new Set(
    system.effects.filter((e) => e.op === "create bridge").map((e) => `host link ${e.target}`),
  );
  // A rollback removes what the steps made but not the (empty) directories they made it in.
  if (stepRan) {
    const kept = left.filter((l) => !HINT.test(l) && !l.startsWith("directory "));
    left.length = 0;
    left.push(...kept);
  }
  for (const [path, ns] of system.kernel.spaces) {
    const where = path || "host";
    for (const l of ns.links()) {
      if (l.name !== "lo" && !bridges.has(`${where} link ${l.name}`)) {
        left.push(`${where} link ${l.name}`);
      }
    }
    const bridgeIndexes = new Set(
      ns.links().filter((l) => bridges.has(`${where} link ${l.name}`)).map((l) => l.index),
    );
    for (const a of ns.addresses()) {
      if (!bridgeIndexes.has(a.index)) left.push(`${where} address ${JSON.stringify(a)}`);
    }
    for (const r of [...ns.routes(4), ...ns.routes(6)]) {
      if (r.oif === undefined || !bridgeIndexes.has(r.oif)) {
        left.push(`${where} route ${JSON.stringify(r)}`);
      }
    }
  }
  // nftables elements are not counted: the memory kernel keeps no table to list, so a DEL
  // there cannot see (and delete) what an ADD added; the real-process runs check nftables.
  return [...new Set(left)];
}

const registry = builtinRegistry();

/** Runs one invocation in-process on a fresh memory system (the pod netns is known to it). */
export async function runInProcess(
  env: Record<string, string>,
  stdin: string | Uint8Array,
  invokedAs?: string,
): Promise<InProcessOutcome> {
  const system = memorySystem();
  system.kernel.known.add(FUZZ_NETNS);
  // A node with br_netfilter loaded, as policy needs; the model starts with no sysctls.
  for (const key of ["net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"]) {
    system.kernel.host().writeSysctl(key, "0");
  }
  // The policy file the seeds name.
  await system.files.writeAtomic(FUZZ_POLICY_FILE, "[]");
  system.effects.length = 0;
  const bytes = typeof stdin === "string" ? new TextEncoder().encode(stdin) : stdin;
  let at = 0;
  const stdout: string[] = [];
  const stderr: string[] = [];
  const began = performance.now();
  const code = await dispatch(
    {
      getEnv: (n) => env[n],
      stdin: {
        readSync(p: Uint8Array): number | null {
          if (at >= bytes.length) return null;
          const n = Math.min(p.length, bytes.length - at);
          p.set(bytes.subarray(at, at + n));
          at += n;
          return n;
        },
      },
      stdout: (t) => stdout.push(t),
      stderr: (t) => stderr.push(t),
      invokedAs,
    },
    registry,
    { system, observer: {}, execTimeoutMs: 2000, baseEnv: {} },
  );
  return {
    code,
    stdout,
    stderr,
    effects: system.effects,
    left: code === 0 ? [] : leftovers(system),
    ms: performance.now() - began,
  };
}

/** Why an in-process outcome breaks an invariant, or undefined. */
export function outcomeProblem(out: InProcessOutcome, verb: string): string | undefined {
  if (out.ms > 5000) return `took ${out.ms.toFixed(0)} ms`;
  if (out.stderr.some((s) => s.includes("internal error"))) {
    return `internal error on stderr: ${out.stderr.join(" ").slice(0, 300)}`;
  }
  if (out.code === 0) {
    if (verb === "ADD" || verb === "VERSION") {
      if (out.stdout.length !== 1) return `success with ${out.stdout.length} stdout writes`;
      try {
        JSON.parse(out.stdout[0]);
      } catch {
        return "success with stdout that is not JSON";
      }
    }
    return undefined;
  }
  if (out.stdout.length !== 1) return `failure with ${out.stdout.length} stdout writes`;
  const problem = cniErrorProblem(out.stdout[0]);
  if (problem) return `${problem}: ${out.stdout[0].slice(0, 300)}`;
  // DEL and GC run every step past a failure and may make the (empty) state directories they
  // lock in; anything else they leave is a leak.
  const left = verb === "DEL" || verb === "GC"
    ? out.left.filter((l) => !l.startsWith("directory "))
    : out.left;
  if (left.length) return `a failed ${verb} left ${left.slice(0, 5).join("; ")}`;
  return undefined;
}

export interface FuzzFigures {
  seed: number;
  cases: number;
  failures: number;
  /** The first failures, each replayable: seed, case number, mutation, problem. */
  examples: string[];
  /** How many cases succeeded (a mutation that was still a valid config). */
  accepted: number;
  ms: number;
}

const VERBS = ["ADD", "ADD", "ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"];

/** The base env of a fuzz case for `verb`. */
export function fuzzEnv(verb: string): Record<string, string> {
  return {
    CNI_COMMAND: verb,
    CNI_CONTAINERID: "fuzz1",
    CNI_NETNS: FUZZ_NETNS,
    CNI_IFNAME: "eth0",
    CNI_PATH: "/nonexistent-cnichain-fuzz",
  };
}

/**
 * Runs `count` mutated cases in-process from `seed`; case i uses the rng
 * seeded with `seed + i`, so one case can be replayed alone.
 */
export async function runFuzz(
  count: number,
  seed = fuzzSeed(),
  onFailure: (line: string) => void = () => {},
): Promise<FuzzFigures> {
  const seeds = validSeeds({
    stateDir: "/fuzz/state",
    dataDir: "/fuzz/data",
    logFile: "/fuzz/log/cnichain.log",
    policyFile: "/fuzz/policy.json",
  });
  const figures: FuzzFigures = { seed, cases: 0, failures: 0, examples: [], accepted: 0, ms: 0 };
  const began = performance.now();
  for (let i = 0; i < count; i++) {
    const line = await fuzzOne(seed, i, seeds);
    figures.cases++;
    if (line === "accepted") figures.accepted++;
    else if (line) {
      figures.failures++;
      if (figures.examples.length < 20) figures.examples.push(line);
      onFailure(line);
    }
  }
  figures.ms = performance.now() - began;
  return figures;
}

/** One fuzz case: "" when it keeps the invariants, "accepted" when it succeeded, else the problem. */
export async function fuzzOne(
  seed: number,
  i: number,
  seeds: ReturnType<typeof validSeeds>,
): Promise<string> {
  const c = fuzzCase(seed, i, seeds);
  let out: InProcessOutcome;
  try {
    out = await runInProcess(c.env, c.stdin, c.invokedAs);
  } catch (err) {
    return `seed ${seed} case ${i} (${c.label}: ${c.what}): dispatch threw ${
      err instanceof Error ? err.stack : err
    }`;
  }
  const problem = outcomeProblem(out, c.env.CNI_COMMAND);
  if (problem) return `seed ${seed} case ${i} (${c.label}: ${c.what}): ${problem}`;
  return out.code === 0 ? "accepted" : "";
}

export interface FuzzCase {
  label: string;
  what: string;
  env: Record<string, string>;
  stdin: string;
  invokedAs?: string;
}

/** Case `i` of the run from `seed`: a valid seed config, a verb and its mutation. */
export function fuzzCase(seed: number, i: number, seeds: ReturnType<typeof validSeeds>): FuzzCase {
  const rng = new Rng((seed + i * 0x9e3779b1) >>> 0);
  const base = rng.pick(seeds);
  const verb = rng.pick(VERBS);
  const version = rng.int(4) === 0 ? rng.pick(CHAIN_VERSIONS) : "1.1.0";
  const config = { ...(base.config as Record<string, Json>), cniVersion: version };
  const m = mutate(rng, config);
  const env = fuzzEnv(verb);
  if (base.ifname) env.CNI_IFNAME = base.ifname;
  if (rng.int(8) === 0) {
    const key = rng.pick(Object.keys(env).filter((k) => k !== "CNI_COMMAND"));
    env[key] = rng.pick(HOSTILE_STRINGS).replaceAll("\u0000", "");
    m.what += `; ${key}=${JSON.stringify(env[key]).slice(0, 40)}`;
  }
  return {
    label: `${base.name} ${verb}`,
    what: m.what,
    env,
    stdin: m.stdin,
    invokedAs: base.invokedAs,
  };
}
