/**
 * A minimal Kubernetes API client: in-cluster config (the pod's service
 * account) or a JSON kubeconfig, bearer tokens or client certificates, a
 * custom CA through `Deno.createHttpClient`, a timeout on every request, and
 * errors that name the URL and the status. `get` (one object) is here; `list`
 * and `watch` (chain/kube_watch.ts) are built on the same `request()`.
 */
import { quote } from "./spec/errors.ts";
import { isObject } from "./spec/config.ts";
import { parseCidr } from "./ip.ts";

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";
export const DEFAULT_TIMEOUT_MS = 5000;
/** The most one object's answer may hold (the API server keeps objects under 1.5 MiB). */
export const MAX_OBJECT_BYTES = 16 << 20;

/** Where the API server is and how to prove who we are. */
export interface KubeConfig {
  /** The API server's base URL, e.g. `https://10.96.0.1:443`. */
  server: string;
  token?: string;
  /** PEM of the CA that signed the server's certificate. */
  caPem?: string;
  /** PEM client certificate and key (kubeconfig users without a token). */
  clientCert?: { cert: string; key: string };
  /** Where this config came from, for error messages. */
  source: string;
}

/** An answer from the API server that was not a success, or no answer at all. */
export class KubeError extends Error {
  constructor(
    message: string,
    readonly url: string,
    readonly status?: number,
    readonly reason?: string,
  ) {
    super(message);
    this.name = "KubeError";
  }
}

function readText(path: string, what: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    throw new Error(`read ${what} ${quote(path)}: ${err instanceof Error ? err.message : err}`);
  }
}

/**
 * The config a pod gets from its service account: `KUBERNETES_SERVICE_HOST`
 * and `_PORT`, the token and CA under `dir`.
 */
export function inClusterConfig(
  getEnv: (name: string) => string | undefined,
  dir = SERVICE_ACCOUNT_DIR,
): KubeConfig {
  const host = getEnv("KUBERNETES_SERVICE_HOST");
  const port = getEnv("KUBERNETES_SERVICE_PORT");
  if (!host || !port) {
    throw new Error(
      "not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (give --kubeconfig)",
    );
  }
  const hostPart = host.includes(":") ? `[${host}]` : host;
  return {
    server: `https://${hostPart}:${port}`,
    token: readText(`${dir}/token`, "the service account token").trim(),
    caPem: readText(`${dir}/ca.crt`, "the service account CA"),
    source: `in-cluster config (${dir})`,
  };
}

function named(list: unknown, name: string, what: string, path: string): Record<string, unknown> {
  const found = Array.isArray(list) ? list.find((e) => isObject(e) && e.name === name) : undefined;
  const body = isObject(found) ? found[what] : undefined;
  if (!isObject(body)) {
    throw new Error(`kubeconfig ${quote(path)}: no ${what} named ${quote(name)}`);
  }
  return body;
}

function decodeBase64(text: unknown, field: string, path: string): string {
  try {
    return new TextDecoder().decode(Uint8Array.from(atob(String(text)), (c) => c.charCodeAt(0)));
  } catch {
    throw new Error(`kubeconfig ${quote(path)}: ${field} is not valid base64`);
  }
}

/**
 * A kubeconfig file in JSON (`kubectl config view --raw --flatten -o json`):
 * the current context's cluster (`server`, `certificate-authority` or
 * `certificate-authority-data`) and user (`token`, `tokenFile`, or
 * `client-certificate[-data]` with `client-key[-data]`). Relative file
 * names are relative to the kubeconfig's directory, as kubectl reads them.
 */
