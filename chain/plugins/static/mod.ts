/**
 * The `static` IPAM plugin: addresses, routes and dns from the config, like
 * the reference plugin. Addresses come from `ipam.addresses` plus CNI_ARGS
 * `IP=` (comma-separated, with `GATEWAY=` matched to them by subnet);
 * `args.cni.ips`, and after it `runtimeConfig.ips`, replace all of those. It
 * keeps no state, so DEL and GC have nothing to do.
 */
import { CniError, ErrorCode, invalidConfig, quote } from "../../spec/errors.ts";
import { type ConfigObject, isObject, type Problem } from "../../spec/config.ts";
import type { CniEnv } from "../../spec/env.ts";
import type { Dns, IpConfig, Result, Route } from "../../spec/types.ts";
import { atLeast } from "../../spec/version.ts";
import {
  type Cidr,
  contains,
  formatCidr,
  formatIp,
  type Ip,
  parseCidr,
  parseIp,
  sameIp,
} from "../../ip.ts";
import type { Invocation, Plugin } from "../../plugin.ts";
import {
  cniArg,
  Findings,
  readCidr,
  readDns,
  readIp,
  readList,
  readRoutes,
} from "../../spec/fields.ts";

export const STATIC_TYPE = "static";

interface StaticAddress {
  cidr: Cidr;
  gateway?: Ip;
}

interface StaticConfig {
  addresses: StaticAddress[];
  routes: Route[];
  dns?: Dns;
}

/** Reads `<prefix>ipam`: its addresses, routes and dns, every problem noted. */
function readIpam(f: Findings, ipam: unknown, prefix: string): StaticConfig {
  const at = `${prefix}ipam`;
  const cfg: StaticConfig = { addresses: [], routes: [] };
  if (!isObject(ipam)) {
    f.add(at, ipam === undefined ? "is required" : "must be an object", ipam);
    return cfg;
  }
  readList(f, ipam.addresses, `${at}.addresses`).forEach((item, i) => {
    const path = `${at}.addresses[${i}]`;
    if (!isObject(item)) return f.add(path, "must be an object", item);
    if (item.address === undefined) f.add(`${path}.address`, "is required");
    const cidr = item.address === undefined
      ? undefined
      : readCidr(f, item.address, `${path}.address`);
    const gateway = item.gateway === undefined || item.gateway === ""
      ? undefined
      : readIp(f, item.gateway, `${path}.gateway`);
    if (cidr && gateway && gateway.family !== cidr.ip.family) {
      f.add(`${path}.gateway`, `is not of the same IP version as the address`, item.gateway);
    }
    if (cidr) cfg.addresses.push(gateway ? { cidr, gateway } : { cidr });
  });
  cfg.routes = readRoutes(f, ipam.routes, `${at}.routes`);
  cfg.dns = readDns(f, ipam.dns, `${at}.dns`);
  return cfg;
}

function envError(key: string, problem: string, value: string): CniError {
  return new CniError(ErrorCode.InvalidEnv, `CNI_ARGS ${key}: ${problem} (got ${quote(value)})`);
}

/**
 * The addresses CNI_ARGS adds: `IP=a/n,b/m`, and `GATEWAY=x,y`, each gateway
 * given to those of these addresses whose subnet holds it (not to configured
 * ones, as in the reference plugin).
 */
function envAddresses(env: CniEnv): StaticAddress[] {
  const out: StaticAddress[] = [];
  const ips = cniArg(env.argPairs, "IP");
  for (const item of ips ? ips.split(",") : []) {
    const cidr = parseCidr(item.trim());
    if (!cidr) throw envError("IP", "is not a list of addresses with prefix length", ips!);
    out.push({ cidr });
  }
  const gateways = cniArg(env.argPairs, "GATEWAY");
  for (const item of gateways ? gateways.split(",") : []) {
    const gw = parseIp(item.trim());
    if (!gw) throw envError("GATEWAY", "is not a list of IP addresses", gateways!);
    for (const [i, a] of out.entries()) if (contains(a.cidr, gw)) out[i] = { ...a, gateway: gw };
  }
  return out;
}

/** `args.cni.ips` or `runtimeConfig.ips`: addresses with prefix length, no gateways. */
function listAddresses(value: unknown, path: string): StaticAddress[] {
  if (!Array.isArray(value)) {
    throw invalidConfig(path, "must be a list of addresses with prefix length", value);
  }
  return value.map((item, i) => {
    const cidr = typeof item === "string" ? parseCidr(item) : undefined;
    if (!cidr) throw invalidConfig(`${path}[${i}]`, "is not an address with prefix length", item);
    return { cidr };
  });
}

