/**
 * The `policy` step: Kubernetes NetworkPolicy (with priorities and Deny rules)
 * for the pods of one node, decided by the WebAssembly engine and enforced in
 * nftables, with no agent. ADD records the pod (identity, addresses) in the
 * state directory, asks the engine for the pod's plan and installs it in one
 * batch before the result is returned. DEL, GC and CHECK work from that
 * registry; `cnichain policy sync` re-applies changed policies to every pod.
 * With `kubernetes`, ADD reads the pod's and its namespace's labels from the
 * API server (kube_pod.ts) and `cnichain policy sync --kubernetes` keeps
 * everything in step with the API (kube_sync.ts).
 */
import { CniError, ErrorCode, invalidConfig, quote } from "../../spec/errors.ts";
import { type ConfigObject, isObject, pathProblem, type Problem } from "../../spec/config.ts";
import { decodeJson, MAX_STDIN_BYTES } from "../../spec/input.ts";
import type { Result } from "../../spec/types.ts";
import { formatIp, parseCidr } from "../../ip.ts";
import type { GcInvocation, Invocation, Plugin } from "../../plugin.ts";
import { listSwept, type StateFiles, type System } from "../../system.ts";
import { DEFAULT_STATE_DIR } from "../cnichain/mod.ts";
import { shortHash } from "../../hash.ts";
import {
  attachmentTag,
  deleteLines,
  FAST_LIMIT,
  locked,
  networkTag,
  ownerOf,
  ownersOf,
  readTable,
  retireLines,
  skeletonIfStale,
  TABLE,
  type TableListing,
} from "../../nft_state.ts";
import {
  type Identity,
  type Plan,
  policyEngine,
  PolicyProblems,
} from "../../../policy-wasm/host.ts";
import { type PodChains, podLines, POLICY, POLICY_MAPS, SELECTOR_SET } from "./rules.ts";
import { DEFAULT_API_TIMEOUT_MS, fetchPodLabels, type KubernetesConfig } from "./kube_pod.ts";
import { EngineMemo } from "./memo.ts";
import type { SetType } from "../../../ffi/nft_netlink.ts";

export const POLICY_TYPE = "policy";

export interface PolicyConfig {
  policies?: unknown[];
  policyFile?: string;
  stateDir: string;
  /** Labels from the API server (the pod's and its namespace's) on ADD. */
  kubernetes?: KubernetesConfig;
}

/** What the registry keeps per pod: enough for DEL, GC, CHECK, sync and explain. */
export interface PodRecord {
  tag: string;
  network: string;
  containerId: string;
  ifname: string;
  identity: Identity;
  chains: PodChains;
  memberOf: string[];
  /** The labels the runtime gave (args.cni.labels): they win over the API's when sync relabels. */
  runtimeLabels?: Record<string, string>;
}

function readKubernetes(
  raw: unknown,
  path: string,
  problems: Problem[],
): KubernetesConfig | undefined {
  if (!isObject(raw)) {
    problems.push({
      path,
      message: "must be an object {kubeconfig, timeoutMs?, apiUnavailable?}",
      value: raw,
    });
    return undefined;
  }
  const known = ["kubeconfig", "timeoutMs", "apiUnavailable"];
  for (const key of Object.keys(raw)) {
    if (!known.includes(key)) {
      problems.push({ path: `${path}.${key}`, message: `is not a field (${known.join(", ")})` });
    }
  }
  const cfg: KubernetesConfig = {
    kubeconfig: "",
    timeoutMs: DEFAULT_API_TIMEOUT_MS,
    apiUnavailable: "deny",
  };
  const problem = raw.kubeconfig === undefined
    ? "is required: the JSON kubeconfig the plugin reads the API server with"
    : pathProblem(raw.kubeconfig);
  if (problem) {
    problems.push({ path: `${path}.kubeconfig`, message: problem, value: raw.kubeconfig });
  } else cfg.kubeconfig = raw.kubeconfig as string;
  if (raw.timeoutMs !== undefined) {
    const t = raw.timeoutMs;
    if (typeof t !== "number" || !Number.isInteger(t) || t < 1 || t > 60_000) {
      problems.push({
        path: `${path}.timeoutMs`,
        message: "must be a whole number of milliseconds from 1 to 60000",
        value: t,
      });
    } else cfg.timeoutMs = t;
  }
  if (raw.apiUnavailable !== undefined) {
    if (raw.apiUnavailable !== "deny" && raw.apiUnavailable !== "allow") {
      problems.push({
        path: `${path}.apiUnavailable`,
        message: 'must be "deny" or "allow"',
        value: raw.apiUnavailable,
      });
    } else cfg.apiUnavailable = raw.apiUnavailable;
  }
  return cfg;
}

