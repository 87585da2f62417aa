/**
 * nf_tables set elements and rule listings as netlink messages (NETLINK_NETFILTER), without
 * libnftables. A pod's ADD and DEL only add and remove elements in sets that cnichain's skeleton
 * made; done here that is a few hundred microseconds, where loading libnftables and letting it
 * build its cache costs about three milliseconds. Tables, chains, sets and rules are still made
 * by libnftables (nftables.ts), from nft syntax. Pure functions: tested byte for byte.
 *
 * Keys and values are written in nft syntax ("10.1.0.5 . 10.1.0.0/16", "tcp . 8080") and
 * encoded for the set's type, which is read from the same `add set` / `add map` line that
 * created it.
 */
import {
  type Attr,
  attr,
  findAttr,
  message,
  nested,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  parseAttrs,
  readString,
  type Reply,
  str,
} from "./netlink.ts";
import { ipBytes } from "./rtnetlink.ts";

const NFNL_SUBSYS_NFTABLES = 10;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NFT_MSG_GETCHAIN = 4;
const NFT_MSG_GETRULE = 7;
export const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_GETSETELEM = 13;
const NFT_MSG_DELSETELEM = 14;
const NFPROTO_INET = 1;

const NFTA_CHAIN_TABLE = 1;
const NFTA_CHAIN_NAME = 3;
const NFTA_RULE_TABLE = 1;
const NFTA_RULE_CHAIN = 2;
const NFTA_RULE_USERDATA = 7;
const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_SET_ELEM_DATA = 2;
const NFTA_SET_ELEM_USERDATA = 6;
const NFTA_SET_ELEM_KEY_END = 10;
const NFTA_DATA_VALUE = 1;
/** The comment's type in element and rule user data (libnftnl's NFTNL_UDATA_*_COMMENT). */
const UDATA_COMMENT = 0;

const nftType = (msg: number) => (NFNL_SUBSYS_NFTABLES << 8) | msg;
/** nfgenmsg: family, version 0, resource id (big-endian). */
const nfgen = (family: number, resId = 0) => Uint8Array.of(family, 0, resId >> 8, resId & 0xff);

/** A set's type, as its `add set` / `add map` line gives it. */
export interface SetType {
  /** Key fields in order (`ipv4_addr`, `ipv6_addr`, `inet_proto`, `inet_service`). */
  key: string[];
  /** A map's value fields; absent for a set. */
  value?: string[];
  /** `flags interval`: a key field may be a prefix, sent as start and end. */
  interval: boolean;
}

/** The set types a feature's skeleton declares, by set name. */
export function setTypes(skeleton: string[]): Map<string, SetType> {
  const out = new Map<string, SetType>();
  for (const line of skeleton) {
    const m = /^add (?:set|map) \S+ \S+ (\S+) \{ type ([^;:]+?)(?: : ([^;]+?))?;(.*)\}$/.exec(line);
    if (!m) continue;
    out.set(m[1], {
      key: m[2].split(" . "),
      ...(m[3] ? { value: m[3].split(" . ") } : {}),
      interval: /flags [^;]*interval/.test(m[4]),
    });
  }
  return out;
}

const PROTOCOL_NUMBERS: Record<string, number> = { tcp: 6, udp: 17, sctp: 132 };

