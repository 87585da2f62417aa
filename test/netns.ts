/**
 * The kernel test harness: throwaway network namespaces, the plugins under
 * test run inside them as a runtime runs them, and observers that read what
 * the kernel holds (`ip -j`, `nft -j`, `ping`).
 *
 * Each test gets a {@linkcode Lab}: a "host" netns (lo up) standing in for the
 * machine's own network, pod netns as the runtime would make them, and a temp
 * dir for the host-local store, cnichain's state and the plugin links. The
 * plugin runs INSIDE the host netns (`ip netns exec`), so nothing it does can
 * reach the machine's real network, and every name carries a random
 * `cnt<6 hex>` prefix so test files running in parallel never collide.
 * {@linkcode withLab} removes everything it made, also when the test fails.
 *
 * Which plugins run is chosen by `CNICHAIN_TEST_PLUGINS`:
 * - unset (or `cnichain`): the bundle `dist/cnichain` (`deno task bundle`),
 *   linked as bridge, ptp, loopback, host-local and static in a temp
 *   CNI_PATH dir, at cniVersion 1.0.0 and 1.1.0;
 * - `reference`: Debian's reference plugins in /usr/lib/cni (1.1.1, which
 *   stop at spec 1.0.0), at cniVersion 1.0.0.
 *
 * `ip`, `nft`, `ping` and `iptables` are for the tests only: plugins run with
 * nothing but the CNI variables in their environment, so they cannot find
 * them.
 */
import assert from "node:assert/strict";
import { BUNDLE, multiCallDir, type RunOutput, runProgram } from "./helpers.ts";
import { allocationNames } from "./host_local.ts";

const IP = "/usr/sbin/ip";
const NFT = "/usr/sbin/nft";
const PING = "/usr/bin/ping";
const IPTABLES = "/usr/sbin/iptables";
const IP6TABLES = "/usr/sbin/ip6tables";
const CAT = "/usr/bin/cat";
const TIMEOUT = "/usr/bin/timeout";
const TEE = "/usr/bin/tee";
const SH = "/bin/sh";
/** A plugin run that takes longer is a hang: fail it rather than the whole suite's time limit. */
const PLUGIN_TIMEOUT_S = 30;
const REFERENCE_DIR = "/usr/lib/cni";
const NETNS_DIR = "/var/run/netns";

export type Mode = "reference" | "cnichain";

function selectMode(): Mode {
  const value = Deno.env.get("CNICHAIN_TEST_PLUGINS") ?? "";
  if (value === "reference") return "reference";
  if (value === "" || value === "cnichain") return "cnichain";
  throw new Error(
    `CNICHAIN_TEST_PLUGINS: must be "reference", "cnichain" or unset (got ${
      JSON.stringify(value)
    })`,
  );
}

/** The implementation under test. */
export const MODE: Mode = selectMode();

/** The spec versions kernel tests run at: the Debian reference plugins (1.1.1) stop at 1.0.0. */
export const KERNEL_VERSIONS: readonly string[] = MODE === "reference"
  ? ["1.0.0"]
  : ["1.0.0", "1.1.0"];

/** Kernel tests need root (netns, links, nftables); CI and the dev VMs run as root. */
export const IS_ROOT = Deno.uid() === 0;

let skipNoted = false;

/**
 * Registers a kernel test that runs `fn` once per spec version in
 * {@linkcode KERNEL_VERSIONS} (only those also in `versions`, when given),
 * each time in a fresh {@linkcode Lab}. It is skipped, with the reason
 * printed, when not root, when `only` names the other implementation, or when
 * none of `versions` is tested.
 */
export function kernelTest(
  name: string,
  fn: (lab: Lab, version: string) => Promise<void>,
  opts: { only?: Mode; versions?: readonly string[] } = {},
): void {
  const versions = KERNEL_VERSIONS.filter((v) => !opts.versions || opts.versions.includes(v));
  let why = "";
  if (!IS_ROOT) why = "kernel tests: they need root (network namespaces, links, nftables)";
  else if (opts.only && opts.only !== MODE) {
    why = `runs only with the ${opts.only} plugins (CNICHAIN_TEST_PLUGINS selects ${MODE})`;
  } else if (versions.length === 0) {
    why = `runs only at cniVersion ${
      opts.versions!.join(", ")
    } (the ${MODE} plugins are tested at ${KERNEL_VERSIONS.join(", ")})`;
  }
  if (why && (!skipNoted || IS_ROOT)) {
    console.warn(
      IS_ROOT ? `skipping kernel test "${name}": ${why}` : `skipping this file's ${why}`,
    );
    skipNoted = true;
  }
  Deno.test({
    name: `${name} [${MODE}]`,
    ignore: why !== "",
    fn: async (t) => {
      for (const version of versions) {
        await t.step(`cniVersion ${version}`, () => withLab((lab) => fn(lab, version)));
      }
    },
  });
}

