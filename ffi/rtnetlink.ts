/**
 * rtnetlink: builders for the link, address and route requests cnichain makes
 * and parsers for the kernel's answers. Pure (bytes in, bytes out), like
 * netlink.ts; `netlink_socket.ts` carries them to the kernel.
 */
import {
  type Attr,
  attr,
  encodeAttrs,
  message,
  nested,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  parseAttrs,
  readI32,
  readString,
  readU32,
  type Reply,
  str,
  u32,
  u8,
} from "./netlink.ts";
import { formatIp, parseIp } from "../chain/ip.ts";

export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_SETLINK = 19;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;

export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_BRIDGE = 7;
export const AF_INET6 = 10;

export const IFF_UP = 0x1;
export const IFF_PROMISC = 0x100;

const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_LINK = 5;
const IFLA_MASTER = 10;
const IFLA_PROTINFO = 12;
const IFLA_OPERSTATE = 16;
const IFLA_LINKINFO = 18;
const IFLA_AF_SPEC = 26;
const IFLA_NET_NS_FD = 28;
const IFLA_EXT_MASK = 29;
/** Leave the statistics (the largest attributes) out of link replies: nothing here reads them. */
const RTEXT_FILTER_SKIP_STATS = 1 << 3;
const IFLA_LINK_NETNSID = 37;
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const VETH_INFO_PEER = 1;
const IFLA_BR_VLAN_FILTERING = 7;
const IFLA_BRPORT_MODE = 4;
const IFLA_BRIDGE_VLAN_INFO = 2;
export const BRIDGE_VLAN_INFO_PVID = 0x2;
export const BRIDGE_VLAN_INFO_UNTAGGED = 0x4;

const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_BROADCAST = 4;
const IFA_FLAGS = 8;
export const IFA_F_NODAD = 0x02;
export const IFA_F_PERMANENT = 0x80;

const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_PRIORITY = 6;
const RTA_PREFSRC = 7;
const RTA_METRICS = 8;
const RTA_TABLE = 15;
const RTAX_MTU = 2;
const RTAX_ADVMSS = 8;

export const RT_TABLE_MAIN = 254;
export const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_LINK = 253;
export const RT_SCOPE_HOST = 254;
export const RT_SCOPE_NOWHERE = 255;
export const RTPROT_BOOT = 3;
export const RTN_UNICAST = 1;

const CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
const CHANGE = NLM_F_REQUEST | NLM_F_ACK;

export interface Link {
  index: number;
  name: string;
  flags: number;
  mtu: number;
  /** Lower-case colon-separated MAC, when the link has one. */
  mac?: string;
  master?: number;
  kind?: string;
  operstate?: number;
  /** IFLA_LINK: for a veth, its peer's index (in the peer's namespace). */
  peerIndex?: number;
  /** Set when the peer lives in another namespace. */
  peerNetnsId?: number;
}

export interface Address {
  index: number;
  family: 4 | 6;
  address: string;
  prefix: number;
  flags: number;
  scope: number;
}

export interface RouteSpec {
  family: 4 | 6;
  /** Destination network and prefix length; prefix 0 is the default route. */
  dst: string;
  dstPrefix: number;
  gw?: string;
  oif?: number;
  /** The preferred source address for traffic on this route. */
  src?: string;
  table?: number;
  scope?: number;
  priority?: number;
  mtu?: number;
  advmss?: number;
  protocol?: number;
}

export interface RouteEntry extends RouteSpec {
  table: number;
  scope: number;
  protocol: number;
  type: number;
}

function ifinfomsg(family: number, index: number, flags = 0, change = 0): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setUint8(0, family);
  v.setInt32(4, index, true);
  v.setUint32(8, flags, true);
  v.setUint32(12, change, true);
  return b;
}

function ifaddrmsg(
  family: number,
  prefix: number,
  flags: number,
  scope: number,
  index: number,
): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint8(0, family);
  v.setUint8(1, prefix);
  v.setUint8(2, flags & 0xff);
  v.setUint8(3, scope);
  v.setUint32(4, index, true);
  return b;
}

export function macBytes(mac: string): Uint8Array {
  const parts = mac.split(":");
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new Error(`not a MAC address: ${JSON.stringify(mac)}`);
  }
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}

export function formatMac(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
}

