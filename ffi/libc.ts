/**
 * libc through Deno FFI: the few system calls the kernel layer needs. Every
 * wrapper reads errno right after its call and throws an OsError naming the
 * call and the errno, so no caller ever sees a bare -1.
 */

import { INT, int, POINTER, pointer, SSIZE, ssize } from "./abi.ts";

// Results are declared as one-value structs: see abi.ts.
const symbols = {
  // int socket(int domain, int type, int protocol)
  socket: { parameters: ["i32", "i32", "i32"], result: INT },
  // ssize_t send(int fd, const void *buf, size_t len, int flags)
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: SSIZE },
  // ssize_t recv(int fd, void *buf, size_t len, int flags)
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: SSIZE },
  // int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: INT },
  // int close(int fd)
  close: { parameters: ["i32"], result: INT },
  // int open(const char *path, int flags, mode_t mode)
  open: { parameters: ["buffer", "i32", "u32"], result: INT },
  // int setns(int fd, int nstype)
  setns: { parameters: ["i32", "i32"], result: INT },
  // ssize_t read(int fd, void *buf, size_t count)
  read: { parameters: ["i32", "buffer", "usize"], result: SSIZE },
  // ssize_t write(int fd, const void *buf, size_t count)
  write: { parameters: ["i32", "buffer", "usize"], result: SSIZE },
  // int fchmod(int fd, mode_t mode)
  fchmod: { parameters: ["i32", "u32"], result: INT },
  // int ftruncate(int fd, off_t length)
  ftruncate: { parameters: ["i32", "i64"], result: INT },
  // int flock(int fd, int operation)
  flock: { parameters: ["i32", "i32"], result: INT },
  // int mkdir(const char *path, mode_t mode)
  mkdir: { parameters: ["buffer", "u32"], result: INT },
  // int link(const char *oldpath, const char *newpath)
  link: { parameters: ["buffer", "buffer"], result: INT },
  // int rename(const char *oldpath, const char *newpath)
  rename: { parameters: ["buffer", "buffer"], result: INT },
  // int unlink(const char *path)
  unlink: { parameters: ["buffer"], result: INT },
  // int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf)
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: INT },
  // int utimensat(int dirfd, const char *path, const struct timespec times[2], int flags)
  utimensat: { parameters: ["i32", "buffer", "buffer", "i32"], result: INT },
  // int *__errno_location(void)
  __errno_location: { parameters: [], result: POINTER },
} as const satisfies Deno.ForeignLibraryInterface;

let lib: Deno.DynamicLibrary<typeof symbols> | undefined;

/**
 * libc, opened on first use so that commands that never touch the kernel never
 * load it. The table holds only what the hot path calls: netlink sockets,
 * namespaces, and the state files (through libc rather than Deno's file API,
 * whose calls cost 0.02-0.2 ms each on first use in a process: a plugin run
 * is nothing but first uses).
 */
function libc(): Deno.DynamicLibrary<typeof symbols>["symbols"] {
  lib ??= Deno.dlopen("libc.so.6", symbols);
  return lib.symbols;
}

/** errno names for the values the kernel layer meets; others print as their number. */
const ERRNO_NAMES: Record<number, [string, string]> = {
  1: ["EPERM", "Operation not permitted"],
  2: ["ENOENT", "No such file or directory"],
  3: ["ESRCH", "No such process"],
  4: ["EINTR", "Interrupted system call"],
  9: ["EBADF", "Bad file descriptor"],
  11: ["EAGAIN", "Resource temporarily unavailable"],
  12: ["ENOMEM", "Cannot allocate memory"],
  13: ["EACCES", "Permission denied"],
  16: ["EBUSY", "Device or resource busy"],
  17: ["EEXIST", "File exists"],
  18: ["EXDEV", "Invalid cross-device link"],
  19: ["ENODEV", "No such device"],
  20: ["ENOTDIR", "Not a directory"],
  21: ["EISDIR", "Is a directory"],
  22: ["EINVAL", "Invalid argument"],
  24: ["EMFILE", "Too many open files"],
  28: ["ENOSPC", "No space left on device"],
  30: ["EROFS", "Read-only file system"],
  31: ["EMLINK", "Too many links"],
  34: ["ERANGE", "Numerical result out of range"],
  36: ["ENAMETOOLONG", "File name too long"],
  40: ["ELOOP", "Too many levels of symbolic links"],
  75: ["EOVERFLOW", "Value too large for defined data type"],
  90: ["EMSGSIZE", "Message too long"],
  93: ["EPROTONOSUPPORT", "Protocol not supported"],
  95: ["EOPNOTSUPP", "Operation not supported"],
  97: ["EAFNOSUPPORT", "Address family not supported by protocol"],
  98: ["EADDRINUSE", "Address already in use"],
  99: ["EADDRNOTAVAIL", "Cannot assign requested address"],
  101: ["ENETUNREACH", "Network is unreachable"],
  105: ["ENOBUFS", "No buffer space available"],
  110: ["ETIMEDOUT", "Connection timed out"],
  122: ["EDQUOT", "Disk quota exceeded"],
};