export function kubeconfigFile(path: string): KubeConfig {
  const text = readText(path, "kubeconfig");
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error(
      `kubeconfig ${
        quote(path)
      }: not JSON; only JSON kubeconfigs are read (convert one with kubectl config view --raw --flatten -o json)`,
    );
  }
  if (!isObject(doc)) throw new Error(`kubeconfig ${quote(path)}: must be a JSON object`);
  const contextName = doc["current-context"];
  if (typeof contextName !== "string" || !contextName) {
    throw new Error(`kubeconfig ${quote(path)}: no current-context`);
  }
  const context = named(doc.contexts, contextName, "context", path);
  const cluster = named(doc.clusters, String(context.cluster), "cluster", path);
  const user = context.user === undefined
    ? {}
    : named(doc.users, String(context.user), "user", path);
  const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/") + 1) : "./";
  const file = (name: unknown) => String(name).startsWith("/") ? String(name) : dir + name;
  const pem = (dataKey: string, fileKey: string, body: Record<string, unknown>) =>
    body[dataKey] !== undefined
      ? decodeBase64(body[dataKey], dataKey, path)
      : body[fileKey] !== undefined
      ? readText(file(body[fileKey]), fileKey)
      : undefined;
  if (typeof cluster.server !== "string" || !/^https?:\/\//.test(cluster.server)) {
    throw new Error(
      `kubeconfig ${quote(path)}: cluster ${quote(context.cluster)} has no http(s) server`,
    );
  }
  if (cluster["insecure-skip-tls-verify"] === true) {
    throw new Error(
      `kubeconfig ${quote(path)}: insecure-skip-tls-verify is not supported; give the cluster's CA`,
    );
  }
  const cfg: KubeConfig = { server: cluster.server.replace(/\/+$/, ""), source: path };
  const ca = pem("certificate-authority-data", "certificate-authority", cluster);
  if (ca) cfg.caPem = ca;
  if (typeof user.token === "string") cfg.token = user.token;
  else if (typeof user.tokenFile === "string") {
    cfg.token = readText(file(user.tokenFile), "tokenFile").trim();
  }
  const cert = pem("client-certificate-data", "client-certificate", user);
  const key = pem("client-key-data", "client-key", user);
  if (cert && key) cfg.clientCert = { cert, key };
  return cfg;
}

/** fetch's own error, with the cause (e.g. "tcp connect error: Connection refused") it wraps. */
function detail(err: Error): string {
  const cause = err.cause instanceof Error ? err.cause.message : "";
  const why = cause.replace(/^error sending request for url \([^)]*\): /, "");
  return why ? `${err.message}: ${why}` : err.message;
}

/** A Kubernetes `Status` object's message and reason, when the body is one. */
function statusOf(body: string): { message?: string; reason?: string } {
  try {
    const doc = JSON.parse(body);
    if (isObject(doc) && doc.kind === "Status") {
      return {
        message: typeof doc.message === "string" ? doc.message : undefined,
        reason: typeof doc.reason === "string" ? doc.reason : undefined,
      };
    }
  } catch {
    // not JSON: the status line says enough
  }
  return {};
}

/** A response's body as text, refused (and the connection dropped) past `limit` bytes. */
export async function readLimited(res: Response, limit: number): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw new Error(`larger than ${limit} bytes`);
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return new TextDecoder().decode(all);
}

export class KubeClient {
  readonly #cfg: KubeConfig;
  readonly #timeoutMs: number;
  readonly #http?: Deno.HttpClient;

