/**
 * The world the reliability tests (faults, reboot, load, locking) share: one
 * network run as a runtime runs it (a `cnichain` entry holding bridge with
 * isGateway and ipMasq, host-local, portmap with two mappings per pod and
 * policy with a small policy set) in a throwaway host netns of a
 * {@linkcode Lab}, plugin runs that can be killed with their whole process
 * group, and {@linkcode ChainNet.audit}, which reads everything cnichain may
 * leave behind (links, addresses, routes, nftables objects, IPAM files and
 * state files) and compares it with the attachments that should exist.
 */
import { BUNDLE, listTree } from "../helpers.ts";
import {
  addresses,
  type Lab,
  links,
  nftComment,
  nftRuleset,
  nftRulesetText,
  type Pod,
  routes,
} from "../netns.ts";
import { attachmentTag } from "../../chain/nft_state.ts";
import { shortHash } from "../../chain/hash.ts";
import { isTempName } from "../../chain/system.ts";
import { indexProblems, isCnichainFile, sealedOnDisk, snapshot } from "../host_local.ts";

const IP = "/usr/sbin/ip";
const SETSID = "/usr/bin/setsid";
/** A plugin run that takes longer is a hang: its process group is killed and the run fails. */
const HANG_MS = 30_000;

export const NETWORK = "rel";
export const BRIDGE = "cni0";
const TABLE = "cnichain";
const NS = "rel-ns";

// ---------------------------------------------------------------- seeds

/** A seeded generator: `next()` in [0, 1), `int(n)` in [0, n), `pick(list)`. */
export interface Rng {
  seed: number;
  next(): number;
  int(n: number): number;
  pick<T>(list: readonly T[]): T;
}

/**
 * The seed of a run: `given`, else CNICHAIN_TEST_SEED, else a random one,
 * printed as `seed=N` so that a failure can be replayed.
 */
export function chooseSeed(what: string, given?: number): number {
  const env = Deno.env.get("CNICHAIN_TEST_SEED");
  const seed = given ?? (env ? Number(env) >>> 0 : crypto.getRandomValues(new Uint32Array(1))[0]);
  console.log(`${what}: seed=${seed} (replay with CNICHAIN_TEST_SEED=${seed})`);
  return seed;
}

/** mulberry32: small, fast and good enough to pick test cases. */
export function rng(seed: number): Rng {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return { seed, next, int, pick: (list) => list[int(list.length)] };
}

// ---------------------------------------------------------------- figures

/** What one run did, for the soak report. */
export interface Figures {
  /** Operations or scenarios tried. */
  cases: number;
  /** SIGKILLs that landed on a running plugin. */
  crashes: number;
  /** Plugin runs made (every verb). */
  operations: number;
  /** Audits that found something left behind or lost (a test fails on the first). */
  leaks: number;
  /** Free text: what else is worth a line in the report. */
  notes: string[];
}

export function figures(): Figures {
  return { cases: 0, crashes: 0, operations: 0, leaks: 0, notes: [] };
}

/** A scenario's failure, with what it had done until then (the soak report shows both). */
export class ScenarioError extends Error {
  constructor(cause: unknown, readonly figures: Figures) {
    super(cause instanceof Error ? cause.message : String(cause));
    if (cause instanceof Error && cause.stack) this.stack = cause.stack;
  }
}

/** Runs `body`, turning a failure into a {@linkcode ScenarioError} carrying `fig`. */
export async function tally<F extends Figures>(fig: F, body: () => Promise<void>): Promise<F> {
  try {
    await body();
  } catch (err) {
    throw new ScenarioError(err, fig);
  }
  return fig;
}

// ---------------------------------------------------------------- plugin runs

/** How one plugin run ended. */
export interface Outcome {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON, when it is JSON. */
  json?: Record<string, unknown>;
  ms: number;
  /** Whether {@linkcode Running.kill} was called before the run ended. */
  killed: boolean;
}

/** A plugin run in progress. */
export interface Running {
  /** Kills the run's whole process group (`ip netns exec` and the plugin it became). */
  kill(): void;
  done: Promise<Outcome>;
}

/**
 * Starts `dist/cnichain` inside `host` with exactly `env` and `stdin`, as a
 * runtime execs a plugin, in a session of its own (`setsid`), so that the
 * group id is the pid and a kill reaches every process of the run.
 */
