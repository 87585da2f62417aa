/**
 * Test helpers: a directory of fake external plugins (`fake_plugin.ts`), and
 * running the bundled program `dist/cnichain` the way a runtime runs a plugin.
 */
import { builtinRegistry, multiCallNames } from "../chain/registry.ts";

export const ROOT = new URL("../", import.meta.url).pathname;
export const BUNDLE = `${ROOT}dist/cnichain`;
const FAKE = `${ROOT}test/fake_plugin.ts`;

/**
 * A directory of links to the bundle under every name it answers to as a single plugin (the
 * registry's), and `cnichain` (dist/bin, beside it), as `cnichain install` lays it out. Always
 * the same paths: Deno keeps a code cache entry for each path a program runs from, so links made
 * afresh for every test would leave half a megabyte in the user's Deno cache directory each time.
 */
export async function multiCallDir(): Promise<string> {
  const dir = `${ROOT}dist/bin`;
  await Deno.mkdir(dir, { recursive: true });
  for (const name of [...multiCallNames(builtinRegistry()), "cnichain"]) {
    // Tests in parallel make the same links: one already there is as good as a new one.
    await Deno.symlink("../cnichain", `${dir}/${name}`).catch((err) => {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    });
  }
  return dir;
}

export interface Call {
  verb: string;
  type: string;
  env: Record<string, string>;
  stdin: Record<string, unknown>;
}

/** A temporary CNI_PATH directory of fake plugins. Remove it with `cleanup()`. */
export class FakePlugins {
  private constructor(readonly dir: string) {}

  static async create(types: string[]): Promise<FakePlugins> {
    const dir = await Deno.makeTempDir({ prefix: "cnichain-fake-" });
    const fakes = new FakePlugins(dir);
    for (const type of types) await fakes.add(type);
    return fakes;
  }

  async add(type: string): Promise<void> {
    const file = `${this.dir}/${type}`;
    await Deno.writeTextFile(
      file,
      `#!/usr/bin/env -S ${Deno.execPath()} run -A --no-config --no-lock --quiet ${FAKE}\n`,
    );
    await Deno.chmod(file, 0o755);
  }

  /** Sets what the plugin does per verb (see fake_plugin.ts). */
  async control(type: string, perVerb: Record<string, unknown>): Promise<void> {
    await Deno.writeTextFile(`${this.dir}/${type}.json`, JSON.stringify(perVerb));
  }

  /** Every call made to any of the plugins, in order. */
  async calls(): Promise<Call[]> {
    let text = "";
    try {
      text = await Deno.readTextFile(`${this.dir}/calls.log`);
    } catch {
      return [];
    }
    return text.split("\n").filter(Boolean).map((line) => JSON.parse(line));
  }

  /** Forgets the calls so far. */
  async resetCalls(): Promise<void> {
    await Deno.remove(`${this.dir}/calls.log`).catch(() => {});
  }

  async cleanup(): Promise<void> {
    await Deno.remove(this.dir, { recursive: true });
  }
}

export interface RunOutput {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON, when it is JSON. */
  json?: Record<string, unknown>;
}

/** Runs a program with exactly `env` (nothing inherited, as runtimes do) and `stdin`. */
export async function runProgram(
  file: string,
  opts: {
    env?: Record<string, string>;
    stdin?: string | Uint8Array;
    args?: string[];
    cwd?: string;
  } = {},
): Promise<RunOutput> {
  const child = new Deno.Command(file, {
    args: opts.args ?? [],
    env: opts.env ?? {},
    clearEnv: true,
    cwd: opts.cwd,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  const input = typeof opts.stdin === "string"
    ? new TextEncoder().encode(opts.stdin)
    : opts.stdin ?? new Uint8Array();
  await writer.write(input).catch(() => {});
  await writer.close().catch(() => {});
  const out = await child.output();
  const stdout = new TextDecoder().decode(out.stdout);
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(stdout);
  } catch {
    json = undefined;
  }
  return { code: out.code, stdout, stderr: new TextDecoder().decode(out.stderr), json };
}

/** Runs dist/cnichain as a CNI plugin: `verb` with the attachment's variables and `config` on stdin. */
export function runPlugin(
  verb: string,
  config: unknown,
  vars: Record<string, string> = {},
  file = BUNDLE,
): Promise<RunOutput> {
  return runProgram(file, {
    env: {
      CNI_COMMAND: verb,
      CNI_CONTAINERID: "ctr1",
      CNI_NETNS: "/var/run/netns/none",
      CNI_IFNAME: "eth0",
      CNI_PATH: "/nonexistent",
      ...vars,
    },
    stdin: typeof config === "string" || config instanceof Uint8Array
      ? config
      : JSON.stringify(config),
  });
}

/** Every file under `dir`, relative, sorted (an empty list: nothing was written). */
export async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(sub: string) {
    let entries: Deno.DirEntry[] = [];
    try {
      entries = await Array.fromAsync(Deno.readDir(`${dir}${sub}`));
    } catch {
      return;
    }
    for (const e of entries) {
      out.push(`${sub}/${e.name}`.slice(1));
      if (e.isDirectory) await walk(`${sub}/${e.name}`);
    }
  }
  await walk("");
  return out.sort();
}
