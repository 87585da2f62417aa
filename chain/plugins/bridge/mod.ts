/**
 * The `bridge` plugin: a veth pair from the container to a Linux bridge on
 * the host, addresses from the IPAM step, optionally the gateway on the
 * bridge and masquerade for the pod. Behaves as the reference plugin does
 * (result interfaces [bridge, host veth, container veth]); a failed ADD
 * leaves nothing behind, DEL works without the netns and without prevResult,
 * GC removes the masquerade of attachments the runtime no longer has.
 */
import { CniError, ErrorCode, invalidConfig, quote } from "../../spec/errors.ts";
import type { ConfigObject, Problem } from "../../spec/config.ts";
import { interfaceNameProblem } from "../../spec/env.ts";
import type { Interface, IpConfig, Result, Route } from "../../spec/types.ts";
import { type Family, parseCidr } from "../../ip.ts";
import type { GcInvocation, Invocation, Plugin } from "../../plugin.ts";
import { IFA_F_NODAD, IFF_PROMISC, IFF_UP, type Link, type Netns } from "../../kernel.ts";
import { BRIDGE_VLAN_INFO_PVID, BRIDGE_VLAN_INFO_UNTAGGED } from "../../../ffi/rtnetlink.ts";
import { OsError } from "../../../ffi/libc.ts";
import { Findings } from "../../spec/fields.ts";
import {
  attachmentOf,
  checkContainerSide,
  configDns,
  configureInterface,
  defaultGateway,
  delVethAttachment,
  ensureFreeName,
  gcVethAttachments,
  type InterfaceConfig,
  ipamAdd,
  ipamPreflight,
  randomVethName,
  readBool,
  readInterfaceConfig,
  requestedMac,
  requireNetns,
  stateDirOf,
  withoutIpv6,
} from "../../iface.ts";
import { addMasquerade, delMasquerade, hasMasquerade } from "../../masquerade.ts";

export const BRIDGE_TYPE = "bridge";

interface BridgeConfig extends InterfaceConfig {
  bridge: string;
  isGateway: boolean;
  isDefaultGateway: boolean;
  forceAddress: boolean;
  hairpinMode: boolean;
  promiscMode: boolean;
  vlan: number;
}

function read(raw: ConfigObject, prefix: string): { cfg: BridgeConfig; problems: Problem[] } {
  const f = new Findings();
  const cfg: BridgeConfig = {
    ...readInterfaceConfig(f, raw, prefix),
    bridge: "cni0",
    isGateway: readBool(f, raw, "isGateway", prefix),
    isDefaultGateway: readBool(f, raw, "isDefaultGateway", prefix),
    forceAddress: readBool(f, raw, "forceAddress", prefix),
    hairpinMode: readBool(f, raw, "hairpinMode", prefix),
    promiscMode: readBool(f, raw, "promiscMode", prefix),
    vlan: 0,
  };
  if (raw.bridge !== undefined && raw.bridge !== "") {
    const problem = typeof raw.bridge === "string"
      ? interfaceNameProblem(raw.bridge)
      : "must be a string";
    if (problem) f.add(`${prefix}bridge`, problem, raw.bridge);
    else cfg.bridge = raw.bridge as string;
  }
  // A default gateway needs a gateway, as in the reference plugin.
  if (cfg.isDefaultGateway) cfg.isGateway = true;
  if (cfg.hairpinMode && cfg.promiscMode) {
    f.add(`${prefix}promiscMode`, "cannot be set together with hairpinMode", raw.promiscMode);
  }
  if (raw.vlan !== undefined && raw.vlan !== 0) {
    if (
      typeof raw.vlan !== "number" || !Number.isInteger(raw.vlan) || raw.vlan < 1 || raw.vlan > 4094
    ) {
      f.add(`${prefix}vlan`, "must be an integer from 1 to 4094", raw.vlan);
    } else cfg.vlan = raw.vlan;
  }
  return { cfg, problems: f.problems };
}

function parse(inv: Invocation): BridgeConfig {
  const { cfg, problems } = read(inv.conf.raw, "");
  if (problems.length) {
    throw invalidConfig(problems[0].path, problems[0].message, problems[0].value);
  }
  if (cfg.vlan && cfg.isGateway) {
    throw new CniError(
      ErrorCode.UnsupportedField,
      "vlan: a gateway on a VLAN bridge is not supported yet; use isGateway false with vlan",
      `vlan ${cfg.vlan} with isGateway true`,
    );
  }
  return cfg;
}

const isExists = (err: unknown) => err instanceof OsError && err.code === "EEXIST";

/**
 * The bridge, created (up) when missing. It belongs to the node, not to the attachment: neither
 * DEL nor a failed ADD removes it (as in the reference), since other ADDs may be attaching to it
 * that very moment; a rollback that removed a bridge it had made broke the concurrent first ADDs
 * of a fresh node.
 */