export function readPolicyConfig(
  raw: ConfigObject,
  prefix: string,
  memo?: EngineMemo,
): { cfg: PolicyConfig; problems: Problem[] } {
  const problems: Problem[] = [];
  const cfg: PolicyConfig = { stateDir: DEFAULT_STATE_DIR };
  if (raw.policies !== undefined) {
    if (!Array.isArray(raw.policies)) {
      problems.push({ path: `${prefix}policies`, message: "must be a list", value: raw.policies });
    } else cfg.policies = raw.policies;
  }
  if (raw.policyFile !== undefined) {
    const problem = pathProblem(raw.policyFile);
    if (problem) {
      problems.push({ path: `${prefix}policyFile`, message: problem, value: raw.policyFile });
    } else cfg.policyFile = raw.policyFile as string;
  }
  if (cfg.policies && cfg.policyFile) {
    problems.push({
      path: `${prefix}policyFile`,
      message: "cannot be given together with policies",
    });
  }
  if (raw.stateDir !== undefined) {
    const problem = pathProblem(raw.stateDir);
    if (problem) {
      problems.push({ path: `${prefix}stateDir`, message: problem, value: raw.stateDir });
    } else cfg.stateDir = raw.stateDir as string;
  }
  if (raw.kubernetes !== undefined) {
    cfg.kubernetes = readKubernetes(raw.kubernetes, `${prefix}kubernetes`, problems);
  }
  if (cfg.policies && !memo?.valid(cfg.policies)) {
    for (const p of policyEngine().validate(cfg.policies)) {
      problems.push({ path: `${prefix}${p.path}`, message: p.message, value: p.value });
    }
  }
  return { cfg, problems };
}

/** The policies in force: inline, or from `policyFile` (a list, or an object with `items` or `policies`). */
export async function loadPolicies(
  system: System,
  cfg: PolicyConfig,
  memo?: EngineMemo,
): Promise<unknown[]> {
  if (cfg.policies) return cfg.policies;
  if (!cfg.policyFile) return [];
  let bytes: Uint8Array | undefined;
  try {
    bytes = await system.files.read(cfg.policyFile, MAX_STDIN_BYTES);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw invalidConfig("policyFile", `cannot be read: ${why}`, cfg.policyFile);
  }
  if (bytes === undefined) {
    throw invalidConfig("policyFile", "cannot be read: no such file", cfg.policyFile);
  }
  const doc = decodeJson(bytes, cfg.policyFile);
  const list = Array.isArray(doc) ? doc : isObject(doc) ? (doc.items ?? doc.policies) : undefined;
  if (!Array.isArray(list)) {
    throw invalidConfig("policyFile", "must hold a list of policies", cfg.policyFile);
  }
  const problems = memo?.valid(list) ? [] : policyEngine().validate(list);
  if (problems.length) {
    const p = problems[0];
    throw invalidConfig(`policyFile ${quote(cfg.policyFile)}: ${p.path}`, p.message, p.value);
  }
  return list;
}

/** The engine's remembered answers in the step's state directory. */
function memoFor(files: StateFiles, raw: ConfigObject, chainStateDir?: string): EngineMemo {
  const own = typeof raw.stateDir === "string" && !pathProblem(raw.stateDir);
  return new EngineMemo(files, own ? raw.stateDir as string : chainStateDir ?? DEFAULT_STATE_DIR);
}

