/**
 * `cnichain policy sync --kubernetes`: NetworkPolicy, Pod and Namespace
 * objects from the API server (list, then watch) kept in step with this
 * node's nftables.
 *
 * What is kept in memory is the API's view (three stores). Whenever it or the
 * registry of this node's pods changes, one `apply()` runs (changes that come
 * together are taken together) under the nftables lock:
 *
 * - every registered pod (this node's) is planned with its labels from the
 *   API (the runtime's win) and its namespace's; a pod whose plan or
 *   identity differs from what this process last installed, or whose chains
 *   are missing from the table, is re-installed (its chains rewritten in
 *   place, its selector-set memberships moved);
 * - every other pod in the API with an address (other nodes' pods) is a
 *   member of the selector sets the local rules use: the wanted elements,
 *   commented `k8s NS/NAME`, are compared with those in the table, and only
 *   the difference is added or deleted, so a label change of such a pod
 *   moves its address between sets without touching a rule;
 * - selector sets nothing uses any more are deleted.
 *
 * All of that is one nftables batch (atomic: it applies whole or not at
 * all); the first apply (and `--once`) re-installs everything from scratch,
 * so a reboot or a flushed ruleset heals. The policies are also written to
 * the step's `policyFile`, so that the next pod's ADD plans with them.
 */
import { isObject } from "../../spec/config.ts";
import { quote } from "../../spec/errors.ts";
import type { System } from "../../system.ts";
import { locked, readTable, skeletonIfStale, TABLE } from "../../nft_state.ts";
import type { KubeClient } from "../../kube.ts";
import {
  GoneError,
  type KubeObject,
  listAll,
  objectKey,
  reflect,
  type WatchEvent,
} from "../../kube_watch.ts";
import { type Identity, type Plan, policyEngine } from "../../../policy-wasm/host.ts";
import { installLines, type PodRecord, readRecords, registryDir, writeRecord } from "./mod.ts";
import { POLICY, SELECTOR_SET } from "./rules.ts";
import { labelsOf, namespaceLabels, podAddresses, policyOf } from "./kube_pod.ts";

const T = `inet ${TABLE}`;
export const REMOTE_COMMENT = "k8s ";

export const PATHS = {
  networkpolicies: "/apis/networking.k8s.io/v1/networkpolicies",
  pods: "/api/v1/pods",
  namespaces: "/api/v1/namespaces",
} as const;
type Kind = keyof typeof PATHS;

interface ApiPod {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  addresses: string[];
  nodeName?: string;
  /** Host-network and finished pods have no address of their own for policy. */
  ignored: boolean;
}

export interface SyncOptions {
  system: System;
  stateDir: string;
  network: string;
  /** The policy step's policyFile: written with the API's policies, for the next ADD. */
  policyFile?: string;
  /** This node's name: its pods in the API are the registry's, never remote members. */
  node?: string;
  client: KubeClient;
  log(line: string): void;
}

export interface ApplyStats {
  replanned: number;
  added: number;
  deleted: number;
  setsDeleted: number;
  ms: number;
}

function podOf(o: KubeObject): ApiPod {
  const meta = isObject(o.metadata) ? o.metadata : {};
  const spec = isObject(o.spec) ? o.spec : {};
  const status = isObject(o.status) ? o.status : {};
  return {
    namespace: String(meta.namespace ?? "default"),
    name: String(meta.name),
    labels: labelsOf(o),
    addresses: podAddresses(o),
    nodeName: typeof spec.nodeName === "string" ? spec.nodeName : undefined,
    ignored: spec.hostNetwork === true || status.phase === "Succeeded" ||
      status.phase === "Failed",
  };
}

const familyOf = (a: string) => (a.includes(":") ? 6 : 4);

/**
 * `policy` without its named ports (a rule's port given by name): each rule loses those ports,
 * and a rule left with none is removed (no ports would mean every port). Undefined when it has
 * none.
 */
export function withoutNamedPorts(
  policy: Record<string, unknown>,
): Record<string, unknown> | undefined {
  const spec = isObject(policy.spec) ? policy.spec : {};
  let changed = false;
  const out: Record<string, unknown> = { ...spec };
  for (const dir of ["ingress", "egress"]) {
    const rules = spec[dir];
    if (!Array.isArray(rules)) continue;
    out[dir] = rules.flatMap((rule) => {
      if (!isObject(rule) || !Array.isArray(rule.ports)) return [rule];
      const ports = rule.ports.filter((p) => !(isObject(p) && typeof p.port === "string"));
      if (ports.length === rule.ports.length) return [rule];
      changed = true;
      return ports.length ? [{ ...rule, ports }] : [];
    });
  }
  if (!changed) return undefined;
  // The types the rules implied stay (an egress left empty must still isolate egress).
  if (spec.policyTypes === undefined) {
    out.policyTypes = Array.isArray(spec.egress) && spec.egress.length
      ? ["Ingress", "Egress"]
      : ["Ingress"];
  }
  return { ...policy, spec: out };
}

