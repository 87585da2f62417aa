/**
 * IP addresses as bigints: parsing, formatting and prefix arithmetic for IPv4
 * and IPv6. Formatting follows RFC 5952 (what Go's net.IP prints), so addresses
 * written to disk or into results match the reference plugins byte for byte.
 */

export type Family = 4 | 6;

export interface Ip {
  family: Family;
  value: bigint;
}

export interface Cidr {
  /** The address as written (host bits kept: `10.0.0.5/24` stays .5). */
  ip: Ip;
  prefix: number;
}

export function bits(family: Family): number {
  return family === 4 ? 32 : 128;
}

/**
 * Dotted quad to its value; undefined unless four decimal parts of 0-255 without leading zeros.
 * Character by character, with one BigInt at the end: host-local parses every file name in its
 * store on each ADD, and regular expressions and BigInt steps per part cost a cold process
 * microseconds a name.
 */
function parseV4(text: string): bigint | undefined {
  let value = 0, part = 0, digits = 0, parts = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 46; // a final "." closes the last part
    if (c === 46) {
      if (digits === 0 || part > 255 || ++parts > 4) return undefined;
      value = value * 256 + part;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 1 && part === 0) return undefined; // a leading zero
      part = part * 10 + (c - 48);
      if (++digits > 3) return undefined;
    } else return undefined;
  }
  return parts === 4 ? BigInt(value) : undefined;
}

function parseV6(text: string): bigint | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  let tail: bigint[] = [];
  let head = text;
  // A trailing dotted quad stands for the last two groups.
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".")) {
    const v4 = parseV4(text.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    tail = [v4 >> 16n, v4 & 0xffffn];
    head = text.slice(0, lastColon + 1);
    if (head.endsWith(":") && !head.endsWith("::")) head = head.slice(0, -1);
  }
  const halves = head.split("::");
  if (halves.length > 2) return undefined;
  const group = (s: string) => (s === "" ? [] : s.split(":"));
  const left = group(halves[0]);
  const right = halves.length === 2 ? group(halves[1]) : [];
  const groups: bigint[] = [];
  for (const g of [...left, ...right]) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
  }
  const explicit = left.length + right.length + tail.length;
  if (halves.length === 1 && explicit !== 8) return undefined;
  if (halves.length === 2 && explicit > 7) return undefined;
  for (const g of left) groups.push(BigInt(parseInt(g, 16)));
  for (let i = explicit; i < 8; i++) groups.push(0n);
  for (const g of right) groups.push(BigInt(parseInt(g, 16)));
  groups.push(...tail);
  return groups.reduce((acc, g) => (acc << 16n) | g, 0n);
}

/** Parses an IPv4 or IPv6 address; undefined when it is not one. */
export function parseIp(text: string): Ip | undefined {
  if (typeof text !== "string" || text.length > 64) return undefined;
  if (text.includes(":")) {
    const value = parseV6(text);
    return value === undefined ? undefined : { family: 6, value };
  }
  const value = parseV4(text);
  return value === undefined ? undefined : { family: 4, value };
}

/** Parses `address/prefix`; undefined when it is not one. */
export function parseCidr(text: string): Cidr | undefined {
  if (typeof text !== "string") return undefined;
  const slash = text.indexOf("/");
  if (slash < 0) return undefined;
  const ip = parseIp(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (!ip || !/^(0|[1-9]\d{0,2})$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > bits(ip.family)) return undefined;
  return { ip, prefix };
}

export function formatIp(ip: Ip): string {
  if (ip.family === 4) {
    const v = Number(ip.value);
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip.value >> BigInt(i * 16)) & 0xffffn));
  // Longest run of two or more zero groups becomes "::" (the first one on a tie).
  let bestStart = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [bestStart, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

export function formatCidr(cidr: Cidr): string {
  return `${formatIp(cidr.ip)}/${cidr.prefix}`;
}

/** The mask of a prefix length as a bigint. */
export function maskOf(family: Family, prefix: number): bigint {
  const width = BigInt(bits(family));
  const all = (1n << width) - 1n;
  return all ^ ((1n << (width - BigInt(prefix))) - 1n);
}

/** The network a CIDR lies in (host bits cleared). */
export function networkOf(cidr: Cidr): Cidr {
  return {
    ip: { family: cidr.ip.family, value: cidr.ip.value & maskOf(cidr.ip.family, cidr.prefix) },
    prefix: cidr.prefix,
  };
}

/** The last address of the network (the broadcast address for IPv4). */
export function lastOf(cidr: Cidr): Ip {
  const host = (1n << BigInt(bits(cidr.ip.family) - cidr.prefix)) - 1n;
  return { family: cidr.ip.family, value: networkOf(cidr).ip.value | host };
}

export function contains(net: Cidr, ip: Ip): boolean {
  return net.ip.family === ip.family &&
    (ip.value & maskOf(ip.family, net.prefix)) === (net.ip.value & maskOf(ip.family, net.prefix));
}

export function sameIp(a: Ip, b: Ip): boolean {
  return a.family === b.family && a.value === b.value;
}

/** Adds `n` to an address (n may be negative); undefined when it leaves the family's range. */
export function offset(ip: Ip, n: bigint): Ip | undefined {
  const value = ip.value + n;
  if (value < 0n || value >= 1n << BigInt(bits(ip.family))) return undefined;
  return { family: ip.family, value };
}

/** `4` or `6` when the text is a CIDR (or bare address), else undefined. */
export function familyOf(text: string): Family | undefined {
  return parseCidr(text)?.ip.family ?? parseIp(text)?.family;
}

/** Orders addresses: every IPv4 address before every IPv6 one, then by value. */
export function compareIp(a: Ip, b: Ip): number {
  if (a.family !== b.family) return a.family - b.family;
  return a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
}

/** An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) as the IPv4 address it carries; others as given. */
export function unmapV4(ip: Ip): Ip {
  if (ip.family === 6 && ip.value >> 32n === 0xffffn) {
    return { family: 4, value: ip.value & 0xffffffffn };
  }
  return ip;
}

/** How many addresses lie from `first` to `last`, both included (0 when last is before first). */
export function countBetween(first: Ip, last: Ip): bigint {
  return last.value >= first.value ? last.value - first.value + 1n : 0n;
}
