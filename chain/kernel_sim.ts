/**
 * An in-memory model of the kernel state plugins touch, for dry runs (seeded
 * from the real namespaces on first look, so it predicts what a real run
 * would find) and for root-free tests (seeded with nothing but `lo`). Every
 * change is applied to the model and recorded as an Effect.
 */
import type { Effect } from "./system.ts";
import { type Kernel, type Netns, NetnsMissing } from "./kernel.ts";
import type { Address, Link, LinkChange, RouteEntry, RouteSpec } from "../ffi/rtnetlink.ts";
import { OsError } from "../ffi/libc.ts";

const ESRCH = 3;
import {
  IFF_UP,
  RT_SCOPE_LINK,
  RT_SCOPE_UNIVERSE,
  RT_TABLE_MAIN,
  RTN_UNICAST,
  RTPROT_BOOT,
} from "../ffi/rtnetlink.ts";

let macCounter = 0;
/** A locally administered MAC for links the model creates (the kernel would pick a random one). */
function modelMac(): string {
  macCounter++;
  return `02:00:00:00:${((macCounter >> 8) & 0xff).toString(16).padStart(2, "0")}:${
    (macCounter & 0xff).toString(16).padStart(2, "0")
  }`;
}

class SimNetns implements Netns {
  readonly links_ = new Map<number, Link>();
  addrs: Address[] = [];
  routes_: RouteEntry[] = [];
  readonly sysctls = new Map<string, string>();

  constructor(readonly path: string, readonly kernel: SimKernel, readonly seed?: Netns) {
    if (seed) {
      for (const l of seed.links()) this.links_.set(l.index, l);
      this.addrs = seed.addresses();
      this.routes_ = [...seed.routes(4), ...seed.routes(6)];
    } else {
      this.links_.set(1, { index: 1, name: "lo", flags: 0, mtu: 65536, mac: "00:00:00:00:00:00" });
    }
  }

  get where(): string {
    return this.path === "" ? "" : ` in ${this.path}`;
  }

