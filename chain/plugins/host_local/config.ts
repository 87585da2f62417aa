/**
 * host-local's config, read the way the reference plugin reads it (from the
 * `ipam` object of the whole network config) but checked harder: every
 * address parsed, every range inside its subnet, no overlaps, paths that
 * cannot leave their directory. `ipamProblems` lists every problem for
 * `cnichain validate`; `parseHostLocal` fails on the first, before anything
 * is written.
 */
import { CniError, ErrorCode, invalidConfig, quote } from "../../spec/errors.ts";
import {
  type ConfigObject,
  isObject,
  type NetConf,
  pathProblem,
  type Problem,
} from "../../spec/config.ts";
import type { CniEnv } from "../../spec/env.ts";
import type { Route } from "../../spec/types.ts";
import { atLeast } from "../../spec/version.ts";
import {
  bits,
  compareIp,
  formatCidr,
  formatIp,
  type Ip,
  lastOf,
  maskOf,
  offset,
  parseCidr,
  parseIp,
  unmapV4,
} from "../../ip.ts";
import { cniArg, Findings, readCidr, readIp, readList, readRoutes } from "../../spec/fields.ts";
import {
  type AddressRange,
  rangeFor,
  type RangeSet,
  rangeText,
  reservedReason,
  setText,
  usableCount,
} from "./range.ts";

export const DEFAULT_DATA_DIR = "/var/lib/cni/networks";

export interface HostLocalConfig {
  /** The store directory: `<dataDir>/<network name>`. */
  dir: string;
  /** Range set N keeps its round-robin cursor in `last_reserved_ip.N`. */
  sets: RangeSet[];
  routes: Route[];
  resolvConf?: string;
}

/** Reads one range object; fields sit at `<path>.subnet` and so on. */
function readRange(f: Findings, o: ConfigObject, path: string): AddressRange | undefined {
  if (o.subnet === undefined || o.subnet === "") {
    f.add(`${path}.subnet`, "is required");
    return undefined;
  }
  const given = readCidr(f, o.subnet, `${path}.subnet`);
  if (!given) return undefined;
  const { family } = given.ip;
  const width = bits(family);
  if (given.prefix > width - 2) {
    f.add(
      `${path}.subnet`,
      `is too small to allocate from (the prefix must be /${width - 2} or shorter)`,
      o.subnet,
    );
    return undefined;
  }
  const network = { family, value: given.ip.value & maskOf(family, given.prefix) };
  if (network.value !== given.ip.value) {
    const expected = formatCidr({ ip: network, prefix: given.prefix });
    f.add(`${path}.subnet`, `has host bits set (the network is ${expected})`, o.subnet);
    return undefined;
  }
  const subnet = { ip: network, prefix: given.prefix };
  const shown = formatCidr(subnet);
  const broadcast = lastOf(subnet);
  let ok = true;
  // An address field of the range: absent or "" takes the default.
  const field = (key: string, fallback: Ip): Ip => {
    const value = o[key];
    if (value === undefined || value === "") return fallback;
    const ip = readIp(f, value, `${path}.${key}`);
    if (!ip) {
      ok = false;
    } else if (ip.family !== family) {
      f.add(
        `${path}.${key}`,
        `is an IPv${ip.family} address but the subnet ${shown} is IPv${family}`,
        value,
      );
      ok = false;
    } else if (key !== "gateway" && (ip.value & maskOf(family, subnet.prefix)) !== network.value) {
      // The reference plugin accepts a gateway outside the subnet, so we do too.
      f.add(`${path}.${key}`, `is not in the subnet ${shown}`, value);
      ok = false;
    }
    return ip ?? fallback;
  };
  const first = offset(network, 1n)!;
  const gateway = field("gateway", first);
  const start = field("rangeStart", first);
  const end = field("rangeEnd", family === 4 ? offset(broadcast, -1n)! : broadcast);
  if (ok && compareIp(start, end) > 0) {
    f.add(`${path}.rangeEnd`, `is before rangeStart ${formatIp(start)}`, o.rangeEnd);
    ok = false;
  }
  if (!ok) return undefined;
  const r = { subnet, start, end, gateway };
  if (usableCount(r) === 0n) {
    f.add(
      path,
      "has no address to hand out besides its gateway, network and broadcast addresses",
      rangeText(r),
    );
    return undefined;
  }
  return r;
}

function overlap(a: AddressRange, b: AddressRange): boolean {
  return a.start.family === b.start.family && compareIp(a.start, b.end) <= 0 &&
    compareIp(b.start, a.end) <= 0;
}

/**
 * Range sets one config may hold (one address is taken from each) and ranges one set may hold
 * (README "Limits and errors"): every range is checked against every other, so a hostile list
 * of thousands would take minutes.
 */
export const MAX_RANGE_SETS = 16;
export const MAX_RANGES_PER_SET = 256;

