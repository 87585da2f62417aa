/**
 * The `portmap` plugin: host ports forwarded to a pod, in nftables maps keyed
 * by (protocol, port) and (host address, protocol, port), so the ten-thousandth
 * mapping costs what the first did: an ADD adds elements, never rules. DNAT
 * for traffic arriving from outside (prerouting) and from the host itself
 * (output, with route_localnet for 127.0.0.1), and masquerade for flows that
 * would otherwise come back the wrong way (a pod reaching itself or a
 * neighbour through a host port, the host through localhost). Each element's
 * comment names its attachment: DEL needs no prevResult, GC needs no state.
 */
import { CniError, ErrorCode, invalidConfig, quote } from "../../spec/errors.ts";
import { type ConfigObject, isObject, pathProblem, type Problem } from "../../spec/config.ts";
import { Findings } from "../../spec/fields.ts";
import type { Result } from "../../spec/types.ts";
import { type Family, formatCidr, formatIp, networkOf, parseCidr, parseIp } from "../../ip.ts";
import type { GcInvocation, Invocation, Plugin } from "../../plugin.ts";
import { readBool } from "../../iface.ts";
import { IPPROTO_UDP } from "../../../ffi/conntrack.ts";
import { DEFAULT_STATE_DIR } from "../cnichain/mod.ts";
import {
  attachmentTag,
  collectElements,
  type Feature,
  installElements,
  type PlannedElement,
  readTable,
  removeElements,
  TABLE,
} from "../../nft_state.ts";

export const PORTMAP_TYPE = "portmap";

/** Code for "the host port is taken by another attachment" (plugin-specific, see README). */
export const PORT_TAKEN = 101;

const PROTOCOLS = ["tcp", "udp", "sctp"];

/**
 * Port mappings one attachment may ask for (README "Limits and errors"): far
 * beyond any pod's, and it keeps a hostile list from becoming one huge nftables batch.
 */
export const MAX_PORT_MAPPINGS = 4096;

interface Mapping {
  hostPort: number;
  containerPort: number;
  protocol: string;
  /** Only traffic to this host address (never 0.0.0.0 or ::, see `family`). */
  hostIP?: string;
  /** Set for hostIP `0.0.0.0` or `::`: every address of that family and no other (as the reference reads them). */
  family?: Family;
}

/** Whether the mapping forwards traffic of `family`. */
function appliesTo(m: Mapping, family: Family): boolean {
  if (m.hostIP) return (m.hostIP.includes(":") ? 6 : 4) === family;
  return m.family === undefined || m.family === family;
}

/** What a mapping holds in nftables for `family`: one destination per key. */
function portKey(m: Mapping, family: Family): string {
  return `${family} ${m.protocol} ${m.hostPort} ${m.hostIP ?? "any"}`;
}

/** The host port a mapping forwards, as a person says it: `tcp/8080`, `udp/53 on 10.0.0.1`. */
function describe(m: Mapping): string {
  const on = m.hostIP ?? (m.family === 4 ? "0.0.0.0" : m.family === 6 ? "::" : undefined);
  return `${m.protocol}/${m.hostPort}${on ? ` on ${on}` : ""}`;
}

interface PortmapConfig {
  snat: boolean;
  masqAll: boolean;
  stateDir: string;
  mappings: Mapping[];
}

function readPort(f: Findings, v: unknown, path: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > 65535) {
    f.add(path, "must be a port number from 1 to 65535", v);
    return 0;
  }
  return v;
}

function readMappings(f: Findings, raw: unknown, path: string): Mapping[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) {
    f.add(path, "must be a list", raw);
    return [];
  }
  if (raw.length > MAX_PORT_MAPPINGS) {
    f.add(path, `may hold at most ${MAX_PORT_MAPPINGS} mappings (got ${raw.length})`);
    return [];
  }
  const mappings = raw.flatMap((m, i): Mapping[] => {
    const at = `${path}[${i}]`;
    if (!isObject(m)) {
      f.add(at, "must be an object", m);
      return [];
    }
    const protocol = m.protocol === undefined || m.protocol === "" ? "tcp" : m.protocol;
    if (typeof protocol !== "string" || !PROTOCOLS.includes(protocol.toLowerCase())) {
      f.add(`${at}.protocol`, `must be one of ${PROTOCOLS.join(", ")}`, m.protocol);
    }
    const mapping: Mapping = {
      hostPort: readPort(f, m.hostPort, `${at}.hostPort`),
      containerPort: readPort(f, m.containerPort, `${at}.containerPort`),
      protocol: String(protocol).toLowerCase(),
    };
    if (m.hostIP !== undefined && m.hostIP !== "") {
      const ip = typeof m.hostIP === "string" ? parseIp(m.hostIP) : undefined;
      if (!ip) f.add(`${at}.hostIP`, "is not an IP address", m.hostIP);
      // No packet is ever addressed to 0.0.0.0 or `::`: runtimes mean "any address" by them.
      else if (ip.value === 0n) mapping.family = ip.family;
      else mapping.hostIP = formatIp(ip);
    }
    return [mapping];
  });
  // nftables keeps one destination per host port: the same port again to another container port
  // is refused (the reference's rules would silently let the first win); a copy changes nothing.
  const seen = new Map<string, { containerPort: number; at: string }>();
  mappings.forEach((m, i) => {
    for (const family of [4, 6] as Family[]) {
      if (!appliesTo(m, family)) continue;
      const key = portKey(m, family);
      const first = seen.get(key);
      if (!first) seen.set(key, { containerPort: m.containerPort, at: `${path}[${i}]` });
      else if (first.containerPort !== m.containerPort) {
        const clash = `forwards host port ${describe(m)} to container port ${m.containerPort}, ` +
          `but ${first.at} forwards it to ${first.containerPort}`;
        f.add(`${path}[${i}]`, clash);
        return;
      }
    }
  });
  return mappings;
}

