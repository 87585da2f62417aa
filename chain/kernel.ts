/**
 * The kernel side of `System`: links, addresses, routes and sysctls per
 * network namespace, and nftables. `realKernel()` talks to the kernel through
 * ffi/ (one netlink socket per namespace, opened in a synchronous setns
 * window); `kernel_sim.ts` is the in-memory model behind dry runs and tests.
 */
import { NETLINK_NETFILTER, NetlinkSocket } from "../ffi/netlink_socket.ts";
import * as ct from "../ffi/conntrack.ts";
import { inNetns, openNetns } from "../ffi/netns.ts";
import {
  close as closeFd,
  O_CLOEXEC,
  O_RDONLY,
  O_WRONLY,
  open as openFd,
  OsError,
  readAll,
  writeAll,
} from "../ffi/libc.ts";
import { Nftables } from "../ffi/nftables.ts";
import * as rt from "../ffi/rtnetlink.ts";
import * as nn from "../ffi/nft_netlink.ts";

export type { Address, Link, LinkChange, RouteEntry, RouteSpec } from "../ffi/rtnetlink.ts";
export {
  IFA_F_NODAD,
  IFF_PROMISC,
  IFF_UP,
  RT_SCOPE_HOST,
  RT_SCOPE_LINK,
  RT_SCOPE_UNIVERSE,
} from "../ffi/rtnetlink.ts";

/** One network namespace, as plugins see it. */
export interface Netns {
  /** The namespace file, or "" for the namespace cnichain runs in (the host's). */
  readonly path: string;
  link(name: string): rt.Link | undefined;
  linkByIndex(index: number): rt.Link | undefined;
  links(): rt.Link[];
  /** Addresses, of one link and one family when given (the kernel filters: no whole-node dump). */
  addresses(index?: number, family?: 4 | 6): rt.Address[];
  routes(family: 4 | 6): rt.RouteEntry[];
  createBridge(name: string, opts: { mtu?: number; vlanFiltering?: boolean }): rt.Link;
  /** A veth pair: `name` here, `peerName` created directly in `peer`. Returns both ends. */
  createVeth(
    name: string,
    peerName: string,
    peer: Netns,
    opts: { mtu?: number; peerMac?: string },
  ): { link: rt.Link; peer: rt.Link };
  setLink(index: number, change: rt.LinkChange): void;
  setHairpin(index: number, on: boolean): void;
  addBridgeVlan(index: number, vid: number, flags: number): void;
  deleteLink(index: number): void;
  addAddress(index: number, address: string, prefix: number, flags?: number): void;
  deleteAddress(index: number, address: string, prefix: number): void;
  addRoute(route: rt.RouteSpec): void;
  deleteRoute(route: rt.RouteSpec): void;
  /** `key` as under /proc/sys: "net/ipv4/ip_forward". */
  readSysctl(key: string): string | undefined;
  writeSysctl(key: string, value: string): void;
}

export interface Kernel {
  /** The namespace cnichain runs in. */
  host(): Netns;
  /** A container's namespace; throws NetnsMissing when the file is gone or not a namespace. */
  netns(path: string): Netns;
  /** Applies nft commands as one atomic batch (in the host namespace). */
  nft(commands: string): void;
  /** Runs an nft `list` command; its JSON objects, or [] when the object does not exist. */
  nftList(command: string): unknown[];
  /** Runs an nft `get` command; its text, or undefined when the object does not exist. */
  nftGet(command: string): string | undefined;
  /**
   * Set elements and rule listings without libnftables, for the hot path; only the real
   * kernel has it (the others take every change through nft(), which they record).
   */
  readonly nftElements?: NftElements;
  /** Deletes the host's tracked connections of `proto` to `dstPort` (original direction); returns how many. */
  forgetConnections(family: 4 | 6, proto: number, dstPort: number): number;
  /** Releases sockets; safe to call twice. */
  close(): void;
}

const ENOENT = 2;