/** One field's bytes: [start, end] (equal unless an interval field holds a prefix). */
function field(type: string, text: string, interval: boolean): [Uint8Array, Uint8Array] {
  if (type === "ipv4_addr" || type === "ipv6_addr") {
    const [ip, len] = text.split("/");
    const start = ipBytes(ip);
    if ((type === "ipv4_addr") !== (start.length === 4)) throw new Error(`not an ${type}: ${text}`);
    if (len === undefined) return [start, start];
    const bits = Number(len);
    if (!interval || !Number.isInteger(bits) || bits < 0 || bits > start.length * 8) {
      throw new Error(`${text} is not a key of a set of ${type}`);
    }
    const end = start.slice();
    for (let i = 0; i < end.length * 8; i++) {
      const mask = 0x80 >> (i % 8);
      if (i < bits) continue;
      start[i >> 3] &= ~mask;
      end[i >> 3] |= mask;
    }
    return [start, end];
  }
  if (type === "inet_proto") {
    const n = PROTOCOL_NUMBERS[text] ?? Number(text);
    if (!Number.isInteger(n) || n < 0 || n > 255) throw new Error(`not a protocol: ${text}`);
    const b = Uint8Array.of(n);
    return [b, b];
  }
  if (type === "inet_service") {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`not a port: ${text}`);
    const b = Uint8Array.of(n >> 8, n & 0xff);
    return [b, b];
  }
  throw new Error(`unsupported nftables type ${type}`);
}

/**
 * A key or value in nft syntax as the kernel stores it: the fields one after another, each
 * padded to 4 bytes when there are several (a concatenation). `end` differs from `start` only
 * for an interval key with a prefix in it.
 */
export function encodeData(
  types: string[],
  text: string,
  interval = false,
): { start: Uint8Array; end: Uint8Array } {
  const parts = text.split(" . ");
  if (parts.length !== types.length) {
    throw new Error(`${JSON.stringify(text)} does not fit type ${types.join(" . ")}`);
  }
  const fields = parts.map((p, i) => field(types[i], p.trim(), interval));
  const pad = (b: Uint8Array) => (types.length > 1 ? (b.length + 3) & ~3 : b.length);
  const size = fields.reduce((n, [s]) => n + pad(s), 0);
  const start = new Uint8Array(size);
  const end = new Uint8Array(size);
  let at = 0;
  for (const [s, e] of fields) {
    start.set(s, at);
    end.set(e, at);
    at += pad(s);
  }
  return { start, end };
}

/** An element to add, delete or look up, in nft syntax. */
export interface ElementSpec {
  set: string;
  key: string;
  value?: string;
  comment?: string;
}

const encoder = new TextEncoder();

function commentData(comment: string): Uint8Array {
  const text = encoder.encode(`${comment}\0`);
  if (text.length > 255) throw new Error(`comment longer than 254 bytes: ${comment}`);
  const out = new Uint8Array(2 + text.length);
  out[0] = UDATA_COMMENT;
  out[1] = text.length;
  out.set(text, 2);
  return out;
}

function elementAttrs(type: SetType, e: ElementSpec, withData: boolean): Attr {
  const key = encodeData(type.key, e.key, type.interval);
  const attrs = [nested(NFTA_SET_ELEM_KEY, [attr(NFTA_DATA_VALUE, key.start)])];
  // Interval sets of concatenations take each element as its first and last key.
  if (type.interval && type.key.length > 1) {
    attrs.push(nested(NFTA_SET_ELEM_KEY_END, [attr(NFTA_DATA_VALUE, key.end)]));
  }
  if (withData && type.value) {
    if (e.value === undefined) throw new Error(`map element ${e.key} needs a value`);
    attrs.push(nested(NFTA_SET_ELEM_DATA, [
      attr(NFTA_DATA_VALUE, encodeData(type.value, e.value).start),
    ]));
  }
  if (withData && e.comment !== undefined) {
    attrs.push(attr(NFTA_SET_ELEM_USERDATA, commentData(e.comment)));
  }
  return nested(NFTA_LIST_ELEM, attrs);
}

function typeOf(types: Map<string, SetType>, set: string): SetType {
  const type = types.get(set);
  if (!type) throw new Error(`unknown nftables set ${set}`);
  return type;
}

