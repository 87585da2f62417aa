/**
 * Helpers for the IPAM tests: seeded randomness (the seed is printed and can
 * be replayed with CNICHAIN_TEST_SEED), in-process runs on the memory system,
 * and runs of the bundled program or a reference plugin as separate processes.
 */
import { parseEnv } from "../chain/spec/env.ts";
import type { ConfigObject } from "../chain/spec/config.ts";
import type { JsonObject, Verb } from "../chain/spec/types.ts";
import { runBuiltin } from "../chain/invoke.ts";
import { builtinRegistry } from "../chain/registry.ts";
import type { InvokeContext, Plugin } from "../chain/plugin.ts";
import type { System } from "../chain/system.ts";
import { indexName, OWN_DIR, parseOwner, SEAL_FILE } from "../chain/plugins/host_local/store.ts";
import { parseIp } from "../chain/ip.ts";
import { RealFiles } from "../chain/system.ts";

/** A seeded generator of numbers in [0, 1); the seed is logged so a failure can be replayed. */
export function seededRandom(
  test: string,
): { seed: number; next: () => number; int: (n: number) => number } {
  const given = Deno.env.get("CNICHAIN_TEST_SEED");
  const seed = given ? Number(given) >>> 0 : crypto.getRandomValues(new Uint32Array(1))[0];
  console.log(`${test}: seed ${seed} (replay with CNICHAIN_TEST_SEED=${seed})`);
  let state = seed;
  // mulberry32: small, fast and good enough to pick test cases.
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { seed, next, int: (n) => Math.floor(next() * n) };
}

export interface CallOptions {
  id?: string;
  ifname?: string;
  args?: string;
}

/** The CNI environment of one call, as parseEnv reads it from a runtime. */
export function envFor(verb: Verb, opts: CallOptions = {}): Record<string, string> {
  return {
    CNI_COMMAND: verb,
    CNI_CONTAINERID: opts.id ?? "c1",
    CNI_NETNS: "/var/run/netns/test",
    CNI_IFNAME: opts.ifname ?? "eth0",
    CNI_PATH: "/opt/cni/bin",
    CNI_ARGS: opts.args ?? "",
  };
}

export function contextFor(system: System): InvokeContext {
  return {
    system,
    registry: builtinRegistry(),
    observer: {},
    execTimeoutMs: 10000,
    stepPrefix: "",
    baseEnv: {},
  };
}

/** Runs a built-in plugin in-process, as the dispatcher would. */
export function call(
  plugin: Plugin,
  system: System,
  verb: Verb,
  config: ConfigObject,
  opts: CallOptions = {},
): Promise<JsonObject | undefined> {
  const vars = envFor(verb, opts);
  return runBuiltin(
    plugin,
    verb,
    parseEnv((n) => vars[n]),
    structuredClone(config),
    contextFor(system),
  );
}

export const ROOT = new URL("../", import.meta.url).pathname;
export const BUNDLE = `${ROOT}dist/cnichain`;
export const REFERENCE_DIR = "/usr/lib/cni";

/** The bundled program, built first when it is missing (`deno task test` builds it). */
export async function ensureBundle(): Promise<string> {
  try {
    await Deno.stat(BUNDLE);
    return BUNDLE;
  } catch {
    // Missing: build it, one test file at a time.
  }
  await Deno.mkdir(`${ROOT}dist`, { recursive: true });
  const lock = await Deno.open(`${ROOT}dist/.bundle.lock`, { write: true, create: true });
  try {
    await lock.lock(true);
    const exists = await Deno.stat(BUNDLE).then(() => true, () => false);
    if (!exists) {
      const out = await new Deno.Command(Deno.execPath(), { args: ["task", "bundle"], cwd: ROOT })
        .output();
      if (!out.success) {
        throw new Error(`deno task bundle failed: ${new TextDecoder().decode(out.stderr)}`);
      }
    }
  } finally {
    lock.close();
  }
  return BUNDLE;
}

/** Makes a temporary directory for `fn` and removes it afterwards, even when `fn` fails. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "cnichain-ipam-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

export interface ProcessRun {
  code: number;
  signal: Deno.Signal | null;
  /** stdout parsed as JSON, or undefined when empty. */
  out?: JsonObject;
  stderr: string;
}