export function spawnCni(host: string, env: Record<string, string>, stdin: string): Running {
  const began = performance.now();
  const child = new Deno.Command(SETSID, {
    args: [IP, "netns", "exec", host, BUNDLE],
    env,
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let ended = false;
  let killed = false;
  const kill = () => {
    if (ended) return;
    killed = true;
    try {
      Deno.kill(-child.pid, "SIGKILL");
    } catch {
      // The group is gone already.
    }
  };
  const writer = child.stdin.getWriter();
  writer.write(new TextEncoder().encode(stdin)).then(() => writer.close()).catch(() => {});
  const hang = setTimeout(kill, HANG_MS);
  const done = child.output().then((out) => {
    ended = true;
    clearTimeout(hang);
    const stdout = new TextDecoder().decode(out.stdout);
    let json: Record<string, unknown> | undefined;
    try {
      json = JSON.parse(stdout);
    } catch {
      json = undefined;
    }
    return {
      code: out.code,
      signal: out.signal,
      stdout,
      stderr: new TextDecoder().decode(out.stderr),
      json,
      ms: performance.now() - began,
      killed,
    };
  });
  return { kill, done };
}

/** A one-line account of a run, for failure messages. */
export function describeRun(what: string, out: Outcome): string {
  return `${what}: exit ${out.code}${out.signal ? ` (${out.signal})` : ""}, ${
    out.ms.toFixed(0)
  } ms, stdout ${out.stdout.trim() || "(empty)"}${
    out.stderr.trim() ? `, stderr ${out.stderr.trim().slice(0, 2000)}` : ""
  }`;
}

/** The CNI error code of a failed run, or undefined when stdout holds no CNI error. */
export function cniCode(out: Outcome): number | undefined {
  const code = out.json?.code;
  return typeof code === "number" && typeof out.json?.msg === "string" ? code : undefined;
}

// ---------------------------------------------------------------- the network

/** One pod of the network: its netns, container id and where its mappings go. */
export interface PodSlot {
  index: number;
  pod: Pod;
  id: string;
  /** Its two host ports (TCP and UDP). */
  ports: [number, number];
  labels: Record<string, string>;
}

/** The policy set every ADD sees: isolation of the web pods, one allow, one egress rule. */
export const POLICIES: unknown[] = [
  {
    name: "web-ingress",
    namespace: NS,
    podSelector: { matchLabels: { app: "web" } },
    policyTypes: ["Ingress"],
    ingress: [{
      from: [{ podSelector: { matchLabels: { app: "client" } } }],
      ports: [{ protocol: "TCP", port: 80 }],
    }],
  },
  {
    name: "client-egress",
    namespace: NS,
    podSelector: { matchLabels: { app: "client" } },
    policyTypes: ["Egress"],
    egress: [
      { to: [{ podSelector: { matchLabels: { app: "web" } } }] },
      { to: [{ ipBlock: { cidr: "0.0.0.0/0", except: ["169.254.0.0/16"] } }] },
    ],
  },
];

/** How the network under test is set up. */
export interface NetOptions {
  /** `10.x.0.0/16`-style IPv4 subnet of host-local. */
  subnet: string;
  /** The first host port; pod i maps `basePort + 2i` (TCP) and `basePort + 2i + 1` (UDP). */
  basePort?: number;
}

/** What the plugin run changes on top of the defaults. */
export interface RunOptions {
  /** CNI_NETNS; default the slot's pod path. */
  netns?: string;
}

/**
 * The network under test in one lab: the config a runtime would send, the
 * verbs, and the audit of what the host holds against the attachments that
 * should exist.
 */
export class ChainNet {
  readonly slots: PodSlot[] = [];
  #baseline?: HostView;

  constructor(readonly lab: Lab, readonly opts: NetOptions) {}

  /** Makes pod netns `p0`..`p<n-1>` (more when called again). */
  async addSlots(n: number): Promise<PodSlot[]> {
    const made: PodSlot[] = [];
    for (let k = 0; k < n; k++) {
      const index = this.slots.length;
      const pod = await this.lab.addPod(`p${index}`);
      const base = (this.opts.basePort ?? 20000) + 2 * index;
      const slot: PodSlot = {
        index,
        pod,
        id: `ctr-p${index}`,
        ports: [base, base + 1],
        labels: { app: index % 3 === 0 ? "client" : "web" },
      };
      this.slots.push(slot);
      made.push(slot);
    }
    return made;
  }

  /** The `cnichain` entry a runtime sends for `slot` (capability args in runtimeConfig). */
  conf(slot?: PodSlot): Record<string, unknown> {
    const entry: Record<string, unknown> = {
      cniVersion: "1.1.0",
      name: NETWORK,
      type: "cnichain",
      capabilities: { portMappings: true },
      stateDir: this.lab.stateDir,
      plugins: [
        {
          type: "bridge",
          bridge: BRIDGE,
          isGateway: true,
          ipMasq: true,
          ipam: {
            type: "host-local",
            dataDir: this.lab.dataDir,
            ranges: [[{ subnet: this.opts.subnet }]],
          },
        },
        { type: "portmap", capabilities: { portMappings: true } },
        { type: "policy", policies: POLICIES },
      ],
    };
    if (slot) {
      entry.runtimeConfig = {
        portMappings: [
          { hostPort: slot.ports[0], containerPort: 80, protocol: "tcp" },
          { hostPort: slot.ports[1], containerPort: 53, protocol: "udp" },
        ],
      };
      entry.args = {
        cni: { labels: Object.entries(slot.labels).map(([key, value]) => ({ key, value })) },
      };
    }
    return entry;
  }

  #env(verb: string, slot: PodSlot | undefined, opts: RunOptions): Record<string, string> {
    return {
      CNI_COMMAND: verb,
      CNI_CONTAINERID: slot?.id ?? "",
      CNI_NETNS: opts.netns ?? slot?.pod.path ?? "",
      CNI_IFNAME: "eth0",
      CNI_PATH: this.lab.cniPath,
      ...(slot ? { CNI_ARGS: `K8S_POD_NAMESPACE=${NS};K8S_POD_NAME=p${slot.index}` } : {}),
    };
  }

  /** Starts ADD or DEL of `slot`. */
  start(verb: "ADD" | "DEL", slot: PodSlot, opts: RunOptions = {}): Running {
    return spawnCni(
      this.lab.host,
      this.#env(verb, slot, opts),
      JSON.stringify(this.conf(slot)),
    );
  }

  /** Starts a GC keeping exactly `valid`. */
  startGc(valid: readonly PodSlot[]): Running {
    const stdin = {
      ...this.conf(),
      "cni.dev/valid-attachments": valid.map((s) => ({ containerID: s.id, ifname: "eth0" })),
    };
    return spawnCni(this.lab.host, this.#env("GC", undefined, {}), JSON.stringify(stdin));
  }

  add(slot: PodSlot): Promise<Outcome> {
    return this.start("ADD", slot).done;
  }

  del(slot: PodSlot, opts: RunOptions = {}): Promise<Outcome> {
    return this.start("DEL", slot, opts).done;
  }

  gc(valid: readonly PodSlot[]): Promise<Outcome> {
    return this.startGc(valid).done;
  }

  /**
   * Records the host netns as it is with no attachment but after one ADD and
   * DEL (so the bridge, kept on DEL, exists), and returns how long that ADD
   * and DEL took. The slot used is left unattached.
   */
  async warmUp(slot: PodSlot): Promise<{ addMs: number; delMs: number }> {
    let addMs = Infinity;
    let delMs = Infinity;
    for (let i = 0; i < 2; i++) {
      const add = await this.add(slot);
      if (add.code !== 0) throw new Error(describeRun(`warm-up ADD of ${slot.id}`, add));
      const del = await this.del(slot);
      if (del.code !== 0) throw new Error(describeRun(`warm-up DEL of ${slot.id}`, del));
      addMs = Math.min(addMs, add.ms);
      delMs = Math.min(delMs, del.ms);
    }
    this.#baseline = await hostView(this.lab.host);
    return { addMs, delMs };
  }

  /**
   * Everything wrong with the lab now, given that exactly `live` should be
   * attached: one line per problem, empty when all is well. Checks that
   * - the IPAM store holds one whole allocation per live attachment and no
   *   other file but the lock and cursors (no temporary file either);
   * - the state dir holds, per live attachment, its result, policy record and
   *   nftables element records, each parsing, and nothing for any other;
   * - every element of cnichain's table carries a live attachment's comment,
   *   each live attachment has its elements (2 DNAT, masquerade, policy
   *   steering), and the per-pod policy chains are exactly the live ones';
   *   with nothing live the table is gone;
   * - the host netns has one veth per live attachment and otherwise the links,
   *   addresses and routes of the baseline (see {@linkcode warmUp});
   * - each pod netns has eth0 exactly when its slot is live.
   */
  async audit(live: readonly PodSlot[], opts: AuditOptions = {}): Promise<string[]> {
    const problems: string[] = [];
    const liveIds = new Set(live.map((s) => s.id));
    const [store, state, nft, host, pods] = await Promise.all([
      readStore(`${this.lab.dataDir}/${NETWORK}`),
      readState(this.lab.stateDir),
      readNft(this.lab.host),
      hostView(this.lab.host),
      Promise.all(this.slots.map(async (s) => ({ slot: s, eth0: await hasEth0(s.pod) }))),
    ]);
    problems.push(...store.problems, ...state.problems);

    // IPAM: exactly one address per live attachment.
    const owners = new Map<string, string[]>();
    for (const [ip, owner] of store.allocations) {
      owners.set(owner, [...(owners.get(owner) ?? []), ip]);
    }
    for (const [owner, ips] of owners) {
      if (!liveIds.has(owner)) problems.push(`IPAM: ${ips.join(", ")} allocated to gone ${owner}`);
      else if (ips.length !== 1) problems.push(`IPAM: ${owner} holds ${ips.join(", ")}`);
    }
    for (const id of liveIds) {
      if (!owners.has(id)) problems.push(`IPAM: live ${id} holds no address`);
    }

    // State files: one of each kind per live attachment, none for others.
    for (const [kind, ids] of Object.entries(state.owners)) {
      const expected = kind === "results" || kind === "policy" ? liveIds : undefined;
      for (const id of ids) {
        if (!liveIds.has(id)) problems.push(`state: ${kind} record of gone ${id}`);
      }
      if (expected) {
        for (const id of expected) {
          if (!ids.includes(id)) problems.push(`state: live ${id} has no ${kind} record`);
        }
      }
      const dup = ids.filter((id, i) => ids.indexOf(id) !== i);
      if (dup.length) problems.push(`state: ${kind} records twice for ${dup.join(", ")}`);
    }
    for (const feature of ["masquerade", "portmap"]) {
      const ids = state.owners[`nft/${feature}`] ?? [];
      for (const id of liveIds) {
        if (!ids.includes(id)) problems.push(`state: live ${id} has no nft/${feature} record`);
      }
    }

    // nftables: every element owned by a live attachment; every live one steered and mapped.
    for (const e of nft.elements) {
      if (!e.owner) problems.push(`nft: element without an owner: ${e.set} ${e.json}`);
      else if (!liveIds.has(e.owner)) {
        problems.push(`nft: element of gone ${e.owner}: ${e.set} ${e.json}`);
      }
    }
    for (const id of liveIds) {
      const mine = nft.elements.filter((e) => e.owner === id);
      const count = (set: string) => mine.filter((e) => e.set === set).length;
      for (const [set, n] of [["pm_dnat4", 2], ["masq4", 1], ["pol_in4", 1], ["pol_out4", 1]]) {
        if (count(set as string) !== n) {
          problems.push(`nft: live ${id} has ${count(set as string)} elements in ${set}, not ${n}`);
        }
      }
    }
    const podChains = new Set(live.flatMap((s) => policyChains(s.id)));
    for (const chain of nft.chains.filter((c) => /^p[io]_[0-9a-f]+$/.test(c))) {
      if (!podChains.has(chain)) problems.push(`nft: policy chain ${chain} of a gone attachment`);
    }
    for (const chain of podChains) {
      if (!nft.chains.includes(chain)) problems.push(`nft: live policy chain ${chain} is missing`);
    }
    if (live.length === 0 && nft.present) {
      problems.push(`nft: table inet ${TABLE} is still there with nothing attached`);
    }

    // The host netns: a veth per live attachment, otherwise as in the baseline.
    const linked = new Set([...liveIds, ...(opts.linked ?? []).map((s) => s.id)]);
    const withEth0 = pods.filter((p) => p.eth0 && !liveIds.has(p.slot.id)).length;
    if (host.veths.length < live.length || host.veths.length > live.length + withEth0) {
      problems.push(`host: ${host.veths.length} veths for ${live.length} live attachments`);
    }
    if (this.#baseline) {
      for (const kind of ["links", "addresses", "routes"] as const) {
        const before = new Set(this.#baseline[kind]);
        const now = new Set(host[kind]);
        for (const line of now) if (!before.has(line)) problems.push(`host: new ${kind}: ${line}`);
        for (const line of before) {
          if (!now.has(line)) problems.push(`host: ${kind} gone: ${line}`);
        }
      }
    }
    for (const { slot, eth0 } of pods) {
      if (eth0 === undefined) continue; // the pod's netns is gone
      if (eth0 && !linked.has(slot.id)) problems.push(`pod: ${slot.pod.name} still has eth0`);
      if (!eth0 && liveIds.has(slot.id)) problems.push(`pod: live ${slot.pod.name} has no eth0`);
    }
    return problems;
  }

  /**
   * Audits until nothing is wrong or `withinMs` has passed (veth removal
   * after a netns goes is asynchronous); the last problems.
   */
  async settledAudit(
    live: readonly PodSlot[],
    opts: AuditOptions = {},
    withinMs = 2000,
  ): Promise<string[]> {
    const deadline = Date.now() + withinMs;
    while (true) {
      const problems = await this.audit(live, opts);
      if (problems.length === 0 || Date.now() >= deadline) return problems;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * Throws with every problem and the ruleset when the lab does not match `live`. The problems
   * come last too: a CI log keeps only the tail of a failure.
   */
  async assertState(
    live: readonly PodSlot[],
    what: string,
    fig?: Figures,
    opts: AuditOptions = {},
  ): Promise<void> {
    const problems = await this.settledAudit(live, opts);
    if (problems.length === 0) return;
    if (fig) fig.leaks += problems.length;
    const tree = await listTree(this.lab.stateDir);
    const summary = `${what}: ${problems.length} problems with ${live.length} live attachments (${
      live.map((s) => s.id).join(" ")
    }):\n  ${problems.join("\n  ")}`;
    throw new Error(
      `${summary}\n--- state dir:\n  ${tree.join("\n  ")}\n--- nft:\n${await nftRulesetText(
        this.lab.host,
      )}\n--- again, ${summary}`,
    );
  }
}

/** What an audit lets pass. */
export interface AuditOptions {
  /**
   * Attachments that are gone for every store and table but whose interfaces
   * may still be there: GC leaves the links in a pod netns that still exists
   * to the DEL that comes with it (it cannot know which host veth is whose).
   */
  linked?: readonly PodSlot[];
}

/** The chains the policy step gives an attachment of the network. */
export function policyChains(containerId: string): string[] {
  const h = shortHash(attachmentTag(NETWORK, containerId, "eth0"));
  return [`pi_${h}`, `po_${h}`];
}

async function hasEth0(pod: Pod): Promise<boolean | undefined> {
  const exists = await Deno.stat(pod.path).then(() => true, () => false);
  if (!exists) return undefined;
  try {
    return (await links(pod.name)).some((l) => l.ifname === "eth0");
  } catch {
    return undefined; // deleted while we looked
  }
}

// ---------------------------------------------------------------- readers

interface StoreView {
  /** address -> container id */
  allocations: Map<string, string>;
  problems: string[];
}

async function readStore(dir: string): Promise<StoreView> {
  const view: StoreView = { allocations: new Map(), problems: [] };
  const files = await snapshot(dir);
  if (await sealedOnDisk(dir)) view.problems.push(...indexProblems(files).map((p) => `IPAM: ${p}`));
  for (const [name, text] of Object.entries(files)) {
    if (name === "lock" || isCnichainFile(name)) continue;
    if (name.startsWith("last_reserved_ip.")) {
      if (!/^[0-9.]+$/.test(text)) view.problems.push(`IPAM: cursor ${name} holds ${text}`);
    } else if (/^\d+\.\d+\.\d+\.\d+$/.test(name)) {
      const m = /^([A-Za-z0-9][A-Za-z0-9_.-]*)\r\neth0$/.exec(text);
      if (!m) {
        view.problems.push(`IPAM: allocation ${name} is not whole: ${JSON.stringify(text)}`);
      } else view.allocations.set(name, m[1]);
    } else {
      view.problems.push(`IPAM: unexpected file ${name}`);
    }
  }
  return view;
}

interface StateView {
  /** kind (`results`, `policy`, `nft/<feature>`) -> the container id of each record */
  owners: Record<string, string[]>;
  problems: string[];
}

/** Reads cnichain's state dir: every file must be a lock or a record that parses. */
async function readState(dir: string): Promise<StateView> {
  const view: StateView = { owners: { results: [], policy: [] }, problems: [] };
  const add = (kind: string, id: string) => (view.owners[kind] ??= []).push(id);
  for (const rel of await listTree(dir)) {
    const path = `${dir}/${rel}`;
    const info = await Deno.stat(path).catch(() => undefined);
    if (!info || info.isDirectory) continue;
    const parts = rel.split("/");
    const name = parts[parts.length - 1];
    if (rel === "nftables.lock" || name.endsWith(".lock") || parts[0] === "locks") continue;
    if (isTempName(name)) {
      view.problems.push(`state: temporary file ${rel} left behind`);
      continue;
    }
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(await Deno.readTextFile(path));
    } catch (err) {
      view.problems.push(`state: ${rel} does not parse: ${err}`);
      continue;
    }
    if (parts[0] === "results" && parts.length === 2) {
      if (record.networkName !== NETWORK || typeof record.containerId !== "string") {
        view.problems.push(`state: result ${rel} names no attachment of ${NETWORK}`);
      } else add("results", record.containerId);
    } else if (parts[0] === "policy" && parts[1] === "engine" && parts.length === 3) {
      // The engine's remembered answers: a cache of the node, not of any attachment.
      if (typeof record.key !== "string") view.problems.push(`state: ${rel} has no key`);
    } else if (parts[0] === "policy" && parts[1] === "pods" && parts.length === 3) {
      if (typeof record.containerId !== "string") view.problems.push(`state: ${rel} has no id`);
      else add("policy", record.containerId);
    } else if (parts[0] === "nft" && parts.length === 3) {
      const tag = String(record.tag ?? "");
      const [net, id] = tag.split(" ");
      if (net !== NETWORK || !id) {
        view.problems.push(`state: ${rel} has tag ${JSON.stringify(tag)}`);
      } else add(`nft/${parts[1]}`, id);
    } else {
      view.problems.push(`state: unexpected file ${rel}`);
    }
  }
  return view;
}

interface NftView {
  present: boolean;
  chains: string[];
  elements: { set: string; json: string; owner?: string }[];
}

async function readNft(host: string): Promise<NftView> {
  const view: NftView = { present: false, chains: [], elements: [] };
  for (const o of await nftRuleset(host)) {
    const [kind, body] = Object.entries(o)[0] as [string, Record<string, unknown>];
    if (body.family !== "inet" || (body.table ?? body.name) !== TABLE) continue;
    if (kind === "table") view.present = true;
    else if (kind === "chain") view.chains.push(String(body.name));
    else if (kind === "set" || kind === "map") {
      for (const e of (body.elem as unknown[] | undefined) ?? []) {
        const comment = nftComment(e);
        const [net, id] = (comment ?? "").split(" ");
        view.elements.push({
          set: String(body.name),
          json: JSON.stringify(e),
          ...(net === NETWORK && id ? { owner: id } : {}),
        });
      }
    }
  }
  return view;
}

interface HostView {
  veths: string[];
  /** Links, addresses and routes not on a veth, one line each. */
  links: string[];
  addresses: string[];
  routes: string[];
}

async function hostView(host: string): Promise<HostView> {
  const [ls, as, rs] = await Promise.all([links(host), addresses(host), routes(host)]);
  const veths = ls.filter((l) => l.linkinfo?.info_kind === "veth").map((l) => l.ifname);
  // The bridge's IPv6 link-local address and its routes come and go with its carrier.
  const onVeth = (dev?: string, what = "") =>
    dev !== undefined && (veths.includes(dev) || dev === BRIDGE && /fe80:|ff00::/.test(what));
  return {
    veths,
    links: ls.filter((l) => !onVeth(l.ifname)).map((l) =>
      `${l.ifname} ${l.linkinfo?.info_kind ?? "device"}`
    ),
    addresses: as.filter((a) => !onVeth(a.dev, a.local)).map((a) =>
      `${a.dev} ${a.local}/${a.prefixlen}`
    ),
    routes: rs.filter((r) => !onVeth(r.dev, r.dst)).map((r) =>
      `${r.table ?? "main"} ${r.type ?? "unicast"} ${r.dst}${r.gateway ? ` via ${r.gateway}` : ""}${
        r.dev ? ` dev ${r.dev}` : ""
      }`
    ),
  };
}