function parse(inv: Invocation): PolicyConfig {
  const memo = memoFor(inv.system.files, inv.conf.raw, inv.context.stateDir);
  const { cfg, problems } = readPolicyConfig(inv.conf.raw, "", memo);
  if (problems.length) {
    throw invalidConfig(problems[0].path, problems[0].message, problems[0].value);
  }
  if (inv.conf.raw.stateDir === undefined && inv.context.stateDir) {
    cfg.stateDir = inv.context.stateDir;
  }
  return cfg;
}

/** The pod's labels from `args.cni.labels`; a bad list is a problem at `prefix`args.cni.labels. */
function readLabels(
  args: unknown,
  prefix: string,
): { labels: Record<string, string>; problem?: Problem } {
  const labels: Record<string, string> = {};
  const cni = isObject(args) && isObject(args.cni) ? args.cni : {};
  if (cni.labels === undefined) return { labels };
  if (!Array.isArray(cni.labels)) {
    const path = `${prefix}args.cni.labels`;
    return {
      labels,
      problem: { path, message: "must be a list of {key, value}", value: cni.labels },
    };
  }
  for (const [i, l] of cni.labels.entries()) {
    if (!isObject(l) || typeof l.key !== "string" || typeof l.value !== "string") {
      const path = `${prefix}args.cni.labels[${i}]`;
      return {
        labels,
        problem: { path, message: 'must be {"key": string, "value": string}', value: l },
      };
    }
    labels[l.key] = l.value;
  }
  return { labels };
}

/** The pod as policies see it: labels from args.cni.labels, namespace and name from CNI_ARGS, addresses from prevResult. */
function identityOf(inv: Invocation, prev: Result): Identity & { runtimeGiven: boolean } {
  const { labels, problem } = readLabels(inv.conf.args, "");
  if (problem) throw invalidConfig(problem.path, problem.message, problem.value);
  const arg = (k: string) => inv.env.argPairs.find(([key]) => key === k)?.[1];
  const namespace = arg("K8S_POD_NAMESPACE") || "default";
  const addresses: string[] = [];
  for (const ip of prev.ips ?? []) {
    const iface = ip.interface !== undefined ? prev.interfaces?.[ip.interface] : undefined;
    if (iface && (iface.name !== inv.env.ifname || !iface.sandbox)) continue;
    const cidr = parseCidr(ip.address);
    if (cidr) addresses.push(formatIp(cidr.ip));
  }
  return {
    namespace,
    name: arg("K8S_POD_NAME") || inv.env.containerId,
    labels,
    namespaceLabels: { "kubernetes.io/metadata.name": namespace },
    addresses,
    runtimeGiven: Object.keys(labels).length > 0,
  };
}

/**
 * The pod's and its namespace's labels from the API server, under the
 * runtime's. When the server cannot answer: code 11 (the runtime retries the
 * sandbox, and the chain rolls back what it did), or with `apiUnavailable:
 * "allow"` a warning and the labels the step has.
 */
async function withApiLabels(
  cfg: KubernetesConfig,
  identity: Identity,
  warn: (text: string) => void,
): Promise<void> {
  let got;
  try {
    got = await fetchPodLabels(cfg, identity.namespace, identity.name);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    if (cfg.apiUnavailable === "allow") {
      warn(
        `cnichain policy: warning: no labels from the API server for pod ${
          quote(`${identity.namespace}/${identity.name}`)
        } (${why}); going on with the runtime's labels (kubernetes.apiUnavailable is "allow")`,
      );
      return;
    }
    throw new CniError(
      ErrorCode.TryAgainLater,
      `cannot read the labels of pod ${
        quote(`${identity.namespace}/${identity.name}`)
      } from the API server: ${why}`,
      'try again later; kubernetes.apiUnavailable "allow" would go on without them',
    );
  }
  identity.labels = { ...got.labels, ...identity.labels };
  identity.namespaceLabels = got.namespaceLabels;
}