/** An element change in one of cnichain's nftables sets. */
export interface ElementChange {
  /** "create" fails with EEXIST when the key is already there; "add" leaves it be. */
  verb: "add" | "create" | "delete";
  element: nn.ElementSpec;
}

/** nftables set elements straight over netlink (ffi/nft_netlink.ts), in the host namespace. */
export interface NftElements {
  /** The comments of a chain's rules in order ("" for none); [] when the chain is missing. */
  ruleComments(table: string, chain: string): string[];
  /** Whether the chain exists (asked by name: libnftables would list the whole table first). */
  hasChain(table: string, chain: string): boolean;
  /**
   * Applies the changes as one transaction: all or none. Undefined when done, else the
   * first refusal (ENOENT: no such table, set or element; EEXIST: the key is taken).
   */
  apply(
    table: string,
    types: Map<string, nn.SetType>,
    changes: ElementChange[],
  ): { errno: number; message: string; change: ElementChange } | undefined;
  /** Each element's comment ("" when it has none), or undefined where it does not exist. */
  comments(
    table: string,
    types: Map<string, nn.SetType>,
    elements: nn.ElementSpec[],
  ): (string | undefined)[];
}

/** The container's namespace is gone (DEL treats that as nothing left to do). */
export class NetnsMissing extends Error {
  constructor(readonly path: string, reason: string) {
    super(`open container netns ${JSON.stringify(path)}: ${reason}`);
    this.name = "NetnsMissing";
  }
}

/** Whether a sysctl write failed because /proc/sys is read-only or closed to this process. */
export function sysctlRefused(err: unknown): boolean {
  return err instanceof OsError && ["EROFS", "EACCES", "EPERM"].includes(err.code);
}

function sysctlPath(key: string): string {
  // Components may be any interface name Linux allows (`br+1`, `vlan@x`), never a way out.
  const parts = key.split("/");
  if (parts.some((p) => p === "" || p === "." || p === ".." || /[\s\0]/.test(p))) {
    throw new Error(`invalid sysctl key ${JSON.stringify(key)}`);
  }
  return `/proc/sys/${key}`;
}

/** Error context for a netlink call: `RTM_NEWLINK veth "veth1a2b3c4d"`. */
const what = (op: string, name: string, ns: string) =>
  `${op} ${JSON.stringify(name)}${ns ? ` in ${JSON.stringify(ns)}` : ""}`;

class RealNetns implements Netns {
  #sock?: NetlinkSocket;
  constructor(readonly path: string, sock?: NetlinkSocket) {
    this.#sock = sock;
  }

  get sock(): NetlinkSocket {
    this.#sock ??= this.path === ""
      ? NetlinkSocket.open()
      : inNetns(this.path, () => NetlinkSocket.open());
    return this.#sock;
  }

  close(): void {
    this.#sock?.close();
  }

  link(name: string): rt.Link | undefined {
    const reply = this.sock.get(
      (s) => rt.getLinkByName(s, name),
      what("RTM_GETLINK", name, this.path),
    );
    return reply && rt.parseLink(reply);
  }

  linkByIndex(index: number): rt.Link | undefined {
    const reply = this.sock.get(
      (s) => rt.getLinkByIndex(s, index),
      what("RTM_GETLINK", `#${index}`, this.path),
    );
    return reply && rt.parseLink(reply);
  }

  links(): rt.Link[] {
    return this.sock.dump(rt.dumpLinks, what("RTM_GETLINK", "dump", this.path)).map(rt.parseLink);
  }

  addresses(index = 0, family?: 4 | 6): rt.Address[] {
    const all = this.sock.dump(
      (s) => rt.dumpAddresses(s, family ?? 0, index),
      what("RTM_GETADDR", "dump", this.path),
    )
      .map(rt.parseAddress);
    return index ? all.filter((a) => a.index === index) : all;
  }

  routes(family: 4 | 6): rt.RouteEntry[] {
    return this.sock.dump(
      (s) => rt.dumpRoutes(s, family),
      what("RTM_GETROUTE", `ipv${family}`, this.path),
    )
      .map(rt.parseRoute);
  }