/** One element's NEWSETELEM (`exclusive`: fails with EEXIST when the key is there) or DELSETELEM. */
export function elementMessage(
  verb: "add" | "create" | "delete",
  seq: number,
  table: string,
  types: Map<string, SetType>,
  e: ElementSpec,
): Uint8Array {
  const type = typeOf(types, e.set);
  const [msg, flags] = verb === "delete"
    ? [NFT_MSG_DELSETELEM, 0]
    : [NFT_MSG_NEWSETELEM, NLM_F_CREATE | (verb === "create" ? NLM_F_EXCL : 0)];
  return message(
    nftType(msg),
    NLM_F_REQUEST | NLM_F_ACK | flags,
    seq,
    nfgen(NFPROTO_INET),
    [
      str(NFTA_SET_ELEM_LIST_TABLE, table),
      str(NFTA_SET_ELEM_LIST_SET, e.set),
      nested(NFTA_SET_ELEM_LIST_ELEMENTS, [elementAttrs(type, e, verb !== "delete")]),
    ],
  );
}

/** A GETSETELEM for one element (the reply carries its comment; ENOENT when absent). */
export function getElementMessage(
  seq: number,
  table: string,
  types: Map<string, SetType>,
  e: ElementSpec,
): Uint8Array {
  return message(
    nftType(NFT_MSG_GETSETELEM),
    NLM_F_REQUEST | NLM_F_ACK,
    seq,
    nfgen(NFPROTO_INET),
    [
      str(NFTA_SET_ELEM_LIST_TABLE, table),
      str(NFTA_SET_ELEM_LIST_SET, e.set),
      nested(NFTA_SET_ELEM_LIST_ELEMENTS, [elementAttrs(typeOf(types, e.set), e, false)]),
    ],
  );
}

/** The markers around a transaction: the kernel applies what is between them all or nothing. */
export function batchBegin(seq: number): Uint8Array {
  return message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, nfgen(0, NFNL_SUBSYS_NFTABLES));
}

export function batchEnd(seq: number): Uint8Array {
  return message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, nfgen(0, NFNL_SUBSYS_NFTABLES));
}

/** A dump of one chain's rules. */
export function ruleDumpMessage(seq: number, table: string, chain: string): Uint8Array {
  return message(
    nftType(NFT_MSG_GETRULE),
    NLM_F_REQUEST | NLM_F_DUMP,
    seq,
    nfgen(NFPROTO_INET),
    [str(NFTA_RULE_TABLE, table), str(NFTA_RULE_CHAIN, chain)],
  );
}

/** A GETCHAIN for one chain by name: its NEWCHAIN reply, or ENOENT when there is none. */
export function chainMessage(seq: number, table: string, chain: string): Uint8Array {
  return message(
    nftType(NFT_MSG_GETCHAIN),
    NLM_F_REQUEST | NLM_F_ACK,
    seq,
    nfgen(NFPROTO_INET),
    [str(NFTA_CHAIN_TABLE, table), str(NFTA_CHAIN_NAME, chain)],
  );
}

/** The comment in libnftnl's user data format (type, length, NUL-terminated text). */
function readComment(udata: Uint8Array | undefined): string | undefined {
  let at = 0;
  while (udata && at + 2 <= udata.length) {
    const [type, len] = [udata[at], udata[at + 1]];
    if (type === UDATA_COMMENT) return readString(udata.subarray(at + 2, at + 2 + len));
    at += 2 + len;
  }
  return undefined;
}

/** A rule's comment from its NEWRULE message; undefined when it has none. */
export function ruleComment(reply: Reply): string | undefined {
  return readComment(findAttr(reply.payload.subarray(4), NFTA_RULE_USERDATA));
}

/** The comment of the element in a GETSETELEM reply ("" when it has none). */
export function elementComment(reply: Reply): string {
  const list = parseAttrs(reply.payload.subarray(4)).get(NFTA_SET_ELEM_LIST_ELEMENTS);
  const elem = list && parseAttrs(list).get(NFTA_LIST_ELEM);
  return (elem && readComment(parseAttrs(elem).get(NFTA_SET_ELEM_USERDATA))) ?? "";
}
