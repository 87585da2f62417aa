/**
 * Results across spec versions: parse any encoding into the 1.x shape, and
 * encode the 1.x shape for any version (SPEC.md "Version considerations").
 */
import { CniError, ErrorCode, invalidConfig, quote } from "./errors.ts";
import type { Dns, Interface, IpConfig, JsonObject, Result, Route } from "./types.ts";
import { atLeast, isSupported } from "./version.ts";
import { familyOf, parseCidr, parseIp } from "../ip.ts";

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

class Reader {
  constructor(readonly path: string) {}
  fail(field: string, problem: string, value?: unknown): never {
    throw invalidConfig(`${this.path}.${field}`, problem, value);
  }
  string(obj: Record<string, unknown>, key: string, required = false): string | undefined {
    const v = obj[key];
    if (v === undefined || (v === "" && !required)) {
      if (required) this.fail(key, "is required");
      return undefined;
    }
    if (typeof v !== "string") this.fail(key, "must be a string", v);
    return v;
  }
  cidr(obj: Record<string, unknown>, key: string, required = false): string | undefined {
    const v = this.string(obj, key, required);
    if (v !== undefined && !parseCidr(v)) this.fail(key, "is not an address with prefix length", v);
    return v;
  }
  ip(obj: Record<string, unknown>, key: string): string | undefined {
    const v = this.string(obj, key);
    if (v !== undefined && !parseIp(v)) this.fail(key, "is not an IP address", v);
    return v;
  }
  int(obj: Record<string, unknown>, key: string): number | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
      this.fail(key, "must be a non-negative integer", v);
    }
    return v;
  }
  strings(obj: Record<string, unknown>, key: string): string[] | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v) || v.some((s) => typeof s !== "string")) {
      this.fail(key, "must be a list of strings", v);
    }
    return v as string[];
  }
  list(obj: Record<string, unknown>, key: string): Record<string, unknown>[] {
    const v = obj[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) this.fail(key, "must be a list", v);
    v.forEach((item, i) => {
      if (!isObject(item)) this.fail(`${key}[${i}]`, "must be an object", item);
    });
    return v as Record<string, unknown>[];
  }
}

function parseRoute(r: Reader, o: Record<string, unknown>): Route {
  const route: Route = { dst: r.cidr(o, "dst", true)! };
  const gw = r.ip(o, "gw");
  if (gw) route.gw = gw;
  for (const key of ["mtu", "advmss", "priority", "table", "scope"] as const) {
    const v = r.int(o, key);
    if (v !== undefined) route[key] = v;
  }
  return route;
}

function parseDns(r: Reader, o: unknown): Dns | undefined {
  if (o === undefined || o === null) return undefined;
  if (!isObject(o)) r.fail("dns", "must be an object", o);
  const dr: Reader = new Reader(`${r.path}.dns`);
  const dns: Dns = {};
  const nameservers = dr.strings(o, "nameservers");
  if (nameservers?.length) dns.nameservers = nameservers;
  const domain = dr.string(o, "domain");
  if (domain) dns.domain = domain;
  const search = dr.strings(o, "search");
  if (search?.length) dns.search = search;
  const options = dr.strings(o, "options");
  if (options?.length) dns.options = options;
  return Object.keys(dns).length ? dns : undefined;
}

/**
 * Reads a result encoded for `version` (its own `cniVersion` wins when present)
 * into the 1.x shape. `path` names where it came from, for error messages.
 */