  #mustGet(name: string): rt.Link {
    const link = this.link(name);
    if (!link) throw new Error(`link ${JSON.stringify(name)} vanished right after it was created`);
    return link;
  }

  createBridge(name: string, opts: { mtu?: number; vlanFiltering?: boolean }): rt.Link {
    this.sock.request(
      (s) => rt.newBridge(s, name, opts),
      what("RTM_NEWLINK bridge", name, this.path),
    );
    return this.#mustGet(name);
  }

  createVeth(
    name: string,
    peerName: string,
    peer: Netns,
    opts: { mtu?: number; peerMac?: string },
  ) {
    const fd = peer.path === "" ? openNetns("/proc/thread-self/ns/net") : openNetns(peer.path);
    try {
      this.sock.request(
        (s) => rt.newVeth(s, name, peerName, fd, opts),
        what("RTM_NEWLINK veth", name, this.path),
      );
    } finally {
      closeFd(fd);
    }
    const peerLink = peer.link(peerName);
    if (!peerLink) {
      throw new Error(`veth peer ${JSON.stringify(peerName)} vanished right after it was created`);
    }
    return { link: this.#mustGet(name), peer: peerLink };
  }

  setLink(index: number, change: rt.LinkChange): void {
    this.sock.request(
      (s) => rt.setLink(s, index, change),
      what("RTM_NEWLINK set", `#${index}`, this.path),
    );
  }

  setHairpin(index: number, on: boolean): void {
    this.sock.request(
      (s) => rt.setHairpin(s, index, on),
      what("RTM_SETLINK hairpin", `#${index}`, this.path),
    );
  }

  addBridgeVlan(index: number, vid: number, flags: number): void {
    this.sock.request(
      (s) => rt.bridgeVlan(s, index, vid, flags),
      what("RTM_SETLINK vlan", `#${index}`, this.path),
    );
  }

  deleteLink(index: number): void {
    this.sock.request((s) => rt.delLink(s, index), what("RTM_DELLINK", `#${index}`, this.path));
  }

  addAddress(index: number, address: string, prefix: number, flags = 0): void {
    this.sock.request(
      (s) => rt.changeAddress(s, false, index, address, prefix, flags),
      what("RTM_NEWADDR", `${address}/${prefix}`, this.path),
    );
  }

  deleteAddress(index: number, address: string, prefix: number): void {
    this.sock.request(
      (s) => rt.changeAddress(s, true, index, address, prefix),
      what("RTM_DELADDR", `${address}/${prefix}`, this.path),
    );
  }

  addRoute(route: rt.RouteSpec): void {
    this.sock.request(
      (s) => rt.changeRoute(s, false, route),
      what("RTM_NEWROUTE", `${route.dst}/${route.dstPrefix}`, this.path),
    );
  }

  deleteRoute(route: rt.RouteSpec): void {
    this.sock.request(
      (s) => rt.changeRoute(s, true, route),
      what("RTM_DELROUTE", `${route.dst}/${route.dstPrefix}`, this.path),
    );
  }

  readSysctl(key: string): string | undefined {
    const read = () => {
      try {
        return new TextDecoder().decode(readProcFile(sysctlPath(key))).trim();
      } catch {
        return undefined;
      }
    };
    return this.path === "" ? read() : inNetns(this.path, read);
  }

  writeSysctl(key: string, value: string): void {
    const conf = /^net\/ipv4\/conf\/([^/]+)\/([a-z_]+)$/.exec(key);
    const index = conf && conf[1] !== "all" && conf[1] !== "default" &&
      Object.hasOwn(rt.INET_CONF, conf[2]) && rt.INET_CONF[conf[2]];
    const overNetlink = index && /^\d{1,9}$/.test(value)
      ? () =>
        this.sock.request(
          (s) => rt.setInetConf(s, conf[1], index, Number(value)),
          what("RTM_SETLINK inet conf", `${conf[1]} ${conf[2]}`, this.path),
        )
      : undefined;
    // Over netlink in a container's namespace: no namespace to enter, no file to open (arp_notify).
    // Not in the host's: a netlink change of a device's settings tells every netdevice notifier,
    // and IPv6's walks the namespace's whole IPv6 routing table, which on a node grows with its
    // pods (0.5 ms an ADD with 500 pods here); /proc/sys has no such side effect.
    if (overNetlink && this.path !== "") return overNetlink();
    // /proc/sys/net follows the namespace of the thread that opens it, hence the window.
    const write = () => {
      const path = sysctlPath(key);
      const fd = openFd(path, O_WRONLY | O_CLOEXEC);
      try {
        writeAll(fd, new TextEncoder().encode(value), `write ${JSON.stringify(path)}`);
      } finally {
        closeFd(fd);
      }
    };
    if (this.path !== "") return inNetns(this.path, write);
    try {
      write();
    } catch (err) {
      // A read-only /proc/sys (some containers) still lets CAP_NET_ADMIN set a device's conf.
      if (!overNetlink || !sysctlRefused(err)) throw err;
      overNetlink();
    }
  }
}

