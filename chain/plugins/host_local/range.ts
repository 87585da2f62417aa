/**
 * Address ranges and range sets, and the order host-local hands addresses out
 * in: round-robin from the address after the last one reserved, across the
 * ranges of a set in order, wrapping at the end, skipping each range's gateway
 * and the network's own and broadcast addresses.
 */
import {
  type Cidr,
  compareIp,
  countBetween,
  formatCidr,
  formatIp,
  type Ip,
  lastOf,
  offset,
  sameIp,
} from "../../ip.ts";

/** One range of a set, checked and with its defaults filled in. */
export interface AddressRange {
  /** The network, host bits clear. */
  subnet: Cidr;
  /** First and last address handed out, both included. */
  start: Ip;
  end: Ip;
  gateway: Ip;
}

/** The ranges one address is taken from; `label` names the set in messages. */
export interface RangeSet {
  label: string;
  ranges: AddressRange[];
}

export function rangeText(r: AddressRange): string {
  return `${formatIp(r.start)}-${formatIp(r.end)}`;
}

export function setText(set: RangeSet): string {
  return set.ranges.map(rangeText).join(",");
}

/** Whether `ip` lies between the range's start and end. */
export function inRange(r: AddressRange, ip: Ip): boolean {
  return ip.family === r.start.family && compareIp(ip, r.start) >= 0 && compareIp(ip, r.end) <= 0;
}

export function rangeFor(set: RangeSet, ip: Ip): AddressRange | undefined {
  return set.ranges.find((r) => inRange(r, ip));
}

/**
 * Why `ip` may never be handed out from `r` although it lies in it, or
 * undefined when it may: the gateway, the network address, and for IPv4 the
 * broadcast address (IPv6 has none, so its last address is usable).
 */
export function reservedReason(r: AddressRange, ip: Ip): string | undefined {
  if (sameIp(ip, r.gateway)) return "is the gateway";
  if (sameIp(ip, r.subnet.ip)) return "is the network address";
  if (ip.family === 4 && sameIp(ip, lastOf(r.subnet))) return "is the broadcast address";
  return undefined;
}

/** How many addresses of the range can be handed out. */
export function usableCount(r: AddressRange): bigint {
  const never = [r.gateway, r.subnet.ip];
  if (r.start.family === 4) never.push(lastOf(r.subnet));
  // A set of values: a gateway configured on the network address counts once.
  const skipped = new Set(never.filter((ip) => inRange(r, ip)).map((ip) => ip.value));
  return countBetween(r.start, r.end) - BigInt(skipped.size);
}

export function usableCountOfSet(set: RangeSet): bigint {
  return set.ranges.reduce((sum, r) => sum + usableCount(r), 0n);
}

/** The address in CIDR notation with its range's prefix, as results carry it. */
export function addressWithPrefix(r: AddressRange, ip: Ip): string {
  return formatCidr({ ip, prefix: r.subnet.prefix });
}

/**
 * Every address of the set that may be handed out, each once, in allocation
 * order: from the one after `last` (when the set holds `last`, which then
 * comes at the very end) or else from the start of the first range.
 */
export function* candidates(
  set: RangeSet,
  last?: Ip,
): Generator<{ ip: Ip; range: AddressRange }> {
  const { ranges } = set;
  let index = 0;
  let from = ranges[0].start;
  const holder = last ? ranges.findIndex((r) => inRange(r, last)) : -1;
  if (last && holder >= 0) {
    const r = ranges[holder];
    if (sameIp(last, r.end)) {
      index = (holder + 1) % ranges.length;
      from = ranges[index].start;
    } else {
      index = holder;
      from = offset(last, 1n)!;
    }
  }
  // Visit the ranges from `index` round to `index` again: the first one from
  // `from` to its end, the others whole, then the first one's head.
  for (let step = 0; step <= ranges.length; step++) {
    const r = ranges[(index + step) % ranges.length];
    let ip: Ip;
    let stop: Ip;
    if (step === 0) [ip, stop] = [from, r.end];
    else if (step === ranges.length) {
      if (sameIp(from, r.start)) break;
      [ip, stop] = [r.start, offset(from, -1n)!];
    } else [ip, stop] = [r.start, r.end];
    for (;;) {
      if (!reservedReason(r, ip)) yield { ip, range: r };
      if (sameIp(ip, stop)) break;
      ip = offset(ip, 1n)!;
    }
  }
}
