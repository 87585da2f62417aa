/**
 * `cnichain policy explain|sync`: why a flow is allowed or denied, from the
 * same engine and registry the policy step uses; and re-applying a changed
 * `policyFile` to the pods already running.
 */
import { CniError, ErrorCode, quote } from "./spec/errors.ts";
import { type ConfigObject, isObject } from "./spec/config.ts";
import { decodeObject, MAX_STDIN_BYTES, readBoundedSync } from "./spec/input.ts";
import { parseIp } from "./ip.ts";
import { realSystem } from "./system.ts";
import { DEFAULT_STATE_DIR } from "./plugins/cnichain/mod.ts";
import {
  loadPolicies,
  type PolicyConfig,
  readPolicyConfig,
  readRecords,
  syncPods,
} from "./plugins/policy/mod.ts";
import { type Endpoint, policyEngine } from "../policy-wasm/host.ts";
import { inClusterConfig, KubeClient, kubeconfigFile } from "./kube.ts";
import { describe, syncForever, syncOnce } from "./plugins/policy/kube_sync.ts";

const HELP = `cnichain policy explain --from ADDR|NS/POD --to ADDR|NS/POD --port N[/tcp|udp|sctp]
                        --config CONFLIST [--family 4|6] [--json]
cnichain policy sync --config CONFLIST
cnichain policy sync --kubernetes --config CONFLIST [--kubeconfig PATH] [--node NAME] [--once]

explain: the verdict for a flow and the policy and rule that decide it, for each side (the
sender's egress, the receiver's ingress), from the policies of CONFLIST's policy step and the
pods it has registered. The flow's address family comes from an end given by address, else
--family, else IPv4 when both pods have an IPv4 address.
sync: re-plans every registered pod of CONFLIST's network with the current policies (after
policyFile changed) and re-installs each pod's rules.
sync --kubernetes: lists and watches NetworkPolicy, Pod and Namespace objects on the API server
(with --kubeconfig, else the pod's service account, else the policy step's kubernetes.kubeconfig)
and keeps this node's nftables in step until stopped: the registered pods' chains, and the
selector sets of pod addresses (every pod's, this node's and others'). Each change is one atomic
batch; the first re-applies everything. The policies are also written to the step's policyFile
for the next ADD. --node (default $NODE_NAME) names this node, whose pods in the API are the
registry's. --once lists, applies from scratch and exits.`;

interface Io {
  stdout(text: string): void;
  stderr(text: string): void;
}

/** The policy step of a conflist (also inside a cnichain entry), its network, and its state directory. */
function findPolicyStep(path: string): { network: string; entry: ConfigObject; stateDir: string } {
  const file = Deno.openSync(path);
  let doc: ConfigObject;
  try {
    doc = decodeObject(readBoundedSync(file, MAX_STDIN_BYTES), path);
  } finally {
    file.close();
  }
  const search = (
    plugins: unknown,
    stateDir: string,
  ): { entry: ConfigObject; stateDir: string } | undefined => {
    if (!Array.isArray(plugins)) return undefined;
    for (const p of plugins) {
      if (!isObject(p)) continue;
      if (p.type === "policy") {
        return { entry: p, stateDir: typeof p.stateDir === "string" ? p.stateDir : stateDir };
      }
      if (p.type === "cnichain") {
        const inner = search(p.plugins, typeof p.stateDir === "string" ? p.stateDir : stateDir);
        if (inner) return inner;
      }
    }
    return undefined;
  };
  const top = doc.type === "cnichain" && typeof doc.stateDir === "string"
    ? doc.stateDir
    : DEFAULT_STATE_DIR;
  const found = search(doc.plugins ?? [doc], top);
  if (!found) throw new CniError(ErrorCode.InvalidConfig, `${path}: no step of type "policy"`);
  return { network: String(doc.name ?? ""), ...found };
}

