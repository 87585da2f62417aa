/**
 * A pod's policy plan as nftables commands (pure: plan in, text out). The
 * plan's rules become the pod's ingress and egress chains, in order, first
 * match deciding; peers chosen by selector are named sets of pod addresses,
 * so pods that join a selector later are covered without touching a rule.
 *
 *   pol_forward (hook forward): established/related accept,
 *     ip saddr vmap @pol_out4 -> po_<pod>: allowed flows return, denied drop
 *     ip daddr vmap @pol_in4  -> pi_<pod>: allowed flows accept, denied drop
 */
import type { Peer, Plan, PlanRule, PortRange } from "../../../policy-wasm/host.ts";
import { type Feature, TABLE } from "../../nft_state.ts";

const T = `inet ${TABLE}`;
export const POLICY_MAPS = ["pol_in4", "pol_in6", "pol_out4", "pol_out6"];
export const SELECTOR_SET = /^s[0-9a-f]+_[46]$/;

/** The chain, maps and rules every pod's policy hangs from; safe to repeat. */
function policySkeleton(): string[] {
  return [
    `add table ${T}`,
    ...POLICY_MAPS.map((m) =>
      `add map ${T} ${m} { type ipv${m.endsWith("4") ? 4 : 6}_addr : verdict; }`
    ),
    `add chain ${T} pol_forward { type filter hook forward priority filter; policy accept; }`,
    `flush chain ${T} pol_forward`,
    `add rule ${T} pol_forward ct state established,related accept`,
    // Neighbour discovery is not tracked by conntrack; without it an isolated pod cannot reach
    // anyone over IPv6 (ARP never passes these hooks, so IPv4 needs no such rule).
    `add rule ${T} pol_forward icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept`,
    `add rule ${T} pol_forward ip saddr vmap @pol_out4`,
    `add rule ${T} pol_forward ip6 saddr vmap @pol_out6`,
    `add rule ${T} pol_forward ip daddr vmap @pol_in4`,
    `add rule ${T} pol_forward ip6 daddr vmap @pol_in6`,
  ];
}

/**
 * The policy step as a user of cnichain's table: its skeleton is stamped and rewritten only when
 * it does not stand as this version writes it (nft_state.ts).
 */
export const POLICY: Feature = {
  name: "policy",
  chains: ["pol_forward"],
  sets: POLICY_MAPS,
  skeleton: policySkeleton,
};

export interface PodChains {
  ingress: string;
  egress: string;
}

function portMatch(p: PortRange): string {
  if (p.port === undefined) return `meta l4proto ${p.protocol}`;
  const end = p.endPort !== undefined && p.endPort !== p.port ? `-${p.endPort}` : "";
  return `meta l4proto ${p.protocol} th dport ${p.port}${end}`;
}

function peerMatches(peers: Peer[], family: 4 | 6, field: "saddr" | "daddr"): string[] {
  const ip = family === 4 ? "ip" : "ip6";
  if (peers.length === 0) return [`meta nfproto ipv${family}`];
  return peers.flatMap((peer) => {
    if ("set" in peer) return [`${ip} ${field} @${peer.set}_${family}`];
    if (peer.cidr.includes(":") !== (family === 6)) return [];
    const except = peer.except?.length ? ` ${ip} ${field} != { ${peer.except.join(", ")} }` : "";
    return [`${ip} ${field} ${peer.cidr}${except}`];
  });
}

function ruleLines(chain: string, rule: PlanRule, direction: "ingress" | "egress"): string[] {
  // Egress allows must let the packet go on to the receiver's ingress check, hence return.
  const verdict = rule.action === "deny" ? "drop" : direction === "egress" ? "return" : "accept";
  const field = direction === "ingress" ? "saddr" : "daddr";
  const ports = rule.ports.length ? rule.ports.map(portMatch) : [""];
  const comment = `${rule.policy} ${direction} rule ${rule.index}${
    rule.priority !== null ? ` priority ${rule.priority}` : ""
  }`;
  const lines: string[] = [];
  for (const family of [4, 6] as const) {
    for (const peer of peerMatches(rule.peers, family, field)) {
      for (const port of ports) {
        lines.push(
          `add rule ${T} ${chain} ${peer}${
            port ? ` ${port}` : ""
          } counter ${verdict} comment "${comment}"`,
        );
      }
    }
  }
  return lines;
}

/** The pod's two chains, written from scratch (flushed first), and its map and set elements. */
export function podLines(
  plan: Plan,
  chains: PodChains,
  addresses: string[],
  tag: string,
): string[] {
  const lines = [...new Set([...Object.keys(plan.sets), ...plan.memberOf])].flatMap((s) => [
    `add set ${T} ${s}_4 { type ipv4_addr; }`,
    `add set ${T} ${s}_6 { type ipv6_addr; }`,
  ]);
  for (
    const [direction, chain] of [["ingress", chains.ingress], ["egress", chains.egress]] as const
  ) {
    lines.push(`add chain ${T} ${chain}`, `flush chain ${T} ${chain}`);
    for (const rule of plan[direction].rules) lines.push(...ruleLines(chain, rule, direction));
    if (plan[direction].isolated) {
      lines.push(
        `add rule ${T} ${chain} counter drop comment "isolated for ${direction}: no rule allows the flow"`,
      );
    }
  }
  for (const address of addresses) {
    const family = address.includes(":") ? 6 : 4;
    lines.push(
      `add element ${T} pol_in${family} { ${address} comment "${tag}" : jump ${chains.ingress} }`,
    );
    lines.push(
      `add element ${T} pol_out${family} { ${address} comment "${tag}" : jump ${chains.egress} }`,
    );
    for (const s of plan.memberOf) {
      lines.push(`add element ${T} ${s}_${family} { ${address} comment "${tag}" }`);
    }
  }
  return lines;
}