function ensureBridge(host: Netns, cfg: BridgeConfig): Link {
  let link = host.link(cfg.bridge);
  if (!link) {
    try {
      link = host.createBridge(cfg.bridge, { mtu: cfg.mtu, vlanFiltering: cfg.vlan > 0 });
    } catch (err) {
      if (!isExists(err)) throw err;
      link = host.link(cfg.bridge); // another ADD made it first
    }
  }
  if (!link) {
    throw new CniError(
      ErrorCode.Internal,
      `bridge ${quote(cfg.bridge)} vanished while it was being set up`,
    );
  }
  if (link.kind !== "bridge") {
    throw new CniError(
      ErrorCode.InvalidConfig,
      `invalid network config: bridge: ${quote(cfg.bridge)} already exists but is not a bridge`,
    );
  }
  const promisc = cfg.promiscMode && !(link.flags & IFF_PROMISC);
  if (!(link.flags & IFF_UP) || promisc) {
    host.setLink(link.index, { up: true, ...(promisc ? { promisc: true } : {}) });
  }
  return link;
}

/** Puts the gateway on the bridge, as the reference does: one IPv4 address per bridge unless forceAddress. */
function ensureGatewayAddress(
  host: Netns,
  bridge: Link,
  gateway: string,
  prefix: number,
  force: boolean,
): void {
  const family: Family = gateway.includes(":") ? 6 : 4;
  const wanted = parseCidr(`${gateway}/${prefix}`)!;
  for (const a of host.addresses(bridge.index, family)) {
    if (a.scope !== 0) continue;
    if (a.address === gateway && a.prefix === prefix) return;
    const other = parseCidr(`${a.address}/${a.prefix}`)!;
    const overlaps = family === 4 || sameNet(other, wanted);
    if (!overlaps) continue;
    if (!force) {
      throw new CniError(
        ErrorCode.InvalidConfig,
        `bridge ${
          quote(bridge.name)
        } already has an IP address ${a.address}/${a.prefix} different from ${gateway}/${prefix} (set forceAddress to replace it)`,
      );
    }
    host.deleteAddress(bridge.index, a.address, a.prefix);
  }
  try {
    host.addAddress(bridge.index, gateway, prefix, family === 6 ? IFA_F_NODAD : 0);
  } catch (err) {
    // Another ADD put the same gateway there since the bridge was read: as good as ours.
    if (!isExists(err)) throw err;
  }
}

function sameNet(
  a: ReturnType<typeof parseCidr> & object,
  b: ReturnType<typeof parseCidr> & object,
): boolean {
  const prefix = Math.min(a.prefix, b.prefix);
  const mask = (v: bigint) => v >> BigInt(128 - prefix);
  return mask(a.ip.value) === mask(b.ip.value);
}