export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno]?.[0] ?? `errno ${errno}`;
}

/** A failed system call or netlink request: `what: ENAME (text)[: kernel message]`. */
export class OsError extends Error {
  constructor(readonly what: string, readonly errno: number, readonly kernelMessage = "") {
    const [name, text] = ERRNO_NAMES[errno] ?? [`errno ${errno}`, "unknown error"];
    super(`${what}: ${name} (${text})${kernelMessage ? `: ${kernelMessage}` : ""}`);
    this.name = "OsError";
  }
  get code(): string {
    return errnoName(this.errno);
  }
}

let errnoView: Deno.UnsafePointerView | undefined;

/**
 * The calling thread's errno (JavaScript runs on one thread, whose errno never moves), read
 * straight from memory rather than through another FFI call. Still a read after the fact: the
 * runtime may make calls of its own in between (a contended Rust mutex leaves EAGAIN behind, seen
 * once in thousands of operations under load), so the callers below that act on errno ask the
 * kernel again when it says something they do not expect.
 */
function errno(): number {
  if (!errnoView) {
    const p = pointer(libc().__errno_location());
    if (p === null) return 0;
    errnoView = new Deno.UnsafePointerView(p);
  }
  return errnoView.getInt32();
}

/** Throws OsError when a call returned -1. */
function check(result: number, what: string): number {
  if (result < 0) throw new OsError(what, errno());
  return result;
}

const encoder = new TextEncoder();

/** A C string; a NUL inside would cut the path short where the caller cannot see it. */
export function cString(s: string): Uint8Array {
  if (s.includes("\0")) throw new Error(`${JSON.stringify(s)} contains a NUL byte`);
  return encoder.encode(`${s}\0`);
}

export const AF_NETLINK = 16;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_CLOEXEC = 0o2000000;
export const LOCK_EX = 2;
export const ENOENT = 2;
export const EINTR = 4;
export const EEXIST = 17;
export const CLONE_NEWNET = 0x40000000;
export const SOL_SOCKET = 1;
export const SO_RCVTIMEO = 20;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;

export function socket(domain: number, type: number, protocol: number): number {
  return check(int(libc().socket(domain, type, protocol)), "socket");
}

export function setsockopt(fd: number, level: number, name: number, value: Uint8Array): void {
  check(
    int(libc().setsockopt(fd, level, name, value, value.length)),
    `setsockopt ${level}/${name}`,
  );
}

export function setsockoptInt(fd: number, level: number, name: number, value: number): void {
  const buf = new Uint8Array(4);
  new DataView(buf.buffer).setInt32(0, value, true);
  setsockopt(fd, level, name, buf);
}

export function send(fd: number, data: Uint8Array, what: string): void {
  const sent = check(ssize(libc().send(fd, data, BigInt(data.length), 0)), what);
  if (sent !== data.length) throw new OsError(`${what}: short send`, 90);
}

/** Receives into `buf`; returns the byte count. EINTR is retried. */
export function recv(fd: number, buf: Uint8Array, what: string): number {
  while (true) {
    const n = ssize(libc().recv(fd, buf, BigInt(buf.length), 0));
    if (n >= 0) return n;
    failUnlessInterrupted(what);
  }
}

export function close(fd: number): void {
  libc().close(fd);
}

export function open(path: string, flags: number, mode = 0): number {
  return check(int(libc().open(cString(path), flags, mode)), `open ${JSON.stringify(path)}`);
}

/** After a failed call: returns when a signal interrupted it (call again), else throws. */
function failUnlessInterrupted(what: string): void {
  const e = errno();
  if (e !== EINTR) throw new OsError(what, e);
}

/** Reads a whole file (or /proc file) from an open descriptor. */
export function readAll(fd: number, what: string): Uint8Array {
  let buf = new Uint8Array(4096);
  let size = 0;
  while (true) {
    if (size === buf.length) {
      const bigger = new Uint8Array(buf.length * 2);
      bigger.set(buf);
      buf = bigger;
    }
    const rest = buf.subarray(size);
    const n = ssize(libc().read(fd, rest, BigInt(rest.length)));
    if (n === 0) return buf.subarray(0, size);
    if (n > 0) size += n;
    else failUnlessInterrupted(what);
  }
}