/** The sets a plan's rules match peers against (those whose members matter on this node). */
function setsUsed(plan: Plan): string[] {
  return [...plan.ingress.rules, ...plan.egress.rules].flatMap((r) =>
    r.peers.flatMap((p) => ("set" in p ? [p.set] : []))
  );
}

export class KubePolicySync {
  readonly #o: SyncOptions;
  readonly policies = new Map<string, Record<string, unknown>>();
  readonly pods = new Map<string, ApiPod>();
  readonly namespaces = new Map<string, Record<string, unknown>>();
  #policyList: unknown[] = [];
  #policyListDirty = true;
  #policyVersion = 0;
  /** Per local pod (tag): the plan and identity last installed by this process. */
  #installed = new Map<string, string>();
  /** Per remote pod: the sets it is in, for the policies of #policyVersion. */
  #memberOf = new Map<string, { sig: string; sets: string[] }>();
  #writtenPolicies?: string;
  readonly #listed = new Set<Kind>();

  constructor(opts: SyncOptions) {
    this.#o = opts;
  }

  get ready(): boolean {
    return this.#listed.size === 3;
  }

  replace(kind: Kind, items: KubeObject[]): void {
    const store = this.#store(kind);
    store.clear();
    for (const o of items) this.#put(kind, o);
    this.#listed.add(kind);
    if (kind === "networkpolicies") this.#policyListDirty = true;
  }

  event(kind: Kind, e: WatchEvent): void {
    if (e.type === "DELETED") this.#store(kind).delete(objectKey(e.object));
    else this.#put(kind, e.object);
    if (kind === "networkpolicies") this.#policyListDirty = true;
  }

