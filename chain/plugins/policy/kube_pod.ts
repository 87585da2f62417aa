/**
 * The policy step's view of the Kubernetes API on ADD: runtimes pass a pod's
 * namespace and name (CNI_ARGS) but not its labels, so the step reads the
 * Pod and its Namespace, one request each, at the same time, with a short
 * timeout. And what an API object means to the policy engine (shared with
 * `cnichain policy sync --kubernetes`).
 */
import { isObject } from "../../spec/config.ts";
import { KubeClient, kubeconfigFile } from "../../kube.ts";
import { formatIp, parseIp } from "../../ip.ts";

export const DEFAULT_API_TIMEOUT_MS = 2000;

export interface KubernetesConfig {
  kubeconfig: string;
  timeoutMs: number;
  apiUnavailable: "deny" | "allow";
}

/** `metadata.labels` as a string map (other values are dropped, as the API never sends them). */
export function labelsOf(o: Record<string, unknown>): Record<string, string> {
  const meta = isObject(o.metadata) ? o.metadata : {};
  const out: Record<string, string> = {};
  if (isObject(meta.labels)) {
    for (const [k, v] of Object.entries(meta.labels)) if (typeof v === "string") out[k] = v;
  }
  return out;
}

/** A namespace's labels, with the one Kubernetes always sets (older API servers may not). */
export function namespaceLabels(
  name: string,
  ns: Record<string, unknown> | undefined,
): Record<string, string> {
  return { ...(ns ? labelsOf(ns) : {}), "kubernetes.io/metadata.name": name };
}

/**
 * A Pod's addresses (`status.podIPs`, else `status.podIP`), canonical; what is not an address is
 * dropped (it would go into an nftables batch: one bad value would fail it, or add commands).
 */
export function podAddresses(pod: Record<string, unknown>): string[] {
  const status = isObject(pod.status) ? pod.status : {};
  const list = Array.isArray(status.podIPs)
    ? status.podIPs.map((p) => (isObject(p) ? p.ip : undefined))
    : [status.podIP];
  const ips = list.map((text) => typeof text === "string" ? parseIp(text) : undefined);
  return [...new Set(ips.flatMap((ip) => ip ? [formatIp(ip)] : []))];
}

/**
 * A NetworkPolicy object reduced to what the engine reads (the server's
 * metadata such as managedFields and the status are left out).
 */
export function policyOf(np: Record<string, unknown>): Record<string, unknown> {
  const meta = isObject(np.metadata) ? np.metadata : {};
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: { name: meta.name, namespace: meta.namespace ?? "default" },
    spec: isObject(np.spec) ? np.spec : {},
  };
}

/** The pod's labels and its namespace's, from the API server; throws a KubeError when it cannot. */
export async function fetchPodLabels(
  cfg: KubernetesConfig,
  namespace: string,
  name: string,
): Promise<{ labels: Record<string, string>; namespaceLabels: Record<string, string> }> {
  const client = new KubeClient(kubeconfigFile(cfg.kubeconfig), { timeoutMs: cfg.timeoutMs });
  try {
    const ns = encodeURIComponent(namespace);
    const [pod, nsObject] = await Promise.all([
      client.get(`/api/v1/namespaces/${ns}/pods/${encodeURIComponent(name)}`, "pods"),
      client.get(`/api/v1/namespaces/${ns}`, "namespaces"),
    ]);
    return { labels: labelsOf(pod), namespaceLabels: namespaceLabels(namespace, nsObject) };
  } finally {
    client.close();
  }
}