/** Writes all of `data`, going on after short writes. */
export function writeAll(fd: number, data: Uint8Array, what: string): void {
  let done = 0;
  while (done < data.length) {
    const rest = data.subarray(done);
    const n = ssize(libc().write(fd, rest, BigInt(rest.length)));
    if (n >= 0) done += n;
    else failUnlessInterrupted(what);
  }
}

export function fchmod(fd: number, mode: number, what: string): void {
  check(int(libc().fchmod(fd, mode)), what);
}

export function ftruncate(fd: number, length: number, what: string): void {
  check(int(libc().ftruncate(fd, BigInt(length))), what);
}

/** Takes an exclusive flock, waiting for it (a signal's EINTR is retried). */
export function lockExclusive(fd: number, what: string): void {
  while (int(libc().flock(fd, LOCK_EX)) < 0) failUnlessInterrupted(what);
}

/**
 * The calls below return 0 or the errno instead of throwing: their callers expect some
 * failures (EEXIST, ENOENT) on the hot path, and an exception costs a young process tens of
 * microseconds. `fail()` makes the unexpected ones an OsError. A failure whose errno is not one
 * the caller expects is asked again once (see errno()): each call here may be repeated safely.
 */
export function mkdir(path: string, mode: number): number {
  return again(() => int(libc().mkdir(cString(path), mode)), [EEXIST, ENOENT]);
}

export function link(existing: string, path: string): number {
  return again(() => int(libc().link(cString(existing), cString(path))), [EEXIST]);
}

export function rename(from: string, to: string): number {
  return again(() => int(libc().rename(cString(from), cString(to))), []);
}

export function unlink(path: string): number {
  return again(() => int(libc().unlink(cString(path))), [ENOENT]);
}

/** A descriptor, or minus the errno (ENOENT believed at once, any other asked twice). */
export function openFile(path: string, flags: number, mode = 0): number {
  for (let attempt = 0;; attempt++) {
    const fd = int(libc().open(cString(path), flags, mode));
    if (fd >= 0) return fd;
    const errnum = errno();
    if (errnum === ENOENT || attempt > 0) return -errnum;
  }
}

/**
 * 0 when `call` succeeds (returns >= 0), else its errno; an errno not in `expected` (perhaps
 * not the call's own) is checked by calling once more.
 */
function again(call: () => number, expected: number[]): number {
  if (call() >= 0) return 0;
  const first = errno();
  if (expected.includes(first)) return first;
  return call() >= 0 ? 0 : errno();
}

/** Throws the OsError for an errno one of the calls above returned (0: nothing to throw). */
export function fail(errnum: number, what: string): void {
  if (errnum !== 0) throw new OsError(what, errnum);
}

export function setns(fd: number, what: string): void {
  check(int(libc().setns(fd, CLONE_NEWNET)), what);
}

const AT_FDCWD = -100;
const STATX_MTIME = 0x40;
/** struct statx: stx_mtime (tv_sec i64, tv_nsec u32) at 0x70, the same on every architecture. */
const STATX_SIZE = 256;
const STATX_MTIME_AT = 0x70;
/** timespec.tv_nsec that leaves a time as it is (utimensat). */
const UTIME_OMIT = (1 << 30) - 2;

/** A file's modification time as `seconds.nanoseconds`; undefined when it cannot be read. */
export function mtime(path: string): string | undefined {
  const buf = new Uint8Array(STATX_SIZE);
  if (int(libc().statx(AT_FDCWD, cString(path), 0, STATX_MTIME, buf)) < 0) return undefined;
  const v = new DataView(buf.buffer);
  const seconds = v.getBigInt64(STATX_MTIME_AT, true);
  return `${seconds}.${String(v.getUint32(STATX_MTIME_AT + 8, true)).padStart(9, "0")}`;
}

/** Sets a file's modification time (the access time is left alone); false when refused. */
export function setMtime(path: string, seconds: number, nanoseconds: number): boolean {
  const times = new BigInt64Array([0n, BigInt(UTIME_OMIT), BigInt(seconds), BigInt(nanoseconds)]);
  const bytes = new Uint8Array(times.buffer);
  return int(libc().utimensat(AT_FDCWD, cString(path), bytes, 0)) === 0;
}