export const registryDir = (stateDir: string) => `${stateDir}/policy/pods`;

function recordFile(stateDir: string, tag: string): string {
  return `${registryDir(stateDir)}/${shortHash(tag)}`;
}

export async function readRecords(system: System, stateDir: string): Promise<PodRecord[]> {
  const out: PodRecord[] = [];
  for (const name of await system.files.list(registryDir(stateDir))) {
    try {
      out.push(
        JSON.parse(
          new TextDecoder().decode((await system.files.read(`${registryDir(stateDir)}/${name}`))!),
        ),
      );
    } catch {
      // A record written half by a killed process cannot exist (records are renamed into place).
    }
  }
  return out;
}

/** Traffic between pods on one bridge reaches the inet hooks only through bridge netfilter. */
function ensureBridgeNetfilter(system: System): void {
  const host = system.kernel.host();
  for (const key of ["net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"]) {
    const now = host.readSysctl(key);
    if (now === undefined) {
      throw new CniError(
        ErrorCode.NotAvailable,
        `${
          key.replaceAll("/", ".")
        } is not available: load the br_netfilter module (modprobe br_netfilter) so that policy sees traffic between pods on one bridge`,
      );
    }
    if (now !== "1") host.writeSysctl(key, "1");
  }
}

/**
 * Installs (or re-installs) one pod's plan in one batch: its chains are
 * rewritten in place and it leaves the selector sets it no longer matches, so
 * a pod is never without its rules. The caller holds the nftables lock.
 */
async function install(
  system: System,
  stateDir: string,
  record: PodRecord,
  plan: Plan,
  previous?: PodRecord,
): Promise<void> {
  const lines = [
    ...skeletonIfStale(system, POLICY),
    ...installLines(system, record, plan, previous),
  ];
  system.kernel.nft(lines.join("\n"));
  await writeRecord(system, stateDir, record, plan);
}

/** The commands that install `plan` for a pod (its part of a batch with the skeleton); see install(). */
export function installLines(
  system: System,
  record: PodRecord,
  plan: Plan,
  previous?: PodRecord,
): string[] {
  const leave: string[] = [];
  for (const set of previous?.memberOf.filter((s) => !plan.memberOf.includes(s)) ?? []) {
    for (const address of previous!.identity.addresses) {
      const family = address.includes(":") ? 6 : 4;
      if (ownerOf(system, { set: `${set}_${family}`, key: address }) === record.tag) {
        leave.push(`delete element inet ${TABLE} ${set}_${family} { ${address} }`);
      }
    }
  }
  return [...podLines(plan, record.chains, record.identity.addresses, record.tag), ...leave];
}

/** Puts a pod's record (with the sets `plan` makes it a member of) in the registry. */
export async function writeRecord(
  system: System,
  stateDir: string,
  record: PodRecord,
  plan: Plan,
): Promise<void> {
  await system.files.mkdir(registryDir(stateDir), 0o700);
  await system.files.writeAtomic(
    recordFile(stateDir, record.tag),
    JSON.stringify({ ...record, memberOf: plan.memberOf }),
    0o600,
  );
}

/** Removes a pod's elements and chains (the caller holds the lock); only elements still carrying its tag. */
function uninstallLines(system: System, record: PodRecord): string[] {
  const elements = record.identity.addresses.flatMap((key) => {
    const family = key.includes(":") ? 6 : 4;
    return [`pol_in${family}`, `pol_out${family}`, ...record.memberOf.map((s) => `${s}_${family}`)]
      .map((set) => ({ set, key }));
  });
  // Asked over netlink one by one where the kernel layer can: libnftables reads the whole table
  // (every pod's chains and elements) before it answers a single `get` (18 ms with 300 pods).
  const fast = elements.length <= FAST_LIMIT ? system.kernel.nftElements : undefined;
  const owners = fast
    ? fast.comments(TABLE, addressSetTypes(elements), elements)
    : ownersOf(system, elements);
  const lines = elements
    .filter((_, i) => owners[i] === record.tag)
    .map((e) => `delete element inet ${TABLE} ${e.set} { ${e.key} }`);
  for (const chain of [record.chains.ingress, record.chains.egress]) {
    const exists = fast
      ? fast.hasChain(TABLE, chain)
      : system.kernel.nftGet(`list chain inet ${TABLE} ${chain}`) !== undefined;
    if (exists) {
      lines.push(`flush chain inet ${TABLE} ${chain}`, `delete chain inet ${TABLE} ${chain}`);
    }
  }
  return lines;
}