  #record(op: string, target: string, detail?: string) {
    this.kernel.effects.push({
      op,
      target: `${target}${this.where}`,
      ...(detail ? { detail } : {}),
    });
  }

  #name(index: number): string {
    return this.links_.get(index)?.name ?? `#${index}`;
  }

  #must(index: number, op: string): Link {
    const link = this.links_.get(index);
    if (!link) throw new Error(`${op} #${index}${this.where}: ENODEV (No such device)`);
    return link;
  }

  #add(link: Omit<Link, "index">): Link {
    if (this.link(link.name)) {
      throw new Error(
        `RTM_NEWLINK ${JSON.stringify(link.name)}${this.where}: EEXIST (File exists)`,
      );
    }
    const index = Math.max(0, ...this.links_.keys(), ...this.kernel.maxIndex()) + 1;
    const full = { ...link, index };
    this.links_.set(index, full);
    return full;
  }

  link(name: string): Link | undefined {
    return [...this.links_.values()].find((l) => l.name === name);
  }
  linkByIndex(index: number): Link | undefined {
    return this.links_.get(index);
  }
  links(): Link[] {
    return [...this.links_.values()];
  }
  addresses(index = 0, family?: 4 | 6): Address[] {
    return this.addrs.filter((a) =>
      (!index || a.index === index) && (!family || a.family === family)
    );
  }
  routes(family: 4 | 6): RouteEntry[] {
    return this.routes_.filter((r) => r.family === family);
  }

  createBridge(name: string, opts: { mtu?: number; vlanFiltering?: boolean }): Link {
    const link = this.#add({
      name,
      flags: 0,
      mtu: opts.mtu ?? 1500,
      mac: modelMac(),
      kind: "bridge",
    });
    this.#record(
      "create bridge",
      name,
      `mtu ${link.mtu}${opts.vlanFiltering ? ", vlan filtering" : ""}`,
    );
    return link;
  }

  createVeth(
    name: string,
    peerName: string,
    peer: Netns,
    opts: { mtu?: number; peerMac?: string },
  ) {
    const other = peer as SimNetns;
    if (other.link(peerName)) {
      throw new Error(
        `RTM_NEWLINK veth ${JSON.stringify(name)}${this.where}: EEXIST (File exists)`,
      );
    }
    const link = this.#add({
      name,
      flags: 0,
      mtu: opts.mtu ?? 1500,
      mac: modelMac(),
      kind: "veth",
    });
    const peerLink = other.#add({
      name: peerName,
      flags: 0,
      mtu: opts.mtu ?? 1500,
      mac: opts.peerMac ?? modelMac(),
      kind: "veth",
    });
    link.peerIndex = peerLink.index;
    peerLink.peerIndex = link.index;
    this.#record(
      "create veth",
      name,
      `peer ${peerName}${other.where || " on the host"}, mtu ${link.mtu}`,
    );
    return { link, peer: peerLink };
  }

  setLink(index: number, change: LinkChange): void {
    const link = this.#must(index, "RTM_NEWLINK set");
    const words: string[] = [];
    if (change.up !== undefined) {
      link.flags = change.up ? link.flags | IFF_UP : link.flags & ~IFF_UP;
      words.push(change.up ? "up" : "down");
      // As the kernel does, a loopback device gets its addresses the first time it comes up.
      if (change.up && link.name === "lo" && !this.addrs.some((a) => a.index === index)) {
        this.addrs.push(
          { index, family: 4, address: "127.0.0.1", prefix: 8, flags: 0x80, scope: 254 },
          { index, family: 6, address: "::1", prefix: 128, flags: 0x80, scope: 254 },
        );
      }
    }
    if (change.promisc !== undefined) words.push(change.promisc ? "promisc on" : "promisc off");
    if (change.mtu) {
      link.mtu = change.mtu;
      words.push(`mtu ${change.mtu}`);
    }
    if (change.master !== undefined) {
      link.master = change.master || undefined;
      words.push(change.master ? `master ${this.#name(change.master)}` : "nomaster");
    }
    if (change.mac) {
      link.mac = change.mac;
      words.push(`address ${change.mac}`);
    }
    if (change.name) {
      words.push(`name ${change.name}`);
      link.name = change.name;
    }
    this.#record("set link", link.name, words.join(", "));
  }

  setHairpin(index: number, on: boolean): void {
    this.#record(
      "set bridge port",
      this.#must(index, "RTM_SETLINK").name,
      `hairpin ${on ? "on" : "off"}`,
    );
  }

  addBridgeVlan(index: number, vid: number, flags: number): void {
    this.#record(
      "add bridge vlan",
      this.#must(index, "RTM_SETLINK").name,
      `vid ${vid} flags ${flags}`,
    );
  }

  deleteLink(index: number): void {
    const link = this.#must(index, "RTM_DELLINK");
    this.links_.delete(index);
    this.addrs = this.addrs.filter((a) => a.index !== index);
    this.routes_ = this.routes_.filter((r) => r.oif !== index);
    if (link.peerIndex !== undefined) {
      // Deleting one end of a veth deletes the other, wherever it is.
      for (const ns of this.kernel.spaces.values()) {
        const peer = ns.links_.get(link.peerIndex);
        if (peer?.peerIndex !== index) continue;
        ns.links_.delete(link.peerIndex);
        // As the kernel does, the peer's addresses and routes go with it.
        ns.addrs = ns.addrs.filter((a) => a.index !== link.peerIndex);
        ns.routes_ = ns.routes_.filter((r) => r.oif !== link.peerIndex);
      }
    }
    this.#record("delete link", link.name);
  }

  addAddress(index: number, address: string, prefix: number, flags = 0): void {
    const link = this.#must(index, "RTM_NEWADDR");
    if (this.addrs.some((a) => a.index === index && a.address === address)) {
      throw new Error(
        `RTM_NEWADDR ${JSON.stringify(`${address}/${prefix}`)}${this.where}: EEXIST (File exists)`,
      );
    }
    const family = address.includes(":") ? 6 : 4;
    this.addrs.push({ index, family, address, prefix, flags, scope: 0 });
    this.#record(
      "add address",
      `${address}/${prefix}`,
      `on ${link.name}${flags ? ` (flags ${flags})` : ""}`,
    );
  }

  deleteAddress(index: number, address: string, prefix: number): void {
    const before = this.addrs.length;
    this.addrs = this.addrs.filter((a) => !(a.index === index && a.address === address));
    if (this.addrs.length === before) {
      throw new Error(
        `RTM_DELADDR ${
          JSON.stringify(`${address}/${prefix}`)
        }${this.where}: EADDRNOTAVAIL (Cannot assign requested address)`,
      );
    }
    this.#record("delete address", `${address}/${prefix}`, `from ${this.#name(index)}`);
  }

  addRoute(route: RouteSpec): void {
    const entry: RouteEntry = {
      ...route,
      table: route.table ?? RT_TABLE_MAIN,
      scope: route.scope ?? (route.gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK),
      protocol: route.protocol ?? RTPROT_BOOT,
      type: RTN_UNICAST,
    };
    if (this.routes_.some((r) => sameRoute(r, entry))) {
      throw new Error(
        `RTM_NEWROUTE ${
          JSON.stringify(`${route.dst}/${route.dstPrefix}`)
        }${this.where}: EEXIST (File exists)`,
      );
    }
    this.routes_.push(entry);
    this.#record(
      "add route",
      `${route.dst}/${route.dstPrefix}`,
      describeRoute(route, (i) => this.#name(i)),
    );
  }

  deleteRoute(route: RouteSpec): void {
    const before = this.routes_.length;
    this.routes_ = this.routes_.filter((r) =>
      !sameRoute(r, { ...route, table: route.table ?? RT_TABLE_MAIN })
    );
    if (this.routes_.length === before) {
      // The real kernel's error type, which callers tolerating a missing route test for.
      throw new OsError(
        `RTM_DELROUTE ${JSON.stringify(`${route.dst}/${route.dstPrefix}`)}${this.where}`,
        ESRCH,
      );
    }
    this.#record(
      "delete route",
      `${route.dst}/${route.dstPrefix}`,
      describeRoute(route, (i) => this.#name(i)),
    );
  }

  readSysctl(key: string): string | undefined {
    return this.sysctls.get(key) ?? this.seed?.readSysctl(key);
  }

  writeSysctl(key: string, value: string): void {
    if (this.readSysctl(key) === value) return;
    this.sysctls.set(key, value);
    this.#record("set sysctl", key, value);
  }
}