export function parseResult(raw: unknown, version: string, path = "prevResult"): Result {
  const r: Reader = new Reader(path);
  if (!isObject(raw)) throw invalidConfig(path, "must be an object", raw);
  const own = raw.cniVersion;
  if (own !== undefined && (typeof own !== "string" || (own !== "" && !isSupported(own)))) {
    throw new CniError(
      ErrorCode.IncompatibleVersion,
      `${path}.cniVersion: unsupported version ${quote(own)}`,
    );
  }
  const encoded = typeof own === "string" && own !== "" ? own : version;
  const result: Result = { cniVersion: encoded };

  if (!atLeast(encoded, "0.3.0")) {
    const ips: IpConfig[] = [];
    const routes: Route[] = [];
    for (const key of ["ip4", "ip6"] as const) {
      const block = raw[key];
      if (block === undefined || block === null) continue;
      if (!isObject(block)) r.fail(key, "must be an object", block);
      const br: Reader = new Reader(`${path}.${key}`);
      const ip: IpConfig = { address: br.cidr(block, "ip", true)! };
      const gateway = br.ip(block, "gateway");
      if (gateway) ip.gateway = gateway;
      ips.push(ip);
      for (const route of br.list(block, "routes")) routes.push(parseRoute(br, route));
    }
    if (ips.length) result.ips = ips;
    if (routes.length) result.routes = routes;
  } else {
    const interfaces: Interface[] = r.list(raw, "interfaces").map((o, i) => {
      const ir: Reader = new Reader(`${path}.interfaces[${i}]`);
      const iface: Interface = { name: ir.string(o, "name", true)! };
      for (const key of ["mac", "sandbox", "socketPath", "pciID"] as const) {
        const v = ir.string(o, key);
        if (v) iface[key] = v;
      }
      const mtu = ir.int(o, "mtu");
      if (mtu) iface.mtu = mtu;
      return iface;
    });
    const ips: IpConfig[] = r.list(raw, "ips").map((o, i) => {
      const ir: Reader = new Reader(`${path}.ips[${i}]`);
      const ip: IpConfig = { address: ir.cidr(o, "address", true)! };
      const gateway = ir.ip(o, "gateway");
      if (gateway) ip.gateway = gateway;
      const index = ir.int(o, "interface");
      if (index !== undefined) {
        if (index >= interfaces.length) {
          ir.fail("interface", "names no interface of the result", index);
        }
        ip.interface = index;
      }
      return ip;
    });
    const routes = r.list(raw, "routes").map((o, i) =>
      parseRoute(new Reader(`${path}.routes[${i}]`), o)
    );
    if (interfaces.length) result.interfaces = interfaces;
    if (ips.length) result.ips = ips;
    if (routes.length) result.routes = routes;
  }
  const dns = parseDns(r, raw.dns);
  if (dns) result.dns = dns;
  return result;
}

/**
 * Encodes a 1.x-shaped result for `version` as the JSON a runtime expects.
 * Fails (code 1) when the result cannot be expressed there: 0.1.0/0.2.0 need an IP.
 */
export function encodeResult(result: Result, version: string): JsonObject {
  const dns = result.dns && Object.keys(result.dns).length
    ? { ...result.dns } as JsonObject
    : undefined;
  if (!atLeast(version, "0.3.0")) {
    const out: JsonObject = { cniVersion: version };
    for (const family of [4, 6] as const) {
      const ip = result.ips?.find((i) => familyOf(i.address) === family);
      if (!ip) continue;
      const block: JsonObject = { ip: ip.address };
      if (ip.gateway) block.gateway = ip.gateway;
      const routes = (result.routes ?? []).filter((r) => familyOf(r.dst) === family);
      if (routes.length) block.routes = routes.map((r) => ({ ...r }) as JsonObject);
      out[`ip${family}`] = block;
    }
    if (!out.ip4 && !out.ip6) {
      throw new CniError(
        ErrorCode.IncompatibleVersion,
        `cannot express the result in version ${quote(version)}: it has no IP address`,
      );
    }
    if (dns) out.dns = dns;
    return out;
  }
  const legacy = !atLeast(version, "1.0.0");
  const out: JsonObject = { cniVersion: version };
  if (result.interfaces?.length) {
    out.interfaces = result.interfaces.map((i) => {
      const o: JsonObject = { ...i };
      if (legacy) {
        delete o.mtu;
        delete o.socketPath;
        delete o.pciID;
      }
      return o;
    });
  }
  if (result.ips?.length) {
    out.ips = result.ips.map((ip) => {
      const o: JsonObject = {};
      if (legacy) o.version = String(familyOf(ip.address));
      if (ip.interface !== undefined) o.interface = ip.interface;
      o.address = ip.address;
      if (ip.gateway) o.gateway = ip.gateway;
      return o;
    });
  }
  if (result.routes?.length) out.routes = result.routes.map((r) => ({ ...r }) as JsonObject);
  if (dns) out.dns = dns;
  return out;
}

/** A result with nothing in it, for a chain's first step to build on. */
export function emptyResult(version: string): Result {
  return { cniVersion: version };
}
