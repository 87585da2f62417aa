/**
 * A NETLINK_ROUTE socket: requests with sequence numbers, an ACK awaited for
 * every change, dumps read to NLMSG_DONE and retried when the kernel marks
 * them interrupted. Errors carry the kernel's extended-ack message.
 */
import * as libc from "./libc.ts";
import {
  NLM_F_DUMP_INTR,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_NOOP,
  parseError,
  parseReplies,
  type Reply,
} from "./netlink.ts";

export const NETLINK_ROUTE = 0;
export const NETLINK_NETFILTER = 12;
const SOL_NETLINK = 270;
const NETLINK_CAP_ACK = 10;
const NETLINK_EXT_ACK = 11;
const NETLINK_GET_STRICT_CHK = 12;
const DUMP_RETRIES = 10;
const ENODEV = 19;

export class NetlinkSocket {
  #fd: number;
  #seq = Math.floor(Math.random() * 0x7fffffff);
  readonly #buf = new Uint8Array(256 * 1024);

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** Opens a socket (rtnetlink unless told otherwise) in the calling thread's network namespace. */
  static open(protocol = NETLINK_ROUTE): NetlinkSocket {
    const fd = libc.socket(libc.AF_NETLINK, libc.SOCK_RAW | libc.SOCK_CLOEXEC, protocol);
    try {
      libc.setsockoptInt(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
      libc.setsockoptInt(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
      // Lets dumps filter by interface in the kernel instead of returning everything.
      try {
        libc.setsockoptInt(fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1);
      } catch {
        // Older kernels: dumps are filtered here instead.
      }
      // A kernel that never answers must not hang a CNI operation forever: 10 s.
      const timeout = new Uint8Array(16);
      new DataView(timeout.buffer).setBigInt64(0, 10n, true);
      libc.setsockopt(fd, libc.SOL_SOCKET, libc.SO_RCVTIMEO, timeout);
    } catch (err) {
      libc.close(fd);
      throw err;
    }
    return new NetlinkSocket(fd);
  }

  #next(): number {
    this.#seq = (this.#seq + 1) >>> 0 || 1;
    return this.#seq;
  }

  /** Sends one message and collects the replies with its sequence number. */
  #exchange(
    build: (seq: number) => Uint8Array,
    what: string,
    dump: boolean,
    missing: number[] = [],
  ): { replies: Reply[]; interrupted: boolean; absent?: boolean } {
    if (this.#fd < 0) throw new Error(`${what}: netlink socket is closed`);
    const seq = this.#next();
    libc.send(this.#fd, build(seq), what);
    const replies: Reply[] = [];
    let interrupted = false;
    while (true) {
      const n = libc.recv(this.#fd, this.#buf, what);
      for (const reply of parseReplies(this.#buf.subarray(0, n))) {
        if (reply.seq !== seq) continue; // a stale answer to an earlier request
        if (reply.flags & NLM_F_DUMP_INTR) interrupted = true;
        if (reply.type === NLMSG_ERROR) {
          const { errno, message } = parseError(reply);
          // An expected "no such object" is an answer, not an exception: a program's first
          // exception costs milliseconds (stack trace set-up), too much for a lookup.
          if (missing.includes(errno)) return { replies, interrupted, absent: true };
          if (errno !== 0) throw new libc.OsError(what, errno, message);
          return { replies, interrupted };
        }
        if (reply.type === NLMSG_DONE) {
          const status = reply.payload.length >= 4
            ? new DataView(reply.payload.buffer, reply.payload.byteOffset).getInt32(0, true)
            : 0;
          if (status < 0) throw new libc.OsError(what, -status);
          return { replies, interrupted };
        }
        if (reply.type === NLMSG_NOOP) continue;
        replies.push({ ...reply, payload: reply.payload.slice() });
        if (!dump) return { replies, interrupted };
      }
    }
  }

  /** A change request: returns once the kernel ACKs it, or throws its error. */
  request(build: (seq: number) => Uint8Array, what: string): void {
    this.#exchange(build, what, false);
  }

  /** A GET of one object: its reply, or undefined when the kernel says it does not exist. */
  get(
    build: (seq: number) => Uint8Array,
    what: string,
    missing: number[] = [ENODEV],
  ): Reply | undefined {
    const { replies, absent } = this.#exchange(build, what, false, missing);
    return absent ? undefined : replies[0];
  }

  /** A dump: every object, retried when a concurrent change interrupted it. */
  dump(build: (seq: number) => Uint8Array, what: string): Reply[] {
    for (let attempt = 0;; attempt++) {
      const { replies, interrupted } = this.#exchange(build, what, true);
      if (!interrupted || attempt >= DUMP_RETRIES) return replies;
    }
  }

  /** Safe to call twice. */
  close(): void {
    if (this.#fd >= 0) libc.close(this.#fd);
    this.#fd = -1;
  }
}
