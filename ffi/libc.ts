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
  // int *__errno_location(void)
  __errno_location: { parameters: [], result: POINTER },
} as const satisfies Deno.ForeignLibraryInterface;

let lib: Deno.DynamicLibrary<typeof symbols> | undefined;

/**
 * libc, opened on first use so that commands that never touch the kernel never
 * load it. The table holds only what the hot path calls.
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
  19: ["ENODEV", "No such device"],
  22: ["EINVAL", "Invalid argument"],
  24: ["EMFILE", "Too many open files"],
  28: ["ENOSPC", "No space left on device"],
  34: ["ERANGE", "Numerical result out of range"],
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

function errno(): number {
  const p = pointer(libc().__errno_location());
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/** Throws OsError when a call returned -1. */
function check(result: number, what: string): number {
  if (result < 0) throw new OsError(what, errno());
  return result;
}

export const cString = (s: string): Uint8Array => new TextEncoder().encode(`${s}\0`);

export const AF_NETLINK = 16;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const O_RDONLY = 0;
export const O_CLOEXEC = 0o2000000;
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
    const e = errno();
    if (e !== 4) throw new OsError(what, e);
  }
}

export function close(fd: number): void {
  libc().close(fd);
}

export function open(path: string, flags: number): number {
  return check(int(libc().open(cString(path), flags, 0)), `open ${JSON.stringify(path)}`);
}

export function setns(fd: number, what: string): void {
  check(int(libc().setns(fd, CLONE_NEWNET)), what);
}