function read(
  raw: ConfigObject,
  prefix: string,
): { cfg: PortmapConfig; problems: Problem[]; unsupported?: Problem } {
  const f = new Findings();
  const cfg: PortmapConfig = {
    snat: raw.snat === undefined ? true : readBool(f, raw, "snat", prefix),
    masqAll: readBool(f, raw, "masqAll", prefix),
    stateDir: DEFAULT_STATE_DIR,
    mappings: [],
  };
  if (raw.markMasqBit !== undefined) {
    const bit = raw.markMasqBit;
    if (typeof bit !== "number" || !Number.isInteger(bit) || bit < 0 || bit > 31) {
      f.add(`${prefix}markMasqBit`, "must be an integer from 0 to 31", bit);
    }
  }
  if (raw.stateDir !== undefined) {
    const problem = pathProblem(raw.stateDir);
    if (problem) f.add(`${prefix}stateDir`, problem, raw.stateDir);
    else cfg.stateDir = raw.stateDir as string;
  }
  const runtime = isObject(raw.runtimeConfig) ? raw.runtimeConfig : {};
  cfg.mappings = readMappings(f, runtime.portMappings, `${prefix}runtimeConfig.portMappings`);
  // iptables-only knobs: accepting them silently would change what the user asked for.
  let unsupported: Problem | undefined;
  for (const key of ["conditionsV4", "conditionsV6"]) {
    const v = raw[key];
    if (v !== undefined && v !== null && !(Array.isArray(v) && v.length === 0)) {
      unsupported ??= {
        path: `${prefix}${key}`,
        message: "iptables match conditions are not supported: cnichain's portmap uses nftables",
        value: v,
      };
    }
  }
  if (raw.externalSetMarkChain !== undefined && raw.externalSetMarkChain !== "") {
    unsupported ??= {
      path: `${prefix}externalSetMarkChain`,
      message: "is an iptables chain; cnichain's portmap uses nftables",
      value: raw.externalSetMarkChain,
    };
  }
  return { cfg, problems: f.problems, unsupported };
}

function parse(inv: Invocation): PortmapConfig {
  const { cfg, problems, unsupported } = read(inv.conf.raw, "");
  if (problems.length) {
    throw invalidConfig(problems[0].path, problems[0].message, problems[0].value);
  }
  if (unsupported) {
    throw new CniError(
      ErrorCode.UnsupportedField,
      `${unsupported.path}: ${unsupported.message}`,
      `${unsupported.path}=${quote(unsupported.value)}`,
    );
  }
  if (inv.conf.raw.stateDir === undefined && inv.context.stateDir) {
    cfg.stateDir = inv.context.stateDir;
  }
  return cfg;
}

/** The pod's first IPv4 and first IPv6 address on the sandbox interface CNI_IFNAME. */
function podAddresses(inv: Invocation, prev: Result): Map<Family, { ip: string; subnet: string }> {
  const out = new Map<Family, { ip: string; subnet: string }>();
  for (const ip of prev.ips ?? []) {
    if (ip.interface !== undefined) {
      const iface = prev.interfaces?.[ip.interface];
      if (iface && (iface.name !== inv.env.ifname || !iface.sandbox)) continue;
    }
    const cidr = parseCidr(ip.address);
    if (!cidr || out.has(cidr.ip.family)) continue;
    out.set(cidr.ip.family, { ip: formatIp(cidr.ip), subnet: formatCidr(networkOf(cidr)) });
  }
  return out;
}