/** The key types of the policy's maps and selector sets: one address each, by the name's family. */
function addressSetTypes(elements: { set: string }[]): Map<string, SetType> {
  return new Map(elements.map(({ set }) => [
    set,
    { key: [set.endsWith("6") ? "ipv6_addr" : "ipv4_addr"], interval: false },
  ]));
}

/**
 * Without pods left, the policy chain, maps and selector sets go (and the table if nothing else
 * is in it); with pods left, only what killed memo writers left.
 */
async function retireIfUnused(system: System, stateDir: string): Promise<void> {
  const memo = new EngineMemo(system.files, stateDir);
  // Under the lock, so a temporary record seen here is a killed writer's: it must not keep the table.
  if ((await listSwept(system.files, registryDir(stateDir))).length) return await memo.sweep();
  await memo.forget();
  const lines = unusedLines(system);
  if (lines.length) system.kernel.nft(lines.join("\n"));
}

/** The lines that retire the policy chains and sets, for when no pod is registered. */
function unusedLines(system: System): string[] {
  const listing = readTable(system);
  const { sets, podChains } = policyObjects(listing);
  return retireLines(listing, { chains: ["pol_forward", ...podChains], sets }, () => false);
}

/** The policy step's sets and per-pod chains in a listing of the table it shares. */
function policyObjects(listing: TableListing): { sets: string[]; podChains: string[] } {
  return {
    sets: [...listing.sets.keys()].filter((s) => POLICY_MAPS.includes(s) || SELECTOR_SET.test(s)),
    podChains: listing.chains.filter((c) => /^p[io]_[0-9a-f]+$/.test(c)),
  };
}

/** Without a record (lost, or never written): a pod's rules by the comments and chain names its tag gives. */
function untrackedLines(system: System, tag: string): string[] {
  const listing = readTable(system);
  const lines = deleteLines(listing, policyObjects(listing).sets, (c) => c === tag);
  const h = shortHash(tag);
  for (const chain of [`pi_${h}`, `po_${h}`]) {
    if (listing.chains.includes(chain)) {
      lines.push(`flush chain inet ${TABLE} ${chain}`, `delete chain inet ${TABLE} ${chain}`);
    }
  }
  return lines;
}

async function removePod(system: System, stateDir: string, tag: string): Promise<void> {
  const file = recordFile(stateDir, tag);
  const bytes = await system.files.read(file);
  const lines = bytes
    ? uninstallLines(system, JSON.parse(new TextDecoder().decode(bytes)) as PodRecord)
    : untrackedLines(system, tag);
  if (lines.length) system.kernel.nft(lines.join("\n"));
  await system.files.remove(file);
}

const tagOf = (inv: Invocation) =>
  attachmentTag(inv.conf.name, inv.env.containerId, inv.env.ifname);