/**
 * Up to this many tracked connections, the /proc listing is the cheaper way to find a port's:
 * the kernel writes it in about 1 us an entry and without locks, where a netlink dump takes a
 * lock per bucket of the hash (6.5 ms for an empty table here) and then filters 60,000 entries in
 * 10 ms more. Measured here: 60,000 entries, /proc 63-69 ms, the filtered dump 16-17 ms.
 */
const PROC_SCAN_LIMIT = 5_000;

/** How many connections the calling thread's namespace tracks; undefined when it cannot tell. */
function trackedCount(): number | undefined {
  try {
    const text = new TextDecoder().decode(
      // /proc/sys/net follows the namespace of the thread that opens it, as /proc/thread-self does.
      readProcFile("/proc/sys/net/netfilter/nf_conntrack_count"),
    );
    const n = Number(text.trim());
    return Number.isInteger(n) && n >= 0 ? n : undefined;
  } catch (err) {
    if (err instanceof OsError && err.code === "ENOENT") return undefined;
    throw err;
  }
}

/**
 * The calling thread's namespace's tracked `proto` connections to `dstPort`, read from
 * /proc (see ct.procEntries); undefined when the kernel has no such file (built without
 * CONFIG_NF_CONNTRACK_PROCFS), and the netlink dump has to do.
 */
function procConnections(family: 4 | 6, proto: number, dstPort: number): ct.Tuple[] | undefined {
  let bytes: Uint8Array;
  try {
    bytes = readProcFile("/proc/thread-self/net/nf_conntrack");
  } catch (err) {
    if (err instanceof OsError && err.code === "ENOENT") return undefined;
    throw err;
  }
  return ct.procEntries(new TextDecoder().decode(bytes), family, proto, dstPort);
}

/** A /proc file's bytes, read to the end (its size says 0). */
function readProcFile(path: string): Uint8Array {
  const fd = openFd(path, O_RDONLY | O_CLOEXEC);
  try {
    return readAll(fd, `read ${JSON.stringify(path)}`);
  } finally {
    closeFd(fd);
  }
}

