/**
 * The one interface through which built-in plugins cause side effects. This
 * module holds the interface and the real implementation; `system_record.ts`
 * wraps any System for `--dry-run` and `system_memory.ts` is the in-memory one
 * for root-free tests. The kernel part (links, addresses, routes, sysctls,
 * nftables) is `kernel.ts`.
 */
import { type Kernel, realKernel } from "./kernel.ts";
import * as libc from "../ffi/libc.ts";
import { OsError } from "../ffi/libc.ts";
import { randomHex32 } from "./hash.ts";

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
  read(path: string, limit?: number): Promise<Uint8Array | undefined>;
  /** read() for synchronous callers (checks that consult answers remembered on disk). */
  readSync(path: string): Uint8Array | undefined;
  /** The names in a directory, sorted; empty when it does not exist. */
  list(dir: string): Promise<string[]>;
  /** Creates a directory and its parents. */
  mkdir(path: string, mode?: number): Promise<void>;
  /** Replaces a file atomically: a complete temporary file renamed into place. */
  writeAtomic(path: string, data: Uint8Array | string, mode?: number): Promise<void>;
  /**
   * Writes a file's content over the old one in place (creating it when missing). Not atomic:
   * only for hints whose reader checks what it reads and copes with a torn or stale one.
   */
  overwrite(path: string, data: Uint8Array | string, mode?: number): Promise<void>;
  /**
   * Creates a file only if the name is free, atomically and never half-written
   * (a complete temporary file hard-linked to the name). False when taken.
   */
  createExclusive(path: string, data: Uint8Array | string, mode?: number): Promise<boolean>;
  /** Removes a file; false when it did not exist. */
  remove(path: string): Promise<boolean>;
  /**
   * A token of a directory's last change of entries (a name added or removed): its modification
   * time. Undefined when it cannot be read.
   */
  dirToken(dir: string): Promise<string | undefined>;
  /**
   * Gives `dir` a token no change of entries can make (a modification time at a random
   * nanosecond) and returns it; undefined when the file system cannot keep one.
   */
  markDir(dir: string): Promise<string | undefined>;
  /** Runs `fn` holding an exclusive `flock` on the file at `path` (created if missing). */
  withLock<T>(path: string, fn: () => Promise<T>): Promise<T>;
}