  constructor(cfg: KubeConfig, opts: { timeoutMs?: number } = {}) {
    this.#cfg = cfg;
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (cfg.caPem || cfg.clientCert) {
      this.#http = Deno.createHttpClient({
        ...(cfg.caPem ? { caCerts: [cfg.caPem] } : {}),
        ...(cfg.clientCert ?? {}),
      });
    }
  }

  get server(): string {
    return this.#cfg.server;
  }

  /**
   * One request; the response when its status is 2xx, else a KubeError naming
   * the URL, the status and what the API server said. `verb` and `resource`
   * name the permission a 403 lacks.
   */
  async request(
    method: string,
    path: string,
    perm: { verb: string; resource: string },
    opts: { stream?: boolean; signal?: AbortSignal } = {},
  ): Promise<Response> {
    const url = this.#cfg.server + path;
    const headers: Record<string, string> = { Accept: "application/json" };
    if (this.#cfg.token) headers.Authorization = `Bearer ${this.#cfg.token}`;
    // A stream (a watch) may stay open for minutes: the timeout then covers the headers only.
    const timer = new AbortController();
    const timeout = setTimeout(
      () => timer.abort(new DOMException("timeout", "TimeoutError")),
      this.#timeoutMs,
    );
    Deno.unrefTimer(timeout);
    const signal = opts.signal ? AbortSignal.any([timer.signal, opts.signal]) : timer.signal;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers,
        signal,
        ...(this.#http ? { client: this.#http } : {}),
      });
    } catch (err) {
      clearTimeout(timeout);
      const why = timer.signal.aborted
        ? `no answer within ${this.#timeoutMs / 1000} s`
        : err instanceof Error
        ? detail(err)
        : String(err);
      throw new KubeError(`${method} ${url}: ${why}`, url);
    }
    if (opts.stream) clearTimeout(timeout);
    else {
      // The body is read by the caller; the timer ends with it (or aborts a stalled one).
      const body = res.body;
      if (!body) clearTimeout(timeout);
      else {
        res = new Response(
          body.pipeThrough(
            new TransformStream({ flush: () => clearTimeout(timeout) }),
          ),
          res,
        );
      }
    }
    if (res.ok) return res;
    const body = await res.text().catch(() => "");
    const { message, reason } = statusOf(body);
    const head = `${method} ${url}: ${res.status} ${res.statusText || reason || ""}`.trimEnd();
    let hint = "";
    if (res.status === 401) {
      hint = ` (the API server did not accept the credentials of ${this.#cfg.source})`;
    } else if (res.status === 403) {
      hint = ` (the account needs permission to ${perm.verb} ${perm.resource})`;
    }
    throw new KubeError(`${head}${message ? `: ${message}` : ""}${hint}`, url, res.status, reason);
  }

  /** GET one object, e.g. `get("/api/v1/nodes/n1", "nodes")`. */
  async get(path: string, resource: string): Promise<Record<string, unknown>> {
    const res = await this.request("GET", path, { verb: "get", resource });
    const url = this.#cfg.server + path;
    let text: string;
    try {
      text = await readLimited(res, MAX_OBJECT_BYTES);
    } catch (err) {
      throw new KubeError(
        `GET ${url}: reading the answer: ${err instanceof Error ? err.message : err}`,
        url,
        res.status,
      );
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw new KubeError(
        `GET ${url}: the answer is not JSON: ${err instanceof Error ? err.message : err}`,
        url,
        res.status,
      );
    }
    if (!isObject(doc)) throw new KubeError(`GET ${url}: the answer is not an object`, url);
    return doc;
  }

  /** GET a Node. */
  getNode(name: string): Promise<Record<string, unknown>> {
    return this.get(`/api/v1/nodes/${encodeURIComponent(name)}`, "nodes");
  }

  close(): void {
    this.#http?.close();
  }
}

/**
 * A node's pod CIDRs: `spec.podCIDRs` (one per family when dual stack), else
 * `spec.podCIDR`; an empty list when the node has none yet.
 */
export function podCidrs(node: Record<string, unknown>): string[] {
  const spec = isObject(node.spec) ? node.spec : {};
  const list = Array.isArray(spec.podCIDRs) && spec.podCIDRs.length
    ? spec.podCIDRs
    : typeof spec.podCIDR === "string" && spec.podCIDR
    ? [spec.podCIDR]
    : [];
  const name = isObject(node.metadata) ? node.metadata.name : undefined;
  for (const cidr of list) {
    if (typeof cidr !== "string" || !parseCidr(cidr)) {
      throw new Error(`node ${quote(name)}: pod CIDR ${quote(cidr)} is not a CIDR`);
    }
  }
  return list as string[];
}
