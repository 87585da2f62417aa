/**
 * Reading the fields IPAM configs share (routes, dns, requested addresses)
 * while collecting every problem with its JSON path, so that `validate` can
 * list them all and a verb can fail on the first before it acts. The static
 * plugin uses these too.
 */
import { invalidConfig } from "./errors.ts";
import { type ConfigObject, isObject, type Problem } from "./config.ts";
import type { Dns, Route } from "./types.ts";
import { type Cidr, formatCidr, formatIp, type Ip, parseCidr, parseIp, unmapV4 } from "../ip.ts";

/**
 * Problems one config may report: a hostile list of a million bad entries would otherwise
 * hold a million problems in memory (hundreds of MiB) to report the first.
 */
export const MAX_PROBLEMS = 100;

/** Problems found so far (the first {@linkcode MAX_PROBLEMS}), each with the JSON path of its field. */
export class Findings {
  readonly problems: Problem[] = [];

  add(path: string, message: string, value?: unknown): void {
    if (this.problems.length >= MAX_PROBLEMS) return;
    this.problems.push(value === undefined ? { path, message } : { path, message, value });
  }

  /** Throws the first problem as code 7. */
  throwFirst(): void {
    const first = this.problems[0];
    if (first) throw invalidConfig(first.path, first.message, first.value);
  }
}

/** A string field that must hold an IP address; undefined (with a problem) when it does not. */
export function readIp(f: Findings, value: unknown, path: string): Ip | undefined {
  const ip = typeof value === "string" ? parseIp(value) : undefined;
  if (!ip) f.add(path, "is not an IP address", value);
  return ip && unmapV4(ip);
}

/** A string field that must hold `address/prefix`. */
export function readCidr(f: Findings, value: unknown, path: string): Cidr | undefined {
  const cidr = typeof value === "string" ? parseCidr(value) : undefined;
  if (!cidr) f.add(path, "is not an address with prefix length (such as 10.1.0.0/24)", value);
  return cidr;
}

/** An optional list field: its items, or [] (with a problem when it is not a list). */
export function readList(f: Findings, value: unknown, path: string): unknown[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) {
    f.add(path, "must be a list", value);
    return [];
  }
  return value;
}

/** An optional object field: the object, or undefined (with a problem when it is not one). */
export function readObject(f: Findings, value: unknown, path: string): ConfigObject | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isObject(value)) {
    f.add(path, "must be an object", value);
    return undefined;
  }
  return value;
}

const ROUTE_NUMBERS = ["mtu", "advmss", "priority", "table", "scope"] as const;

/** `routes`: `[{dst, gw?, ...}]`, addresses written the canonical way (as Go prints them). */
export function readRoutes(f: Findings, value: unknown, path: string): Route[] {
  const routes: Route[] = [];
  const keys = new Set<string>();
  readList(f, value, path).forEach((item, i) => {
    const at = `${path}[${i}]`;
    if (!isObject(item)) return f.add(at, "must be an object", item);
    const o = item;
    const dst = o.dst === undefined ? undefined : readCidr(f, o.dst, `${at}.dst`);
    if (o.dst === undefined) f.add(`${at}.dst`, "is required");
    const gw = o.gw === undefined || o.gw === "" ? undefined : readIp(f, o.gw, `${at}.gw`);
    if (dst && gw && unmapV4(dst.ip).family !== gw.family) {
      f.add(`${at}.gw`, "is not of the same IP version as dst", o.gw);
    }
    if (!dst) return;
    const route: Route = { dst: formatCidr(dst) };
    if (gw) route.gw = formatIp(gw);
    for (const key of ROUTE_NUMBERS) {
      const n = o[key];
      if (n === undefined || n === null) continue;
      if (typeof n !== "number" || !Number.isInteger(n) || n < 0) {
        f.add(`${at}.${key}`, "must be a non-negative integer", n);
      } else route[key] = n;
    }
    // The kernel holds one route per destination, table and priority (a second is EEXIST).
    const key = `${route.dst} ${route.table} ${route.priority}`;
    if (keys.has(key)) return f.add(at, "repeats an earlier route to the same dst", o.dst);
    keys.add(key);
    routes.push(route);
  });
  return routes;
}

/** A `dns` object (`nameservers`, `domain`, `search`, `options`); undefined when empty. */
export function readDns(f: Findings, value: unknown, path: string): Dns | undefined {
  const o = readObject(f, value, path);
  if (!o) return undefined;
  const dns: Dns = {};
  for (const key of ["nameservers", "search", "options"] as const) {
    const list = readList(f, o[key], `${path}.${key}`);
    if (list.some((s) => typeof s !== "string")) {
      f.add(`${path}.${key}`, "must be a list of strings", o[key]);
    } else if (list.length) dns[key] = list as string[];
  }
  if (o.domain !== undefined && typeof o.domain !== "string") {
    f.add(`${path}.domain`, "must be a string", o.domain);
  } else if (o.domain) dns.domain = o.domain;
  return Object.keys(dns).length ? dns : undefined;
}

/** The value of a CNI_ARGS key (the last one wins, as the Go library reads them). */
export function cniArg(pairs: [string, string][], key: string): string | undefined {
  let found: string | undefined;
  for (const [k, v] of pairs) if (k === key) found = v;
  return found;
}
