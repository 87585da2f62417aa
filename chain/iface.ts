/**
 * What the interface plugins (bridge, ptp) share: their common config fields,
 * IPAM delegation, and putting a result's addresses and routes on a
 * container interface (as the reference plugins' ipam.ConfigureIface does).
 */
import { CniError, ErrorCode, quote, toCniError } from "./spec/errors.ts";
import { type ConfigObject, isObject, pathProblem } from "./spec/config.ts";
import type { Dns, IpConfig, Result, Route } from "./spec/types.ts";
import { parseResult } from "./spec/result.ts";
import { type Cidr, type Family, formatIp, networkOf, offset, parseCidr, parseIp } from "./ip.ts";
import type { GcInvocation, Invocation } from "./plugin.ts";
import { combineErrors } from "./runner.ts";
import { delMasquerade, gcMasquerade } from "./masquerade.ts";
import { OsError } from "../ffi/libc.ts";
import { IFA_F_NODAD, type Link, type Netns, NetnsMissing, sysctlRefused } from "./kernel.ts";
import { Findings, readCidr, readList } from "./spec/fields.ts";
import { DEFAULT_STATE_DIR } from "./plugins/cnichain/mod.ts";
import { randomHex32 } from "./hash.ts";

/** Code for "the interface or attachment already exists" (plugin-specific range, see README). */
export const ALREADY_EXISTS = ErrorCode.AlreadyExists;

/** The fields bridge and ptp share, checked. */
export interface InterfaceConfig {
  mtu?: number;
  ipMasq: boolean;
  ipMasqExclude: string[];
  /** The IPAM plugin type, or undefined for a layer-2-only attachment. */
  ipamType?: string;
  mac?: string;
  stateDir: string;
}

const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

/** Reads the shared fields of `raw` (a plugin entry), noting problems under `prefix`. */
export function readInterfaceConfig(
  f: Findings,
  raw: ConfigObject,
  prefix: string,
): InterfaceConfig {
  const cfg: InterfaceConfig = { ipMasq: false, ipMasqExclude: [], stateDir: DEFAULT_STATE_DIR };
  if (raw.mtu !== undefined && raw.mtu !== 0) {
    if (
      typeof raw.mtu !== "number" || !Number.isInteger(raw.mtu) || raw.mtu < 68 || raw.mtu > 65535
    ) {
      f.add(`${prefix}mtu`, "must be an integer from 68 to 65535", raw.mtu);
    } else cfg.mtu = raw.mtu;
  }
  cfg.ipMasq = readBool(f, raw, "ipMasq", prefix);
  cfg.ipMasqExclude = readList(f, raw.ipMasqExclude, `${prefix}ipMasqExclude`).flatMap((v, i) => {
    const cidr = readCidr(f, v, `${prefix}ipMasqExclude[${i}]`);
    return cidr ? [v as string] : [];
  });
  if (raw.ipam !== undefined) {
    if (!isObject(raw.ipam)) f.add(`${prefix}ipam`, "must be an object", raw.ipam);
    else if (raw.ipam.type !== undefined) {
      if (
        typeof raw.ipam.type !== "string" || !/^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$/.test(raw.ipam.type)
      ) {
        f.add(`${prefix}ipam.type`, "must be a plugin name", raw.ipam.type);
      } else cfg.ipamType = raw.ipam.type;
    }
  }
  if (raw.stateDir !== undefined) {
    const problem = pathProblem(raw.stateDir);
    if (problem) f.add(`${prefix}stateDir`, problem, raw.stateDir);
    else cfg.stateDir = raw.stateDir as string;
  }
  return cfg;
}

export function readBool(f: Findings, raw: ConfigObject, key: string, prefix: string): boolean {
  const v = raw[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== "boolean") {
    f.add(`${prefix}${key}`, "must be true or false", v);
    return false;
  }
  return v;
}

