/**
 * List and watch on the Kubernetes API, the way client-go's reflector does
 * it: list (in pages) for a snapshot and its `resourceVersion`, then watch
 * from that version, one JSON event per line of a chunked stream. A dropped
 * or ended watch resumes from the last version seen, after a backoff when it
 * failed; `410 Gone` (as a status or as an ERROR event) means that version
 * is too old, so the next round lists again. The caller gets every snapshot
 * and event in order, never two at once.
 */
import { isObject } from "./spec/config.ts";
import { type KubeClient, KubeError, MAX_OBJECT_BYTES } from "./kube.ts";

export type KubeObject = Record<string, unknown>;

export interface WatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED";
  object: KubeObject;
}

export interface KubeList {
  items: KubeObject[];
  resourceVersion: string;
}

/** A watch that ended because its version is gone (HTTP 410, or an ERROR event with code 410). */
export class GoneError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GoneError";
  }
}

/** `metadata.namespace/metadata.name` (or just the name for cluster-scoped objects). */
export function objectKey(o: KubeObject): string {
  const m = isObject(o.metadata) ? o.metadata : {};
  return m.namespace ? `${m.namespace}/${m.name}` : String(m.name);
}

export function resourceVersionOf(o: KubeObject): string | undefined {
  const m = isObject(o.metadata) ? o.metadata : {};
  return typeof m.resourceVersion === "string" ? m.resourceVersion : undefined;
}

/** Every item of a collection, following `continue` tokens, and the list's resourceVersion. */
export async function listAll(
  client: KubeClient,
  path: string,
  resource: string,
  pageSize = 500,
): Promise<KubeList> {
  const items: KubeObject[] = [];
  let token = "";
  for (;;) {
    const q = `?limit=${pageSize}${token ? `&continue=${encodeURIComponent(token)}` : ""}`;
    const res = await client.request("GET", path + q, { verb: "list", resource });
    const doc = await res.json().catch((err) => {
      throw new KubeError(`GET ${client.server}${path}: the answer is not JSON: ${err}`, path);
    });
    if (!isObject(doc) || !Array.isArray(doc.items)) {
      throw new KubeError(`GET ${client.server}${path}: not a list`, path);
    }
    items.push(...doc.items.filter(isObject));
    const meta = isObject(doc.metadata) ? doc.metadata : {};
    if (typeof meta.continue === "string" && meta.continue) {
      token = meta.continue;
      continue;
    }
    return { items, resourceVersion: String(meta.resourceVersion ?? "") };
  }
}

/**
 * One watch from `resourceVersion`: calls `onEvent` for each event, in order,
 * and returns the last version seen when the server ends the stream.
 * BOOKMARK events only move the version on. Throws GoneError on 410, a
 * KubeError when the connection fails or stalls for `idleMs`.
 */
export async function watchOnce(
  client: KubeClient,
  path: string,
  resource: string,
  resourceVersion: string,
  onEvent: (e: WatchEvent) => Promise<void> | void,
  opts: {
    signal?: AbortSignal;
    idleMs?: number;
    timeoutSeconds?: number;
    /** Each version passed (events and bookmarks), so a broken stream resumes from the last. */
    onVersion?: (rv: string) => void;
  } = {},
): Promise<string> {
  const q = `?watch=1&allowWatchBookmarks=true&resourceVersion=${
    encodeURIComponent(resourceVersion)
  }&timeoutSeconds=${opts.timeoutSeconds ?? 300}`;
  const idle = new AbortController();
  const signal = opts.signal ? AbortSignal.any([idle.signal, opts.signal]) : idle.signal;
  let res: Response;
  try {
    res = await client.request("GET", path + q, { verb: "watch", resource }, {
      stream: true,
      signal,
    });
  } catch (err) {
    if (err instanceof KubeError && err.status === 410) throw new GoneError(err.message);
    throw err;
  }
  const idleMs = opts.idleMs ?? ((opts.timeoutSeconds ?? 300) + 30) * 1000;
  let timer = setTimeout(() => idle.abort(), idleMs);
  let version = resourceVersion;
  const url = `${client.server}${path}`;
  try {
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      let chunk: ReadableStreamReadResult<string>;
      try {
        chunk = await reader.read();
      } catch (err) {
        const why = idle.signal.aborted
          ? `no data for ${idleMs / 1000} s`
          : err instanceof Error
          ? err.message
          : String(err);
        throw new KubeError(`watch ${url}: the stream broke: ${why}`, url);
      }
      if (chunk.done) break;
      clearTimeout(timer);
      timer = setTimeout(() => idle.abort(), idleMs);
      buffer += chunk.value;
      if (buffer.length > MAX_OBJECT_BYTES && buffer.indexOf("\n") < 0) {
        throw new KubeError(`watch ${url}: an event is larger than ${MAX_OBJECT_BYTES} bytes`, url);
      }
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        let e: unknown;
        try {
          e = JSON.parse(line);
        } catch {
          throw new KubeError(`watch ${url}: an event is not JSON: ${line.slice(0, 200)}`, url);
        }
        if (!isObject(e) || !isObject(e.object)) continue;
        if (e.type === "ERROR") {
          const st = e.object;
          if (st.code === 410 || st.reason === "Expired" || st.reason === "Gone") {
            throw new GoneError(`watch ${url}: ${st.message ?? "410 Gone"}`);
          }
          throw new KubeError(`watch ${url}: ${st.message ?? JSON.stringify(st)}`, url);
        }
        const rv = resourceVersionOf(e.object);
        if (e.type === "ADDED" || e.type === "MODIFIED" || e.type === "DELETED") {
          await onEvent({ type: e.type, object: e.object });
        } else if (e.type !== "BOOKMARK") continue;
        if (rv) {
          version = rv;
          opts.onVersion?.(rv);
        }
      }
    }
    return version;
  } finally {
    clearTimeout(timer);
    idle.abort();
  }
}

