/**
 * The `ptp` plugin: a point-to-point veth between the container and the
 * host, routed rather than bridged. The host end holds each gateway as a
 * /32 (/128) with a route to the container's address; the container reaches
 * its gateway on-link and its subnet through the gateway, as the reference
 * plugin sets it up. Result interfaces: [host veth, container veth].
 */
import { invalidConfig } from "../../spec/errors.ts";
import type { ConfigObject, Problem } from "../../spec/config.ts";
import type { IpConfig, Result } from "../../spec/types.ts";
import { formatIp, networkOf, parseCidr } from "../../ip.ts";
import type { GcInvocation, Invocation, Plugin } from "../../plugin.ts";
import { IFA_F_NODAD, type Link, RT_SCOPE_HOST, RT_SCOPE_LINK } from "../../kernel.ts";
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
  randomVethName,
  readInterfaceConfig,
  requestedMac,
  requireNetns,
  stateDirOf,
  withoutIpv6,
} from "../../iface.ts";
import { addMasquerade, delMasquerade } from "../../masquerade.ts";

export const PTP_TYPE = "ptp";

function read(raw: ConfigObject, prefix: string): { cfg: InterfaceConfig; problems: Problem[] } {
  const f = new Findings();
  const cfg = readInterfaceConfig(f, raw, prefix);
  if (!cfg.ipamType && !f.problems.some((p) => p.path.startsWith(`${prefix}ipam`))) {
    f.add(`${prefix}ipam.type`, "is required: ptp needs addresses from an IPAM plugin");
  }
  return { cfg, problems: f.problems };
}

function parse(inv: Invocation): InterfaceConfig & { ipamType: string } {
  const { cfg, problems } = read(inv.conf.raw, "");
  if (problems.length) {
    throw invalidConfig(problems[0].path, problems[0].message, problems[0].value);
  }
  return cfg as InterfaceConfig & { ipamType: string };
}

const hostPrefix = (family: 4 | 6) => (family === 4 ? 32 : 128);

async function add(inv: Invocation): Promise<Result> {
  const cfg = parse(inv);
  const mac = requestedMac(inv);
  const ns = requireNetns(inv);
  ensureFreeName(ns, inv.env.ifname);
  const host = inv.system.kernel.host();
  const undo: (() => unknown)[] = [];
  try {
    const ipam = await ipamAdd(inv, cfg.ipamType);
    undo.push(() => inv.delegate(cfg.ipamType, "DEL", inv.conf.raw));
    const ips: IpConfig[] = ipam.ips!.map((ip) => ({
      address: ip.address,
      gateway: ip.gateway ?? defaultGateway(parseCidr(ip.address)!),
      interface: 1,
    }));
    const routes = [...(ipam.routes ?? [])];

    const { link: hostVeth, peer: cont } = host.createVeth(randomVethName(), inv.env.ifname, ns, {
      mtu: cfg.mtu,
      peerMac: mac,
    });
    undo.push(() => host.deleteLink(hostVeth.index));
    // Without an IPv6 address to route, the host end needs no IPv6 (see withoutIpv6).
    if (!ips.some((ip) => ip.address.includes(":"))) withoutIpv6(host, hostVeth.name);
    host.setLink(hostVeth.index, { up: true });
    configureInterface(ns, cont, ips, routes);
    // Two addresses may share a gateway: its on-link route is made once.
    const gatewaysRouted = new Set<string>();
    for (const ip of ips) {
      const cidr = parseCidr(ip.address)!;
      const family = cidr.ip.family;
      const own = ip.address.slice(0, ip.address.indexOf("/"));
      const subnet = formatIp(networkOf(cidr).ip);
      // Replace the on-link subnet route with: gateway on-link, subnet via the gateway.
      try {
        ns.deleteRoute({
          family,
          dst: subnet,
          dstPrefix: cidr.prefix,
          oif: cont.index,
          scope: RT_SCOPE_LINK,
        });
      } catch (err) {
        if (!(err instanceof OsError && err.code === "ESRCH")) throw err;
      }
      if (!gatewaysRouted.has(ip.gateway!)) {
        gatewaysRouted.add(ip.gateway!);
        ns.addRoute({
          family,
          dst: ip.gateway!,
          dstPrefix: hostPrefix(family),
          oif: cont.index,
          scope: RT_SCOPE_LINK,
          src: own,
        });
      }
      if (cidr.prefix < hostPrefix(family)) {
        ns.addRoute({
          family,
          dst: subnet,
          dstPrefix: cidr.prefix,
          gw: ip.gateway,
          oif: cont.index,
          src: own,
        });
      }
      // Host end: the gateway as a host address, and the way back to the container.
      addOnce(host, hostVeth, ip.gateway!, hostPrefix(family), family === 6 ? IFA_F_NODAD : 0);
      // Scope host, as the reference's ip.AddHostRoute sets it.
      host.addRoute({
        family,
        dst: own,
        dstPrefix: hostPrefix(family),
        oif: hostVeth.index,
        scope: RT_SCOPE_HOST,
      });
      host.writeSysctl(family === 4 ? "net/ipv4/ip_forward" : "net/ipv6/conf/all/forwarding", "1");
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
    const result: Result = {
      cniVersion: inv.conf.cniVersion,
      interfaces: [
        { name: hostVeth.name, ...(hostVeth.mac ? { mac: hostVeth.mac } : {}) },
        { name: cont.name, ...(cont.mac ? { mac: cont.mac } : {}), sandbox: inv.env.netns },
      ],
      ips,
    };
    if (routes.length) result.routes = routes;
    const dns = configDns(inv) ?? ipam.dns;
    if (dns) result.dns = dns;
    return result;
  } catch (err) {
    for (const step of undo.reverse()) {
      try {
        await step();
      } catch {
        // Best effort; the original error is the one to report.
      }
    }
    throw err;
  }
}

function addOnce(
  host: ReturnType<Invocation["system"]["kernel"]["host"]>,
  link: Link,
  address: string,
  prefix: number,
  flags: number,
) {
  const family = address.includes(":") ? 6 : 4;
  if (
    host.addresses(link.index, family).some((a) => a.address === address && a.prefix === prefix)
  ) {
    return;
  }
  host.addAddress(link.index, address, prefix, flags);
}

function del(inv: Invocation): Promise<void> {
  return delVethAttachment(inv, parse(inv), PTP_TYPE);
}

async function check(inv: Invocation): Promise<void> {
  await checkContainerSide(inv, parse(inv).ipamType);
}

function gc(inv: GcInvocation): Promise<void> {
  return gcVethAttachments(inv, parse(inv), PTP_TYPE);
}

export const ptpPlugin: Plugin = {
  validate: (entry, path) => read(entry, `${path}.`).problems,
  add,
  del,
  check,
  gc,
  status: async (inv) => {
    const cfg = parse(inv);
    await inv.delegate(cfg.ipamType, "STATUS", inv.conf.raw);
  },
};