async function add(inv: Invocation): Promise<Result> {
  const cfg = parse(inv);
  const prev = inv.conf.prevResult;
  if (!prev) {
    throw invalidConfig("prevResult", "is required: policy runs chained after an interface plugin");
  }
  const memo = new EngineMemo(inv.system.files, cfg.stateDir);
  const policies = await loadPolicies(inv.system, cfg, memo);
  const { runtimeGiven, ...identity } = identityOf(inv, prev);
  if (!identity.addresses.length) {
    throw invalidConfig(
      "prevResult.ips",
      `has no address on the sandbox interface ${quote(inv.env.ifname)}`,
    );
  }
  const runtimeLabels = { ...identity.labels };
  // Only a Kubernetes pod has an API object: a runtime that names no pod (podman on the same
  // node, say) is not looked up, or every one of its ADDs would fail on a pod that does not exist.
  const podNamed = inv.env.argPairs.some(([key, value]) => key === "K8S_POD_NAME" && value);
  if (cfg.kubernetes && podNamed) {
    await withApiLabels(cfg.kubernetes, identity, (text) => {
      console.error(text);
      inv.context.observer.warning?.(text);
    });
  }
  const remembered = memo.plan(policies, identity);
  const plan = remembered ?? policyEngine().plan(policies, identity);
  ensureBridgeNetfilter(inv.system);
  const tag = tagOf(inv);
  const h = shortHash(tag);
  const record: PodRecord = {
    tag,
    network: inv.conf.name,
    containerId: inv.env.containerId,
    ifname: inv.env.ifname,
    identity,
    chains: { ingress: `pi_${h}`, egress: `po_${h}` },
    memberOf: plan.memberOf,
    ...(cfg.kubernetes && runtimeGiven ? { runtimeLabels } : {}),
  };
  await locked(inv.system, cfg.stateDir, async () => {
    // A record left by an earlier ADD of the same attachment (a crash before DEL) is replaced whole.
    if ((await inv.system.files.read(recordFile(cfg.stateDir, tag))) !== undefined) {
      await removePod(inv.system, cfg.stateDir, tag);
    }
    await install(inv.system, cfg.stateDir, record, plan);
    // Not in a dry run: the plan it prints is what the pod's network would be, memo aside.
    if (!remembered && inv.system.kind === "real") await memo.remember(policies, identity, plan);
  });
  return prev;
}

async function del(inv: Invocation): Promise<void> {
  const { cfg } = readPolicyConfigLenient(inv);
  const tag = tagOf(inv);
  // No record and nothing of this pod's in the table: nothing to undo, and no reason to
  // create the state directory and its lock (a rolled-back ADD leaves no trace), unless no pod
  // is registered and the policy chains still stand: a DEL killed before it retired them left
  // that to this one.
  if (
    (await inv.system.files.read(recordFile(cfg.stateDir, tag))) === undefined &&
    untrackedLines(inv.system, tag).length === 0 &&
    ((await inv.system.files.list(registryDir(cfg.stateDir))).length > 0 ||
      unusedLines(inv.system).length === 0)
  ) return;
  await locked(inv.system, cfg.stateDir, async () => {
    await removePod(inv.system, cfg.stateDir, tag);
    await retireIfUnused(inv.system, cfg.stateDir);
  });
}

/** DEL and GC need only the state directory: a config the engine would refuse must not stop them. */
function readPolicyConfigLenient(inv: Invocation): { cfg: PolicyConfig } {
  const raw = inv.conf.raw;
  const stateDir = typeof raw.stateDir === "string" && !pathProblem(raw.stateDir)
    ? raw.stateDir
    : inv.context.stateDir ?? DEFAULT_STATE_DIR;
  return { cfg: { stateDir } };
}