/** Starts `bin` as a plugin, with only the CNI variables in its environment, as runtimes do. */
export function spawnPlugin(
  bin: string,
  verb: Verb,
  config: ConfigObject,
  opts: CallOptions = {},
): Deno.ChildProcess {
  const child = new Deno.Command(bin, {
    env: envFor(verb, opts),
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  writer.write(new TextEncoder().encode(JSON.stringify(config))).then(() => writer.close()).catch(
    () => {},
  );
  return child;
}

export async function finish(child: Deno.ChildProcess): Promise<ProcessRun> {
  const { code, signal, stdout, stderr } = await child.output();
  const text = new TextDecoder().decode(stdout).trim();
  return {
    code,
    signal,
    out: text ? JSON.parse(text) : undefined,
    stderr: new TextDecoder().decode(stderr),
  };
}

export function runPlugin(
  bin: string,
  verb: Verb,
  config: ConfigObject,
  opts: CallOptions = {},
): Promise<ProcessRun> {
  return finish(spawnPlugin(bin, verb, config, opts));
}

/**
 * A store directory's files and their bytes as text, temporary files included, and those of its
 * subdirectories as `<subdirectory>/<name>`.
 */
export async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (sub: string) => {
    for await (const entry of Deno.readDir(`${dir}${sub}`)) {
      const name = `${sub}/${entry.name}`.slice(1);
      if (entry.isDirectory) await walk(`${sub}/${entry.name}`);
      else {
        const text = await Deno.readTextFile(`${dir}/${name}`).catch(() => undefined);
        if (text !== undefined) out[name] = text; // else removed while we looked
      }
    }
  };
  try {
    await walk("");
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b)));
}

/**
 * The names of a store's allocation files on disk: everything but its lock, its cursors and
 * cnichain's own files, so that a stray temporary file shows up as an allocation too.
 */
export async function allocationNames(dir: string): Promise<string[]> {
  return Object.keys(await snapshot(dir)).filter((name) =>
    !isCnichainFile(name) && name !== "lock" && !name.startsWith("last_reserved_ip.")
  );
}

/** cnichain's own files in a store: the owners' indexes and the seal (store.ts). */
export function isCnichainFile(name: string): boolean {
  return name.startsWith(`${OWN_DIR}/`);
}

/**
 * What is wrong with the indexes of a sealed store (`files`: its names and text): each must
 * name exactly the addresses whose files hold its owner, and every owner of a file must have
 * one. (An unsealed store's indexes may be stale: the next full read rewrites them.)
 */
export function indexProblems(files: Record<string, string>): string[] {
  const problems: string[] = [];
  const wanted = new Map<string, string[]>();
  for (const [name, text] of Object.entries(files)) {
    if (!parseIp(name)) continue;
    const owner = parseOwner(text);
    if (!owner) continue;
    const index = indexName(owner);
    wanted.set(index, [...(wanted.get(index) ?? []), name].sort());
  }
  for (const [name, text] of Object.entries(files)) {
    if (!isCnichainFile(name) || name === SEAL_FILE) continue;
    const index = JSON.parse(text) as { owner: string; addresses: string[] };
    if (JSON.stringify(index.addresses) !== JSON.stringify(wanted.get(name) ?? [])) {
      problems.push(
        `${name} names ${index.addresses.join(", ")}, the files say ${wanted.get(name)}`,
      );
    }
  }
  for (const name of wanted.keys()) {
    if (files[name] === undefined) problems.push(`no index ${name} for ${wanted.get(name)}`);
  }
  return problems;
}

/** Whether a store directory on disk is sealed: its time is the one its seal holds. */
export async function sealedOnDisk(dir: string): Promise<boolean> {
  const seal = await Deno.readTextFile(`${dir}/${SEAL_FILE}`).catch(() => undefined);
  return seal !== undefined && seal === await new RealFiles().dirToken(dir);
}

/**
 * A store's files as the reference plugin sees them: cnichain's indexes and seal left out,
 * after checking the indexes when `sealed` (an Error names every problem).
 */
export function referenceView(
  files: Record<string, string>,
  sealed = false,
): Record<string, string> {
  const problems = sealed ? indexProblems(files) : [];
  if (problems.length) throw new Error(problems.join("; "));
  return Object.fromEntries(Object.entries(files).filter(([name]) => !isCnichainFile(name)));
}