export function ipBytes(ip: string): Uint8Array {
  const parsed = parseIp(ip);
  if (!parsed) throw new Error(`not an IP address: ${JSON.stringify(ip)}`);
  const len = parsed.family === 4 ? 4 : 16;
  const out = new Uint8Array(len);
  let v = parsed.value;
  for (let i = len - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

export function ipFromBytes(b: Uint8Array): string {
  let v = 0n;
  for (const x of b) v = (v << 8n) | BigInt(x);
  return formatIp({ family: b.length === 4 ? 4 : 6, value: v });
}

const familyCode = (f: 4 | 6) => (f === 4 ? AF_INET : AF_INET6);

// ---- links ----

export function getLinkByName(seq: number, name: string): Uint8Array {
  return message(RTM_GETLINK, NLM_F_REQUEST, seq, ifinfomsg(AF_UNSPEC, 0), [
    str(IFLA_IFNAME, name),
    u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS),
  ]);
}

export function getLinkByIndex(seq: number, index: number): Uint8Array {
  return message(RTM_GETLINK, NLM_F_REQUEST, seq, ifinfomsg(AF_UNSPEC, index), [
    u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS),
  ]);
}

export function dumpLinks(seq: number): Uint8Array {
  return message(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, ifinfomsg(AF_UNSPEC, 0), [
    u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS),
  ]);
}

export function newBridge(
  seq: number,
  name: string,
  opts: { mtu?: number; vlanFiltering?: boolean },
): Uint8Array {
  const attrs: Attr[] = [str(IFLA_IFNAME, name)];
  if (opts.mtu) attrs.push(u32(IFLA_MTU, opts.mtu));
  const info: Attr[] = [str(IFLA_INFO_KIND, "bridge")];
  if (opts.vlanFiltering) info.push(nested(IFLA_INFO_DATA, [u8(IFLA_BR_VLAN_FILTERING, 1)]));
  attrs.push(nested(IFLA_LINKINFO, info));
  return message(RTM_NEWLINK, CREATE, seq, ifinfomsg(AF_UNSPEC, 0), attrs);
}

/**
 * A veth pair: `name` in the socket's namespace and `peerName` created straight
 * in the namespace open as `peerNsFd`, so no link ever has to be moved.
 */
export function newVeth(
  seq: number,
  name: string,
  peerName: string,
  peerNsFd: number,
  opts: { mtu?: number; mac?: string; peerMac?: string },
): Uint8Array {
  const peerAttrs: Attr[] = [str(IFLA_IFNAME, peerName), u32(IFLA_NET_NS_FD, peerNsFd)];
  if (opts.mtu) peerAttrs.push(u32(IFLA_MTU, opts.mtu));
  if (opts.peerMac) peerAttrs.push(attr(IFLA_ADDRESS, macBytes(opts.peerMac)));
  const peer = new Uint8Array([...ifinfomsg(AF_UNSPEC, 0), ...encodeAttrs(peerAttrs)]);
  const attrs: Attr[] = [str(IFLA_IFNAME, name)];
  if (opts.mtu) attrs.push(u32(IFLA_MTU, opts.mtu));
  if (opts.mac) attrs.push(attr(IFLA_ADDRESS, macBytes(opts.mac)));
  attrs.push(nested(IFLA_LINKINFO, [
    str(IFLA_INFO_KIND, "veth"),
    nested(IFLA_INFO_DATA, [attr(VETH_INFO_PEER, peer)]),
  ]));
  return message(RTM_NEWLINK, CREATE, seq, ifinfomsg(AF_UNSPEC, 0), attrs);
}

export interface LinkChange {
  up?: boolean;
  promisc?: boolean;
  mtu?: number;
  /** Index of the bridge to enslave to; 0 releases. */
  master?: number;
  mac?: string;
  name?: string;
}

export function setLink(seq: number, index: number, change: LinkChange): Uint8Array {
  let flags = 0, mask = 0;
  if (change.up !== undefined) {
    mask |= IFF_UP;
    if (change.up) flags |= IFF_UP;
  }
  if (change.promisc !== undefined) {
    mask |= IFF_PROMISC;
    if (change.promisc) flags |= IFF_PROMISC;
  }
  const attrs: Attr[] = [];
  if (change.mtu) attrs.push(u32(IFLA_MTU, change.mtu));
  if (change.master !== undefined) attrs.push(u32(IFLA_MASTER, change.master));
  if (change.mac) attrs.push(attr(IFLA_ADDRESS, macBytes(change.mac)));
  if (change.name) attrs.push(str(IFLA_IFNAME, change.name));
  return message(RTM_NEWLINK, CHANGE, seq, ifinfomsg(AF_UNSPEC, index, flags, mask), attrs);
}

const IFLA_INET_CONF = 1;