/** The container MAC a runtime asked for: `args.cni.mac`, else `runtimeConfig.mac`. */
export function requestedMac(inv: Invocation): string | undefined {
  const fromArgs = isObject(inv.conf.args.cni) ? inv.conf.args.cni.mac : undefined;
  const mac = fromArgs ?? inv.conf.runtimeConfig.mac;
  if (mac === undefined) return undefined;
  if (typeof mac !== "string" || !MAC.test(mac)) {
    throw new CniError(
      ErrorCode.InvalidConfig,
      `invalid network config: mac: not a MAC address (got ${quote(mac)})`,
    );
  }
  return mac.toLowerCase();
}

/** The state directory for shared state: the step's own `stateDir`, else its chain's, else the default. */
export function stateDirOf(inv: Invocation, cfg: InterfaceConfig): string {
  return inv.conf.raw.stateDir !== undefined ? cfg.stateDir : inv.context.stateDir ?? cfg.stateDir;
}

/**
 * A host-side veth name: `veth` and 8 random hex digits, as the reference plugins name them.
 * Math.random is enough for a name whose clash ADD retries (crypto.getRandomValues costs
 * 0.15 ms on its first use in a process).
 */
export function randomVethName(): string {
  return `veth${randomHex32()}`;
}

/** The conventional gateway of a subnet: its first address after the network address. */
export function defaultGateway(cidr: Cidr): string {
  return formatIp(offset(networkOf(cidr).ip, 1n)!);
}

/**
 * Turns IPv6 off on the host end of a veth before it comes up, where it needs none of its own (a
 * bridge port; a routed veth of a pod without IPv6). With IPv6 on, each such end got a link-local
 * address and three routes in the host's IPv6 table, which the kernel walks on every link change,
 * and sent DAD and MLD packets (a bridge floods them to every pod). With 500 pods on a bridge
 * that was most of the kernel's work an ADD (5 ms of it in kernel workers here), growing with
 * every pod.
 */
export function withoutIpv6(host: Netns, name: string): void {
  try {
    host.writeSysctl(`net/ipv6/conf/${name}/disable_ipv6`, "1");
  } catch (err) {
    // A kernel without IPv6, or a read-only /proc/sys: the link works all the same.
    if (!(err instanceof OsError && err.code === "ENOENT") && !sysctlRefused(err)) throw err;
  }
}

/** Throws what the IPAM plugin's ADD would refuse in this invocation's inputs (built-ins only). */
export function ipamPreflight(inv: Invocation, type: string): void {
  inv.context.registry.get(type)?.preflight?.(inv);
}

/** Runs the IPAM plugin for ADD; its result must carry at least one address. */
export async function ipamAdd(inv: Invocation, type: string): Promise<Result> {
  const result = await inv.delegate(type, "ADD", inv.conf.raw);
  if (!result?.ips?.length) {
    throw new CniError(ErrorCode.Internal, `IPAM plugin ${quote(type)} returned no IP address`);
  }
  return result;
}

/** Opens the container's namespace; for DEL a missing one means there is nothing to undo there. */
export function containerNetns(inv: Invocation): Netns | undefined {
  if (inv.env.netns === "") return undefined;
  try {
    return inv.system.kernel.netns(inv.env.netns);
  } catch (err) {
    if (err instanceof NetnsMissing) {
      if (inv.verb === "DEL") return undefined;
      throw new CniError(ErrorCode.InvalidEnv, `CNI_NETNS: ${err.message}`);
    }
    throw err;
  }
}

/** The netns for ADD and CHECK, where it must exist. */
export function requireNetns(inv: Invocation): Netns {
  const ns = containerNetns(inv);
  if (!ns) throw new CniError(ErrorCode.InvalidEnv, "CNI_NETNS: required");
  return ns;
}

/** Fails (code 100) when the container already has an interface of that name; changes nothing. */
export function ensureFreeName(ns: Netns, ifname: string): void {
  if (ns.link(ifname)) {
    throw new CniError(
      ALREADY_EXISTS,
      `container interface ${quote(ifname)} already exists in ${quote(ns.path)}`,
    );
  }
}

