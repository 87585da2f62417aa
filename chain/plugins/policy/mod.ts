/**
 * The `policy` step: Kubernetes NetworkPolicy (with priorities and Deny rules)
 * for the pods of one node, decided by the WebAssembly engine and enforced in
 * nftables, with no agent. ADD records the pod (identity, addresses) in the
 * state directory, asks the engine for the pod's plan and installs it in one
 * batch before the result is returned. DEL, GC and CHECK work from that
 * registry; `cnichain policy sync` re-applies changed policies to every pod.
 */
import { CniError, ErrorCode, invalidConfig, quote } from "../../spec/errors.ts";
import { type ConfigObject, isObject, pathProblem, type Problem } from "../../spec/config.ts";
import { decodeJson } from "../../spec/input.ts";
import type { Result } from "../../spec/types.ts";
import { formatIp, parseCidr } from "../../ip.ts";
import type { GcInvocation, Invocation, Plugin } from "../../plugin.ts";
import { fileExists, type System } from "../../system.ts";
import { DEFAULT_STATE_DIR } from "../cnichain/mod.ts";
import { shortHash } from "../../hash.ts";
import {
  attachmentTag,
  deleteLines,
  locked,
  readTable,
  retireLines,
  TABLE,
} from "../../nft_state.ts";
import {
  type Identity,
  type Plan,
  policyEngine,
  PolicyProblems,
} from "../../../policy-wasm/host.ts";
import { type PodChains, podLines, POLICY_MAPS, SELECTOR_SET } from "./rules.ts";

export const POLICY_TYPE = "policy";

export interface PolicyConfig {
  policies?: unknown[];
  policyFile?: string;
  stateDir: string;
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
}

export function readPolicyConfig(
  raw: ConfigObject,
  prefix: string,
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
  if (cfg.policies) {
    for (const p of policyEngine().validate(cfg.policies)) {
      problems.push({ path: `${prefix}${p.path}`, message: p.message, value: p.value });
    }
  }
  return { cfg, problems };
}

/** The policies in force: inline, or from `policyFile` (a list, or an object with `items` or `policies`). */
export async function loadPolicies(system: System, cfg: PolicyConfig): Promise<unknown[]> {
  if (cfg.policies) return cfg.policies;
  if (!cfg.policyFile) return [];
  const bytes = await system.files.read(cfg.policyFile);
  if (bytes === undefined) {
    throw invalidConfig("policyFile", "cannot be read: no such file", cfg.policyFile);
  }
  const doc = decodeJson(bytes, cfg.policyFile);
  const list = Array.isArray(doc) ? doc : isObject(doc) ? (doc.items ?? doc.policies) : undefined;
  if (!Array.isArray(list)) {
    throw invalidConfig("policyFile", "must hold a list of policies", cfg.policyFile);
  }
  const problems = policyEngine().validate(list);
  if (problems.length) {
    const p = problems[0];
    throw invalidConfig(`policyFile ${quote(cfg.policyFile)}: ${p.path}`, p.message, p.value);
  }
  return list;
}

function parse(inv: Invocation): PolicyConfig {
  const { cfg, problems } = readPolicyConfig(inv.conf.raw, "");
  if (problems.length) {
    throw invalidConfig(problems[0].path, problems[0].message, problems[0].value);
  }
  if (inv.conf.raw.stateDir === undefined && inv.context.stateDir) {
    cfg.stateDir = inv.context.stateDir;
  }
  return cfg;
}

/** The pod as policies see it: labels from args.cni.labels, namespace and name from CNI_ARGS, addresses from prevResult. */
function identityOf(inv: Invocation, prev: Result): Identity {
  const labels: Record<string, string> = {};
  const cni = isObject(inv.conf.args.cni) ? inv.conf.args.cni : {};
  if (cni.labels !== undefined) {
    if (!Array.isArray(cni.labels)) {
      throw invalidConfig("args.cni.labels", "must be a list of {key, value}", cni.labels);
    }
    cni.labels.forEach((l, i) => {
      if (!isObject(l) || typeof l.key !== "string" || typeof l.value !== "string") {
        throw invalidConfig(`args.cni.labels[${i}]`, 'must be {"key": string, "value": string}', l);
      }
      labels[l.key] = l.value;
    });
  }
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
  };
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
  const leave: string[] = [];
  for (const set of previous?.memberOf.filter((s) => !plan.memberOf.includes(s)) ?? []) {
    for (const address of record.identity.addresses) {
      const family = address.includes(":") ? 6 : 4;
      if (ownerOf(system, `${set}_${family}`, address) === record.tag) {
        leave.push(`delete element inet ${TABLE} ${set}_${family} { ${address} }`);
      }
    }
  }
  system.kernel.nft(
    [...podLines(plan, record.chains, record.identity.addresses, record.tag), ...leave].join("\n"),
  );
  await system.files.mkdir(registryDir(stateDir), 0o700);
  await system.files.writeAtomic(
    recordFile(stateDir, record.tag),
    JSON.stringify({ ...record, memberOf: plan.memberOf }),
    0o600,
  );
}

