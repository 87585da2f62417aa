/**
 * The policy engine's speed: how long compiling one pod's plan takes against
 * 1,000 policies, and how many verdicts per second it answers. In-process
 * calls into policy.wasm, medians over repeated runs.
 *
 *   deno run -A bench/policy_bench.ts [--policies 1000] [--json out.json]
 */
import { parseArgs } from "node:util";
import { PolicyEngine } from "../policy-wasm/host.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { policies: { type: "string", default: "1000" }, json: { type: "string" } },
});
const count = Number(values.policies);

/** Policies of the shapes clusters have: per-app allows by label, namespace and port, some ipBlocks. */
function policies(n: number): unknown[] {
  return Array.from({ length: n }, (_, i) => ({
    name: `p${i}`,
    namespace: `ns${i % 20}`,
    podSelector: { matchLabels: { app: `app${i % 50}` } },
    policyTypes: i % 3 === 0 ? ["Ingress", "Egress"] : ["Ingress"],
    ingress: [{
      from: [
        { podSelector: { matchLabels: { role: `r${i % 7}` } } },
        {
          namespaceSelector: {
            matchLabels: { "kubernetes.io/metadata.name": `ns${(i + 1) % 20}` },
          },
        },
        ...(i % 5 === 0
          ? [{ ipBlock: { cidr: "10.0.0.0/8", except: [`10.${i % 250}.0.0/16`] } }]
          : []),
      ],
      ports: [{ protocol: "TCP", port: 8000 + (i % 100), endPort: 8010 + (i % 100) }],
    }],
    ...(i % 3 === 0
      ? { egress: [{ to: [{ podSelector: {} }], ports: [{ protocol: "UDP", port: 53 }] }] }
      : {}),
  }));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
}

const list = policies(count);
// What one pod's ADD pays: a fresh engine (each plugin process has one) loading the list and planning.
const coldMs: number[] = [];
for (let i = 0; i < 5; i++) {
  const fresh = new PolicyEngine();
  const began = performance.now();
  fresh.plan(policies(count), {
    namespace: "ns1",
    name: "cold",
    labels: { app: "app1" },
    namespaceLabels: { "kubernetes.io/metadata.name": "ns1" },
    addresses: ["10.9.9.9"],
  });
  coldMs.push(performance.now() - began);
}
const engine = new PolicyEngine();
const pod = (i: number) => ({
  namespace: `ns${i % 20}`,
  name: `pod${i}`,
  labels: { app: `app${i % 50}`, role: `r${i % 7}` },
  namespaceLabels: { "kubernetes.io/metadata.name": `ns${i % 20}` },
  addresses: [`10.1.${Math.floor(i / 250)}.${(i % 250) + 1}`],
});

const planMs: number[] = [];
let rules = 0;
for (let i = 0; i < 30; i++) {
  const began = performance.now();
  const plan = engine.plan(list, pod(i));
  planMs.push(performance.now() - began);
  rules = plan.ingress.rules.length + plan.egress.rules.length;
}
const verdicts = 2000;
const began = performance.now();
for (let i = 0; i < verdicts; i++) {
  engine.verdict(list, pod(i), pod(i + 1), 8000 + (i % 120), "TCP");
}
const perSecond = verdicts / ((performance.now() - began) / 1000);

const report = {
  policies: count,
  coldPlanMedianMs: median(coldMs),
  planMedianMs: median(planMs),
  planRules: rules,
  verdictsPerSecond: Math.round(perSecond),
};
console.log(`policy engine, ${count} policies:`);
console.log(
  `  plan in a fresh engine (parse and check the policies, then plan; what one ADD pays): median ${
    report.coldPlanMedianMs.toFixed(1)
  } ms`,
);
console.log(
  `  plan for one more pod, policies already loaded: median ${
    report.planMedianMs.toFixed(2)
  } ms (${rules} rules)`,
);
console.log(`  verdicts, policies loaded once: ${report.verdictsPerSecond} per second`);
if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2));