const familyOfAddress = (a: string): Family => (a.includes(":") ? 6 : 4);

/**
 * Puts the result's addresses on `link` (IPv6 without DAD, so they work at
 * once), brings it up, and adds the result's routes through it; a route
 * without `gw` uses the gateway of its family from the addresses.
 */
export function configureInterface(ns: Netns, link: Link, ips: IpConfig[], routes: Route[]): void {
  const gateways = new Map<Family, string>();
  for (const ip of ips) {
    const cidr = parseCidr(ip.address)!;
    const family = cidr.ip.family;
    ns.addAddress(
      link.index,
      ip.address.slice(0, ip.address.indexOf("/")),
      cidr.prefix,
      family === 6 ? IFA_F_NODAD : 0,
    );
    if (ip.gateway && !gateways.has(family)) gateways.set(family, ip.gateway);
  }
  ns.setLink(link.index, { up: true });
  for (const route of routes) {
    const dst = parseCidr(route.dst)!;
    const gw = route.gw ?? gateways.get(dst.ip.family);
    ns.addRoute({
      family: dst.ip.family,
      dst: formatIp(networkOf(dst).ip),
      dstPrefix: dst.prefix,
      gw,
      oif: link.index,
      ...(route.priority !== undefined ? { priority: route.priority } : {}),
      ...(route.mtu ? { mtu: route.mtu } : {}),
      ...(route.advmss ? { advmss: route.advmss } : {}),
      ...(route.table ? { table: route.table } : {}),
      ...(route.scope !== undefined ? { scope: route.scope } : {}),
    });
  }
}

/** Checks the container interface against the result: addresses present, routes present. */
export function checkInterface(
  ns: Netns,
  ifname: string,
  ips: IpConfig[],
  routes: Route[],
  mac?: string,
): void {
  const link = ns.link(ifname);
  if (!link) {
    throw new CniError(
      ErrorCode.Internal,
      `CHECK: container interface ${quote(ifname)} is missing in ${quote(ns.path)}`,
    );
  }
  if (mac && link.mac !== mac.toLowerCase()) {
    throw new CniError(
      ErrorCode.Internal,
      `CHECK: interface ${quote(ifname)} has MAC ${quote(link.mac)}, the result says ${quote(mac)}`,
    );
  }
  const present = ns.addresses(link.index).map((a) => `${a.address}/${a.prefix}`);
  for (const ip of ips) {
    const cidr = parseCidr(ip.address)!;
    const want = `${formatIp(cidr.ip)}/${cidr.prefix}`;
    if (!present.includes(want)) {
      throw new CniError(
        ErrorCode.Internal,
        `CHECK: address ${want} is missing on ${quote(ifname)} (has ${
          present.join(", ") || "none"
        })`,
      );
    }
  }
  for (const route of routes) {
    const dst = parseCidr(route.dst)!;
    const net = `${formatIp(networkOf(dst).ip)}/${dst.prefix}`;
    const found = ns.routes(dst.ip.family).some((r) =>
      `${r.dst}/${r.dstPrefix}` === net && r.oif === link.index &&
      (!route.gw || r.gw === formatIp(parseIp(route.gw)!))
    );
    if (!found) {
      throw new CniError(
        ErrorCode.Internal,
        `CHECK: route to ${net}${route.gw ? ` via ${route.gw}` : ""} is missing on ${
          quote(ifname)
        }`,
      );
    }
  }
}

export { familyOfAddress };

/** The attachment as masquerade and portmap name it. */
export function attachmentOf(
  inv: Invocation,
): { network: string; containerId: string; ifname: string } {
  return { network: inv.conf.name, containerId: inv.env.containerId, ifname: inv.env.ifname };
}

type StepError = { step: string; type: string; error: CniError };

async function attempt(
  errors: StepError[],
  step: string,
  type: string,
  fn: () => unknown,
): Promise<void> {
  try {
    await fn();
  } catch (err) {
    errors.push({ step, type, error: toCniError(err) });
  }
}