export async function runPolicyCli(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (!sub || sub === "--help" || sub === "-h") {
    io.stdout(HELP);
    return sub ? 0 : 2;
  }
  let parsed;
  try {
    const { parseArgs } = await import("node:util");
    parsed = parseArgs({
      args: rest,
      options: {
        from: { type: "string" },
        to: { type: "string" },
        port: { type: "string" },
        config: { type: "string" },
        family: { type: "string" },
        json: { type: "boolean" },
        kubernetes: { type: "boolean" },
        kubeconfig: { type: "string" },
        node: { type: "string" },
        once: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    io.stderr(`cnichain policy: ${err instanceof Error ? err.message : err}\n\n${HELP}`);
    return 2;
  }
  const o = parsed.values;
  if (o.help) {
    io.stdout(HELP);
    return 0;
  }
  try {
    if (!o.config) throw new CniError(ErrorCode.InvalidConfig, "--config CONFLIST is required");
    const step = findPolicyStep(o.config);
    const { cfg, problems } = readPolicyConfig(step.entry, "");
    if (problems.length) {
      throw new CniError(ErrorCode.InvalidConfig, `${problems[0].path}: ${problems[0].message}`);
    }
    cfg.stateDir = step.stateDir;
    const system = realSystem();
    if (sub === "sync" && o.kubernetes) {
      return await kubernetesSync(system, cfg, step.network, o, io);
    }
    if (o.kubernetes || o.kubeconfig || o.once || o.node) {
      throw new CniError(
        ErrorCode.InvalidConfig,
        "--kubeconfig, --node and --once go with policy sync --kubernetes",
      );
    }
    const policies = await loadPolicies(system, cfg);
    if (sub === "sync") {
      const n = await syncPods(system, cfg.stateDir, step.network, policies);
      io.stdout(
        `re-applied the policies to ${n} pod${n === 1 ? "" : "s"} of network ${
          quote(step.network)
        }`,
      );
      return 0;
    }
    if (sub !== "explain") {
      throw new CniError(ErrorCode.InvalidConfig, `unknown policy command ${quote(sub)}`);
    }
    if (!o.from || !o.to || !o.port) {
      throw new CniError(ErrorCode.InvalidConfig, "--from, --to and --port are required");
    }
    const m = /^(\d{1,5})(?:\/(tcp|udp|sctp))?$/i.exec(o.port);
    const port = m ? Number(m[1]) : 0;
    if (!m || port < 1 || port > 65535) {
      throw new CniError(
        ErrorCode.InvalidConfig,
        `--port: ${quote(o.port)} is not N or N/tcp|udp|sctp`,
      );
    }
    const records = (await readRecords(system, cfg.stateDir)).filter((r) =>
      r.network === step.network
    );
    const resolve = (what: string): Endpoint => {
      const ip = parseIp(what);
      const record = ip
        ? records.find((r) => r.identity.addresses.includes(what))
        : records.find((r) =>
          `${r.identity.namespace}/${r.identity.name}` ===
            (what.includes("/") ? what : `default/${what}`)
        );
      if (record) return record.identity;
      if (ip) return { address: what };
      throw new CniError(
        ErrorCode.InvalidConfig,
        `no pod ${quote(what)} is registered on network ${quote(step.network)}`,
      );
    };
    // The flow has one address family: an end given by address sets it (else --family, else IPv4
    // when both ends have it), and each pod end is narrowed to its address of that family.
    const familyOf = (a: string) => (a.includes(":") ? 6 : 4);
    const byAddress = [o.from, o.to].map((w) => parseIp(w)).find((ip) => ip !== undefined);
    let family: 4 | 6 | undefined = byAddress
      ? byAddress.family
      : o.family === "6"
      ? 6
      : o.family === "4"
      ? 4
      : undefined;
    const narrow = (e: Endpoint, given: string): Endpoint => {
      if (!("namespace" in e)) return e;
      const pick = parseIp(given) ? [given] : e.addresses.filter((a) => familyOf(a) === family);
      if (!pick.length) {
        throw new CniError(ErrorCode.InvalidConfig, `${quote(given)} has no IPv${family} address`);
      }
      return { ...e, addresses: pick };
    };
    const rawFrom = resolve(o.from);
    const rawTo = resolve(o.to);
    if (!family) {
      const has = (e: Endpoint, f: number) =>
        !("namespace" in e) || e.addresses.some((a) => familyOf(a) === f);
      family = has(rawFrom, 4) && has(rawTo, 4) ? 4 : 6;
    }
    const from = narrow(rawFrom, o.from);
    const to = narrow(rawTo, o.to);
    const verdict = policyEngine().verdict(policies, from, to, port, (m[2] ?? "tcp").toUpperCase());
    if (o.json) io.stdout(JSON.stringify(verdict, null, 2));
    else {
      io.stdout([
        `${verdict.verdict.toUpperCase()}: ${o.from} -> ${o.to} port ${port}/${
          (m[2] ?? "tcp").toLowerCase()
        }`,
        `  egress of the sender:    ${verdict.egress.verdict}: ${verdict.egress.reason}`,
        `  ingress of the receiver: ${verdict.ingress.verdict}: ${verdict.ingress.reason}`,
      ].join("\n"));
    }
    return verdict.verdict === "allow" ? 0 : 1;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    io.stderr(`cnichain policy ${sub}: ${msg}`);
    return 2;
  }
}

async function kubernetesSync(
  system: ReturnType<typeof realSystem>,
  cfg: PolicyConfig,
  network: string,
  o: { kubeconfig?: string; node?: string; once?: boolean },
  io: Io,
): Promise<number> {
  const kube = o.kubeconfig
    ? kubeconfigFile(o.kubeconfig)
    : Deno.env.get("KUBERNETES_SERVICE_HOST")
    ? inClusterConfig((n) => Deno.env.get(n))
    : cfg.kubernetes
    ? kubeconfigFile(cfg.kubernetes.kubeconfig)
    : undefined;
  if (!kube) {
    throw new CniError(
      ErrorCode.InvalidConfig,
      "no API server: give --kubeconfig, run in a pod, or set the policy step's kubernetes.kubeconfig",
    );
  }
  const client = new KubeClient(kube, { timeoutMs: 10_000 });
  const log = (line: string) => io.stderr(`${new Date().toISOString()} ${line}`);
  const opts = {
    system,
    stateDir: cfg.stateDir,
    network,
    ...(cfg.policyFile ? { policyFile: cfg.policyFile } : {}),
    ...(o.node ?? Deno.env.get("NODE_NAME") ? { node: o.node ?? Deno.env.get("NODE_NAME") } : {}),
    client,
    log,
  };
  try {
    if (o.once) {
      io.stdout(describe(await syncOnce(opts), `applied from ${client.server}`));
      return 0;
    }
    const stop = new AbortController();
    const signals: Deno.Signal[] = ["SIGTERM", "SIGINT"];
    const onSignal = () => stop.abort();
    for (const s of signals) Deno.addSignalListener(s, onSignal);
    log(`policy sync: watching ${client.server} for network ${quote(network)}`);
    try {
      await syncForever({ ...opts, signal: stop.signal });
    } finally {
      for (const s of signals) Deno.removeSignalListener(s, onSignal);
    }
    log("policy sync: stopped");
    return 0;
  } finally {
    client.close();
  }
}