function sameRoute(a: RouteSpec & { table?: number }, b: RouteSpec & { table?: number }): boolean {
  return a.family === b.family && a.dst === b.dst && a.dstPrefix === b.dstPrefix &&
    (a.table ?? RT_TABLE_MAIN) === (b.table ?? RT_TABLE_MAIN) &&
    (a.priority ?? 0) === (b.priority ?? 0);
}

function describeRoute(r: RouteSpec, name: (index: number) => string): string {
  return [
    r.gw ? `via ${r.gw}` : "",
    r.oif ? `dev ${name(r.oif)}` : "",
    r.scope === 253 ? "scope link" : "",
  ]
    .filter(Boolean).join(" ");
}

export class SimKernel implements Kernel {
  readonly spaces = new Map<string, SimNetns>();
  /** Batches "applied" (memory) or planned (dry run), in order. */
  readonly nftBatches: string[] = [];
  /** Namespace paths that exist in a model without a real kernel behind it. */
  readonly known = new Set<string>();

  constructor(readonly effects: Effect[], readonly seed?: Kernel) {}

  maxIndex(): number[] {
    return [...this.spaces.values()].flatMap((ns) => [...ns.links_.keys()]);
  }

  host(): Netns {
    return this.#get("");
  }

  netns(path: string): Netns {
    if (!this.seed && !this.known.has(path)) {
      throw new NetnsMissing(path, "ENOENT (No such file or directory)");
    }
    return this.#get(path);
  }

  #get(path: string): SimNetns {
    let ns = this.spaces.get(path);
    if (!ns) {
      const seed = this.seed ? (path === "" ? this.seed.host() : this.seed.netns(path)) : undefined;
      ns = new SimNetns(path, this, seed);
      this.spaces.set(path, ns);
    }
    return ns;
  }

  nft(commands: string): void {
    this.nftBatches.push(commands);
    this.effects.push({ op: "apply nftables batch", target: "", detail: commands });
  }

  nftList(command: string): unknown[] {
    return this.seed?.nftList(command) ?? [];
  }

  forgetConnections(family: 4 | 6, proto: number, dstPort: number): number {
    const name = proto === 17 ? "udp" : proto === 6 ? "tcp" : `protocol ${proto}`;
    this.effects.push({
      op: "forget tracked connections",
      target: `ipv${family} ${name} to port ${dstPort}`,
    });
    return 0;
  }

  nftGet(command: string): string | undefined {
    return this.seed?.nftGet(command);
  }

  close(): void {
    this.seed?.close();
  }
}
