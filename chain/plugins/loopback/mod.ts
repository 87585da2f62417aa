/**
 * The `loopback` plugin: brings the container's `lo` up (and down on DEL),
 * passing a prevResult through untouched, as the reference plugin does.
 */
import { CniError, ErrorCode, quote } from "../../spec/errors.ts";
import type { Result } from "../../spec/types.ts";
import type { Invocation, Plugin } from "../../plugin.ts";
import { IFF_UP } from "../../kernel.ts";
import { containerNetns, requireNetns } from "../../iface.ts";

export const LOOPBACK_TYPE = "loopback";

function lo(inv: Invocation) {
  const ns = requireNetns(inv);
  const link = ns.link(inv.env.ifname);
  if (!link) {
    throw new CniError(
      ErrorCode.Internal,
      `no interface ${quote(inv.env.ifname)} in ${quote(inv.env.netns)}`,
    );
  }
  return { ns, link };
}

export const loopbackPlugin: Plugin = {
  add(inv): Promise<Result> {
    const { ns, link } = lo(inv);
    ns.setLink(link.index, { up: true });
    if (inv.conf.prevResult) return Promise.resolve(inv.conf.prevResult);
    const ips = ns.addresses(link.index)
      .filter((a) => a.address === "127.0.0.1" || a.address === "::1")
      .map((a) => ({ address: `${a.address}/${a.prefix}`, interface: 0 }));
    return Promise.resolve({
      cniVersion: inv.conf.cniVersion,
      interfaces: [{ name: inv.env.ifname, mac: "00:00:00:00:00:00", sandbox: inv.env.netns }],
      ...(ips.length ? { ips } : {}),
    });
  },
  del(inv) {
    const ns = containerNetns(inv);
    const link = ns?.link(inv.env.ifname);
    if (ns && link) ns.setLink(link.index, { up: false });
    return Promise.resolve();
  },
  check(inv) {
    const { link } = lo(inv);
    if (!(link.flags & IFF_UP)) {
      throw new CniError(
        ErrorCode.Internal,
        `CHECK: ${quote(inv.env.ifname)} in ${quote(inv.env.netns)} is down`,
      );
    }
    return Promise.resolve();
  },
};
