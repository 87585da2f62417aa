/**
 * A NETLINK_ROUTE socket: requests with sequence numbers, an ACK awaited for
 * every change, dumps read to NLMSG_DONE and retried when the kernel marks
 * them interrupted. Errors carry the kernel's extended-ack message.
 */
import * as libc from "./libc.ts";
import {
  NLM_F_ACK,
  NLM_F_DUMP_INTR,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_NOOP,
  parseError,
  parseReplies,
  type Reply,
} from "./netlink.ts";

/** What the kernel answered to one of several messages sent together. */
export interface Answer {
  replies: Reply[];
  /** 0: done. */
  errno: number;
  /** The kernel's extended-ack message, when it gave one. */
  message: string;
}

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

  /**
   * Several messages in one send (an nftables batch, or lookups): by position, each one's
   * replies and its errno (0 for an ACK). Every message with NLM_F_ACK gets an answer; one
   * without (a batch marker) gets none unless the kernel refuses it, which throws.
   */
  many(builds: ((seq: number) => Uint8Array)[], what: string): Answer[] {
    if (this.#fd < 0) throw new Error(`${what}: netlink socket is closed`);
    const seqs = builds.map(() => this.#next());
    const parts = builds.map((build, i) => build(seqs[i]));
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    const answers: Answer[] = parts.map(() => ({ replies: [], errno: 0, message: "" }));
    const position = new Map(seqs.map((seq, i) => [seq, i]));
    const waiting = new Set(
      parts.flatMap((p, i) => (new DataView(p.buffer).getUint16(6, true) & NLM_F_ACK ? [i] : [])),
    );
    libc.send(this.#fd, out, what);
    while (waiting.size) {
      const n = libc.recv(this.#fd, this.#buf, what);
      for (const reply of parseReplies(this.#buf.subarray(0, n))) {
        const i = position.get(reply.seq);
        if (i === undefined || reply.type === NLMSG_NOOP) continue;
        if (reply.type !== NLMSG_ERROR) {
          answers[i].replies.push({ ...reply, payload: reply.payload.slice() });
          continue;
        }
        const { errno, message } = parseError(reply);
        if (!waiting.delete(i)) throw new libc.OsError(what, errno, message);
        answers[i].errno = errno;
        answers[i].message = message;
      }
    }
    return answers;
  }

  /** Safe to call twice. */
  close(): void {
    if (this.#fd >= 0) libc.close(this.#fd);
    this.#fd = -1;
  }
}