  #store(kind: Kind): Map<string, unknown> {
    return kind === "networkpolicies"
      ? this.policies
      : kind === "pods"
      ? this.pods
      : this.namespaces;
  }

  #put(kind: Kind, o: KubeObject): void {
    const key = objectKey(o);
    if (kind === "pods") this.pods.set(key, podOf(o));
    else if (kind === "namespaces") this.namespaces.set(key, o);
    else {
      let policy = policyOf(o);
      let problems = policyEngine().validate([policy]);
      const strict = problems.length ? withoutNamedPorts(policy) : undefined;
      if (strict && !policyEngine().validate([strict]).length) {
        // Dropping the policy would un-isolate the pods it selects: keep it, without the rules
        // (or ports) the engine cannot enforce, so that what they allow is denied, never more.
        this.#o.log(
          `policy sync: warning: NetworkPolicy ${
            quote(key)
          }: named ports are not supported; the traffic they allow is denied`,
        );
        policy = strict;
        problems = [];
      }
      if (problems.length) {
        // One policy the engine cannot enforce (a named port, say) must not hold up the others.
        this.#o.log(
          `policy sync: warning: NetworkPolicy ${quote(key)} is left out: ${
            problems.map((p) => `${p.path.replace(/^policies\[0\]\./, "")}: ${p.message}`)
              .join("; ")
          }`,
        );
        this.policies.delete(key);
      } else this.policies.set(key, policy);
    }
  }

  /** The policies in force, as one list the engine keeps parsed until they change. */
  #currentPolicies(): unknown[] {
    if (this.#policyListDirty) {
      this.#policyList = [...this.policies.keys()].sort().map((k) => this.policies.get(k));
      this.#policyListDirty = false;
      this.#policyVersion++;
    }
    return this.#policyList;
  }

  #nsLabels(ns: string): Record<string, string> {
    return namespaceLabels(ns, this.namespaces.get(ns) as KubeObject | undefined);
  }

  /** The policy list as the policy step reads it, written only when it changed. */
  async #writePolicyFile(policies: unknown[]): Promise<void> {
    if (!this.#o.policyFile) return;
    const text = JSON.stringify(
      { apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicyList", items: policies },
      null,
      1,
    ) + "\n";
    if (text === this.#writtenPolicies) return;
    await this.#o.system.files.writeAtomic(this.#o.policyFile, text, 0o644);
    this.#writtenPolicies = text;
  }

  /**
   * Brings nftables (and the registry's identities) in line with the stores,
   * in one batch. `fromScratch` re-installs every local pod and refills every
   * selector set (start-up, relist, `--once`).
   */
  async apply(fromScratch = false): Promise<ApplyStats> {
    const began = performance.now();
    const { system, stateDir, network } = this.#o;
    const engine = policyEngine();
    const policies = this.#currentPolicies();
    if (fromScratch) this.#installed.clear();
    await this.#writePolicyFile(policies);
    const stats: ApplyStats = { replanned: 0, added: 0, deleted: 0, setsDeleted: 0, ms: 0 };
    await locked(system, stateDir, async () => {
      const records = (await readRecords(system, stateDir)).filter((r) => r.network === network);
      const listing = readTable(system);
      const chains = new Set(listing.chains);
      if (!records.length) {
        // No pod here: nothing to enforce (DEL of the last pod removed the policy objects).
        this.#installed.clear();
        return;
      }
      const lines: string[] = [];
      const writes: { record: PodRecord; plan: Plan }[] = [];
      const used = new Set<string>();
      const keep = new Set<string>();
      const localKeys = new Set<string>();
      const localAddresses = new Set<string>();
      const planned = records.map((r) => {
        const key = `${r.identity.namespace}/${r.identity.name}`;
        localKeys.add(key);
        r.identity.addresses.forEach((a) => localAddresses.add(a));
        const api = this.pods.get(key);
        const identity: Identity = {
          ...r.identity,
          labels: api ? { ...api.labels, ...(r.runtimeLabels ?? {}) } : r.identity.labels,
          namespaceLabels: this.namespaces.has(r.identity.namespace)
            ? this.#nsLabels(r.identity.namespace)
            : r.identity.namespaceLabels,
        };
        const plan = engine.plan(policies, identity);
        setsUsed(plan).forEach((s) => used.add(s));
        plan.memberOf.forEach((s) => keep.add(s));
        return { record: r, identity, plan };
      });
      used.forEach((s) => keep.add(s));
      // From scratch, every selector set kept is emptied first and refilled below, in this batch.
      const existing = [...listing.sets.keys()].filter((s) => SELECTOR_SET.test(s));
      if (fromScratch) {
        for (const s of existing) {
          if (keep.has(s.slice(0, -2))) lines.push(`flush set ${T} ${s}`);
        }
      }
      for (const { record, identity, plan } of planned) {
        const sig = JSON.stringify([plan, identity]);
        const intact = chains.has(record.chains.ingress) && chains.has(record.chains.egress) &&
          plan.memberOf.every((s) =>
            identity.addresses.every((a) => listing.sets.has(`${s}_${familyOf(a)}`))
          );
        if (this.#installed.get(record.tag) === sig && intact) continue;
        const next: PodRecord = { ...record, identity };
        lines.push(...installLines(system, next, plan, fromScratch ? undefined : record));
        writes.push({ record: next, plan });
        this.#installed.set(record.tag, sig);
        stats.replanned++;
      }
      const tags = new Set(records.map((r) => r.tag));
      for (const tag of [...this.#installed.keys()]) {
        if (!tags.has(tag)) this.#installed.delete(tag);
      }

      // Other pods (other nodes') as members of the sets local rules use.
      const want = new Map<string, string>();
      for (const [key, pod] of this.pods) {
        if (pod.ignored || !pod.addresses.length || localKeys.has(key)) continue;
        if (this.#o.node && pod.nodeName === this.#o.node) continue;
        if (pod.addresses.some((a) => localAddresses.has(a))) continue;
        const identity: Identity = {
          namespace: pod.namespace,
          name: pod.name,
          labels: pod.labels,
          namespaceLabels: this.#nsLabels(pod.namespace),
          addresses: pod.addresses,
        };
        const sig = `${this.#policyVersion} ${
          JSON.stringify([pod.labels, identity.namespaceLabels])
        }`;
        let cached = this.#memberOf.get(key);
        if (cached?.sig !== sig) {
          cached = { sig, sets: engine.plan(policies, identity).memberOf };
          this.#memberOf.set(key, cached);
        }
        for (const s of cached.sets) {
          if (!used.has(s)) continue;
          for (const a of pod.addresses) {
            want.set(`${s}_${familyOf(a)} ${a}`, `${REMOTE_COMMENT}${key}`);
          }
        }
      }
      for (const key of [...this.#memberOf.keys()]) {
        if (!this.pods.has(key)) this.#memberOf.delete(key);
      }
      for (const s of used) {
        lines.push(
          `add set ${T} ${s}_4 { type ipv4_addr; }`,
          `add set ${T} ${s}_6 { type ipv6_addr; }`,
        );
      }
      const have = new Map<string, string>();
      for (const s of existing) {
        if (fromScratch && keep.has(s.slice(0, -2))) continue; // flushed above
        for (const e of listing.sets.get(s) ?? []) {
          if (e.comment?.startsWith(REMOTE_COMMENT)) have.set(`${s} ${e.key}`, e.comment);
        }
      }
      for (const [k, comment] of have) {
        const [set, address] = k.split(" ");
        if (want.get(k) === comment || !keep.has(set.slice(0, -2))) continue;
        lines.push(`delete element ${T} ${set} { ${address} }`);
        stats.deleted++;
      }
      for (const [k, comment] of want) {
        if (have.get(k) === comment) continue;
        const [set, address] = k.split(" ");
        lines.push(`add element ${T} ${set} { ${address} comment "${comment}" }`);
        stats.added++;
      }
      // Sets no rule and no pod uses any more go (after the chains that named them were rewritten).
      for (const s of existing) {
        if (!keep.has(s.slice(0, -2))) {
          lines.push(`delete set ${T} ${s}`);
          stats.setsDeleted++;
        }
      }
      if (stats.replanned + stats.added + stats.deleted + stats.setsDeleted === 0) return;
      system.kernel.nft(
        [`add table ${T}`, ...skeletonIfStale(system, POLICY), ...lines].join("\n"),
      );
      for (const { record, plan } of writes) await writeRecord(system, stateDir, record, plan);
    });
    stats.ms = performance.now() - began;
    return stats;
  }
}

/** One line for the log of what an apply did. */
export function describe(s: ApplyStats, why: string): string {
  return `policy sync: ${why}: ${s.replanned} local pod${
    s.replanned === 1 ? "" : "s"
  } re-planned, ${s.added} set element${s.added === 1 ? "" : "s"} added, ${s.deleted} deleted${
    s.setsDeleted ? `, ${s.setsDeleted} unused sets deleted` : ""
  } (${s.ms.toFixed(1)} ms)`;
}

/** `--once`: list everything, apply from scratch, return. */
export async function syncOnce(opts: SyncOptions): Promise<ApplyStats> {
  const sync = new KubePolicySync(opts);
  const lists = await Promise.all(
    (Object.keys(PATHS) as Kind[]).map(async (kind) =>
      [kind, await listAll(opts.client, PATHS[kind], kind)] as const
    ),
  );
  for (const [kind, list] of lists) sync.replace(kind, list.items);
  return await sync.apply(true);
}

/**
 * The long-running loop: a reflector per kind and a watch on the registry
 * directory feed one applier; runs until `signal` aborts.
 */
export async function syncForever(
  opts: SyncOptions & { signal: AbortSignal; debounceMs?: number; resyncMs?: number },
): Promise<void> {
  const sync = new KubePolicySync(opts);
  const debounce = opts.debounceMs ?? 10;
  let pending = false;
  let scratch = true;
  let running: Promise<void> | undefined;
  const why = new Set<string>();
  const kick = (reason: string, fromScratch = false) => {
    why.add(reason);
    if (fromScratch) scratch = true;
    if (pending) return;
    pending = true;
    setTimeout(run, debounce);
  };
  const run = () => {
    if (running) {
      running.then(() => setTimeout(run, 0));
      return;
    }
    if (!sync.ready || opts.signal.aborted) {
      pending = false;
      return;
    }
    pending = false;
    const full = scratch;
    scratch = false;
    const reasons = [...why].join(", ");
    why.clear();
    running = sync.apply(full).then((s) => {
      if (full || s.replanned + s.added + s.deleted + s.setsDeleted) {
        opts.log(describe(s, full ? `${reasons} (from scratch)` : reasons));
      }
    }, (err) => {
      opts.log(
        `policy sync: apply failed, retrying in 1 s: ${err instanceof Error ? err.message : err}`,
      );
      scratch = scratch || full;
      setTimeout(() => kick("retry"), 1000);
    }).finally(() => running = undefined);
  };

  const dir = registryDir(opts.stateDir);
  await opts.system.files.mkdir(dir, 0o700);
  const watcher = Deno.watchFs(dir);
  opts.signal.addEventListener("abort", () => watcher.close(), { once: true });
  const watching = (async () => {
    try {
      for await (const _ of watcher) kick("registry changed");
    } catch {
      // closed
    }
  })();
  const resync = setInterval(() => kick("periodic check"), opts.resyncMs ?? 60_000);
  opts.signal.addEventListener("abort", () => clearInterval(resync), { once: true });

  await Promise.all([
    ...(Object.keys(PATHS) as Kind[]).map((kind) =>
      reflect(opts.client, PATHS[kind], kind, {
        replace: (items) => {
          sync.replace(kind, items);
          opts.log(`policy sync: listed ${items.length} ${kind}`);
          kick(`${kind} listed`, true);
        },
        event: (e) => {
          sync.event(kind, e);
          kick(`${kind} ${e.type.toLowerCase()} ${objectKey(e.object)}`);
        },
        error: (err, retryMs) =>
          opts.log(
            `policy sync: ${kind}: ${err.message}; ${
              err instanceof GoneError
                ? "listing again"
                : retryMs
                ? `retrying in ${retryMs} ms`
                : "reconnecting"
            }`,
          ),
      }, { signal: opts.signal })
    ),
    watching,
  ]);
  await running;
}