/**
 * DEL of a veth attachment (bridge, ptp), every part attempted: IPAM first, so
 * the address comes back even when the netns is long gone; the masquerade,
 * unlike the reference even without the netns (plugins#810); then the
 * container end of the veth (the host end, its addresses and routes go with
 * it).
 *
 * The masquerade goes before the veth for speed: a deletion in nftables leaves
 * the kernel work that waits out an RCU grace period, and the process that
 * closes its nftables socket (at exit at the latest) waits for that work
 * (~10-30 ms). Deleting the veth takes long enough for the wait to be over.
 */
export async function delVethAttachment(
  inv: Invocation,
  cfg: InterfaceConfig,
  type: string,
): Promise<void> {
  const errors: StepError[] = [];
  if (cfg.ipamType) {
    await attempt(errors, "ipam", type, () => inv.delegate(cfg.ipamType!, "DEL", inv.conf.raw));
  }
  if (cfg.ipMasq) {
    await attempt(
      errors,
      "masquerade",
      type,
      () => delMasquerade(inv.system, stateDirOf(inv, cfg), attachmentOf(inv)),
    );
  }
  await attempt(errors, "link", type, () => {
    const ns = containerNetns(inv);
    const link = ns?.link(inv.env.ifname);
    if (!ns || !link) return;
    try {
      ns.deleteLink(link.index);
    } catch (err) {
      if (!(err instanceof OsError && err.code === "ENODEV")) throw err;
    }
  });
  if (errors.length) throw combineErrors(errors, "DEL");
}

/** GC of veth attachments: IPAM's GC, and the masquerade of attachments not in the valid list. */
export async function gcVethAttachments(
  inv: GcInvocation,
  cfg: InterfaceConfig,
  type: string,
): Promise<void> {
  const errors: StepError[] = [];
  if (cfg.ipamType) {
    await attempt(
      errors,
      "ipam",
      cfg.ipamType,
      () => inv.delegate(cfg.ipamType!, "GC", inv.conf.raw),
    );
  }
  if (cfg.ipMasq) {
    await attempt(
      errors,
      "masquerade",
      type,
      () => gcMasquerade(inv.system, stateDirOf(inv, cfg), inv.conf.name, inv.validAttachments),
    );
  }
  if (errors.length) throw combineErrors(errors, "GC");
}

/** The network config's own `dns` (a well-known key), when any of its fields is set. */
export function configDns(inv: Invocation): Dns | undefined {
  const raw = inv.conf.raw.dns;
  if (!isObject(raw)) return undefined;
  // The result reader checks the fields and drops empty ones.
  return parseResult({ cniVersion: "1.0.0", dns: raw }, "1.0.0", "$").dns;
}

/**
 * The part of CHECK bridge and ptp share: prevResult is there, IPAM agrees,
 * and the container interface has the result's MAC, addresses and routes.
 * Returns the container's namespace and the result's addresses on that interface.
 */
export async function checkContainerSide(
  inv: Invocation,
  ipamType: string | undefined,
): Promise<{ ns: Netns; ips: IpConfig[] }> {
  const prev = inv.conf.prevResult;
  if (!prev) {
    throw new CniError(
      ErrorCode.InvalidConfig,
      "invalid network config: prevResult: is required for CHECK",
    );
  }
  if (ipamType) await inv.delegate(ipamType, "CHECK", inv.conf.raw);
  const ns = requireNetns(inv);
  const index =
    prev.interfaces?.findIndex((i) => i.name === inv.env.ifname && i.sandbox === inv.env.netns) ??
      -1;
  if (index < 0) {
    throw new CniError(
      ErrorCode.Internal,
      `CHECK: prevResult has no interface ${quote(inv.env.ifname)} in ${quote(inv.env.netns)}`,
    );
  }
  const ips = (prev.ips ?? []).filter((ip) => ip.interface === index);
  checkInterface(ns, inv.env.ifname, ips, prev.routes ?? [], prev.interfaces![index].mac);
  return { ns, ips };
}
