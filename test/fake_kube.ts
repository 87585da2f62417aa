/**
 * A fake Kubernetes API server for tests (Deno.serve, plain http or TLS),
 * serving the real JSON shapes for Pods, Namespaces and NetworkPolicies:
 * GET of one object, List objects with `metadata.resourceVersion` (and
 * `limit`/`continue` pages), and watches as a chunked stream of
 * `{"type","object"}` lines from a resourceVersion. A test changes objects
 * with {@linkcode FakeKube.put} and {@linkcode FakeKube.remove} (every open
 * watch sees the event), drops every watch connection
 * ({@linkcode FakeKube.dropWatches}), or forgets history so that watches
 * from older versions get `410 Gone` ({@linkcode FakeKube.expire}).
 */

export type Obj = Record<string, unknown>;
export type Kind = "pods" | "namespaces" | "networkpolicies";

const LIST_KIND: Record<Kind, string> = {
  pods: "PodList",
  namespaces: "NamespaceList",
  networkpolicies: "NetworkPolicyList",
};

interface Event {
  rv: number;
  type: "ADDED" | "MODIFIED" | "DELETED";
  object: Obj;
}

interface Watcher {
  kind: Kind;
  push(line: string): void;
  drop(): void;
  close(): void;
}

export const TOKEN = "fake-kube-token";

function statusBody(code: number, reason: string, message: string): Obj {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    code,
  };
}

function status(code: number, reason: string, message: string): Response {
  return Response.json(statusBody(code, reason, message), { status: code });
}

let uid = 0;
const newUid = () => `00000000-0000-4000-8000-${(++uid).toString(16).padStart(12, "0")}`;

/** A Pod as the API server returns it. */
export function pod(
  namespace: string,
  name: string,
  labels: Record<string, string>,
  opts: { ips?: string[]; node?: string; hostNetwork?: boolean; phase?: string } = {},
): Obj {
  const ips = opts.ips ?? [];
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      namespace,
      uid: newUid(),
      creationTimestamp: "2026-12-01T08:00:00Z",
      labels,
      managedFields: [{ manager: "kubectl", operation: "Update", apiVersion: "v1" }],
    },
    spec: {
      nodeName: opts.node ?? "node-1",
      containers: [{ name: "main", image: "registry.k8s.io/pause:3.10" }],
      ...(opts.hostNetwork ? { hostNetwork: true } : {}),
    },
    status: {
      phase: opts.phase ?? "Running",
      ...(ips.length ? { podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) } : {}),
      hostIP: "192.168.1.10",
    },
  };
}

export function namespace(name: string, labels: Record<string, string> = {}): Obj {
  return {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: {
      name,
      uid: newUid(),
      creationTimestamp: "2026-12-01T08:00:00Z",
      labels: { "kubernetes.io/metadata.name": name, ...labels },
    },
    spec: { finalizers: ["kubernetes"] },
    status: { phase: "Active" },
  };
}

export function networkPolicy(namespace: string, name: string, spec: Obj): Obj {
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: {
      name,
      namespace,
      uid: newUid(),
      generation: 1,
      creationTimestamp: "2026-12-01T08:00:00Z",
      annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{}" },
    },
    spec,
  };
}

function keyOf(o: Obj): string {
  const m = o.metadata as Obj;
  return m.namespace ? `${m.namespace}/${m.name}` : String(m.name);
}

export class FakeKube {
  readonly objects: Record<Kind, Map<string, Obj>> = {
    pods: new Map(),
    namespaces: new Map(),
    networkpolicies: new Map(),
  };
  readonly requests: string[] = [];
  /** When each event was sent to the open watches (`performance.timeOrigin`-based ms). */
  readonly sentAt: number[] = [];
  #rv = 100;
  #events: Record<Kind, Event[]> = { pods: [], namespaces: [], networkpolicies: [] };
  /** Watches from versions below this get 410 Gone. */
  #oldest = 0;
  /** "status": a 410 answer to the watch request; "event": an ERROR event in the stream. */
  goneAs: "status" | "event" = "event";
  /** Every watch is answered 410 Gone, even one from the version a list just gave. */
  alwaysGone = false;
  /** Items per List page at most (to exercise `continue`). */
  pageSize = 2;
  /** Answer nothing (accept and hold every request). */
  silent = false;
  readonly #watchers = new Set<Watcher>();
  /** Requests held by a silent server, answered when it closes. */
  readonly #held: ((r: Response) => void)[] = [];
  #closed?: Promise<void>;
  readonly server: Deno.HttpServer<Deno.NetAddr>;