async function add(inv: Invocation): Promise<Result> {
  const cfg = parse(inv);
  const mac = requestedMac(inv);
  const ns = requireNetns(inv);
  ensureFreeName(ns, inv.env.ifname);
  // IPAM runs after the links exist (as in the reference: dhcp needs them); a bad address
  // request must fail before the bridge and veth are made.
  if (cfg.ipamType) ipamPreflight(inv, cfg.ipamType);
  const host = inv.system.kernel.host();
  const undo: (() => unknown)[] = [];
  try {
    const bridge = ensureBridge(host, cfg);
    let pair: { link: Link; peer: Link } | undefined;
    for (let attempt = 0; !pair; attempt++) {
      try {
        pair = host.createVeth(randomVethName(), inv.env.ifname, ns, {
          mtu: cfg.mtu,
          peerMac: mac,
        });
      } catch (err) {
        // A host name clash (1 in 4 billion) is worth another draw; anything else is not.
        if (!isExists(err) || attempt >= 3 || ns.link(inv.env.ifname)) throw err;
      }
    }
    const { link: hostVeth, peer: cont } = pair;
    undo.push(() => host.deleteLink(hostVeth.index));
    // A port carries frames: the bridge holds the gateways.
    withoutIpv6(host, hostVeth.name);
    host.setLink(hostVeth.index, { master: bridge.index, up: true });
    if (cfg.hairpinMode) host.setHairpin(hostVeth.index, true);
    if (cfg.vlan) {
      host.addBridgeVlan(
        hostVeth.index,
        cfg.vlan,
        BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED,
      );
    }
    // Tell neighbours about the new MAC at once, as the reference plugin does.
    ns.writeSysctl(`net/ipv4/conf/${inv.env.ifname}/arp_notify`, "1");

    const result: Result = { cniVersion: inv.conf.cniVersion };
    let ips: IpConfig[] = [];
    let routes: Route[] = [];
    if (cfg.ipamType) {
      const ipam = await ipamAdd(inv, cfg.ipamType);
      undo.push(() => inv.delegate(cfg.ipamType!, "DEL", inv.conf.raw));
      routes = [...(ipam.routes ?? [])];
      const defaults = new Set<Family>();
      ips = ipam.ips!.map((ip) => {
        const cidr = parseCidr(ip.address)!;
        const gateway = ip.gateway ?? (cfg.isGateway ? defaultGateway(cidr) : undefined);
        if (cfg.isDefaultGateway && gateway && !defaults.has(cidr.ip.family)) {
          defaults.add(cidr.ip.family);
          const dst = cidr.ip.family === 4 ? "0.0.0.0/0" : "::/0";
          if (!routes.some((r) => r.dst === dst)) routes.push({ dst, gw: gateway });
        }
        return { address: ip.address, ...(gateway ? { gateway } : {}), interface: 2 };
      });
      configureInterface(ns, cont, ips, routes);
      if (cfg.isGateway) {
        const done = new Set<string>();
        for (const ip of ips) {
          if (!ip.gateway || done.has(ip.gateway)) continue;
          done.add(ip.gateway);
          const cidr = parseCidr(ip.address)!;
          ensureGatewayAddress(host, bridge, ip.gateway, cidr.prefix, cfg.forceAddress);
          host.writeSysctl(
            cidr.ip.family === 4 ? "net/ipv4/ip_forward" : "net/ipv6/conf/all/forwarding",
            "1",
          );
        }
      }
      if (cfg.ipMasq) {
        const stateDir = stateDirOf(inv, cfg);
        await addMasquerade(
          inv.system,
          stateDir,
          attachmentOf(inv),
          ips.map((i) => i.address),
          cfg.ipMasqExclude,
        );
        undo.push(() => delMasquerade(inv.system, stateDir, attachmentOf(inv)));
      }
      if (ipam.dns) result.dns = ipam.dns;
    } else {
      ns.setLink(cont.index, { up: true });
    }
    // The config's own dns, when it has any, wins over what IPAM said (as in the reference).
    const dns = configDns(inv);
    if (dns) result.dns = dns;
    // The bridge takes its MAC from its ports, so read it after attaching this one.
    const bridgeNow = host.linkByIndex(bridge.index) ?? bridge;
    const interfaces: Interface[] = [
      { name: bridgeNow.name, ...(bridgeNow.mac ? { mac: bridgeNow.mac } : {}) },
      { name: hostVeth.name, ...(hostVeth.mac ? { mac: hostVeth.mac } : {}) },
      { name: cont.name, ...(cont.mac ? { mac: cont.mac } : {}), sandbox: inv.env.netns },
    ];
    result.interfaces = interfaces;
    if (ips.length) result.ips = ips;
    if (routes.length) result.routes = routes;
    return result;
  } catch (err) {
    for (const step of undo.reverse()) {
      try {
        await step();
      } catch {
        // Undo is best effort; the original error is what the caller needs.
      }
    }
    throw err;
  }
}

function del(inv: Invocation): Promise<void> {
  return delVethAttachment(inv, parse(inv), BRIDGE_TYPE);
}

async function check(inv: Invocation): Promise<void> {
  const cfg = parse(inv);
  const { ns, ips } = await checkContainerSide(inv, cfg.ipamType);
  const host = inv.system.kernel.host();
  const bridge = host.link(cfg.bridge);
  if (!bridge || bridge.kind !== "bridge") {
    throw new CniError(ErrorCode.Internal, `CHECK: bridge ${quote(cfg.bridge)} is missing`);
  }
  const cont = ns.link(inv.env.ifname)!;
  const hostVeth = host.links().find((l) =>
    l.kind === "veth" && l.peerIndex === cont.index && l.master === bridge.index
  );
  if (!hostVeth) {
    throw new CniError(
      ErrorCode.Internal,
      `CHECK: the host end of ${quote(inv.env.ifname)} is not attached to bridge ${
        quote(cfg.bridge)
      }`,
    );
  }
  if (cfg.ipMasq && ips.length && !hasMasquerade(inv.system, attachmentOf(inv))) {
    throw new CniError(
      ErrorCode.Internal,
      `CHECK: masquerade for ${quote(inv.env.containerId)} is missing`,
    );
  }
}

function gc(inv: GcInvocation): Promise<void> {
  return gcVethAttachments(inv, parse(inv), BRIDGE_TYPE);
}

async function status(inv: Invocation): Promise<void> {
  const cfg = parse(inv);
  if (cfg.ipamType) await inv.delegate(cfg.ipamType, "STATUS", inv.conf.raw);
}

export const bridgePlugin: Plugin = {
  validate: (entry, path) => read(entry, `${path}.`).problems,
  add,
  del,
  check,
  gc,
  status,
};
