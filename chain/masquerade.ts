/**
 * Masquerade for pods (bridge and ptp `ipMasq`) in nftables: three fixed rules
 * per family in cnichain's table, and per-attachment set elements, so a pod's
 * ADD or DEL adds or removes elements, never rules.
 *
 *   ip daddr 224.0.0.0/4 return            anyone -> multicast
 *   ip saddr . ip daddr @nomasq4 return    pod -> its own subnet, excluded CIDRs
 *   ip saddr @masq4 masquerade             pod -> anywhere else
 *
 * Multicast is a rule, not an element of every pod: removing an element from a set of
 * concatenated intervals costs the kernel time in proportion to the set's size (3.8 us an
 * element), so every element a pod does not need there makes each DEL on a big node faster.
 */
import type { AttachmentRef } from "./spec/types.ts";
import type { System } from "./system.ts";
import { type Cidr, contains, formatCidr, networkOf, parseCidr } from "./ip.ts";
import {
  attachmentTag,
  collectElements,
  type Feature,
  installElements,
  type PlannedElement,
  readTable,
  removeElements,
  TABLE,
} from "./nft_state.ts";

const MULTICAST = { 4: "224.0.0.0/4", 6: "ff00::/8" } as const;

export const MASQUERADE: Feature = {
  name: "masquerade",
  chains: ["masq"],
  sets: ["masq4", "nomasq4", "masq6", "nomasq6"],
  skeleton: () => [
    `add table inet ${TABLE}`,
    `add chain inet ${TABLE} masq { type nat hook postrouting priority srcnat; policy accept; }`,
    `add set inet ${TABLE} masq4 { type ipv4_addr; }`,
    `add set inet ${TABLE} nomasq4 { type ipv4_addr . ipv4_addr; flags interval; }`,
    `add set inet ${TABLE} masq6 { type ipv6_addr; }`,
    `add set inet ${TABLE} nomasq6 { type ipv6_addr . ipv6_addr; flags interval; }`,
    `flush chain inet ${TABLE} masq`,
    `add rule inet ${TABLE} masq ip daddr ${MULTICAST[4]} return`,
    `add rule inet ${TABLE} masq ip6 daddr ${MULTICAST[6]} return`,
    `add rule inet ${TABLE} masq ip saddr . ip daddr @nomasq4 return`,
    `add rule inet ${TABLE} masq ip saddr @masq4 masquerade`,
    `add rule inet ${TABLE} masq ip6 saddr . ip6 daddr @nomasq6 return`,
    `add rule inet ${TABLE} masq ip6 saddr @masq6 masquerade`,
  ],
};

export interface Attachment {
  network: string;
  containerId: string;
  ifname: string;
}

/**
 * The blocks not inside another of the list (the first of equal ones): the same union, and no two
 * overlapping, as nftables wants the elements of an interval set (it refuses one whose start or
 * end falls in another with "File exists": subnet 10.62.0.0/16 with ipMasqExclude 10.0.0.0/8 and
 * 10.62.1.0/24 failed ADD).
 */
function outermost(blocks: Cidr[]): Cidr[] {
  return blocks.filter((b, i) =>
    !blocks.some((o, j) =>
      j !== i && o.prefix <= b.prefix && contains(o, b.ip) && (o.prefix < b.prefix || j < i)
    )
  );
}

/** Masquerades traffic from `addresses` (CIDRs) leaving their subnets, except to `exclude`. */
export async function addMasquerade(
  system: System,
  stateDir: string,
  att: Attachment,
  addresses: string[],
  exclude: string[],
): Promise<void> {
  const elements: PlannedElement[] = [];
  for (const address of addresses) {
    const cidr = parseCidr(address);
    if (!cidr) continue;
    const family = cidr.ip.family;
    const ip = address.slice(0, address.indexOf("/"));
    const blocks = [cidr, ...exclude.map(parseCidr)].flatMap((c) =>
      c && c.ip.family === family ? [networkOf(c)] : []
    );
    elements.push({ set: `masq${family}`, key: ip });
    for (const dst of outermost(blocks)) {
      elements.push({ set: `nomasq${family}`, key: `${ip} . ${formatCidr(dst)}` });
    }
  }
  const tag = attachmentTag(att.network, att.containerId, att.ifname);
  await installElements(
    system,
    stateDir,
    MASQUERADE,
    tag,
    elements,
    () => new Error("masquerade elements are never exclusive"),
  );
}

/** Removes one attachment's masquerade elements; nothing there is success. */
export async function delMasquerade(
  system: System,
  stateDir: string,
  att: Attachment,
): Promise<void> {
  await removeElements(
    system,
    stateDir,
    MASQUERADE,
    attachmentTag(att.network, att.containerId, att.ifname),
  );
}

/** Removes the masquerade elements of `network`'s attachments that are not in `valid`. */
export async function gcMasquerade(
  system: System,
  stateDir: string,
  network: string,
  valid: AttachmentRef[],
): Promise<void> {
  const keep = new Set(
    valid.map((a) => attachmentTag(network, a.containerID, a.ifname)),
  );
  await collectElements(system, stateDir, MASQUERADE, network, keep);
}

/** Whether the attachment has its masquerade elements (for CHECK). */
export function hasMasquerade(system: System, att: Attachment): boolean {
  const comment = attachmentTag(att.network, att.containerId, att.ifname);
  const { sets } = readTable(system);
  return ["masq4", "masq6"].some((name) =>
    (sets.get(name) ?? []).some((e) => e.comment === comment)
  );
}
