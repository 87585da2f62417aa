/**
 * Connection tracking over netlink (NETLINK_NETFILTER, ctnetlink): list the
 * table and delete entries. Portmap uses it to forget UDP flows that still
 * point a host port at a pod that no longer holds it (UDP flows never end, so
 * without this the new pod would not see that traffic).
 */
import {
  type Attr,
  attr,
  message,
  nested,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  parseAttrs,
  type Reply,
  u32,
  u8,
} from "./netlink.ts";
import { ipBytes, ipFromBytes } from "./rtnetlink.ts";

const NFNL_SUBSYS_CTNETLINK = 1;
const IPCTNL_MSG_CT_GET = 1;
const IPCTNL_MSG_CT_DELETE = 2;
const CTA_TUPLE_ORIG = 1;
const CTA_TUPLE_IP = 1;
const CTA_TUPLE_PROTO = 2;
const CTA_IP_V4_SRC = 1;
const CTA_IP_V4_DST = 2;
const CTA_IP_V6_SRC = 3;
const CTA_IP_V6_DST = 4;
const CTA_PROTO_NUM = 1;
const CTA_PROTO_SRC_PORT = 2;
const CTA_PROTO_DST_PORT = 3;
const CTA_FILTER = 25;
const CTA_FILTER_ORIG_FLAGS = 1;
const CTA_FILTER_FLAG_CTA_PROTO_NUM = 1 << 3;
const CTA_FILTER_FLAG_CTA_PROTO_DST_PORT = 1 << 5;

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_SCTP = 132;

/** The original direction of a tracked connection. */
export interface Tuple {
  family: 4 | 6;
  src: string;
  dst: string;
  proto: number;
  srcPort: number;
  dstPort: number;
}

const nfgenmsg = (family: 4 | 6) => Uint8Array.of(family === 4 ? 2 : 10, 0, 0, 0);

function port(type: number, p: number): Attr {
  return attr(type, Uint8Array.of(p >> 8, p & 0xff)); // network byte order
}

/**
 * A dump of the family's entries; with `to`, only `to.proto` connections to `to.dstPort` in their
 * original direction, picked by the kernel (CTA_FILTER, Linux 5.8 and later; an older kernel
 * ignores the filter and sends every entry, so callers still check what they get).
 */
export function dumpRequest(
  seq: number,
  family: 4 | 6,
  to?: { proto: number; dstPort: number },
): Uint8Array {
  return message(
    (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
    NLM_F_REQUEST | NLM_F_DUMP,
    seq,
    nfgenmsg(family),
    to
      ? [
        nested(CTA_TUPLE_ORIG, [
          nested(CTA_TUPLE_PROTO, [
            u8(CTA_PROTO_NUM, to.proto),
            port(CTA_PROTO_DST_PORT, to.dstPort),
          ]),
        ]),
        nested(CTA_FILTER, [
          u32(
            CTA_FILTER_ORIG_FLAGS,
            CTA_FILTER_FLAG_CTA_PROTO_NUM | CTA_FILTER_FLAG_CTA_PROTO_DST_PORT,
          ),
        ]),
      ]
      : [],
  );
}

export function deleteRequest(seq: number, t: Tuple): Uint8Array {
  const [srcType, dstType] = t.family === 4
    ? [CTA_IP_V4_SRC, CTA_IP_V4_DST]
    : [CTA_IP_V6_SRC, CTA_IP_V6_DST];
  return message(
    (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
    NLM_F_REQUEST | NLM_F_ACK,
    seq,
    nfgenmsg(t.family),
    [
      nested(CTA_TUPLE_ORIG, [
        nested(CTA_TUPLE_IP, [attr(srcType, ipBytes(t.src)), attr(dstType, ipBytes(t.dst))]),
        nested(CTA_TUPLE_PROTO, [
          u8(CTA_PROTO_NUM, t.proto),
          port(CTA_PROTO_SRC_PORT, t.srcPort),
          port(CTA_PROTO_DST_PORT, t.dstPort),
        ]),
      ]),
    ],
  );
}

/** The original tuple of a conntrack entry, or undefined for one without ports (ICMP). */
export function parseEntry(reply: Reply): Tuple | undefined {
  const family = reply.payload[0] === 2 ? 4 : 6;
  const orig = parseAttrs(reply.payload.subarray(4)).get(CTA_TUPLE_ORIG);
  if (!orig) return undefined;
  const tuple = parseAttrs(orig);
  const ip = parseAttrs(tuple.get(CTA_TUPLE_IP) ?? new Uint8Array());
  const proto = parseAttrs(tuple.get(CTA_TUPLE_PROTO) ?? new Uint8Array());
  const src = ip.get(family === 4 ? CTA_IP_V4_SRC : CTA_IP_V6_SRC);
  const dst = ip.get(family === 4 ? CTA_IP_V4_DST : CTA_IP_V6_DST);
  const num = proto.get(CTA_PROTO_NUM);
  const sport = proto.get(CTA_PROTO_SRC_PORT);
  const dport = proto.get(CTA_PROTO_DST_PORT);
  if (!src || !dst || !num || !sport || !dport) return undefined;
  return {
    family,
    src: ipFromBytes(src),
    dst: ipFromBytes(dst),
    proto: num[0],
    srcPort: (sport[0] << 8) | sport[1],
    dstPort: (dport[0] << 8) | dport[1],
  };
}

/**
 * The entries of /proc/net/nf_conntrack (one per line: `ipv4 2 udp 17 29 src=.. dst=.. sport=..
 * dport=.. ... src=.. (reply)`) that are `proto` connections to `dstPort` in their original
 * direction. The kernel writes that file walking its hash under RCU alone: for an almost empty
 * table it takes half a millisecond where a netlink dump, which takes a lock per bucket of the
 * hash (262,144 of them on a 24 GiB machine), takes six. Lines are only parsed when they could
 * match, so a busy table costs a string search.
 */
export function procEntries(text: string, family: 4 | 6, proto: number, dstPort: number): Tuple[] {
  const out: Tuple[] = [];
  const needle = ` dport=${dstPort} `;
  const l3 = family === 4 ? "ipv4" : "ipv6";
  for (let at = text.indexOf(needle); at >= 0; at = text.indexOf(needle, at + needle.length)) {
    const start = text.lastIndexOf("\n", at) + 1;
    const end = text.indexOf("\n", at);
    const line = text.slice(start, end < 0 ? text.length : end);
    const fields = line.split(/\s+/);
    if (fields[0] !== l3 || Number(fields[3]) !== proto) continue;
    // The first src, dst, sport and dport are the original direction's; the reply's follow.
    const first = (key: string) =>
      fields.find((f) => f.startsWith(`${key}=`))?.slice(key.length + 1);
    const [src, dst, sport, dport] = ["src", "dst", "sport", "dport"].map(first);
    if (!src || !dst || !sport || Number(dport) !== dstPort) continue;
    out.push({ family, src, dst, proto, srcPort: Number(sport), dstPort });
  }
  return out;
}