/**
 * IPv4 settings of an interface, by name, that /proc/sys/net/ipv4/conf/<name>/ also shows (see
 * INET_CONF): one message on a socket already open, where the file needs the namespace entered.
 */
export function setInetConf(seq: number, ifname: string, index: number, value: number): Uint8Array {
  return message(RTM_SETLINK, CHANGE, seq, ifinfomsg(AF_UNSPEC, 0), [
    str(IFLA_IFNAME, ifname),
    nested(IFLA_AF_SPEC, [nested(AF_INET, [nested(IFLA_INET_CONF, [u32(index, value)])])]),
  ]);
}

/** The settings setInetConf() sets, by sysctl name, with their kernel index (IPV4_DEVCONF_*). */
export const INET_CONF: Readonly<Record<string, number>> = { arp_notify: 22, route_localnet: 26 };

/** Hairpin mode of a bridge port (the bridge sends frames back out the port they came in on). */
export function setHairpin(seq: number, index: number, on: boolean): Uint8Array {
  return message(RTM_SETLINK, CHANGE, seq, ifinfomsg(AF_BRIDGE, index), [
    nested(IFLA_PROTINFO, [u8(IFLA_BRPORT_MODE, on ? 1 : 0)]),
  ]);
}

/** Adds (or, with `remove`, deletes) a VLAN on a bridge port. */
export function bridgeVlan(
  seq: number,
  index: number,
  vid: number,
  flags: number,
  remove = false,
): Uint8Array {
  const info = new Uint8Array(4);
  new DataView(info.buffer).setUint16(0, flags, true);
  new DataView(info.buffer).setUint16(2, vid, true);
  return message(remove ? RTM_DELLINK : RTM_SETLINK, CHANGE, seq, ifinfomsg(AF_BRIDGE, index), [
    nested(IFLA_AF_SPEC, [attr(IFLA_BRIDGE_VLAN_INFO, info)]),
  ]);
}

export function delLink(seq: number, index: number): Uint8Array {
  return message(RTM_DELLINK, CHANGE, seq, ifinfomsg(AF_UNSPEC, index));
}

export function parseLink(reply: Reply): Link {
  const v = new DataView(reply.payload.buffer, reply.payload.byteOffset, reply.payload.byteLength);
  const attrs = parseAttrs(reply.payload.subarray(16));
  const link: Link = {
    index: v.getInt32(4, true),
    flags: v.getUint32(8, true),
    name: readString(attrs.get(IFLA_IFNAME)) ?? "",
    mtu: readU32(attrs.get(IFLA_MTU)) ?? 0,
  };
  const mac = attrs.get(IFLA_ADDRESS);
  if (mac && mac.length === 6) link.mac = formatMac(mac);
  const master = readU32(attrs.get(IFLA_MASTER));
  if (master) link.master = master;
  const peer = readU32(attrs.get(IFLA_LINK));
  if (peer) link.peerIndex = peer;
  const nsid = readI32(attrs.get(IFLA_LINK_NETNSID));
  if (nsid !== undefined) link.peerNetnsId = nsid;
  const oper = attrs.get(IFLA_OPERSTATE);
  if (oper) link.operstate = oper[0];
  const info = attrs.get(IFLA_LINKINFO);
  if (info) link.kind = readString(parseAttrs(info).get(IFLA_INFO_KIND));
  return link;
}

// ---- addresses ----

export function changeAddress(
  seq: number,
  remove: boolean,
  index: number,
  address: string,
  prefix: number,
  flags = 0,
): Uint8Array {
  const bytes = ipBytes(address);
  const family = bytes.length === 4 ? AF_INET : AF_INET6;
  const attrs: Attr[] = [attr(IFA_LOCAL, bytes), attr(IFA_ADDRESS, bytes)];
  if (family === AF_INET && prefix < 31 && !remove) {
    // The broadcast address, as `ip addr add ... brd +` sets it.
    const host = 2 ** (32 - prefix) - 1;
    const brd = new Uint8Array(4);
    new DataView(brd.buffer).setUint32(0, (new DataView(bytes.buffer).getUint32(0) | host) >>> 0);
    attrs.push(attr(IFA_BROADCAST, brd));
  }
  if (flags) attrs.push(u32(IFA_FLAGS, flags));
  const type = remove ? RTM_DELADDR : RTM_NEWADDR;
  return message(
    type,
    remove ? CHANGE : CREATE,
    seq,
    ifaddrmsg(family, prefix, flags, 0, index),
    attrs,
  );
}