/** A pod network namespace made by the test, as a runtime would make it. */
export interface Pod {
  name: string;
  /** `/var/run/netns/<name>`: what CNI_NETNS carries. */
  path: string;
}

/** How one plugin run differs from the defaults. */
export interface CniCall {
  /** The pod whose path goes in CNI_NETNS. */
  pod?: Pod;
  /** CNI_NETNS given as is (a deleted pod's path, or "" for DEL without a netns). */
  netns?: string;
  /** CNI_CONTAINERID; default `ctr-<pod name without the lab prefix>`. */
  containerId?: string;
  /** CNI_IFNAME; default `eth0`. */
  ifname?: string;
  /** More variables on top of the CNI ones. */
  env?: Record<string, string>;
  /** Runs the plugin with /proc/sys read-only, as in some containers. */
  readOnlyProcSys?: boolean;
}

/** Runs a command (not a plugin), failing with its stderr when it exits non-zero. */
export async function run(args: string[], what: string): Promise<RunOutput> {
  const out = await runProgram(args[0], { args: args.slice(1) });
  if (out.code !== 0) {
    throw new Error(`${what}: ${args.join(" ")} exited ${out.code}: ${out.stderr.trim()}`);
  }
  return out;
}

/** `bytes` random bytes as hex: name prefixes that parallel tests never share. */
export function randomHex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * One test's world: the host netns, its pods and its temp dir. Make it with
 * {@linkcode withLab}, which also takes it down.
 */
export class Lab {
  readonly pods: Pod[] = [];
  #closing?: Promise<void>;
  readonly #running = new Set<Promise<RunOutput>>();

  private constructor(
    /** `cnt<6 hex>`: the prefix of every netns this lab makes. */
    readonly prefix: string,
    /** The temp dir holding data/ and state/. */
    readonly dir: string,
    /** CNI_PATH: the reference plugins' dir, or links to the bundle under their names. */
    readonly cniPath: string,
  ) {}

  /** The netns the plugins run in, standing in for the node's own network. */
  get host(): string {
    return `${this.prefix}-host`;
  }

  /** The host-local `dataDir`. */
  get dataDir(): string {
    return `${this.dir}/data`;
  }

  /** cnichain's `stateDir`. */
  get stateDir(): string {
    return `${this.dir}/state`;
  }

  static async create(): Promise<Lab> {
    if (MODE === "cnichain") {
      await Deno.stat(BUNDLE).catch(() => {
        throw new Error(`${BUNDLE} is missing: run "deno task bundle" first`);
      });
    }
    const bin = MODE === "cnichain" ? await multiCallDir() : REFERENCE_DIR;
    const dir = await Deno.makeTempDir({ prefix: "cnichain-kernel-" });
    const lab = new Lab(`cnt${randomHex(3)}`, dir, bin);
    try {
      await Deno.mkdir(lab.dataDir);
      await Deno.mkdir(lab.stateDir);
      await run([IP, "netns", "add", lab.host], "make the host netns");
      await run([IP, "-n", lab.host, "link", "set", "lo", "up"], "bring lo up in the host netns");
    } catch (err) {
      await lab.close().catch(() => {});
      throw err;
    }
    return lab;
  }

  /** Makes a pod netns `<prefix>-<name>`; its lo stays down, as a runtime leaves it. */
  async addPod(name = `pod${this.pods.length + 1}`): Promise<Pod> {
    this.#open();
    const pod = { name: `${this.prefix}-${name}`, path: `${NETNS_DIR}/${this.prefix}-${name}` };
    await run([IP, "netns", "add", pod.name], "make a pod netns");
    this.pods.push(pod);
    return pod;
  }

  /** Deletes a pod netns, as a runtime does before (or instead of) calling DEL. */
  async deletePod(pod: Pod): Promise<void> {
    await run([IP, "netns", "delete", pod.name], "delete a pod netns");
  }