async function gc(inv: GcInvocation): Promise<void> {
  const { cfg } = readPolicyConfigLenient(inv);
  const keep = new Set(
    inv.validAttachments.map((a) => attachmentTag(inv.conf.name, a.containerID, a.ifname)),
  );
  // No record and no policy object in nftables: nothing to collect, and no reason to create the
  // state directory and its lock (a GC refused for another reason leaves no trace).
  if ((await inv.system.files.list(registryDir(cfg.stateDir))).length === 0) {
    const listing = readTable(inv.system);
    const { sets, podChains } = policyObjects(listing);
    if (!sets.length && !podChains.length && !listing.chains.includes("pol_forward")) return;
  }
  await locked(inv.system, cfg.stateDir, async () => {
    for (const record of await readRecords(inv.system, cfg.stateDir)) {
      if (record.network === inv.conf.name && !keep.has(record.tag)) {
        await removePod(inv.system, cfg.stateDir, record.tag);
      }
    }
    // An ADD killed between its batch and its record left elements that no record names.
    const listing = readTable(inv.system);
    const prefix = `${networkTag(inv.conf.name)} `;
    const orphans = new Set<string>();
    for (const [set, elements] of listing.sets) {
      if (!POLICY_MAPS.includes(set) && !SELECTOR_SET.test(set)) continue;
      for (const { comment } of elements) {
        if (comment?.startsWith(prefix) && !keep.has(comment)) orphans.add(comment);
      }
    }
    for (const tag of orphans) await removePod(inv.system, cfg.stateDir, tag);
    await retireIfUnused(inv.system, cfg.stateDir);
  });
}

async function check(inv: Invocation): Promise<void> {
  const cfg = parse(inv);
  const tag = tagOf(inv);
  const bytes = await inv.system.files.read(recordFile(cfg.stateDir, tag));
  if (!bytes) throw new CniError(ErrorCode.Internal, `CHECK: no policy record for ${quote(tag)}`);
  const record = JSON.parse(new TextDecoder().decode(bytes)) as PodRecord;
  const chains = new Set(readTable(inv.system).chains);
  for (const chain of [record.chains.ingress, record.chains.egress, "pol_forward"]) {
    if (!chains.has(chain)) {
      throw new CniError(ErrorCode.Internal, `CHECK: policy chain ${chain} is missing`);
    }
  }
  for (const address of record.identity.addresses) {
    const family = address.includes(":") ? 6 : 4;
    for (const set of [`pol_in${family}`, `pol_out${family}`]) {
      if (ownerOf(inv.system, { set, key: address }) !== tag) {
        throw new CniError(
          ErrorCode.Internal,
          `CHECK: ${address} is not steered to its policy chains (${set})`,
        );
      }
    }
  }
}

async function status(inv: Invocation): Promise<void> {
  const cfg = parse(inv);
  await loadPolicies(inv.system, cfg);
  try {
    ensureBridgeNetfilter(inv.system);
  } catch (err) {
    if (err instanceof CniError) throw err;
    throw new CniError(
      ErrorCode.NotAvailable,
      `bridge netfilter cannot be enabled: ${err instanceof Error ? err.message : err}`,
    );
  }
}

/** Re-plans every registered pod of `network` with `policies` and re-installs it (`cnichain policy sync`). */
export async function syncPods(
  system: System,
  stateDir: string,
  network: string,
  policies: unknown[],
): Promise<number> {
  let count = 0;
  await locked(system, stateDir, async () => {
    const records = (await readRecords(system, stateDir)).filter((r) => r.network === network);
    // Plans first, for every pod: a new selector set must know all its members before rules use it.
    const plans = records.map((r) => ({
      record: r,
      plan: policyEngine().plan(policies, r.identity),
    }));
    for (const { record, plan } of plans) {
      await install(system, stateDir, record, plan, record);
      count++;
    }
  });
  return count;
}

export const policyPlugin: Plugin = {
  validate: (entry, path, _version, verb, context) => {
    // DEL and GC read nothing of the step but the state directory, leniently (see
    // readPolicyConfigLenient): a policy the engine refuses must not keep a pod's network from
    // being torn down. Nor need they pay for compiling the engine.
    if (verb === "DEL" || verb === "GC") return [];
    try {
      const problem = readLabels(entry.args, `${path}.`).problem;
      const memo = context && memoFor(context.files, entry, context.stateDir);
      const { problems } = readPolicyConfig(entry, `${path}.`, memo);
      return [...problems, ...(problem ? [problem] : [])];
    } catch (err) {
      return [{
        path: `${path}`,
        message: `policy engine: ${err instanceof Error ? err.message : err}`,
      }];
    }
  },
  add,
  del,
  check,
  gc,
  status,
};

export { PolicyProblems };