export function dumpAddresses(seq: number, family: 4 | 6 | 0, index = 0): Uint8Array {
  const code = family === 0 ? AF_UNSPEC : familyCode(family);
  return message(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, ifaddrmsg(code, 0, 0, 0, index));
}

export function parseAddress(reply: Reply): Address {
  const p = reply.payload;
  const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const attrs = parseAttrs(p.subarray(8));
  const local = attrs.get(IFA_LOCAL) ?? attrs.get(IFA_ADDRESS) ?? new Uint8Array(4);
  return {
    family: p[0] === AF_INET ? 4 : 6,
    prefix: p[1],
    flags: readU32(attrs.get(IFA_FLAGS)) ?? p[2],
    scope: p[3],
    index: v.getUint32(4, true),
    address: ipFromBytes(local),
  };
}

// ---- routes ----

function rtmsg(
  r: {
    family: 4 | 6;
    dstPrefix: number;
    table: number;
    protocol: number;
    scope: number;
    type: number;
  },
) {
  return Uint8Array.of(
    familyCode(r.family),
    r.dstPrefix,
    0,
    0,
    r.table > 255 ? 0 : r.table,
    r.protocol,
    r.scope,
    r.type,
    0,
    0,
    0,
    0,
  );
}

export function changeRoute(seq: number, remove: boolean, route: RouteSpec): Uint8Array {
  const table = route.table ?? RT_TABLE_MAIN;
  const scope = route.scope ?? (route.gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK);
  const attrs: Attr[] = [];
  if (route.dstPrefix > 0) attrs.push(attr(RTA_DST, ipBytes(route.dst)));
  if (route.gw) attrs.push(attr(RTA_GATEWAY, ipBytes(route.gw)));
  if (route.oif) attrs.push(u32(RTA_OIF, route.oif));
  if (route.src && !remove) attrs.push(attr(RTA_PREFSRC, ipBytes(route.src)));
  if (route.priority !== undefined) attrs.push(u32(RTA_PRIORITY, route.priority));
  attrs.push(u32(RTA_TABLE, table));
  const metrics: Attr[] = [];
  if (route.mtu) metrics.push(u32(RTAX_MTU, route.mtu));
  if (route.advmss) metrics.push(u32(RTAX_ADVMSS, route.advmss));
  if (metrics.length) attrs.push(nested(RTA_METRICS, metrics));
  const body = rtmsg({
    family: route.family,
    dstPrefix: route.dstPrefix,
    table,
    protocol: remove ? 0 : route.protocol ?? RTPROT_BOOT,
    // RT_SCOPE_NOWHERE in a delete matches a route of any scope.
    scope: remove ? route.scope ?? RT_SCOPE_NOWHERE : scope,
    type: RTN_UNICAST,
  });
  return message(remove ? RTM_DELROUTE : RTM_NEWROUTE, remove ? CHANGE : CREATE, seq, body, attrs);
}

export function dumpRoutes(seq: number, family: 4 | 6): Uint8Array {
  const body = rtmsg({ family, dstPrefix: 0, table: 0, protocol: 0, scope: 0, type: 0 });
  return message(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, body);
}

export function parseRoute(reply: Reply): RouteEntry {
  const p = reply.payload;
  const family = p[0] === AF_INET ? 4 : 6;
  const attrs = parseAttrs(p.subarray(12));
  const dstBytes = attrs.get(RTA_DST);
  const route: RouteEntry = {
    family,
    dstPrefix: p[1],
    dst: dstBytes ? ipFromBytes(dstBytes) : family === 4 ? "0.0.0.0" : "::",
    table: readU32(attrs.get(RTA_TABLE)) ?? p[4],
    protocol: p[5],
    scope: p[6],
    type: p[7],
  };
  const gw = attrs.get(RTA_GATEWAY);
  if (gw) route.gw = ipFromBytes(gw);
  const oif = readU32(attrs.get(RTA_OIF));
  if (oif) route.oif = oif;
  const src = attrs.get(RTA_PREFSRC);
  if (src) route.src = ipFromBytes(src);
  const priority = readU32(attrs.get(RTA_PRIORITY));
  if (priority !== undefined) route.priority = priority;
  const metrics = attrs.get(RTA_METRICS);
  if (metrics) {
    const m = parseAttrs(metrics);
    const mtu = readU32(m.get(RTAX_MTU));
    if (mtu) route.mtu = mtu;
    const advmss = readU32(m.get(RTAX_ADVMSS));
    if (advmss) route.advmss = advmss;
  }
  return route;
}
