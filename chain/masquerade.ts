/**
 * Masquerade for pods (bridge and ptp `ipMasq`) in nftables: one table for
 * cnichain, two fixed rules per family, and per-attachment set elements, so a
 * pod's ADD or DEL adds or removes elements, never rules. Each element carries
 * a comment naming its network and attachment, which is how DEL (even without
 * prevResult) and GC find exactly this attachment's.
 *
 *   ip saddr . ip daddr @nomasq4 return    pod -> its own subnet, multicast, excluded CIDRs
 *   ip saddr @masq4 masquerade             pod -> anywhere else
 */
import type { AttachmentRef } from "./spec/types.ts";
import type { System } from "./system.ts";
import { networkOf, parseCidr } from "./ip.ts";
import { formatCidr } from "./ip.ts";

export const TABLE = "cnichain";
const MULTICAST = { 4: "224.0.0.0/4", 6: "ff00::/8" } as const;

async function hash(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].slice(0, 8).map((b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}

/** The network part of a comment: the name when it is short, else a hash of it. */
async function networkTag(network: string): Promise<string> {
  return network.length <= 40 ? network : `#${await hash(network)}`;
}

/** `<network> <attachment hash>`: short enough for nft's comment limit, exact for DEL and GC. */
export async function masqComment(
  network: string,
  containerId: string,
  ifname: string,
): Promise<string> {
  return `${await networkTag(network)} ${await hash(`${network}\0${containerId}\0${ifname}`)}`;
}

/** The table, sets and rules; safe to repeat (the chain is flushed and rewritten in the same batch). */
function skeleton(): string {
  return [
    `add table inet ${TABLE}`,
    `add chain inet ${TABLE} masq { type nat hook postrouting priority srcnat; policy accept; }`,
    `add set inet ${TABLE} masq4 { type ipv4_addr; }`,
    `add set inet ${TABLE} nomasq4 { type ipv4_addr . ipv4_addr; flags interval; }`,
    `add set inet ${TABLE} masq6 { type ipv6_addr; }`,
    `add set inet ${TABLE} nomasq6 { type ipv6_addr . ipv6_addr; flags interval; }`,
    `flush chain inet ${TABLE} masq`,
    `add rule inet ${TABLE} masq ip saddr . ip daddr @nomasq4 return`,
    `add rule inet ${TABLE} masq ip saddr @masq4 masquerade`,
    `add rule inet ${TABLE} masq ip6 saddr . ip6 daddr @nomasq6 return`,
    `add rule inet ${TABLE} masq ip6 saddr @masq6 masquerade`,
  ].join("\n");
}

/** The lock that serialises every change to cnichain's shared nftables table. */
export function lockFile(stateDir: string): string {
  return `${stateDir}/nftables.lock`;
}

async function locked<T>(system: System, stateDir: string, fn: () => Promise<T>): Promise<T> {
  await system.files.mkdir(stateDir, 0o700);
  return await system.files.withLock(lockFile(stateDir), fn);
}

/** Masquerades traffic from `addresses` (CIDRs) leaving their subnets, except to `exclude`. */
export async function addMasquerade(
  system: System,
  stateDir: string,
  att: { network: string; containerId: string; ifname: string },
  addresses: string[],
  exclude: string[],
): Promise<void> {
  const comment = await masqComment(att.network, att.containerId, att.ifname);
  const lines = [skeleton()];
  for (const address of addresses) {
    const cidr = parseCidr(address);
    if (!cidr) continue;
    const family = cidr.ip.family;
    const ip = address.slice(0, address.indexOf("/"));
    const skip = [
      formatCidr(networkOf(cidr)),
      MULTICAST[family],
      ...exclude.filter((e) => parseCidr(e)?.ip.family === family),
    ];
    lines.push(`add element inet ${TABLE} masq${family} { ${ip} comment "${comment}" }`);
    lines.push(
      `add element inet ${TABLE} nomasq${family} { ${
        skip.map((d) => `${ip} . ${d} comment "${comment}"`).join(", ")
      } }`,
    );
  }
  await locked(system, stateDir, () => Promise.resolve(system.kernel.nft(lines.join("\n"))));
}

/** An element from nft's JSON listing, back in the syntax `delete element` takes. */
function elementText(val: unknown): string {
  if (typeof val === "string" || typeof val === "number") return String(val);
  const v = val as Record<string, unknown>;
  if (v.concat) return (v.concat as unknown[]).map(elementText).join(" . ");
  if (v.prefix) {
    const p = v.prefix as { addr: string; len: number };
    return `${p.addr}/${p.len}`;
  }
  if (v.range) return (v.range as unknown[]).map(elementText).join("-");
  return JSON.stringify(val);
}

const MASQ_SETS = ["masq4", "nomasq4", "masq6", "nomasq6"];

interface NftSet {
  name: string;
  elem?: unknown[];
}

/**
 * Deletes the elements whose comment `doomed()` picks. When no pod is left to
 * masquerade, the chain and sets go too, and the table when nothing else of
 * cnichain's lives in it, so the last DEL leaves nftables as it found it.
 */
async function deleteWhere(
  system: System,
  stateDir: string,
  doomed: (comment: string) => boolean,
): Promise<void> {
  await locked(system, stateDir, () => {
    const listing = system.kernel.nftList(`list table inet ${TABLE}`);
    const sets = listing.map((i) => (i as { set?: NftSet }).set).filter((s): s is NftSet => !!s);
    const chains = listing.map((i) => (i as { chain?: { name: string } }).chain).filter((c) => !!c);
    const lines: string[] = [];
    let left = 0;
    for (const set of sets.filter((s) => MASQ_SETS.includes(s.name))) {
      const elems = (set.elem ?? []).map((e) =>
        (e as { elem?: { val: unknown; comment?: string } }).elem ?? { val: e }
      );
      const gone = elems.filter((e) => typeof e.comment === "string" && doomed(e.comment));
      left += elems.length - gone.length;
      if (gone.length) {
        lines.push(
          `delete element inet ${TABLE} ${set.name} { ${
            gone.map((e) => elementText(e.val)).join(", ")
          } }`,
        );
      }
    }
    if (left === 0 && sets.some((s) => MASQ_SETS.includes(s.name))) {
      const others = sets.some((s) => !MASQ_SETS.includes(s.name)) ||
        chains.some((c) => c!.name !== "masq");
      lines.length = 0;
      if (others) {
        lines.push(`delete chain inet ${TABLE} masq`);
        for (const name of MASQ_SETS) lines.push(`delete set inet ${TABLE} ${name}`);
      } else {
        lines.push(`delete table inet ${TABLE}`);
      }
    }
    if (lines.length) system.kernel.nft(lines.join("\n"));
    return Promise.resolve();
  });
}

/** Removes one attachment's masquerade elements; nothing there is success. */
export async function delMasquerade(
  system: System,
  stateDir: string,
  att: { network: string; containerId: string; ifname: string },
): Promise<void> {
  const comment = await masqComment(att.network, att.containerId, att.ifname);
  await deleteWhere(system, stateDir, (c) => c === comment);
}

/** Removes the masquerade elements of `network`'s attachments that are not in `valid`. */
export async function gcMasquerade(
  system: System,
  stateDir: string,
  network: string,
  valid: AttachmentRef[],
): Promise<void> {
  const tag = await networkTag(network);
  const keep = new Set(
    await Promise.all(valid.map((a) => masqComment(network, a.containerID, a.ifname))),
  );
  await deleteWhere(system, stateDir, (c) => c.startsWith(`${tag} `) && !keep.has(c));
}

/** Whether the attachment has its masquerade elements (for CHECK). */
export async function hasMasquerade(
  system: System,
  att: { network: string; containerId: string; ifname: string },
): Promise<boolean> {
  const comment = await masqComment(att.network, att.containerId, att.ifname);
  for (const set of ["masq4", "masq6"]) {
    for (const item of system.kernel.nftList(`list set inet ${TABLE} ${set}`)) {
      const elems = (item as { set?: { elem?: { elem?: { comment?: string } }[] } }).set?.elem ??
        [];
      if (elems.some((e) => e.elem?.comment === comment)) return true;
    }
  }
  return false;
}