/** The Kernel that changes the machine. Sockets and libraries open on first use. */
export function realKernel(): Kernel {
  const spaces = new Map<string, RealNetns>();
  let nft: Nftables | undefined;
  // One NETLINK_NETFILTER socket serves conntrack and nf_tables alike.
  let netfilter: NetlinkSocket | undefined;
  const nfSocket = () => (netfilter ??= NetlinkSocket.open(NETLINK_NETFILTER));
  const nftElements: NftElements = {
    ruleComments(table, chain) {
      try {
        return nfSocket().dump((seq) => nn.ruleDumpMessage(seq, table, chain), "NFT_MSG_GETRULE")
          .map((r) => nn.ruleComment(r) ?? "");
      } catch (err) {
        if (err instanceof OsError && err.code === "ENOENT") return [];
        throw err;
      }
    },
    apply(table, types, changes) {
      const answers = nfSocket().many([
        nn.batchBegin,
        ...changes.map((c) => (seq: number) =>
          nn.elementMessage(c.verb, seq, table, types, c.element)
        ),
        nn.batchEnd,
      ], "nftables batch");
      // Refusing one message aborts the batch; the others are ACKed all the same.
      const i = answers.findIndex((a) => a.errno !== 0);
      if (i < 0) return undefined;
      return { errno: answers[i].errno, message: answers[i].message, change: changes[i - 1] };
    },
    hasChain(table, chain) {
      const [a] = nfSocket().many(
        [(seq) => nn.chainMessage(seq, table, chain)],
        "NFT_MSG_GETCHAIN",
      );
      if (a.errno === ENOENT) return false;
      if (a.errno !== 0) {
        throw new OsError(`NFT_MSG_GETCHAIN ${table} ${chain}`, a.errno, a.message);
      }
      return true;
    },
    comments(table, types, elements) {
      const answers = nfSocket().many(
        elements.map((e) => (seq: number) => nn.getElementMessage(seq, table, types, e)),
        "NFT_MSG_GETSETELEM",
      );
      return answers.map((a, i) => {
        if (a.errno === ENOENT) return undefined;
        if (a.errno !== 0) {
          const e = elements[i];
          throw new OsError(`NFT_MSG_GETSETELEM ${e.set} { ${e.key} }`, a.errno, a.message);
        }
        return a.replies[0] ? nn.elementComment(a.replies[0]) : undefined;
      });
    },
  };
  const get = (path: string) => {
    let ns = spaces.get(path);
    if (!ns) {
      ns = new RealNetns(path);
      if (path !== "") {
        try {
          void ns.sock; // opens the socket now, so a missing namespace shows here
        } catch (err) {
          const reason = err instanceof OsError ? err.message.replace(/^.*?: /, "") : String(err);
          throw new NetnsMissing(path, reason);
        }
      }
      spaces.set(path, ns);
    }
    return ns;
  };
  return {
    host: () => get(""),
    netns: (path) => get(path),
    nftElements,
    nft(commands) {
      nft ??= new Nftables();
      nft.run(commands);
    },
    nftList(command) {
      nft ??= new Nftables();
      try {
        return nft.list(command);
      } catch (err) {
        if (err instanceof Error && /No such file or directory/.test(err.message)) return [];
        throw err;
      }
    },
    forgetConnections(family, proto, dstPort) {
      // Nothing tracked, nothing to forget (a fresh node, or conntrack unused so far).
      const count = trackedCount();
      if (count === 0) return 0;
      const sock = nfSocket();
      const listed = count === undefined || count <= PROC_SCAN_LIMIT
        ? procConnections(family, proto, dstPort)
        : undefined;
      const doomed = listed ??
        sock.dump((seq) => ct.dumpRequest(seq, family, { proto, dstPort }), "CT_GET dump")
          .map(ct.parseEntry)
          .filter((t): t is ct.Tuple =>
            t !== undefined && t.proto === proto && t.dstPort === dstPort
          );
      let gone = 0;
      for (const t of doomed) {
        try {
          sock.request(
            (seq) => ct.deleteRequest(seq, t),
            `IPCTNL_MSG_CT_DELETE ${t.src}:${t.srcPort} -> ${t.dst}:${t.dstPort}`,
          );
          gone++;
        } catch (err) {
          if (!(err instanceof OsError && err.code === "ENOENT")) throw err; // expired meanwhile
        }
      }
      return gone;
    },
    nftGet(command) {
      nft ??= new Nftables();
      try {
        return nft.query(command);
      } catch (err) {
        if (err instanceof Error && /No such file or directory/.test(err.message)) return undefined;
        throw err;
      }
    },
    close() {
      for (const ns of spaces.values()) ns.close();
      spaces.clear();
      nft?.close();
      nft = undefined;
      netfilter?.close();
      netfilter = undefined;
    },
  };
}