function parseStatic(inv: Invocation): StaticConfig {
  const { conf } = inv;
  const f = new Findings();
  const cfg = readIpam(f, conf.raw.ipam, "");
  f.throwFirst();
  cfg.addresses.push(...envAddresses(inv.env));
  // Any other type was refused with the config (parseNetConf).
  const cni = isObject(conf.args.cni) ? conf.args.cni : undefined;
  // As in the reference plugin, either list replaces every address given before it.
  const argsIps = cni?.ips;
  if (Array.isArray(argsIps) && argsIps.length) {
    cfg.addresses = listAddresses(argsIps, "args.cni.ips");
  } else if (argsIps !== undefined && argsIps !== null) listAddresses(argsIps, "args.cni.ips");
  const runtimeIps = conf.runtimeConfig.ips;
  if (Array.isArray(runtimeIps) && runtimeIps.length) {
    cfg.addresses = listAddresses(runtimeIps, "runtimeConfig.ips");
  } else if (runtimeIps !== undefined && runtimeIps !== null) {
    listAddresses(runtimeIps, "runtimeConfig.ips");
  }
  // The kernel refuses an address twice (EEXIST) once the interface exists: refuse it here.
  const seen = new Set<string>();
  for (const a of cfg.addresses) {
    const ip = formatIp(a.cidr.ip);
    if (seen.has(ip)) throw invalidConfig("ipam.addresses", "holds an address twice", ip);
    seen.add(ip);
  }
  if (!atLeast(conf.cniVersion, "0.3.0")) {
    for (const family of [4, 6]) {
      if (cfg.addresses.filter((a) => a.cidr.ip.family === family).length > 1) {
        throw invalidConfig(
          "ipam.addresses",
          `has more than one IPv${family} address, which needs cniVersion 0.3.0 or later`,
          conf.cniVersion,
        );
      }
    }
  }
  return cfg;
}

function add(inv: Invocation): Promise<Result> {
  const cfg = parseStatic(inv);
  const result: Result = { cniVersion: inv.conf.cniVersion };
  const ips: IpConfig[] = cfg.addresses.map((a) => {
    const ip: IpConfig = { address: formatCidr(a.cidr) };
    if (a.gateway) ip.gateway = formatIp(a.gateway);
    return ip;
  });
  if (ips.length) result.ips = ips;
  if (cfg.routes.length) result.routes = cfg.routes;
  if (cfg.dns) result.dns = cfg.dns;
  return Promise.resolve(result);
}

/** Every configured address must be in prevResult, with the configured gateway. */
function check(inv: Invocation): Promise<void> {
  const cfg = parseStatic(inv);
  const prev = inv.conf.prevResult;
  if (!prev) throw invalidConfig("prevResult", "is required for CHECK");
  const prevIps = (prev.ips ?? []).map((c) => ({
    ip: parseCidr(c.address)!.ip,
    gateway: c.gateway ? parseIp(c.gateway) : undefined,
  }));
  for (const a of cfg.addresses) {
    const found = prevIps.find((p) => sameIp(p.ip, a.cidr.ip));
    const shown = formatCidr(a.cidr);
    if (!found) {
      throw new CniError(
        ErrorCode.Internal,
        `address ${shown} is not in prevResult for interface ${quote(inv.env.ifname)}`,
      );
    }
    if (a.gateway && !(found.gateway && sameIp(found.gateway, a.gateway))) {
      throw new CniError(
        ErrorCode.Internal,
        `address ${shown} has gateway ${
          found.gateway ? formatIp(found.gateway) : "none"
        } in prevResult, ` +
          `not ${formatIp(a.gateway)}`,
      );
    }
  }
  return Promise.resolve();
}

/** Every problem in a static entry of a conflist, with JSON paths under `path`. */
export function staticProblems(entry: ConfigObject, path: string): Problem[] {
  const f = new Findings();
  readIpam(f, entry.ipam, path === "" ? "" : `${path}.`);
  return f.problems;
}

/** Runs a synchronous handler so that its errors reject the promise rather than throw. */
const later = <T>(fn: (inv: Invocation) => Promise<T>) => (inv: Invocation): Promise<T> =>
  Promise.resolve(inv).then(fn);

export const staticPlugin: Plugin = {
  preflight: (inv) => void parseStatic(inv),
  validate: (entry, path) => staticProblems(entry, path),
  add: later(add),
  check: later(check),
  // Nothing was allocated, so there is nothing to release, whatever the config says.
  del: () => Promise.resolve(),
  gc: () => Promise.resolve(),
  status: later((inv) => Promise.resolve(void parseStatic(inv))),
};