export interface System {
  /** "real" changes the machine; "dry-run" records; "memory" is the test fake. */
  readonly kind: "real" | "dry-run" | "memory";
  readonly files: StateFiles;
  readonly kernel: Kernel;
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

/**
 * Whether `path` names something in its directory, by listing the directory: for directories,
 * which read() does not take. A file is better asked with read(), which does not list its
 * neighbours (hundreds of them in a busy state directory).
 */
export async function entryExists(files: StateFiles, path: string): Promise<boolean> {
  return (await files.list(dirname(path))).includes(path.slice(path.lastIndexOf("/") + 1));
}

/** Whether a directory entry is one of the temporary files written before a link or rename. */
export function isTempName(name: string): boolean {
  return name.includes(".tmp-") && /^\..+\.tmp-\d+-[0-9a-f]+$/.test(name);
}

/**
 * Whether the process that made temporary file `name` still runs (its pid is in the name), so
 * the file may be a write in progress rather than a killed writer's. A reused pid only keeps a
 * left-over file until a later sweep.
 */
export function tempWriterRunning(name: string): boolean {
  const pid = /\.tmp-(\d+)-[0-9a-f]+$/.exec(name)?.[1];
  if (pid === undefined) return false;
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * The names in `dir`, after removing the temporary files that writers killed
 * before their rename or link left there. Call it holding the lock every
 * writer of `dir` takes: a temporary file seen then has no live writer.
 */
export async function listSwept(files: StateFiles, dir: string): Promise<string[]> {
  const names: string[] = [];
  for (const name of await files.list(dir)) {
    if (isTempName(name)) await files.remove(`${dir}/${name}`);
    else names.push(name);
  }
  return names;
}

/**
 * Removes `path` and the temporary files of it that writers killed before
 * their rename left beside it; false when `path` did not exist.
 */
export async function removeWithTemps(files: StateFiles, path: string): Promise<boolean> {
  const dir = dirname(path);
  const prefix = `.${path.slice(dir.length + 1)}.tmp-`;
  for (const name of await files.list(dir)) {
    if (isTempName(name) && name.startsWith(prefix)) await files.remove(`${dir}/${name}`);
  }
  return await files.remove(path);
}

function tempName(path: string): string {
  const rand = randomHex32();
  return `${dirname(path)}/.${path.slice(path.lastIndexOf("/") + 1)}.tmp-${Deno.pid}-${rand}`;
}

/**
 * Writes a whole temporary file beside `path` and returns its name. Not
 * fsync'd: link() and rename() make a file appear whole or not at all to
 * every process (a killed process never leaves half a file behind), which is
 * the crash the store must survive; flushing to disk on every pod would cost
 * milliseconds for a power-loss guarantee the reference plugins do not give.
 */
function writeTemp(path: string, data: Uint8Array | string, mode: number): string {
  const temp = tempName(path);
  const fd = libc.openFile(temp, WRITE_NEW, mode);
  libc.fail(-Math.min(fd, 0), `open ${JSON.stringify(temp)}`);
  try {
    libc.writeAll(fd, toBytes(data), `write ${JSON.stringify(temp)}`);
    // The umask may have narrowed the mode; state files must have exactly the one asked for.
    libc.fchmod(fd, mode, `chmod ${JSON.stringify(temp)}`);
  } catch (err) {
    libc.close(fd);
    libc.unlink(temp);
    throw err;
  }
  libc.close(fd);
  return temp;
}

const WRITE_NEW = libc.O_WRONLY | libc.O_CREAT | libc.O_EXCL | libc.O_CLOEXEC;

function ioContext(what: string, path: string, err: unknown): Error {
  const message = err instanceof Error ? err.message : String(err);
  const wrapped = new Error(`${what} ${JSON.stringify(path)}: ${message}`);
  (wrapped as Error & { cause?: unknown }).cause = err;
  return wrapped;
}

/**
 * State files on the real file system, through libc (ffi/libc.ts) but for
 * directory listings: Deno's file calls cost 0.02-0.2 ms each on their first
 * use in a process, and a plugin run is nothing but first uses. Expected
 * failures (a missing file, a taken name) come back as errno values, not
 * exceptions. The calls are synchronous on purpose: each is a few
 * microseconds of kernel work, and Deno's async file calls cost a thread-pool
 * round trip each, which dominated a pod's ADD.
 */
export class RealFiles implements StateFiles {
  /**
   * With `limit`, only a regular file of at most `limit` bytes is read (a config file named
   * by a user could be /dev/zero or a directory); anything else is an error.
   */
  read(path: string, limit?: number): Promise<Uint8Array | undefined> {
    if (limit !== undefined) {
      try {
        const info = Deno.statSync(path);
        if (!info.isFile) throw new Error("not a regular file");
        if (info.size > limit) throw new Error(`larger than the limit of ${limit} bytes`);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) return Promise.resolve(undefined);
        return Promise.reject(ioContext("read", path, err));
      }
    }
    try {
      return Promise.resolve(this.readSync(path));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  readSync(path: string): Uint8Array | undefined {
    try {
      const fd = libc.openFile(path, libc.O_RDONLY | libc.O_CLOEXEC);
      if (fd === -libc.ENOENT) return undefined;
      libc.fail(-Math.min(fd, 0), "open");
      try {
        return libc.readAll(fd, "read");
      } finally {
        libc.close(fd);
      }
    } catch (err) {
      throw ioContext("read", path, err);
    }
  }

  list(dir: string): Promise<string[]> {
    try {
      return Promise.resolve([...Deno.readDirSync(dir)].map((e) => e.name).sort());
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return Promise.resolve([]);
      return Promise.reject(ioContext("list", dir, err));
    }
  }

  mkdir(path: string, mode = 0o700): Promise<void> {
    try {
      makeDirectories(path, mode);
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(ioContext("create directory", path, err));
    }
  }

  writeAtomic(path: string, data: Uint8Array | string, mode = 0o600): Promise<void> {
    let temp: string | undefined;
    try {
      temp = writeTemp(path, data, mode);
      libc.fail(libc.rename(temp, path), "rename");
      return Promise.resolve();
    } catch (err) {
      if (temp) libc.unlink(temp);
      return Promise.reject(ioContext("write", path, err));
    }
  }

  /**
   * Writes from the start and then cuts the file to the new length, never truncating it to
   * zero first: ext4 writes a file out at once when it replaces one by truncation or by a
   * rename over it (0.1-0.4 ms here), and a hint is not worth that on every pod.
   */
  overwrite(path: string, data: Uint8Array | string, mode = 0o600): Promise<void> {
    try {
      const bytes = toBytes(data);
      const fd = libc.openFile(path, libc.O_WRONLY | libc.O_CREAT | libc.O_CLOEXEC, mode);
      libc.fail(-Math.min(fd, 0), "open");
      try {
        libc.writeAll(fd, bytes, "write");
        libc.ftruncate(fd, bytes.length, "truncate");
        libc.fchmod(fd, mode, "chmod");
      } finally {
        libc.close(fd);
      }
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(ioContext("write", path, err));
    }
  }

  createExclusive(path: string, data: Uint8Array | string, mode = 0o600): Promise<boolean> {
    let temp: string | undefined;
    try {
      temp = writeTemp(path, data, mode);
      const errnum = libc.link(temp, path);
      if (errnum === libc.EEXIST) return Promise.resolve(false);
      libc.fail(errnum, "link");
      return Promise.resolve(true);
    } catch (err) {
      return Promise.reject(ioContext("create", path, err));
    } finally {
      if (temp) libc.unlink(temp);
    }
  }

  remove(path: string): Promise<boolean> {
    const errnum = libc.unlink(path);
    if (errnum === libc.ENOENT) return Promise.resolve(false);
    if (errnum === 0) return Promise.resolve(true);
    return Promise.reject(ioContext("remove", path, new OsError("unlink", errnum)));
  }

  dirToken(dir: string): Promise<string | undefined> {
    return Promise.resolve(libc.mtime(dir));
  }

  markDir(dir: string): Promise<string | undefined> {
    const seconds = Math.floor(Date.now() / 1000);
    const nanoseconds = 1 + Math.floor(Math.random() * 999_999_998);
    if (!libc.setMtime(dir, seconds, nanoseconds)) return Promise.resolve(undefined);
    const token = `${seconds}.${String(nanoseconds).padStart(9, "0")}`;
    // A file system that keeps coarser times (or none) cannot hold the mark.
    return Promise.resolve(libc.mtime(dir) === token ? token : undefined);
  }

  async withLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
    const fd = libc.openFile(path, libc.O_RDWR | libc.O_CREAT | libc.O_CLOEXEC, 0o600);
    if (fd < 0) throw ioContext("lock", path, new OsError("open", -fd));
    try {
      // Blocking is fine: this process has nothing else to do while another holds the store.
      libc.lockExclusive(fd, "flock");
    } catch (err) {
      libc.close(fd);
      throw ioContext("lock", path, err);
    }
    try {
      return await fn();
    } finally {
      // Closing the descriptor releases the flock.
      libc.close(fd);
    }
  }
}

/** mkdir -p: creates `path` and any missing parents with `mode`; an existing one is fine. */
function makeDirectories(path: string, mode: number): void {
  let errnum = libc.mkdir(path, mode);
  if (errnum === libc.ENOENT && dirname(path) !== path) {
    makeDirectories(dirname(path), mode);
    errnum = libc.mkdir(path, mode);
  }
  if (errnum !== libc.EEXIST) libc.fail(errnum, "mkdir"); // EEXIST: there already, or made meanwhile
}

/** The System that changes the real machine. */
export function realSystem(): System {
  return { kind: "real", files: new RealFiles(), kernel: realKernel(), effects: [] };
}
