import assert from "node:assert/strict";
import { podLines } from "./rules.ts";
import type { Plan } from "../../../policy-wasm/host.ts";

const chains = { ingress: "pi_1", egress: "po_1" };

Deno.test("podLines() turns a plan into the pod's chains, in the plan's order", async (t) => {
  const plan: Plan = {
    ingress: {
      isolated: true,
      rules: [
        {
          action: "deny",
          policy: "prod/block",
          index: 0,
          priority: 10,
          peers: [{ cidr: "10.9.0.0/16", except: ["10.9.1.0/24"] }],
          ports: [],
        },
        {
          action: "allow",
          policy: "prod/web",
          index: 1,
          priority: null,
          peers: [{ set: "sabc" }],
          ports: [{ protocol: "tcp", port: 80, endPort: 90 }, { protocol: "udp" }],
        },
      ],
    },
    egress: {
      isolated: false,
      rules: [{
        action: "allow",
        policy: "prod/out",
        index: 0,
        priority: null,
        peers: [],
        ports: [],
      }],
    },
    memberOf: ["sabc", "sdef"],
    sets: { sabc: "pods with app=web" },
  };
  const lines = podLines(plan, chains, ["10.1.0.5", "fd00::5"], "net c1 eth0");
  const ingress = lines.filter((l) => l.startsWith("add rule inet cnichain pi_1"));
  await t.step(
    "a deny with an except, dropped first; then the allow per family, peer and port; then isolation",
    () => {
      assert.deepEqual(ingress, [
        'add rule inet cnichain pi_1 ip saddr 10.9.0.0/16 ip saddr != { 10.9.1.0/24 } counter drop comment "prod/block ingress rule 0 priority 10"',
        'add rule inet cnichain pi_1 ip saddr @sabc_4 meta l4proto tcp th dport 80-90 counter accept comment "prod/web ingress rule 1"',
        'add rule inet cnichain pi_1 ip saddr @sabc_4 meta l4proto udp counter accept comment "prod/web ingress rule 1"',
        'add rule inet cnichain pi_1 ip6 saddr @sabc_6 meta l4proto tcp th dport 80-90 counter accept comment "prod/web ingress rule 1"',
        'add rule inet cnichain pi_1 ip6 saddr @sabc_6 meta l4proto udp counter accept comment "prod/web ingress rule 1"',
        'add rule inet cnichain pi_1 counter drop comment "isolated for ingress: no rule allows the flow"',
      ]);
    },
  );
  await t.step(
    "egress allows return (the receiver's ingress still decides) and match any peer",
    () => {
      assert.deepEqual(lines.filter((l) => l.startsWith("add rule inet cnichain po_1")), [
        'add rule inet cnichain po_1 meta nfproto ipv4 counter return comment "prod/out egress rule 0"',
        'add rule inet cnichain po_1 meta nfproto ipv6 counter return comment "prod/out egress rule 0"',
      ]);
    },
  );
  await t.step("the pod is steered to its chains and joins the sets it matches, per family", () => {
    assert.ok(
      lines.includes(
        'add element inet cnichain pol_in4 { 10.1.0.5 comment "net c1 eth0" : jump pi_1 }',
      ),
    );
    assert.ok(
      lines.includes(
        'add element inet cnichain pol_out6 { fd00::5 comment "net c1 eth0" : jump po_1 }',
      ),
    );
    assert.ok(
      lines.includes('add element inet cnichain sdef_4 { 10.1.0.5 comment "net c1 eth0" }'),
    );
    assert.ok(lines.includes("add set inet cnichain sdef_6 { type ipv6_addr; }"));
  });
  await t.step("the chains are flushed before they are written, so re-installing replaces", () => {
    assert.ok(lines.indexOf("flush chain inet cnichain pi_1") < lines.indexOf(ingress[0]));
  });
});