  /** The plugin file for a config `type`. */
  pluginFile(type: string): string {
    if (MODE === "cnichain" && type === "cnichain") return BUNDLE;
    return `${this.cniPath}/${type}`;
  }

  /**
   * Runs the plugin named by `conf.type` inside the host netns, with only the
   * CNI variables in its environment (as runtimes do) and `conf` on stdin.
   */
  cni(verb: string, conf: Record<string, unknown>, call: CniCall = {}): Promise<RunOutput> {
    const netns = call.netns ?? call.pod?.path ?? "";
    const containerId = call.containerId ??
      `ctr-${call.pod ? call.pod.name.slice(this.prefix.length + 1) : "none"}`;
    this.#open();
    // `ip netns exec` execs the plugin in its own place, so `timeout` ends the plugin itself.
    const run = runProgram(TIMEOUT, {
      args: [
        "--kill-after=2",
        String(PLUGIN_TIMEOUT_S),
        IP,
        "netns",
        "exec",
        this.host,
        // `ip netns exec` gives the plugin a mount namespace of its own: the remount stays there.
        ...(call.readOnlyProcSys
          ? [
            SH,
            "-c",
            '/usr/bin/mount --bind /proc/sys /proc/sys && /usr/bin/mount -o remount,bind,ro /proc/sys && exec "$0"',
          ]
          : []),
        this.pluginFile(String(conf.type)),
      ],
      env: {
        CNI_COMMAND: verb,
        CNI_CONTAINERID: containerId,
        CNI_NETNS: netns,
        CNI_IFNAME: call.ifname ?? "eth0",
        CNI_PATH: this.cniPath,
        ...call.env,
      },
      stdin: JSON.stringify(conf),
    });
    // close() waits for it: a plugin still running would write into the removed temp dir again.
    this.#running.add(run);
    run.finally(() => this.#running.delete(run)).catch(() => {});
    return run;
  }

  /** Throws once the lab is being closed (nothing new may start in it). */
  #open(): void {
    if (this.#closing) throw new Error(`lab ${this.prefix} is closed`);
  }

  /**
   * A plugin's network config at `version`: the network name, and in cnichain
   * mode the lab's stateDir (the reference plugins have no such field).
   */
  netconf(version: string, plugin: Record<string, unknown>, name = "kt"): Record<string, unknown> {
    const conf: Record<string, unknown> = { cniVersion: version, name, ...plugin };
    if (MODE === "cnichain") conf.stateDir = this.stateDir;
    return conf;
  }

  /** A host-local `ipam` object using the lab's dataDir. */
  hostLocal(ranges: unknown[][], extra: Record<string, unknown> = {}): Record<string, unknown> {
    return { type: "host-local", dataDir: this.dataDir, ranges, ...extra };
  }

  /** The addresses host-local holds for network `name` (its allocation files). */
  allocations(name = "kt"): Promise<string[]> {
    return allocationNames(`${this.dataDir}/${name}`);
  }

  /**
   * Deletes every netns of the lab and its temp dir, then checks that
   * `ip netns list` shows none of them. Safe to call twice.
   */
  close(): Promise<void> {
    // One teardown: a second call (an interrupt during the first) waits for the same one.
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    await Promise.allSettled([...this.#running]);
    const problems: string[] = [];
    // Every netns of the prefix, not only those recorded: one made while this runs (a demo
    // interrupted half way) goes too.
    const mine = (await netnsNames()).filter((n) => n.startsWith(`${this.prefix}-`));
    for (const name of mine.sort((a, b) => Number(a === this.host) - Number(b === this.host))) {
      const out = await runProgram(IP, { args: ["netns", "delete", name] });
      if (out.code !== 0) problems.push(`delete netns ${name}: ${out.stderr.trim()}`);
    }
    await Deno.remove(this.dir, { recursive: true }).catch((err) => {
      problems.push(`remove ${this.dir}: ${err}`);
    });
    const left = (await netnsNames()).filter((n) => n.startsWith(`${this.prefix}-`));
    if (left.length) problems.push(`netns left behind: ${left.join(", ")}`);
    if (problems.length) throw new Error(`lab ${this.prefix} cleanup: ${problems.join("; ")}`);
  }
}

/**
 * Until the returned function is called, SIGINT (Ctrl-C) and SIGTERM run `cleanup` once and
 * exit with 130 (143 for SIGTERM): a program such as a demo then removes what it made also
 * when it is interrupted, instead of dying with its namespaces and temp dir left behind.
 */
export function cleanUpOnSignal(cleanup: () => Promise<void>): () => void {
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  let running = false;
  const handlers = signals.map((signal) => {
    const handler = async () => {
      if (running) return;
      running = true;
      console.error(`\n${signal}: removing what was made before exiting`);
      await cleanup().catch((err) => console.error(String(err)));
      Deno.exit(signal === "SIGINT" ? 130 : 143);
    };
    Deno.addSignalListener(signal, handler);
    return () => Deno.removeSignalListener(signal, handler);
  });
  return () => handlers.forEach((remove) => remove());
}

/**
 * Runs `fn` with a fresh {@linkcode Lab} and takes the lab down afterwards,
 * also when `fn` fails (a cleanup failure then goes to stderr, so that the
 * test's own error is the one reported).
 */
export async function withLab<T>(fn: (lab: Lab) => Promise<T>): Promise<T> {
  const lab = await Lab.create();
  let result: T;
  try {
    result = await fn(lab);
  } catch (err) {
    await lab.close().catch((cleanup) => console.error(String(cleanup)));
    throw err;
  }
  await lab.close();
  return result;
}

/** Every named netns (`ip netns list`). */
export async function netnsNames(): Promise<string[]> {
  const out = await run([IP, "-j", "netns", "list"], "list netns");
  const list = out.stdout.trim() ? JSON.parse(out.stdout) as { name: string }[] : [];
  return list.map((n) => n.name);
}

// ---------------------------------------------------------------- observers

/** A link as `ip -j -d link show` describes it (the fields tests look at). */
export interface Link {
  ifindex: number;
  ifname: string;
  flags: string[];
  operstate: string;
  address: string;
  master?: string;
  /** The peer's ifindex (veth), in the netns `link_netnsid` names. */
  link_index?: number;
  link_netnsid?: number;
  mtu: number;
  linkinfo?: { info_kind?: string };
}

/** An address, flattened from `ip -j addr show`. */
export interface Address {
  dev: string;
  family: "inet" | "inet6";
  local: string;
  prefixlen: number;
  scope: string;
  tentative: boolean;
}

/** A route as `ip -j route show table all` describes it. */
export interface Route {
  dst: string;
  dev?: string;
  gateway?: string;
  prefsrc?: string;
  scope?: string;
  table?: string;
  type?: string;
  protocol?: string;
  family: "inet" | "inet6";
}

async function ipJson<T>(netns: string, args: string[]): Promise<T[]> {
  const out = await run([IP, "-n", netns, "-j", ...args], `read netns ${netns}`);
  return out.stdout.trim() ? JSON.parse(out.stdout) as T[] : [];
}

/** The links in `netns`. */
export function links(netns: string): Promise<Link[]> {
  return ipJson<Link>(netns, ["-d", "link", "show"]);
}

/** One link in `netns` by name, or undefined. */
export async function link(netns: string, name: string): Promise<Link | undefined> {
  return (await links(netns)).find((l) => l.ifname === name);
}

/** The addresses in `netns` (on `dev` only, when given). */
export async function addresses(netns: string, dev?: string): Promise<Address[]> {
  const raw = await ipJson<{
    ifname: string;
    addr_info?: {
      family: "inet" | "inet6";
      local: string;
      prefixlen: number;
      scope: string;
      tentative?: boolean;
    }[];
  }>(netns, ["addr", "show"]);
  return raw.filter((l) => dev === undefined || l.ifname === dev).flatMap((l) =>
    (l.addr_info ?? []).map((a) => ({
      dev: l.ifname,
      family: a.family,
      local: a.local,
      prefixlen: a.prefixlen,
      scope: a.scope,
      tentative: a.tentative === true,
    }))
  );
}

/** Every route of both families in every table of `netns`. */
export async function routes(netns: string): Promise<Route[]> {
  const out: Route[] = [];
  for (const family of ["inet", "inet6"] as const) {
    const flag = family === "inet" ? "-4" : "-6";
    const list = await ipJson<Omit<Route, "family">>(netns, [
      flag,
      "route",
      "show",
      "table",
      "all",
    ]);
    out.push(...list.map((r) => ({ ...r, family })));
  }
  return out;
}

/** Runs `ip -n <netns> <args>` (to change a netns by hand, as an operator or a bug would). */
export async function ipIn(netns: string, ...args: string[]): Promise<void> {
  await run([IP, "-n", netns, ...args], `change netns ${netns}`);
}

/** `nft -j list ruleset` in `netns`: the `nftables` array. */
export async function nftRuleset(netns: string): Promise<Record<string, unknown>[]> {
  const out = await run([IP, "netns", "exec", netns, NFT, "-j", "list", "ruleset"], "list nft");
  if (!out.stdout.trim()) return [];
  return (JSON.parse(out.stdout) as { nftables: Record<string, unknown>[] }).nftables;
}

/** True when one ping from `netns` to `address` is answered within a second. */
export async function ping(netns: string, address: string): Promise<boolean> {
  const out = await runProgram(IP, {
    args: ["netns", "exec", netns, PING, "-n", "-q", "-c1", "-W1", address],
  });
  return out.code === 0;
}

/** Pings until answered or `withinMs` has passed. */
export async function pingWithin(netns: string, address: string, withinMs = 0): Promise<boolean> {
  return await eventually(() => ping(netns, address), withinMs);
}

/** A sysctl of `netns` (`net/ipv4/ip_forward`), read from /proc/sys inside it. */
export async function sysctl(netns: string, key: string): Promise<string> {
  const out = await run([IP, "netns", "exec", netns, CAT, `/proc/sys/${key}`], "read a sysctl");
  return out.stdout.trim();
}

/**
 * Sets a sysctl of `netns` by writing /proc/sys inside it (only a test's own
 * netns: `net/bridge/bridge-nf-call-iptables` of its host netns, say).
 */
export async function setSysctl(netns: string, key: string, value: string): Promise<void> {
  const out = await runProgram(IP, {
    args: ["netns", "exec", netns, TEE, `/proc/sys/${key}`],
    stdin: value,
  });
  if (out.code !== 0) {
    throw new Error(`set ${key}=${value} in netns ${netns}: ${out.stderr.trim()}`);
  }
}

/** `nft list ruleset` in `netns` as text, for a failure message. */
export async function nftRulesetText(netns: string): Promise<string> {
  const out = await runProgram(IP, { args: ["netns", "exec", netns, NFT, "list", "ruleset"] });
  return out.code === 0 ? out.stdout : `(nft list ruleset failed: ${out.stderr.trim()})`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Calls `probe` until it returns true or `withinMs` has passed; the last answer. */
export async function eventually(probe: () => Promise<boolean>, withinMs = 2000): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  while (true) {
    if (await probe()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
}

/**
 * What mentions `address` in a masquerading NAT set-up of the host netns, one
 * line each. cnichain writes nftables, so that is read with `nft -j` (rules,
 * and sets or maps a masquerade rule may match the address through); the
 * reference plugins drive `iptables`, so that is read with
 * `iptables -S` (iptables-nft rules would show in nft too, but iptables-legacy
 * ones would not). Undefined when the reference is tested and iptables is not
 * installed.
 */
export async function masqueradeRules(
  netns: string,
  address: string,
): Promise<string[] | undefined> {
  if (MODE === "cnichain") {
    const ruleset = await nftRuleset(netns);
    const masquerades = ruleset.some((o) =>
      o.rule && JSON.stringify(o.rule).includes("masquerade")
    );
    // A rule may name the address itself or match it through a set or map holding it.
    const mentioning = ruleset
      .filter((o) => (o.rule || o.set || o.map) && mentionsAddress(JSON.stringify(o), address))
      .map((o) => JSON.stringify(o));
    return masquerades ? mentioning : [];
  }
  const v6 = address.includes(":");
  const tool = v6 ? IP6TABLES : IPTABLES;
  if (!(await exists(tool))) return undefined;
  const out = await run([IP, "netns", "exec", netns, tool, "-t", "nat", "-S"], "list iptables");
  return out.stdout.split("\n").filter((line) => mentionsAddress(line, address));
}

function mentionsAddress(text: string, address: string): boolean {
  // "10.0.0.2" must not match "10.0.0.21": the address ends where no address character follows.
  return new RegExp(`(^|[^0-9a-fA-F:.])${address.replaceAll(".", "\\.")}($|[^0-9a-fA-F:.])`)
    .test(text);
}

/** Whether the reference's masquerade rules can be observed (iptables installed). */
export async function canObserveMasquerade(): Promise<boolean> {
  return MODE === "cnichain" || await exists(IPTABLES) && await exists(IP6TABLES);
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

// ---------------------------------------------------------------- snapshots

/** What the host netns holds, one line per object, to compare before and after. */
export interface Snapshot {
  links: string[];
  addresses: string[];
  routes: string[];
  nftTables: string[];
  nftChains: string[];
  nftRules: string[];
  nftSets: string[];
  nftElements: string[];
}

/** How many of each kind a snapshot holds. */
export function counts(s: Snapshot): Record<keyof Snapshot, number> {
  return Object.fromEntries(Object.entries(s).map(([k, v]) => [k, v.length])) as Record<
    keyof Snapshot,
    number
  >;
}

/** The `comment` anywhere inside an nftables JSON object (a set element, say). */
export function nftComment(value: unknown): string | undefined {
  if (Array.isArray(value)) {
    for (const v of value) {
      const c = nftComment(v);
      if (c !== undefined) return c;
    }
  } else if (value && typeof value === "object") {
    const obj = value as Record<string, unknown>;
    if (typeof obj.comment === "string") return obj.comment;
    for (const v of Object.values(obj)) {
      const c = nftComment(v);
      if (c !== undefined) return c;
    }
  }
  return undefined;
}

/** Reads the links, addresses, routes and nftables objects of `netns`. */
export async function snapshot(netns: string): Promise<Snapshot> {
  const [ls, as, rs, nft] = await Promise.all([
    links(netns),
    addresses(netns),
    routes(netns),
    nftRuleset(netns),
  ]);
  const s: Snapshot = {
    links: ls.map((l) => `${l.ifname} ${l.linkinfo?.info_kind ?? "device"}`),
    addresses: as.map((a) => `${a.dev} ${a.local}/${a.prefixlen}`),
    routes: rs.map((r) =>
      `${r.table ?? "main"} ${r.type ?? "unicast"} ${r.dst}` +
      (r.gateway ? ` via ${r.gateway}` : "") + (r.dev ? ` dev ${r.dev}` : "") +
      ` proto ${r.protocol ?? "boot"}`
    ),
    nftTables: [],
    nftChains: [],
    nftRules: [],
    nftSets: [],
    nftElements: [],
  };
  for (const o of nft) {
    const [kind, body] = Object.entries(o)[0] as [string, Record<string, unknown>];
    const where = `${body.family} ${body.table ?? ""}`;
    if (kind === "table") s.nftTables.push(`${body.family} ${body.name}`);
    else if (kind === "chain") s.nftChains.push(`${where} ${body.name}`);
    else if (kind === "rule") {
      s.nftRules.push(`${where} ${body.chain} ${JSON.stringify(body.expr)}`);
    } else if (kind === "set" || kind === "map") {
      s.nftSets.push(`${where} ${kind} ${body.name}`);
      for (const e of (body.elem as unknown[] | undefined) ?? []) {
        s.nftElements.push(`${where} ${body.name} ${JSON.stringify(e)}`);
      }
    }
  }
  for (const list of Object.values(s)) list.sort();
  return s;
}

/** What a comparison should not count. */
export interface Ignore {
  /**
   * Links to leave out, each with the reason, with their addresses and the
   * routes the kernel made for them (other routes through them still count).
   */
  devices?: Record<string, string>;
  /**
   * nftables objects shared by all attachments, to leave out, with the reason:
   * `match` sees each table, chain, set and rule line of a {@linkcode Snapshot}
   * (never set elements, which are per attachment and always count).
   */
  nftShared?: { match: (line: string) => boolean; why: string };
}

function without(s: Snapshot, ignore: Ignore): Snapshot {
  const devices = Object.keys(ignore.devices ?? {});
  const onDevice = (line: string) => devices.some((d) => line.startsWith(`${d} `));
  const kernelRoute = (line: string) =>
    devices.some((d) => line.endsWith(` dev ${d} proto kernel`));
  const shared = ignore.nftShared?.match ?? (() => false);
  return {
    ...s,
    links: s.links.filter((l) => !onDevice(l)),
    addresses: s.addresses.filter((l) => !onDevice(l)),
    routes: s.routes.filter((l) => !kernelRoute(l)),
    nftTables: s.nftTables.filter((l) => !shared(l)),
    nftChains: s.nftChains.filter((l) => !shared(l)),
    nftSets: s.nftSets.filter((l) => !shared(l)),
    nftRules: s.nftRules.filter((l) => !shared(l)),
  };
}

/**
 * The table and built-in chains that iptables-nft (Debian's default iptables)
 * creates on first use and never removes: the reference plugins' masquerade
 * rules leave `ip nat`/`ip6 nat` with an empty POSTROUTING behind. Rules are
 * still counted (the pattern matches no rule line).
 */
export const IPTABLES_NFT_BUILTINS: Ignore["nftShared"] = {
  match: (line) =>
    /^ip6? (nat|filter|mangle|raw|security)( (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING))?$/
      .test(line),
  why: "iptables-nft keeps its nat table and built-in chains once created (reference mode only)",
};

/**
 * Asserts that `netns` holds what `before` held (but for `ignore`), polling
 * briefly because netns teardown and veth removal are asynchronous.
 */
export async function assertNoLeak(
  netns: string,
  before: Snapshot,
  ignore: Ignore = {},
  withinMs = 2000,
): Promise<void> {
  const expected = without(before, ignore);
  let after = without(await snapshot(netns), ignore);
  const deadline = Date.now() + withinMs;
  while (!isDeepEqual(after, expected) && Date.now() < deadline) {
    await sleep(50);
    after = without(await snapshot(netns), ignore);
  }
  const reasons = [
    ...Object.entries(ignore.devices ?? {}).map(([d, why]) => `${d}: ${why}`),
    ...(ignore.nftShared ? [ignore.nftShared.why] : []),
  ];
  assert.deepEqual(
    after,
    expected,
    `the host netns after ADD+DEL differs from before (counts before ${
      JSON.stringify(counts(expected))
    }, after ${JSON.stringify(counts(after))})` +
      (reasons.length ? `; not counted: ${reasons.join("; ")}` : ""),
  );
}

function isDeepEqual(a: unknown, b: unknown): boolean {
  try {
    assert.deepEqual(a, b);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- results

/** Asserts a plugin run succeeded, showing its output when not. */
export function assertOk(out: RunOutput, what: string): Record<string, unknown> {
  assert.equal(out.code, 0, `${what} failed (exit ${out.code}): ${out.stdout}${out.stderr}`);
  return out.json ?? {};
}

/**
 * Asserts a plugin run failed the CNI way: non-zero exit and an error object
 * with a code and a message on stdout. Returns the error.
 */
export function assertCniError(
  out: RunOutput,
  version: string,
  what: string,
): { code: number; msg: string } {
  assert.notEqual(out.code, 0, `${what} should fail; it printed ${out.stdout}`);
  const err = out.json;
  assert.ok(
    err,
    `${what}: stdout should hold the CNI error JSON, got ${JSON.stringify(out.stdout)}`,
  );
  assert.equal(typeof err.code, "number", `${what}: error code in ${out.stdout}`);
  assert.ok((err.code as number) > 0, `${what}: error code in ${out.stdout}`);
  assert.equal(typeof err.msg, "string", `${what}: error msg in ${out.stdout}`);
  assert.notEqual(err.msg, "", `${what}: error msg in ${out.stdout}`);
  // The spec's error carries cniVersion; the reference plugins' (1.1.1) leave it out.
  if (MODE === "cnichain") {
    assert.equal(err.cniVersion, version, `${what}: cniVersion of the error`);
  }
  return { code: err.code as number, msg: err.msg as string };
}

/** A CNI result's interface entry. */
export interface ResultInterface {
  name: string;
  mac?: string;
  sandbox?: string;
  mtu?: number;
}

/** A CNI result's ip entry. */
export interface ResultIp {
  address: string;
  gateway?: string;
  interface?: number;
}

/** A CNI result (1.0.0 / 1.1.0 shape). */
export interface Result {
  cniVersion: string;
  interfaces?: ResultInterface[];
  ips?: ResultIp[];
  routes?: { dst: string; gw?: string }[];
  dns?: Record<string, unknown>;
}

/** The address part of `10.0.0.2/24`. */
export function bare(cidr: string): string {
  return cidr.split("/")[0];
}

/** The host veth names both plugins use: `veth` and 8 hex digits. */
export const HOST_VETH = /^veth[0-9a-f]{8}$/;