function ownerOf(system: System, set: string, key: string): string | undefined {
  const text = system.kernel.nftGet(`get element inet ${TABLE} ${set} { ${key} }`);
  return text === undefined ? undefined : /comment "([^"]*)"/.exec(text)?.[1] ?? "";
}

/** Removes a pod's elements and chains (the caller holds the lock); only elements still carrying its tag. */
function uninstallLines(system: System, record: PodRecord): string[] {
  const lines: string[] = [];
  for (const address of record.identity.addresses) {
    const family = address.includes(":") ? 6 : 4;
    for (
      const set of [
        `pol_in${family}`,
        `pol_out${family}`,
        ...record.memberOf.map((s) => `${s}_${family}`),
      ]
    ) {
      if (ownerOf(system, set, address) === record.tag) {
        lines.push(`delete element inet ${TABLE} ${set} { ${address} }`);
      }
    }
  }
  const chains = new Set(readTable(system).chains);
  for (const chain of [record.chains.ingress, record.chains.egress]) {
    if (chains.has(chain)) {
      lines.push(`flush chain inet ${TABLE} ${chain}`, `delete chain inet ${TABLE} ${chain}`);
    }
  }
  return lines;
}

/** Without pods left, the policy chain, maps and selector sets go (and the table if nothing else is in it). */
async function retireIfUnused(system: System, stateDir: string): Promise<void> {
  if ((await system.files.list(registryDir(stateDir))).length) return;
  const listing = readTable(system);
  const sets = [...listing.sets.keys()].filter((s) =>
    POLICY_MAPS.includes(s) || SELECTOR_SET.test(s)
  );
  const podChains = listing.chains.filter((c) => /^p[io]_[0-9a-f]+$/.test(c));
  const lines = retireLines(listing, { chains: ["pol_forward", ...podChains], sets }, () => false);
  if (lines.length) system.kernel.nft(lines.join("\n"));
}

async function removePod(system: System, stateDir: string, tag: string): Promise<void> {
  const file = recordFile(stateDir, tag);
  const bytes = await system.files.read(file);
  let lines: string[];
  if (bytes) {
    lines = uninstallLines(system, JSON.parse(new TextDecoder().decode(bytes)) as PodRecord);
  } else {
    // No record (lost, or never written): go by the comments and the chain names the tag gives.
    const listing = readTable(system);
    const sets = [...listing.sets.keys()].filter((s) =>
      POLICY_MAPS.includes(s) || SELECTOR_SET.test(s)
    );
    lines = deleteLines(listing, sets, (c) => c === tag);
    const h = shortHash(tag);
    for (const chain of [`pi_${h}`, `po_${h}`]) {
      if (listing.chains.includes(chain)) {
        lines.push(`flush chain inet ${TABLE} ${chain}`, `delete chain inet ${TABLE} ${chain}`);
      }
    }
  }
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
  const policies = await loadPolicies(inv.system, cfg);
  const identity = identityOf(inv, prev);
  if (!identity.addresses.length) {
    throw invalidConfig(
      "prevResult.ips",
      `has no address on the sandbox interface ${quote(inv.env.ifname)}`,
    );
  }
  const plan = policyEngine().plan(policies, identity);
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
  };
  await locked(inv.system, cfg.stateDir, async () => {
    // A record left by an earlier ADD of the same attachment (a crash before DEL) is replaced whole.
    if (await fileExists(inv.system.files, recordFile(cfg.stateDir, tag))) {
      await removePod(inv.system, cfg.stateDir, tag);
    }
    await install(inv.system, cfg.stateDir, record, plan);
  });
  return prev;
}

async function del(inv: Invocation): Promise<void> {
  const { cfg } = readPolicyConfigLenient(inv);
  const tag = tagOf(inv);
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
  await locked(inv.system, cfg.stateDir, async () => {
    for (const record of await readRecords(inv.system, cfg.stateDir)) {
      if (record.network === inv.conf.name && !keep.has(record.tag)) {
        await removePod(inv.system, cfg.stateDir, record.tag);
      }
    }
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
      if (ownerOf(inv.system, set, address) !== tag) {
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
  validate: (entry, path) => {
    try {
      return readPolicyConfig(entry, `${path}.`).problems;
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
