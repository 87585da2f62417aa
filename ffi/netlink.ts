/**
 * Netlink messages as bytes: headers, attributes, and the replies the kernel
 * sends back. Pure functions over Uint8Array (no FFI here), so every builder
 * and parser is tested byte for byte without root.
 */

export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_DUMP = 0x300;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
/** In an NLMSG_ERROR reply: extended-ack attributes follow the echoed header. */
export const NLM_F_ACK_TLVS = 0x200;
/** In an NLMSG_ERROR reply: only the header of the request was echoed. */
export const NLM_F_CAPPED = 0x100;
export const NLMSGERR_ATTR_MSG = 1;
export const NLA_F_NESTED = 0x8000;

export const HEADER_LEN = 16;

const align4 = (n: number) => (n + 3) & ~3;

/** A netlink attribute: type plus payload bytes (nested attributes are payloads too). */
export interface Attr {
  type: number;
  data: Uint8Array;
}

export function attr(type: number, data: Uint8Array): Attr {
  return { type, data };
}

export const u8 = (type: number, v: number): Attr => attr(type, Uint8Array.of(v));

export function u16(type: number, v: number): Attr {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, v, true);
  return attr(type, b);
}

export function u32(type: number, v: number): Attr {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return attr(type, b);
}

/** A NUL-terminated string attribute, as the kernel expects names. */
export const str = (type: number, s: string): Attr =>
  attr(type, new TextEncoder().encode(`${s}\0`));

export const nested = (type: number, children: Attr[]): Attr =>
  attr(type | NLA_F_NESTED, encodeAttrs(children));

/** Attributes laid out one after another, each padded to 4 bytes. */
export function encodeAttrs(attrs: Attr[]): Uint8Array {
  const size = attrs.reduce((n, a) => n + align4(4 + a.data.length), 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const a of attrs) {
    view.setUint16(at, 4 + a.data.length, true);
    view.setUint16(at + 2, a.type, true);
    out.set(a.data, at + 4);
    at += align4(4 + a.data.length);
  }
  return out;
}

/** Parses attributes; a malformed length ends the list (the kernel never sends one). */
export function parseAttrs(buf: Uint8Array): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let at = 0;
  while (at + 4 <= buf.length) {
    const len = view.getUint16(at, true);
    const type = view.getUint16(at + 2, true) & ~NLA_F_NESTED & 0x7fff;
    if (len < 4 || at + len > buf.length) break;
    out.set(type, buf.subarray(at + 4, at + len));
    at += align4(len);
  }
  return out;
}

/**
 * The first attribute of `type`, without building parseAttrs' map: for replies read in bulk
 * (a chain's rules) where one attribute of each is wanted.
 */
export function findAttr(buf: Uint8Array, type: number): Uint8Array | undefined {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let at = 0; at + 4 <= buf.length;) {
    const len = view.getUint16(at, true);
    if (len < 4 || at + len > buf.length) return undefined;
    if ((view.getUint16(at + 2, true) & ~NLA_F_NESTED & 0x7fff) === type) {
      return buf.subarray(at + 4, at + len);
    }
    at += align4(len);
  }
  return undefined;
}

/** A whole message: header, the fixed family struct, then attributes. */
export function message(
  type: number,
  flags: number,
  seq: number,
  body: Uint8Array,
  attrs: Attr[] = [],
): Uint8Array {
  const encoded = encodeAttrs(attrs);
  const len = HEADER_LEN + align4(body.length) + encoded.length;
  const out = new Uint8Array(len);
  const view = new DataView(out.buffer);
  view.setUint32(0, len, true);
  view.setUint16(4, type, true);
  view.setUint16(6, flags, true);
  view.setUint32(8, seq, true);
  view.setUint32(12, 0, true);
  out.set(body, HEADER_LEN);
  out.set(encoded, HEADER_LEN + align4(body.length));
  return out;
}

export interface Reply {
  type: number;
  flags: number;
  seq: number;
  /** Everything after the header. */
  payload: Uint8Array;
}

/** Splits a received buffer into messages. */
export function parseReplies(buf: Uint8Array): Reply[] {
  const out: Reply[] = [];
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let at = 0;
  while (at + HEADER_LEN <= buf.length) {
    const len = view.getUint32(at, true);
    if (len < HEADER_LEN || at + len > buf.length) break;
    out.push({
      type: view.getUint16(at + 4, true),
      flags: view.getUint16(at + 6, true),
      seq: view.getUint32(at + 8, true),
      payload: buf.subarray(at + HEADER_LEN, at + len),
    });
    at += align4(len);
  }
  return out;
}

/** An NLMSG_ERROR reply: errno (0 for an ACK) and the extended-ack message, if any. */
export function parseError(reply: Reply): { errno: number; message: string } {
  const view = new DataView(
    reply.payload.buffer,
    reply.payload.byteOffset,
    reply.payload.byteLength,
  );
  const errno = 0 - view.getInt32(0, true);
  let message = "";
  if (reply.flags & NLM_F_ACK_TLVS) {
    // The echoed request: its header only when capped, else the whole request.
    const echoedLen = reply.flags & NLM_F_CAPPED ? HEADER_LEN : view.getUint32(4, true);
    const tlvs = parseAttrs(reply.payload.subarray(4 + align4(echoedLen)));
    const msg = tlvs.get(NLMSGERR_ATTR_MSG);
    if (msg) message = new TextDecoder().decode(msg).replace(/\0+$/, "");
  }
  return { errno, message };
}

export function readU32(data: Uint8Array | undefined): number | undefined {
  return data && data.length >= 4
    ? new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true)
    : undefined;
}

export function readI32(data: Uint8Array | undefined): number | undefined {
  return data && data.length >= 4
    ? new DataView(data.buffer, data.byteOffset, 4).getInt32(0, true)
    : undefined;
}

// Made on first use, not at load: a plugin run's first TextDecoder costs a tenth of a millisecond,
// and that belongs to the run's measured time.
let utf8: TextDecoder | undefined;

/** A NUL-terminated string attribute (everything from the first NUL on is dropped). */
export function readString(data: Uint8Array | undefined): string | undefined {
  if (!data) return undefined;
  const end = data.indexOf(0);
  return (utf8 ??= new TextDecoder()).decode(end < 0 ? data : data.subarray(0, end));
}