/** Reads a list of range objects (one range set). */
function readRangeSet(f: Findings, value: unknown, path: string): RangeSet | undefined {
  if (!Array.isArray(value) || value.length === 0) {
    f.add(path, "must be a non-empty list of ranges", value);
    return undefined;
  }
  if (value.length > MAX_RANGES_PER_SET) {
    f.add(path, `may hold at most ${MAX_RANGES_PER_SET} ranges (got ${value.length})`);
    return undefined;
  }
  const ranges: AddressRange[] = [];
  const paths: string[] = [];
  let ok = true;
  value.forEach((item, j) => {
    const at = `${path}[${j}]`;
    if (!isObject(item)) {
      f.add(at, "must be an object", item);
      ok = false;
      return;
    }
    const r = readRange(f, item, at);
    if (!r) {
      ok = false;
      return;
    }
    const mixed = ranges.find((other) => other.start.family !== r.start.family);
    const hit = ranges.findIndex((other) => overlap(other, r));
    if (mixed) {
      f.add(
        `${at}.subnet`,
        `is IPv${r.start.family} but ${paths[0]} is IPv${mixed.start.family}`,
        item.subnet,
      );
      ok = false;
    } else if (hit >= 0) {
      f.add(at, `overlaps ${paths[hit]} (${rangeText(ranges[hit])})`, rangeText(r));
      ok = false;
    }
    ranges.push(r);
    paths.push(at);
  });
  return ok ? { label: path, ranges } : undefined;
}

/** Reads a list of range sets (`ranges`, or the `ipRanges` capability). */
function readRangeSets(f: Findings, value: unknown, path: string): RangeSet[] {
  const sets: RangeSet[] = [];
  if (Array.isArray(value) && value.length > MAX_RANGE_SETS) {
    f.add(path, `may hold at most ${MAX_RANGE_SETS} range sets (got ${value.length})`);
    return sets;
  }
  readList(f, value, path).forEach((item, i) => {
    const set = readRangeSet(f, item, `${path}[${i}]`);
    if (set) sets.push(set);
  });
  return sets;
}

/** Joins a config path without `..` or empty segments (paths are checked first). */
function cleanPath(path: string): string {
  return "/" + path.split("/").filter((s) => s !== "" && s !== ".").join("/");
}

interface IpamFields {
  sets: RangeSet[];
  routes: Route[];
  dataDir: string;
  resolvConf?: string;
}

/**
 * Reads the `ipam` object at `<prefix>ipam`, after the range sets given at
 * runtime (`runtimeSets`, which come first, as in the reference plugin).
 */
function readIpam(
  f: Findings,
  ipam: unknown,
  prefix: string,
  version: string,
  runtimeSets: RangeSet[],
  rangesMayComeLater: boolean,
): IpamFields | undefined {
  const at = `${prefix}ipam`;
  if (!isObject(ipam)) {
    f.add(at, ipam === undefined ? "is required" : "must be an object", ipam);
    return undefined;
  }
  const sets = [...runtimeSets];
  if (ipam.subnet !== undefined && ipam.subnet !== "") {
    const legacy = readRange(f, ipam, at);
    if (legacy) sets.push({ label: `${at}.subnet`, ranges: [legacy] });
  } else {
    for (const key of ["rangeStart", "rangeEnd", "gateway"]) {
      if (ipam[key] !== undefined && ipam[key] !== "") {
        f.add(`${at}.${key}`, `needs ${at}.subnet`, ipam[key]);
      }
    }
  }
  const before = f.problems.length;
  sets.push(...readRangeSets(f, ipam.ranges, `${at}.ranges`));
  if (sets.length === 0 && f.problems.length === before && !rangesMayComeLater) {
    f.add(
      `${at}.ranges`,
      `no address ranges given (use ${at}.ranges, ${at}.subnet or the ipRanges capability)`,
    );
  }
  // One address comes from each set, so two sets of a family must not share an address.
  for (let j = 1; j < sets.length; j++) {
    for (let i = 0; i < j; i++) {
      const pair = sets[j].ranges.flatMap((b) =>
        sets[i].ranges.filter((a) => overlap(a, b)).map((a) => [a, b])
      );
      if (pair.length) {
        f.add(
          sets[j].label,
          `overlaps range set ${sets[i].label} (${rangeText(pair[0][0])})`,
          setText(sets[j]),
        );
        break;
      }
    }
  }
  if (!atLeast(version, "0.3.0")) {
    for (const family of [4, 6]) {
      const of = sets.filter((s) => s.ranges[0].start.family === family);
      if (of.length > 1) {
        f.add(
          of[1].label,
          `is a second IPv${family} range set, which needs cniVersion 0.3.0 or later`,
          version,
        );
      }
    }
  }
  const routes = readRoutes(f, ipam.routes, `${at}.routes`);
  let dataDir = DEFAULT_DATA_DIR;
  if (ipam.dataDir !== undefined && ipam.dataDir !== "") {
    const problem = pathProblem(ipam.dataDir);
    if (problem) f.add(`${at}.dataDir`, problem, ipam.dataDir);
    else dataDir = cleanPath(ipam.dataDir as string);
  }
  let resolvConf: string | undefined;
  if (ipam.resolvConf !== undefined && ipam.resolvConf !== "") {
    const problem = pathProblem(ipam.resolvConf);
    if (problem) f.add(`${at}.resolvConf`, problem, ipam.resolvConf);
    else resolvConf = ipam.resolvConf as string;
  }
  return { sets, routes, dataDir, resolvConf };
}

