/**
 * Throwaway worlds for the suite: each check run gets its own "host" netns
 * (`cnc<6 hex>-host`, lo up) standing in for the node, the pod netns it asks
 * for, and a temp dir (host-local dataDir, cnichain stateDir, libcni cache).
 * Plugins run inside the host netns by `ip netns exec`, with only the CNI
 * variables in their environment, as runtimes run them; nothing can touch the
 * machine's own network. {@linkcode withWorld} removes everything, also on failure.
 */
import { type RunOutput, runProgram } from "../test/helpers.ts";
import { allocationNames } from "../test/host_local.ts";

const IP = "/usr/sbin/ip";
const TIMEOUT = "/usr/bin/timeout";
const NETNS_DIR = "/var/run/netns";
/** A plugin run that takes longer is a hang. */
const PLUGIN_TIMEOUT_S = 30;

export type { RunOutput };

export interface Pod {
  name: string;
  path: string;
}

/** What one plugin exec differs in from the world's defaults. */
export interface Call {
  pod?: Pod;
  /** CNI_NETNS as is (overrides `pod`). */
  netns?: string;
  containerId?: string;
  ifname?: string;
  /** Variables to set (a value of undefined removes a default one). */
  env?: Record<string, string | undefined>;
  /** Raw stdin instead of the JSON of the config. */
  stdin?: string | Uint8Array;
}

let counter = 0;
/** Every netns prefix this process made, so the leftover check ignores other runs' namespaces. */
const made = new Set<string>();

function hex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function must(args: string[], what: string): Promise<RunOutput> {
  const out = await runProgram(args[0], { args: args.slice(1) });
  if (out.code !== 0) {
    throw new Error(`${what}: ${args.join(" ")} exited ${out.code}: ${out.stderr.trim()}`);
  }
  return out;
}

export class World {
  readonly pods: Pod[] = [];
  /** Set for every plugin exec besides the CNI variables (empty: as strict as a runtime may be). */
  baseEnv: Record<string, string> = {};
  /** A number unique in this process: subnets and names derive from it. */
  readonly n: number;

  private constructor(
    readonly prefix: string,
    readonly dir: string,
    /** The directory the plugins under test come from (CNI_PATH). */
    public cniPath: string,
  ) {
    this.n = counter++;
  }

  static async create(cniPath: string): Promise<World> {
    const dir = await Deno.makeTempDir({ prefix: "cnichain-conformance-" });
    const w = new World(`cnc${hex(3)}`, dir, cniPath);
    made.add(w.prefix);
    try {
      await must([IP, "netns", "add", w.host], "make the host netns");
      await must([IP, "-n", w.host, "link", "set", "lo", "up"], "bring lo up");
    } catch (err) {
      await w.close().catch(() => {});
      throw err;
    }
    return w;
  }

  get host(): string {
    return `${this.prefix}-host`;
  }
  get dataDir(): string {
    return `${this.dir}/data`;
  }
  get stateDir(): string {
    return `${this.dir}/state`;
  }
  get cacheDir(): string {
    return `${this.dir}/cache`;
  }
  /** A network name unique to this world. */
  get net(): string {
    return `net${this.prefix.slice(3)}`;
  }
  /** A bridge name unique to this world (<= 15 bytes). */
  get bridge(): string {
    return `br${this.prefix}`;
  }
  /** An IPv4 /24 unique to this world, as "10.A.B". */
  get v4(): string {
    return `10.${100 + ((this.n >> 8) & 0x7f)}.${this.n & 0xff}`;
  }
  get v6(): string {
    return `fd00:${(this.n + 0x100).toString(16)}:`;
  }

  async addPod(name = `pod${this.pods.length + 1}`): Promise<Pod> {
    const pod = { name: `${this.prefix}-${name}`, path: `${NETNS_DIR}/${this.prefix}-${name}` };
    await must([IP, "netns", "add", pod.name], "make a pod netns");
    this.pods.push(pod);
    return pod;
  }

  async deletePod(pod: Pod): Promise<void> {
    await must([IP, "netns", "delete", pod.name], "delete a pod netns");
  }

  /** Runs `file` (a plugin in CNI_PATH, by type, or an absolute path) inside the host netns. */
  exec(
    file: string,
    verb: string,
    conf: unknown,
    call: Call = {},
  ): Promise<RunOutput> {
    const env: Record<string, string | undefined> = {
      ...this.baseEnv,
      CNI_COMMAND: verb,
      CNI_CONTAINERID: call.containerId ?? `ctr-${this.prefix}`,
      CNI_NETNS: call.netns ?? call.pod?.path ?? `${NETNS_DIR}/${this.prefix}-nopod`,
      CNI_IFNAME: call.ifname ?? "eth0",
      CNI_PATH: this.cniPath,
      ...call.env,
    };
    const clean: Record<string, string> = {};
    for (const [k, v] of Object.entries(env)) if (v !== undefined) clean[k] = v;
    const path = file.startsWith("/") ? file : `${this.cniPath.split(":")[0]}/${file}`;
    return runProgram(TIMEOUT, {
      args: ["--kill-after=2", String(PLUGIN_TIMEOUT_S), IP, "netns", "exec", this.host, path],
      env: clean,
      stdin: call.stdin ?? JSON.stringify(conf),
    });
  }

  /** Runs a program (not a plugin) inside the host netns with `env` and `stdin`. */
  run(file: string, args: string[], stdin = "", env: Record<string, string> = {}) {
    return runProgram(TIMEOUT, {
      args: [
        "--kill-after=2",
        String(PLUGIN_TIMEOUT_S * 2),
        IP,
        "netns",
        "exec",
        this.host,
        file,
        ...args,
      ],
      env,
      stdin,
    });
  }

  /** The files host-local keeps for network `net` (addresses only). */
  allocations(net = this.net, dataDir = this.dataDir): Promise<string[]> {
    return allocationNames(`${dataDir}/${net}`);
  }

  async close(): Promise<void> {
    const problems: string[] = [];
    for (const name of [...this.pods.map((p) => p.name), this.host]) {
      const there = await Deno.stat(`${NETNS_DIR}/${name}`).then(() => true, () => false);
      if (!there) continue;
      const out = await runProgram(IP, { args: ["netns", "delete", name] });
      if (out.code !== 0) problems.push(`delete netns ${name}: ${out.stderr.trim()}`);
    }
    await Deno.remove(this.dir, { recursive: true }).catch((err) => {
      problems.push(`remove ${this.dir}: ${err}`);
    });
    if (problems.length) throw new Error(`world ${this.prefix} cleanup: ${problems.join("; ")}`);
  }
}

/** Runs `fn` in a fresh {@linkcode World} and removes the world afterwards, also on failure. */
export async function withWorld<T>(
  cniPath: string,
  fn: (w: World) => Promise<T>,
  baseEnv: Record<string, string> = {},
): Promise<T> {
  const w = await World.create(cniPath);
  w.baseEnv = baseEnv;
  try {
    return await fn(w);
  } finally {
    await w.close().catch((err) => console.error(String(err)));
  }
}

/** Every named netns this process made and did not remove (none, when all went well). */
export async function leftovers(): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(NETNS_DIR)) {
      if (made.has(e.name.slice(0, e.name.indexOf("-")))) out.push(e.name);
    }
  } catch {
    // No netns dir: nothing left.
  }
  return out;
}