interface Planned extends PlannedElement {
  /** For messages: the host port the element forwards, as a person says it. */
  what?: string;
}

function plan(cfg: PortmapConfig, pods: Map<Family, { ip: string; subnet: string }>): Planned[] {
  const out: Planned[] = [];
  const planned = new Set<string>();
  for (const [family, pod] of pods) {
    for (const m of cfg.mappings) {
      if (!appliesTo(m, family)) continue;
      const what = describe(m);
      const value = `${pod.ip} . ${m.containerPort}`;
      // The same host port twice to the same container port (readMappings refuses any other
      // repeat): once is enough, and a batch may not add one key twice.
      const key = portKey(m, family);
      if (planned.has(key)) continue;
      planned.add(key);
      out.push(
        m.hostIP
          ? {
            set: `pm_dnat${family}_ip`,
            key: `${m.hostIP} . ${m.protocol} . ${m.hostPort}`,
            value,
            what,
            exclusive: true,
          }
          : {
            set: `pm_dnat${family}`,
            key: `${m.protocol} . ${m.hostPort}`,
            value,
            what,
            exclusive: true,
          },
      );
    }
    const sources = cfg.masqAll
      ? [family === 4 ? "0.0.0.0/0" : "::/0"]
      : cfg.snat
      ? [pod.subnet]
      : [];
    for (const src of sources) out.push({ set: `pm_hairpin${family}`, key: `${src} . ${pod.ip}` });
    // From the host's own 127/8 (route_localnet): a plain set of pods, not one more element of
    // the interval set above, where each element makes removing any other slower.
    if (cfg.snat && family === 4 && !cfg.masqAll) out.push({ set: "pm_local4", key: pod.ip });
  }
  return out;
}

const t = `inet ${TABLE}`;

export const PORTMAP: Feature = {
  name: "portmap",
  // Base chains before pm_dnat: they jump to it, so they must go first when removed.
  chains: ["pm_prerouting", "pm_output", "pm_postrouting", "pm_dnat"],
  sets: [
    "pm_dnat4",
    "pm_dnat4_ip",
    "pm_dnat6",
    "pm_dnat6_ip",
    "pm_hairpin4",
    "pm_hairpin6",
    "pm_local4",
  ],
  skeleton: () => [
    `add table ${t}`,
    `add map ${t} pm_dnat4 { type inet_proto . inet_service : ipv4_addr . inet_service; }`,
    `add map ${t} pm_dnat4_ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }`,
    `add map ${t} pm_dnat6 { type inet_proto . inet_service : ipv6_addr . inet_service; }`,
    `add map ${t} pm_dnat6_ip { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; }`,
    `add set ${t} pm_hairpin4 { type ipv4_addr . ipv4_addr; flags interval; }`,
    `add set ${t} pm_hairpin6 { type ipv6_addr . ipv6_addr; flags interval; }`,
    `add set ${t} pm_local4 { type ipv4_addr; }`,
    `add chain ${t} pm_prerouting { type nat hook prerouting priority dstnat; policy accept; }`,
    `add chain ${t} pm_output { type nat hook output priority -100; policy accept; }`,
    `add chain ${t} pm_postrouting { type nat hook postrouting priority srcnat; policy accept; }`,
    `add chain ${t} pm_dnat`,
    ...["pm_prerouting", "pm_output", "pm_postrouting", "pm_dnat"].map((c) =>
      `flush chain ${t} ${c}`
    ),
    `add rule ${t} pm_prerouting fib daddr type local jump pm_dnat`,
    `add rule ${t} pm_output fib daddr type local jump pm_dnat`,
    `add rule ${t} pm_dnat dnat ip addr . port to ip daddr . meta l4proto . th dport map @pm_dnat4_ip`,
    `add rule ${t} pm_dnat dnat ip addr . port to meta l4proto . th dport map @pm_dnat4`,
    `add rule ${t} pm_dnat dnat ip6 addr . port to ip6 daddr . meta l4proto . th dport map @pm_dnat6_ip`,
    `add rule ${t} pm_dnat dnat ip6 addr . port to meta l4proto . th dport map @pm_dnat6`,
    `add rule ${t} pm_postrouting ct status dnat ip saddr . ip daddr @pm_hairpin4 masquerade`,
    `add rule ${t} pm_postrouting ct status dnat ip6 saddr . ip6 daddr @pm_hairpin6 masquerade`,
    `add rule ${t} pm_postrouting ct status dnat ip saddr 127.0.0.0/8 ip daddr @pm_local4 masquerade`,
  ],
};