export interface ReflectorHooks {
  /** A fresh snapshot (first list, or a relist after 410 or a failure): replaces what was known. */
  replace(items: KubeObject[]): Promise<void> | void;
  event(e: WatchEvent): Promise<void> | void;
  /** A list or watch failed; the reflector retries after `retryMs`. */
  error?(err: Error, retryMs: number): void;
  /** A watch (re)connected from `resourceVersion`; `relisted` after a list. */
  watching?(resourceVersion: string, relisted: boolean): void;
}

export interface ReflectorOptions {
  signal: AbortSignal;
  /** First retry delay; doubles to `maxBackoffMs` while failures continue. */
  backoffMs?: number;
  maxBackoffMs?: number;
  timeoutSeconds?: number;
  idleMs?: number;
}

/**
 * Keeps a collection in step until `signal` aborts: list, watch, resume
 * after a dropped stream from the last version, relist after 410.
 */
export async function reflect(
  client: KubeClient,
  path: string,
  resource: string,
  hooks: ReflectorHooks,
  opts: ReflectorOptions,
): Promise<void> {
  const first = opts.backoffMs ?? 250;
  const max = opts.maxBackoffMs ?? 10_000;
  let backoff = first;
  let version: string | undefined;
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        opts.signal.removeEventListener("abort", done);
        resolve();
      };
      const t = setTimeout(done, ms);
      opts.signal.addEventListener("abort", done, { once: true });
    });
  while (!opts.signal.aborted) {
    let relisted = false;
    let progressed = false;
    try {
      if (version === undefined) {
        const list = await listAll(client, path, resource);
        await hooks.replace(list.items);
        version = list.resourceVersion;
        relisted = true;
      }
      hooks.watching?.(version, relisted);
      version = await watchOnce(client, path, resource, version, async (e) => {
        progressed = true;
        await hooks.event(e);
      }, {
        signal: opts.signal,
        timeoutSeconds: opts.timeoutSeconds,
        idleMs: opts.idleMs,
        onVersion: (rv) => version = rv,
      });
      // A normal end of a watch (timeoutSeconds) resumes at once; an immediate empty end backs off.
      if (progressed || relisted) backoff = first;
      else {
        await pause(backoff);
        backoff = Math.min(backoff * 2, max);
      }
    } catch (err) {
      if (opts.signal.aborted) return;
      if (err instanceof GoneError) {
        version = undefined;
        // Gone again straight after a fresh list: the server keeps too little history to watch
        // from; relisting at once would hammer it, so back off as for any other failure.
        const wait = relisted ? backoff : 0;
        hooks.error?.(err, wait);
        if (wait) {
          await pause(wait);
          backoff = Math.min(backoff * 2, max);
        }
        continue;
      }
      const e = err instanceof Error ? err : new Error(String(err));
      // A stream that broke after it delivered is resumed at once; failing again backs off.
      if (progressed) backoff = first;
      const wait = progressed ? 0 : backoff;
      hooks.error?.(e, wait);
      if (wait) {
        await pause(wait);
        backoff = Math.min(backoff * 2, max);
      }
    }
  }
}
