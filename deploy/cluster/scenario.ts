/**
 * What the cluster demo and its test run: which pods go where, the one
 * policy all nodes share, and the flows that prove the set-up, each checked
 * with a real TCP connection whose server says which source address it saw.
 *
 * Together the flows show `ipMasqExclude` working both ways (pod to pod
 * across nodes keeps the pod's address; pod to outside leaves with the
 * node's) and policy deciding across nodes by address: the policy step on
 * node 2 only sees a packet's source address, so an ipBlock on node 1's pod
 * CIDR is how "only from node 1" is said, and it works because nothing in
 * the cluster CIDR is masqueraded.
 */
import { probeOne, target } from "../../test/net_probe.ts";
import { type Cluster, OUTSIDE_IP, type PodSpec } from "./cluster.ts";

/** An allowed flow is retried this long: its first packets may wait for ARP on three hops. */
const REACH_WITHIN_MS = 3000;
/** How long a flow that must be blocked waits for an answer (a dropped SYN gets none). */
const BLOCKED_TIMEOUT_MS = 1000;
export const PORT = 80;

/** Two pods per node, all in namespace `shop`. */
export const PODS: PodSpec[] = [
  { node: 1, namespace: "shop", name: "web-1", labels: { app: "web" } },
  { node: 1, namespace: "shop", name: "client-1", labels: { app: "client" } },
  { node: 2, namespace: "shop", name: "db-2", labels: { app: "db" } },
  { node: 2, namespace: "shop", name: "web-2", labels: { app: "web" } },
  { node: 3, namespace: "shop", name: "web-3", labels: { app: "web" } },
  { node: 3, namespace: "shop", name: "client-3", labels: { app: "client" } },
];

/** The policy set every node reads: the db pods take TCP 80 from node 1's pods only. */
export const POLICIES: unknown[] = [{
  name: "db-from-node-1",
  namespace: "shop",
  podSelector: { matchLabels: { app: "db" } },
  policyTypes: ["Ingress"],
  ingress: [{
    from: [{ ipBlock: { cidr: "10.244.1.0/24" } }],
    ports: [{ protocol: "TCP", port: PORT }],
  }],
}];

/** The policy in one line, for the demo. */
export const POLICY_SUMMARY =
  "shop/db-from-node-1: pods app=db take TCP 80 only from ipBlock 10.244.1.0/24";

/** One TCP connection to check: who connects to whom, and what must happen. */
export interface Flow {
  /** A pod's name. */
  from: string;
  /** A pod's name, or `outside` (the server on the underlay). */
  to: string;
  expect: "allowed" | "blocked";
  /** Whom an allowed flow's server must see as the source: the pod itself, or its node. */
  source?: "pod" | "node";
  why: string;
}

export const FLOWS: Flow[] = [
  {
    from: "web-1",
    to: "web-2",
    expect: "allowed",
    source: "pod",
    why: "across nodes, in the cluster CIDR: not masqueraded",
  },
  {
    from: "web-1",
    to: "outside",
    expect: "allowed",
    source: "node",
    why: "outside the cluster CIDR: masqueraded to node 1",
  },
  {
    from: "web-3",
    to: "outside",
    expect: "allowed",
    source: "node",
    why: "outside the cluster CIDR: masqueraded to node 3",
  },
  {
    from: "client-1",
    to: "db-2",
    expect: "allowed",
    source: "pod",
    why: "node 1's pod CIDR is in the db policy's ipBlock",
  },
  {
    from: "client-3",
    to: "db-2",
    expect: "blocked",
    why: "node 3's pod CIDR is not in the ipBlock",
  },
  {
    from: "client-3",
    to: "web-2",
    expect: "allowed",
    source: "pod",
    why: "node 3 reaches node 2: the block above is the policy's",
  },
  {
    from: "web-2",
    to: "db-2",
    expect: "blocked",
    why: "same node and bridge: bridge netfilter brings it to the policy",
  },
];

/** What a flow did, and whether that is what it should have done. */
export interface FlowResult {
  flow: Flow;
  /** The address connected to. */
  address: string;
  /** `allowed`, `blocked` (timed out) or what went wrong instead. */
  outcome: string;
  /** The source address the server saw. */
  seen?: string;
  /** The source address it should have seen. */
  wanted?: string;
  ok: boolean;
}

/** Connects for every flow at once (servers must be running) and reports each. */
export function checkFlows(cluster: Cluster, flows: Flow[] = FLOWS): Promise<FlowResult[]> {
  return Promise.all(flows.map((f) => checkFlow(cluster, f)));
}

async function checkFlow(cluster: Cluster, flow: Flow): Promise<FlowResult> {
  const pod = (name: string) => {
    const p = cluster.pods.find((p) => p.name === name);
    if (!p) throw new Error(`flow ${flow.from} -> ${flow.to}: no pod ${name} is attached`);
    return p;
  };
  const from = pod(flow.from);
  const address = flow.to === "outside" ? OUTSIDE_IP : pod(flow.to).ip;
  const spec = target("tcp", address, PORT);
  let r = await probeOne(from.netns, spec, BLOCKED_TIMEOUT_MS);
  if (flow.expect === "allowed") {
    const deadline = Date.now() + REACH_WITHIN_MS;
    while (!r.ok && Date.now() < deadline) r = await probeOne(from.netns, spec, 1000);
  }
  if (!r.ok) {
    const outcome = r.error === "timeout" ? "blocked" : `no answer (${r.error})`;
    return { flow, address, outcome, ok: outcome === flow.expect };
  }
  const wanted = flow.source === "node" ? cluster.node(from.node).underlayIp : from.ip;
  const m = /^(\S+) tcp from (\S+)$/.exec(r.reply ?? "");
  if (!m || m[1] !== flow.to) {
    return { flow, address, outcome: `a wrong answer ${JSON.stringify(r.reply)}`, ok: false };
  }
  const seen = m[2];
  return {
    flow,
    address,
    outcome: "allowed",
    seen,
    wanted,
    ok: flow.expect === "allowed" && seen === wanted,
  };
}

/** One line for a flow's result: `ok   web-1 (10.244.1.2) -> web-2 10.244.2.3:80  allowed, ...`. */
export function describeFlow(cluster: Cluster, r: FlowResult): string {
  const from = cluster.pods.find((p) => p.name === r.flow.from);
  const node = cluster.nodes.find((n) => n.index === from?.node);
  const who = r.seen === from?.ip ? " (the pod)" : r.seen === node?.underlayIp ? " (its node)" : "";
  const seen = r.seen ? `, source seen ${r.seen}${who}` : "";
  const wanted = r.wanted && r.wanted !== r.seen ? ` from ${r.wanted}` : "";
  const expected = r.ok ? "" : ` -- EXPECTED ${r.flow.expect}${wanted}`;
  return `${
    r.ok ? "ok  " : "FAIL"
  } ${r.flow.from} (${from?.ip}) -> ${r.flow.to} ${r.address}:${PORT}  ${r.outcome}${seen}${expected}`;
}