/** The error for a host port another attachment holds (code 101): which port, which owner. */
function portTaken(e: Planned, owner: string, tag: string): CniError {
  return new CniError(
    PORT_TAKEN,
    `host port ${e.what ?? e.key} is already forwarded to another attachment (${quote(owner)})`,
    `wanted by ${quote(tag)}`,
  );
}

const tagOf = (inv: Invocation) =>
  attachmentTag(inv.conf.name, inv.env.containerId, inv.env.ifname);

async function add(inv: Invocation): Promise<Result> {
  const cfg = parse(inv);
  const prev = inv.conf.prevResult;
  if (!prev) {
    throw invalidConfig(
      "prevResult",
      "is required: portmap runs chained after an interface plugin",
    );
  }
  if (cfg.mappings.length === 0) return prev;
  const pods = podAddresses(inv, prev);
  if (pods.size === 0) {
    throw invalidConfig(
      "prevResult.ips",
      `has no address on the sandbox interface ${quote(inv.env.ifname)} to forward to`,
    );
  }
  const tag = tagOf(inv);
  await installElements(
    inv.system,
    cfg.stateDir,
    PORTMAP,
    tag,
    plan(cfg, pods),
    (e, owner) => portTaken(e, owner, tag),
  );
  // A UDP flow to the port may still be tracked towards the pod that held it before.
  // Best effort: the mapping works without it, only an old flow would keep going astray.
  try {
    for (const m of cfg.mappings.filter((m) => m.protocol === "udp")) {
      for (const family of pods.keys()) {
        inv.system.kernel.forgetConnections(family, IPPROTO_UDP, m.hostPort);
      }
    }
  } catch (err) {
    console.error(
      `cnichain portmap: could not forget old UDP flows: ${
        err instanceof Error ? err.message : err
      }`,
    );
  }
  if (cfg.snat) {
    const host = inv.system.kernel.host();
    for (const iface of prev.interfaces ?? []) {
      if (iface.sandbox) continue;
      const link = host.link(iface.name);
      if (!link) continue;
      // DNAT of 127.0.0.1 sends packets with a loopback source out of a real interface; allow it there.
      if (pods.has(4)) host.writeSysctl(`net/ipv4/conf/${iface.name}/route_localnet`, "1");
      // With bridge netfilter, a pod reaching itself through a host port is bridged back out of
      // its own port: the port must allow that (hairpin), as kubelet's hairpin-veth mode does.
      if (link.kind === "veth" && link.master) host.setHairpin(link.index, true);
    }
  }
  return prev;
}

async function del(inv: Invocation): Promise<void> {
  const { cfg } = read(inv.conf.raw, "");
  const stateDir = inv.conf.raw.stateDir === undefined && inv.context.stateDir
    ? inv.context.stateDir
    : cfg.stateDir;
  await removeElements(inv.system, stateDir, PORTMAP, tagOf(inv));
}

async function gc(inv: GcInvocation): Promise<void> {
  // Like DEL, GC does not need the mappings, so a config problem there does not stop it.
  const { cfg } = read(inv.conf.raw, "");
  if (inv.conf.raw.stateDir === undefined && inv.context.stateDir) {
    cfg.stateDir = inv.context.stateDir;
  }
  const keep = new Set(
    inv.validAttachments.map((a) => attachmentTag(inv.conf.name, a.containerID, a.ifname)),
  );
  await collectElements(inv.system, cfg.stateDir, PORTMAP, inv.conf.name, keep);
}

function check(inv: Invocation): void {
  const cfg = parse(inv);
  const prev = inv.conf.prevResult;
  if (!prev) throw invalidConfig("prevResult", "is required for CHECK");
  if (cfg.mappings.length === 0) return;
  const tag = tagOf(inv);
  const listing = readTable(inv.system);
  const held = (set: string, key: string) =>
    (listing.sets.get(set) ?? []).find((e) => e.key === key && e.comment === tag);
  for (const p of plan(cfg, podAddresses(inv, prev))) {
    // An attachment made before pm_local4 existed has `127.0.0.0/8 . <pod>` in pm_hairpin4.
    const found = held(p.set, p.key) ??
      (p.set === "pm_local4" ? held("pm_hairpin4", `127.0.0.0/8 . ${p.key}`) : undefined);
    if (!found || (p.value && found.value !== p.value)) {
      throw new CniError(
        ErrorCode.Internal,
        `CHECK: ${
          p.what ? `host port ${p.what}` : `element ${p.key} of ${p.set}`
        } is not forwarded as configured`,
      );
    }
  }
}

export const portmapPlugin: Plugin = {
  validate: (entry, path) => {
    const { problems, unsupported } = read(entry, `${path}.`);
    return unsupported ? [...problems, unsupported] : problems;
  },
  add,
  del,
  check: (inv) => Promise.resolve(check(inv)),
  gc,
};