  constructor(opts: { cert?: string; key?: string } = {}) {
    this.server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: () => {},
      ...(opts.cert ? { cert: opts.cert, key: opts.key! } : {}),
    }, (req) => this.#handle(req));
  }

  get url(): string {
    return `http://127.0.0.1:${this.server.addr.port}`;
  }

  get resourceVersion(): string {
    return String(this.#rv);
  }

  /** A JSON kubeconfig naming this server, with the token. */
  kubeconfig(server = this.url): string {
    return JSON.stringify({
      apiVersion: "v1",
      kind: "Config",
      "current-context": "fake",
      clusters: [{ name: "fake", cluster: { server } }],
      contexts: [{ name: "fake", context: { cluster: "fake", user: "u" } }],
      users: [{ name: "u", user: { token: TOKEN } }],
    });
  }

  /** Creates or replaces an object; open watches get ADDED or MODIFIED. */
  put(kind: Kind, o: Obj): void {
    const key = keyOf(o);
    const type = this.objects[kind].has(key) ? "MODIFIED" : "ADDED";
    const copy = structuredClone(o);
    (copy.metadata as Obj).resourceVersion = String(++this.#rv);
    this.objects[kind].set(key, copy);
    this.#emit(kind, { rv: this.#rv, type, object: copy });
  }

  remove(kind: Kind, key: string): void {
    const o = this.objects[kind].get(key);
    if (!o) return;
    this.objects[kind].delete(key);
    const copy = structuredClone(o);
    (copy.metadata as Obj).resourceVersion = String(++this.#rv);
    this.#emit(kind, { rv: this.#rv, type: "DELETED", object: copy });
  }

  /** Changes an object in place (labels, status...) and sends MODIFIED. */
  update(kind: Kind, key: string, fn: (o: Obj) => void): void {
    const o = structuredClone(this.objects[kind].get(key));
    if (!o) throw new Error(`no ${kind} ${key}`);
    fn(o);
    this.put(kind, o);
  }

  #emit(kind: Kind, e: Event): void {
    this.#events[kind].push(e);
    const line = JSON.stringify({ type: e.type, object: e.object }) + "\n";
    this.sentAt.push(performance.timeOrigin + performance.now());
    for (const w of this.#watchers) if (w.kind === kind) w.push(line);
  }

  /** Breaks every open watch connection (no final chunk: the client sees a broken stream). */
  dropWatches(): number {
    const n = this.#watchers.size;
    for (const w of [...this.#watchers]) w.drop();
    return n;
  }

  /**
   * Forgets the history: watches from any version so far get 410 Gone; the
   * open ones end, told so by an ERROR event when `goneAs` is "event".
   */
  expire(): void {
    this.#oldest = this.#rv + 1;
    const line = JSON.stringify({
      type: "ERROR",
      object: statusBody(410, "Expired", "too old resource version"),
    }) + "\n";
    for (const w of [...this.#watchers]) {
      // As an event: the open watches are told; as a status: they end, and reconnecting gets 410.
      if (this.goneAs === "event") w.push(line);
      w.close();
    }
  }

  watchCount(): number {
    return this.#watchers.size;
  }

  /** Stops the server (open watches end, held requests get 503); safe to call twice. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      for (const w of [...this.#watchers]) w.close();
      for (const resolve of this.#held.splice(0)) resolve(status(503, "ServiceUnavailable", "bye"));
      await this.server.shutdown();
    })();
    return this.#closed;
  }

  #handle(req: Request): Response | Promise<Response> {
    const url = new URL(req.url);
    this.requests.push(`${req.method} ${url.pathname}${url.search}`);
    if (this.silent) {
      return new Promise<Response>((resolve) => this.#held.push(resolve));
    }
    if (req.headers.get("authorization") !== `Bearer ${TOKEN}`) {
      return status(401, "Unauthorized", "Unauthorized");
    }
    const p = url.pathname;
    const collection: Record<string, Kind> = {
      "/api/v1/pods": "pods",
      "/api/v1/namespaces": "namespaces",
      "/apis/networking.k8s.io/v1/networkpolicies": "networkpolicies",
    };
    const kind = collection[p];
    if (kind) {
      return url.searchParams.get("watch") === "1" || url.searchParams.get("watch") === "true"
        ? this.#watch(kind, url.searchParams.get("resourceVersion") ?? "0")
        : this.#list(kind, url.searchParams);
    }
    let m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(p);
    if (m) return this.#one("pods", `${m[1]}/${m[2]}`, "pods", m[2]);
    m = /^\/api\/v1\/namespaces\/([^/]+)$/.exec(p);
    if (m) return this.#one("namespaces", m[1], "namespaces", m[1]);
    return status(404, "NotFound", "the server could not find the requested resource");
  }

  #one(kind: Kind, key: string, resource: string, name: string): Response {
    const o = this.objects[kind].get(decodeURIComponent(key));
    if (!o) return status(404, "NotFound", `${resource} "${decodeURIComponent(name)}" not found`);
    return Response.json(o);
  }

  #list(kind: Kind, q: URLSearchParams): Response {
    const all = [...this.objects[kind].values()];
    const start = Number(q.get("continue") ?? "0");
    const limit = Math.min(Number(q.get("limit") ?? "0") || all.length, this.pageSize);
    const items = all.slice(start, start + limit).map((o) => {
      const { apiVersion: _a, kind: _k, ...rest } = o;
      return rest;
    });
    const more = start + limit < all.length;
    return Response.json({
      kind: LIST_KIND[kind],
      apiVersion: kind === "networkpolicies" ? "networking.k8s.io/v1" : "v1",
      metadata: {
        resourceVersion: this.resourceVersion,
        ...(more ? { continue: String(start + limit) } : {}),
      },
      items,
    });
  }

  #watch(kind: Kind, from: string): Response {
    const rv = Number(from);
    if (this.alwaysGone) return status(410, "Expired", `too old resource version: ${rv}`);
    if (rv < this.#oldest && this.goneAs === "status") {
      return status(410, "Expired", `too old resource version: ${rv} (${this.#oldest})`);
    }
    const encoder = new TextEncoder();
    let ctl!: ReadableStreamDefaultController<Uint8Array>;
    let done = false;
    const body = new ReadableStream<Uint8Array>({
      start: (c) => {
        ctl = c;
      },
      cancel: () => {
        done = true;
        this.#watchers.delete(watcher);
      },
    });
    const watcher: Watcher = {
      kind,
      push: (line) => {
        if (!done) ctl.enqueue(encoder.encode(line));
      },
      drop: () => {
        if (done) return;
        done = true;
        this.#watchers.delete(watcher);
        ctl.error(new Error("connection dropped by the test"));
      },
      close: () => {
        if (done) return;
        done = true;
        this.#watchers.delete(watcher);
        ctl.close();
      },
    };
    if (rv < this.#oldest) {
      watcher.push(
        JSON.stringify({
          type: "ERROR",
          object: statusBody(410, "Expired", `too old resource version: ${rv} (${this.#oldest})`),
        }) + "\n",
      );
      watcher.close();
    } else {
      for (const e of this.#events[kind]) {
        if (e.rv > rv) watcher.push(JSON.stringify({ type: e.type, object: e.object }) + "\n");
      }
      this.#watchers.add(watcher);
    }
    return new Response(body, {
      headers: { "content-type": "application/json", "transfer-encoding": "chunked" },
    });
  }
}