/** Every problem in a host-local entry of a conflist, with JSON paths under `path`. */
export function ipamProblems(entry: ConfigObject, path: string, version: string): Problem[] {
  const f = new Findings();
  const prefix = path === "" ? "" : `${path}.`;
  const caps = entry.capabilities;
  const runtimeRanges = isObject(caps) && caps.ipRanges === true;
  readIpam(f, entry.ipam, prefix, version, [], runtimeRanges);
  return f.problems;
}

/** host-local's config from its stdin; the first problem is a code 7 error. */
export function parseHostLocal(conf: NetConf): HostLocalConfig {
  const f = new Findings();
  if (conf.name === "") f.add("name", "is required: it names the address store's directory");
  const runtimeSets = readRangeSets(f, conf.runtimeConfig.ipRanges, "runtimeConfig.ipRanges");
  const fields = readIpam(f, conf.raw.ipam, "", conf.cniVersion, runtimeSets, false);
  f.throwFirst();
  const { sets, routes, dataDir, resolvConf } = fields!;
  return { dir: `${dataDir === "/" ? "" : dataDir}/${conf.name}`, sets, routes, resolvConf };
}

/** An address the caller asked for, and where it came from. */
export interface Request {
  ip: Ip;
  /** `CNI_ARGS IP`, `args.cni.ips[0]` or `runtimeConfig.ips[0]`. */
  field: string;
  value: string;
}

function requestError(req: { field: string; value: unknown }, problem: string): CniError {
  if (req.field.startsWith("CNI_ARGS")) {
    return new CniError(ErrorCode.InvalidEnv, `${req.field}: ${problem} (got ${quote(req.value)})`);
  }
  return invalidConfig(req.field, problem, req.value);
}

/** An address, with or without a prefix length (which host-local ignores). */
function requestedIp(value: unknown): Ip | undefined {
  if (typeof value !== "string") return undefined;
  const ip = parseIp(value) ?? parseCidr(value)?.ip;
  return ip && unmapV4(ip);
}

/**
 * The addresses asked for, in the reference plugin's order: CNI_ARGS `IP`,
 * then `args.cni.ips`, then `runtimeConfig.ips`; an address asked for twice
 * counts once.
 */
export function requestedIps(conf: NetConf, env: CniEnv): Request[] {
  const given: { field: string; value: unknown }[] = [];
  const envIp = cniArg(env.argPairs, "IP");
  if (envIp !== undefined && envIp !== "") given.push({ field: "CNI_ARGS IP", value: envIp });
  // Any other type was refused with the config (parseNetConf).
  const cni = isObject(conf.args.cni) ? conf.args.cni : undefined;
  const lists: [string, unknown][] = [["args.cni.ips", cni?.ips], [
    "runtimeConfig.ips",
    conf.runtimeConfig.ips,
  ]];
  for (const [path, list] of lists) {
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) throw invalidConfig(path, "must be a list of IP addresses", list);
    list.forEach((value, i) => given.push({ field: `${path}[${i}]`, value }));
  }
  const out: Request[] = [];
  for (const g of given) {
    const ip = requestedIp(g.value);
    if (!ip) throw requestError(g, "is not an IP address");
    if (!out.some((r) => r.ip.family === ip.family && r.ip.value === ip.value)) {
      out.push({ ip, field: g.field, value: g.value as string });
    }
  }
  return out;
}

/**
 * Which requested address each range set hands out (at most one per set).
 * Fails, before anything is written, on an address no set can give.
 */
export function assignRequests(sets: RangeSet[], requests: Request[]): (Request | undefined)[] {
  const bySet: (Request | undefined)[] = sets.map(() => undefined);
  for (const req of requests) {
    const i = sets.findIndex((s) => rangeFor(s, req.ip));
    if (i < 0) {
      const all = sets.map((s) => `${s.label} (${setText(s)})`).join(", ");
      throw requestError(req, `is not in any range set: ${all}`);
    }
    const range = rangeFor(sets[i], req.ip)!;
    const reason = reservedReason(range, req.ip);
    if (reason) {
      throw requestError(req, `${reason} of range ${rangeText(range)}, which is never handed out`);
    }
    const taken = bySet[i];
    if (taken) {
      throw requestError(
        req,
        `is in range set ${sets[i].label}, which already gives the requested ${
          formatIp(taken.ip)
        } (one address per range set)`,
      );
    }
    bySet[i] = req;
  }
  return bySet;
}
