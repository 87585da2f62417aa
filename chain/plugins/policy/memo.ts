/**
 * The policy engine's answers, remembered in the state directory, so that a
 * pod whose policies and labels the node has met before does not compile and
 * run the engine again: that costs a fresh process about 4.5 ms, and most pods
 * of a node are replicas of a few deployments.
 *
 * An answer is a pure function of what its entry records, and an entry is
 * used only when all of that is equal, compared in full: the engine build,
 * the policies (their JSON) and, for a plan, the pod's namespace, labels and
 * namespace labels (a plan reads neither the pod's name nor its addresses).
 * Only valid policies and their plans are remembered, and only policy lists
 * of up to MAX_POLICIES_JSON bytes: a larger list goes to the engine each
 * time rather than be copied into every entry. Entries are whole files
 * (renamed into place); a missing or unreadable one means asking the engine.
 * The directory is emptied when it passes MAX_ENTRIES, so it stays small, and
 * when the node's last pod with policies goes.
 */
import { listSwept, type StateFiles } from "../../system.ts";
import { engineId, type Identity, type Plan } from "../../../policy-wasm/host.ts";
import { quickHash } from "../../hash.ts";

const MAX_POLICIES_JSON = 32 * 1024;
const MAX_ENTRIES = 256;

export const memoDir = (stateDir: string) => `${stateDir}/policy/engine`;

interface Entry {
  /** What the answer is a function of, as JSON: engine, policies and (for a plan) the pod. */
  key: string;
  plan?: Plan;
}

/** The labels of an object in one order, so that equal labels make equal keys. */
function sortedLabels(labels: Record<string, string>): [string, string][] {
  return Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The JSON of each policy list met in this process, written once however often it is asked. */
const policiesJson = new WeakMap<unknown[], string>();

export class EngineMemo {
  constructor(readonly files: StateFiles, readonly stateDir: string) {}

  /** The key of an answer about `policies` (and `pod`); undefined when they are too large. */
  #key(policies: unknown[], pod?: Identity): string | undefined {
    let json = policiesJson.get(policies);
    if (json === undefined) policiesJson.set(policies, json = JSON.stringify(policies));
    if (json.length > MAX_POLICIES_JSON) return undefined;
    const who = pod &&
      [pod.namespace, sortedLabels(pod.labels), sortedLabels(pod.namespaceLabels)];
    return JSON.stringify([engineId(), json, ...(who ? [who] : [])]);
  }

  /** The entry's file: named by a quick hash of its key (a clash costs a miss, never a wrong answer). */
  #path(key: string): string {
    return `${memoDir(this.stateDir)}/${quickHash(key)}`;
  }

  #read(key: string): Entry | undefined {
    try {
      const bytes = this.files.readSync(this.#path(key));
      const entry = bytes && JSON.parse(new TextDecoder().decode(bytes)) as Entry;
      return entry?.key === key ? entry : undefined;
    } catch {
      return undefined; // unreadable: ask the engine
    }
  }

  /** True when the engine found these policies valid before. */
  valid(policies: unknown[]): boolean {
    const key = this.#key(policies);
    return key !== undefined && this.#read(key) !== undefined;
  }

  /** The plan the engine made before for a pod like `pod` under `policies`. */
  plan(policies: unknown[], pod: Identity): Plan | undefined {
    const key = this.#key(policies, pod);
    return key === undefined ? undefined : this.#read(key)?.plan;
  }

  /**
   * Remembers that `policies` are valid and what the engine planned for `pod` under them. Call
   * it holding the nftables lock (every writer here does), so that a temporary file seen is a
   * killed writer's. Best effort: a memo that cannot be written costs only time.
   */
  async remember(policies: unknown[], pod: Identity, plan: Plan): Promise<void> {
    const valid = this.#key(policies);
    const planned = this.#key(policies, pod);
    if (valid === undefined || planned === undefined) return;
    const dir = memoDir(this.stateDir);
    try {
      await this.files.mkdir(dir, 0o700);
      if ((await listSwept(this.files, dir)).length >= MAX_ENTRIES) await this.forget();
      const entries: Entry[] = [{ key: valid }, { key: planned, plan }];
      for (const entry of entries) {
        await this.files.writeAtomic(this.#path(entry.key), JSON.stringify(entry), 0o600);
      }
    } catch {
      // Asked of the engine again next time.
    }
  }

  /**
   * Removes the temporary files of writers killed before their rename (the caller holds the
   * nftables lock). Otherwise a hit memo never writes again, and with pods always on the node
   * they would pile up: each killed ADD can leave one.
   */
  async sweep(): Promise<void> {
    await listSwept(this.files, memoDir(this.stateDir));
  }

  /** Forgets everything (when the last pod goes; the caller holds the nftables lock). */
  async forget(): Promise<void> {
    const dir = memoDir(this.stateDir);
    for (const name of await this.files.list(dir)) await this.files.remove(`${dir}/${name}`);
  }
}
