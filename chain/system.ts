/**
 * The one interface through which built-in plugins cause side effects. This
 * module holds the interface and the real implementation; `system_record.ts`
 * wraps any System for `--dry-run` and `system_memory.ts` is the in-memory one
 * for root-free tests. The kernel parts (links, addresses, routes, sysctls,
 * nftables) join `System` with the kernel layer.
 */

/** One change a step made or, in a dry run, would make. */
export interface Effect {
  /** What kind of change: "create file", "write file", "remove file", "create directory", "exec". */
  op: string;
  /** What it applies to: a path, a link name, a table. */
  target: string;
  /** Extra words for a person: the content written, the command run. */
  detail?: string;
}

/** State files: the IPAM store, result caches, registries, locks. */
export interface StateFiles {
  /** The file's bytes, or undefined when it does not exist. */
  read(path: string): Promise<Uint8Array | undefined>;
  /** The names in a directory, sorted; empty when it does not exist. */
  list(dir: string): Promise<string[]>;
  /** Creates a directory and its parents. */
  mkdir(path: string, mode?: number): Promise<void>;
  /** Replaces a file atomically: a complete temporary file renamed into place. */
  writeAtomic(path: string, data: Uint8Array | string, mode?: number): Promise<void>;
  /**
   * Creates a file only if the name is free, atomically and never half-written
   * (a complete temporary file hard-linked to the name). False when taken.
   */
  createExclusive(path: string, data: Uint8Array | string, mode?: number): Promise<boolean>;
  /** Removes a file; false when it did not exist. */
  remove(path: string): Promise<boolean>;
  /** Runs `fn` holding an exclusive `flock` on the file at `path` (created if missing). */
  withLock<T>(path: string, fn: () => Promise<T>): Promise<T>;
}

export interface System {
  /** "real" changes the machine; "dry-run" records; "memory" is the test fake. */
  readonly kind: "real" | "dry-run" | "memory";
  readonly files: StateFiles;
  /** The changes recorded so far (dry run and memory); the real System records none. */
  readonly effects: Effect[];
}

const encoder = new TextEncoder();
export const toBytes = (data: Uint8Array | string): Uint8Array =>
  typeof data === "string" ? encoder.encode(data) : data;

export function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

function tempName(path: string): string {
  const rand = crypto.getRandomValues(new Uint32Array(1))[0].toString(16);
  return `${dirname(path)}/.${path.slice(path.lastIndexOf("/") + 1)}.tmp-${Deno.pid}-${rand}`;
}

/** Writes a whole temporary file beside `path`, flushed to disk, and returns its name. */
async function writeTemp(path: string, data: Uint8Array | string, mode: number): Promise<string> {
  const temp = tempName(path);
  const file = await Deno.open(temp, { write: true, createNew: true, mode });
  try {
    const bytes = toBytes(data);
    let done = 0;
    while (done < bytes.length) done += await file.write(bytes.subarray(done));
    await file.syncData();
  } catch (err) {
    file.close();
    await Deno.remove(temp).catch(() => {});
    throw err;
  }
  file.close();
  // The umask may have narrowed the mode; state files must have exactly the one asked for.
  await Deno.chmod(temp, mode);
  return temp;
}

function ioContext(what: string, path: string, err: unknown): Error {
  const message = err instanceof Error ? err.message : String(err);
  const wrapped = new Error(`${what} ${JSON.stringify(path)}: ${message}`);
  (wrapped as Error & { cause?: unknown }).cause = err;
  return wrapped;
}

/** State files on the real file system. */
export class RealFiles implements StateFiles {
  async read(path: string): Promise<Uint8Array | undefined> {
    try {
      return await Deno.readFile(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return undefined;
      throw ioContext("read", path, err);
    }
  }

  async list(dir: string): Promise<string[]> {
    const names: string[] = [];
    try {
      for await (const entry of Deno.readDir(dir)) names.push(entry.name);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return [];
      throw ioContext("list", dir, err);
    }
    return names.sort();
  }

  async mkdir(path: string, mode = 0o700): Promise<void> {
    try {
      await Deno.mkdir(path, { recursive: true, mode });
    } catch (err) {
      throw ioContext("create directory", path, err);
    }
  }

  async writeAtomic(path: string, data: Uint8Array | string, mode = 0o600): Promise<void> {
    let temp: string | undefined;
    try {
      temp = await writeTemp(path, data, mode);
      await Deno.rename(temp, path);
    } catch (err) {
      if (temp) await Deno.remove(temp).catch(() => {});
      throw ioContext("write", path, err);
    }
  }

  async createExclusive(path: string, data: Uint8Array | string, mode = 0o600): Promise<boolean> {
    let temp: string | undefined;
    try {
      temp = await writeTemp(path, data, mode);
      await Deno.link(temp, path);
      return true;
    } catch (err) {
      if (err instanceof Deno.errors.AlreadyExists) return false;
      throw ioContext("create", path, err);
    } finally {
      if (temp) await Deno.remove(temp).catch(() => {});
    }
  }

  async remove(path: string): Promise<boolean> {
    try {
      await Deno.remove(path);
      return true;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return false;
      throw ioContext("remove", path, err);
    }
  }

  async withLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
      await file.lock(true);
    } catch (err) {
      throw ioContext("lock", path, err);
    }
    try {
      return await fn();
    } finally {
      // Closing the descriptor releases the flock.
      file.close();
    }
  }
}

/** The System that changes the real machine. */
export function realSystem(): System {
  return { kind: "real", files: new RealFiles(), effects: [] };
}
