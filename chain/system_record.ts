/**
 * A System that records changes instead of making them. Reads see the real
 * state (or nothing, for the in-memory fake) with the recorded writes laid on
 * top, so a dry run follows the same code path as a real run and predicts its
 * result; the recorded effects are the plan `--dry-run` prints.
 */
import { dirname, type Effect, type StateFiles, type System, toBytes } from "./system.ts";
import { SimKernel } from "./kernel_sim.ts";

const decoder = new TextDecoder();

/** Shows file content in a plan: text as text (escaped), binary as its size. */
function preview(data: Uint8Array): string {
  const text = decoder.decode(data);
  if (text.includes("\uFFFD")) return `${data.length} bytes`;
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 197)}...` : text);
}

const nothing: StateFiles = {
  read: () => Promise.resolve(undefined),
  readSync: () => undefined,
  list: () => Promise.resolve([]),
  mkdir: () => Promise.resolve(),
  writeAtomic: () => Promise.resolve(),
  overwrite: () => Promise.resolve(),
  createExclusive: () => Promise.resolve(true),
  dirToken: () => Promise.resolve(undefined),
  markDir: () => Promise.resolve(undefined),
  remove: () => Promise.resolve(false),
  withLock: (_path, fn) => fn(),
};

/** State files as `base` has them plus the changes recorded here. */
export class OverlayFiles implements StateFiles {
  /** path -> content, or null for a file removed here. */
  readonly #files = new Map<string, { data: Uint8Array; mode: number } | null>();
  readonly #dirs = new Set<string>();
  readonly #locks = new Map<string, Promise<unknown>>();
  /** Directory tokens (see StateFiles.dirToken) of the directories whose entries changed here. */
  readonly #tokens = new Map<string, string>();
  #changes = 0;

  constructor(readonly base: StateFiles, readonly effects: Effect[]) {}

  /** A name was added to or removed from `path`'s directory: its token changes, as mtime does. */
  #entriesChanged(path: string): void {
    this.#tokens.set(dirname(path), `changed ${++this.#changes}`);
  }

  /** The content and mode of a file written here (for tests). */
  stat(path: string): { data: Uint8Array; mode: number } | undefined {
    return this.#files.get(path) ?? undefined;
  }

  async read(path: string, limit?: number): Promise<Uint8Array | undefined> {
    const mine = this.#files.get(path);
    if (mine !== undefined) return mine?.data;
    return await this.base.read(path, limit);
  }

  readSync(path: string): Uint8Array | undefined {
    const mine = this.#files.get(path);
    if (mine !== undefined) return mine?.data;
    return this.base.readSync(path);
  }

  /** The names in `dir`: files and, as on a real file system, directories. */
  async list(dir: string): Promise<string[]> {
    const names = new Set(await this.base.list(dir));
    for (const [path, entry] of this.#files) {
      if (dirname(path) !== dir) continue;
      const name = path.slice(dir.length + 1);
      if (entry) names.add(name);
      else names.delete(name);
    }
    const inside = `${dir === "/" ? "" : dir}/`;
    for (const path of [...this.#dirs, ...[...this.#files.keys()].map(dirname)]) {
      if (path.startsWith(inside)) names.add(path.slice(inside.length).split("/")[0]);
    }
    return [...names].sort();
  }

  async #dirExists(path: string): Promise<boolean> {
    if (this.#dirs.has(path) || path === "/") return true;
    if (this.base === nothing) return false;
    try {
      return (await Deno.stat(path)).isDirectory;
    } catch {
      return false;
    }
  }

  async mkdir(path: string, mode = 0o700): Promise<void> {
    if (await this.#dirExists(path)) return;
    for (let p = path; p !== "/" && !this.#dirs.has(p); p = dirname(p)) this.#dirs.add(p);
    this.effects.push({ op: "create directory", target: path, detail: `mode ${mode.toString(8)}` });
  }

  writeAtomic(path: string, data: Uint8Array | string, mode = 0o600): Promise<void> {
    const bytes = toBytes(data);
    this.#entriesChanged(path); // a rename into place
    this.#files.set(path, { data: bytes, mode });
    this.effects.push({ op: "write file", target: path, detail: preview(bytes) });
    return Promise.resolve();
  }

  async overwrite(path: string, data: Uint8Array | string, mode = 0o600): Promise<void> {
    const had = (await this.read(path)) !== undefined;
    const bytes = toBytes(data);
    if (!had) this.#entriesChanged(path);
    this.#files.set(path, { data: bytes, mode });
    this.effects.push({ op: "write file", target: path, detail: preview(bytes) });
  }

  async createExclusive(path: string, data: Uint8Array | string, mode = 0o600): Promise<boolean> {
    if ((await this.read(path)) !== undefined) return false;
    const bytes = toBytes(data);
    this.#entriesChanged(path);
    this.#files.set(path, { data: bytes, mode });
    this.effects.push({ op: "create file", target: path, detail: preview(bytes) });
    return true;
  }

  async remove(path: string): Promise<boolean> {
    if ((await this.read(path)) === undefined) return false;
    this.#entriesChanged(path);
    this.#files.set(path, null);
    this.effects.push({ op: "remove file", target: path });
    return true;
  }

  async dirToken(dir: string): Promise<string | undefined> {
    return this.#tokens.get(dir) ?? await this.base.dirToken(dir);
  }

  /** Not recorded as an effect: a directory's time is bookkeeping, not something a plan shows. */
  markDir(dir: string): Promise<string | undefined> {
    const token = `mark ${++this.#changes}`;
    this.#tokens.set(dir, token);
    return Promise.resolve(token);
  }

  /** Serialises holders of the same path within this process, as flock would across processes. */
  async withLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
    const before = this.#locks.get(path) ?? Promise.resolve();
    const run = before.then(fn, fn);
    this.#locks.set(path, run.catch(() => {}));
    return await run;
  }
}

/** Wraps a System so that reads see it and writes are only recorded (`--dry-run`). */
export function recordingSystem(base: System): System {
  const effects: Effect[] = [];
  return {
    kind: "dry-run",
    files: new OverlayFiles(base.files, effects),
    kernel: new SimKernel(effects, base.kernel),
    effects,
  };
}

/** An empty in-memory System for root-free unit tests; inspect `effects` and `files`. */
export function memorySystem(): System & { files: OverlayFiles; kernel: SimKernel } {
  const effects: Effect[] = [];
  return {
    kind: "memory",
    files: new OverlayFiles(nothing, effects),
    kernel: new SimKernel(effects),
    effects,
  };
}
