/**
 * The policy step in the kernel, end to end: a `cnichain` chain of bridge
 * (host-local) and policy, run per pod as a runtime runs it (CNI_ARGS names
 * the pod, `args.cni.labels` carries its labels), TCP and UDP servers in the
 * pods (test/net_probe.ts), and real pod-to-pod traffic through the
 * bridge, which bridge netfilter hands to the forward hook where the policy
 * chains are.
 *
 * Every flow a test looks at is checked twice: the kernel's answer (a reply,
 * or a probe that times out because the SYN or datagram was dropped) and
 * `cnichain policy explain` for the same flow, whose verdict must be the
 * expected one too. So every case also proves that explain agrees with what
 * the kernel does. Traffic from the host netns to a pod leaves through the
 * output hook and is not filtered, so the flows are between pods, or come
 * from a netns standing for a host beyond the node, routed through the host.
 *
 * Only cnichain has the policy step, and the tests run at cniVersion 1.1.0
 * only: the policy step does not depend on the spec version, and a second
 * round would double the file's runtime.
 */
import assert from "node:assert/strict";
import { BUNDLE, listTree, type RunOutput, runProgram } from "../../../test/helpers.ts";
import {
  assertOk,
  bare,
  ipIn,
  kernelTest,
  type Lab,
  link,
  nftRuleset,
  nftRulesetText,
  type Pod,
  type Result,
  setSysctl,
} from "../../../test/netns.ts";
import { probe, type ProbeResult, serve, type Server, target } from "../../../test/net_probe.ts";

const IP = "/usr/sbin/ip";
const NETWORK = "pol";
const TABLE = "cnichain";
const NS_A = "ns-a";
const NS_B = "ns-b";

/** Every pod serves these, so that a probe that gets no answer was dropped, not refused. */
const TCP_PORTS = [80, 8000, 8005, 8010, 8011];
const UDP_PORTS = [8005];

/** An allowed flow is retried this long: the first packets may wait for neighbour discovery. */
const REACH_WITHIN_MS = 3000;
/** How long a flow that must be blocked waits for an answer. */
const BLOCKED_TIMEOUT_MS = 700;
/** How many `policy explain` runs go at once. */
const EXPLAIN_PARALLEL = 4;

/** The policy step's objects in cnichain's table (the pod chains, maps and selector sets). */
const POLICY_OBJECT = /^(pol_|pi_|po_|s[0-9a-f]+_[46]$)/;

type Labels = Record<string, string>;

/** A pod as a runtime sees it: namespace, name, labels. */
interface PodSpec {
  ns: string;
  name: string;
  labels: Labels;
}

/** A pod attached by a successful ADD, its servers running. */
interface Member extends PodSpec {
  pod: Pod;
  ip: string;
  /** Its IPv6 address, on a dual-stack network. */
  ip6?: string;
  result: Result;
}

/** A host outside the node, whose traffic to the pods is routed through the host netns. */
interface Outside {
  netns: string;
  ip: string;
}

/** `ns/name`, as explain takes it and the servers answer. */
function keyOf(p: PodSpec): string {
  return `${p.ns}/${p.name}`;
}

function spec(ns: string, name: string, labels: Labels = {}): PodSpec {
  return { ns, name, labels };
}

// ------------------------------------------------------------- policies

/** `{"matchLabels": ...}`. */
function match(labels: Labels): Record<string, unknown> {
  return { matchLabels: labels };
}

/** A namespace selector for one namespace by its only label. */
function nsNamed(ns: string): Record<string, unknown> {
  return { namespaceSelector: match({ "kubernetes.io/metadata.name": ns }) };
}

function tcpPort(port: number, endPort?: number): Record<string, unknown> {
  return { protocol: "TCP", port, ...(endPort !== undefined ? { endPort } : {}) };
}

/** A policy in the flat form, ingress only unless `policyTypes` says otherwise. */
function policy(
  namespace: string,
  name: string,
  podSelector: Labels,
  body: Record<string, unknown>,
): Record<string, unknown> {
  return {
    name,
    namespace,
    podSelector: match(podSelector),
    policyTypes: ["Ingress"],
    ...body,
  };
}

// ------------------------------------------------------------- the network

/** A bridge + policy chain whose pods are attached by {@linkcode PolicyNet.add}. */
class PolicyNet {
  readonly members = new Map<string, Member>();
  readonly outside = new Map<string, Outside>();
  /** More fields for the bridge step. */
  bridgeExtra: Record<string, unknown> = {};
  readonly #servers: Server[] = [];

  constructor(
    readonly lab: Lab,
    readonly version: string,
    /** `10.x.0.0/24`. */
    readonly subnet: string,
    /** The policy step's source of policies: `{policies}` or `{policyFile}`. */
    readonly source: Record<string, unknown>,
    /** An IPv6 subnet too, for a dual-stack network. */
    readonly subnet6?: string,
  ) {}

  /** The conflist `policy explain` and `policy sync` read (the chain as its one entry). */
  get conflist(): string {
    return `${this.lab.dir}/${NETWORK}.conflist`;
  }

  /** The chain entry as a runtime sends it for a pod with `labels` (with the policies of `source`). */
  chain(labels: Labels = {}, source = this.source): Record<string, unknown> {
    const entries = Object.entries(labels).map(([key, value]) => ({ key, value }));
    return this.lab.netconf(this.version, {
      type: "cnichain",
      ...(entries.length ? { args: { cni: { labels: entries } } } : {}),
      plugins: [
        {
          type: "bridge",
          bridge: "cni0",
          isGateway: true,
          ...this.bridgeExtra,
          ipam: this.lab.hostLocal([
            [{ subnet: this.subnet }],
            ...(this.subnet6 ? [[{ subnet: this.subnet6 }]] : []),
          ]),
        },
        { type: "policy", ...source },
      ],
    }, NETWORK);
  }

  async writeConflist(): Promise<void> {
    const { cniVersion, name, ...entry } = this.chain();
    await Deno.writeTextFile(this.conflist, JSON.stringify({ cniVersion, name, plugins: [entry] }));
  }

  #env(p: PodSpec): Record<string, string> {
    return { CNI_ARGS: `K8S_POD_NAMESPACE=${p.ns};K8S_POD_NAME=${p.name}` };
  }

  /** ADD of a new pod, then its servers on every test port. */
  async add(p: PodSpec): Promise<Member> {
    if (this.members.size === 0) await this.writeConflist();
    const pod = await this.lab.addPod(`${p.ns}-${p.name}`);
    const out = await this.lab.cni("ADD", this.chain(p.labels), { pod, env: this.#env(p) });
    const result = assertOk(out, `ADD of ${keyOf(p)}`) as unknown as Result;
    const ips = (result.ips ?? []).map((i) => bare(i.address));
    const ip = ips.find((a) => !a.includes(":"));
    assert.ok(ip, `an IPv4 address for ${keyOf(p)} in ${JSON.stringify(result)}`);
    const ip6 = this.subnet6 ? ips.find((a) => a.includes(":")) : undefined;
    if (this.subnet6) {
      assert.ok(ip6, `an IPv6 address for ${keyOf(p)} in ${JSON.stringify(result)}`);
    }
    const member: Member = { ...p, pod, ip, ...(ip6 ? { ip6 } : {}), result };
    this.members.set(keyOf(p), member);
    this.#servers.push(
      await serve(
        pod.name,
        keyOf(p),
        [ip, ...(ip6 ? [ip6] : [])].flatMap((address) => [
          ...TCP_PORTS.map((port) => target("tcp", address, port)),
          ...UDP_PORTS.map((port) => target("udp", address, port)),
        ]),
      ),
    );
    return member;
  }

  /** ADD of several pods, in order (host-local hands out .2, .3, ... in that order). */
  async addAll(specs: PodSpec[]): Promise<Member[]> {
    const out: Member[] = [];
    for (const p of specs) out.push(await this.add(p));
    return out;
  }

  member(key: string): Member {
    const m = this.members.get(key);
    assert.ok(m, `pod ${key} is attached`);
    return m;
  }

  /**
   * A netns `key` standing for a host beyond the node: linked to the host
   * netns by a veth, `address`/24 on its side and the first address of that
   * /24 on the host's, routed to the pod subnet through the host, which
   * forwards. The pods need a default route back (`isDefaultGateway`).
   */
  async addOutside(key: string, address: string): Promise<Outside> {
    const pod = await this.lab.addPod(key);
    const hostSide = address.replace(/\.\d+$/, ".1");
    const link = `v${this.lab.prefix}`;
    await ipIn(
      this.lab.host,
      "link",
      "add",
      link,
      "type",
      "veth",
      "peer",
      "eth0",
      "netns",
      pod.name,
    );
    await ipIn(this.lab.host, "addr", "add", `${hostSide}/24`, "dev", link);
    await ipIn(this.lab.host, "link", "set", link, "up");
    await ipIn(pod.name, "addr", "add", `${address}/24`, "dev", "eth0");
    await ipIn(pod.name, "link", "set", "eth0", "up");
    await ipIn(pod.name, "route", "add", this.subnet, "via", hostSide);
    await setSysctl(this.lab.host, "net/ipv4/ip_forward", "1");
    const outside = { netns: pod.name, ip: address };
    this.outside.set(key, outside);
    return outside;
  }

  /** DEL of a pod, as a runtime does it (no prevResult: the chain uses its cached result). */
  del(key: string, source = this.source): Promise<RunOutput> {
    const m = this.member(key);
    return this.lab.cni("DEL", this.chain(m.labels, source), { pod: m.pod, env: this.#env(m) });
  }

  /** `cnichain policy <args> --config <conflist>` inside the host netns. */
  cli(...args: string[]): Promise<RunOutput> {
    return runProgram(IP, {
      args: ["netns", "exec", this.lab.host, BUNDLE, "policy", ...args, "--config", this.conflist],
    });
  }

  serverErrors(): string {
    return this.#servers.map((s) => s.stderr().trim()).filter(Boolean).join("\n");
  }

  async close(): Promise<void> {
    await Promise.all(this.#servers.map((s) => s.close()));
  }
}

// ------------------------------------------------------------- flows

type Verdict = "allow" | "deny";

/** One flow and what policy should make of it. */
interface Flow {
  from: string;
  to: string;
  port: number;
  proto?: "tcp" | "udp";
  expect: Verdict;
  /** Over IPv6 (a dual-stack network). */
  v6?: boolean;
  /** Name the ends by address in `policy explain`, not by `ns/name`. */
  byAddress?: boolean;
}

function allow(from: string, to: string, port = 80, extra: Partial<Flow> = {}): Flow {
  return { from, to, port, expect: "allow", ...extra };
}

function deny(from: string, to: string, port = 80, extra: Partial<Flow> = {}): Flow {
  return { from, to, port, expect: "deny", ...extra };
}

function flowName(f: Flow): string {
  return `${f.from} -> ${f.to} ${f.port}/${f.proto ?? "tcp"}${f.v6 ? " over IPv6" : ""}`;
}

/** The address of pod (or outside host) `key` that flow `f` uses. */
function addressIn(net: PolicyNet, f: Flow, key: string): string {
  const outside = net.outside.get(key);
  if (outside) return outside.ip;
  const m = net.member(key);
  if (!f.v6) return m.ip;
  assert.ok(m.ip6, `${key} has an IPv6 address`);
  return m.ip6;
}

/** What the kernel did with a flow: a reply (from the right pod, unNATed) or a drop. */
async function kernelVerdicts(net: PolicyNet, flows: Flow[]): Promise<string[]> {
  const spec = (f: Flow) => target(f.proto ?? "tcp", addressIn(net, f, f.to), f.port);
  const seen = new Map<Flow, ProbeResult>();
  const sources = [...new Set(flows.map((f) => f.from))];
  await Promise.all(sources.flatMap((from) => {
    const netns = net.outside.get(from)?.netns ?? net.member(from).pod.name;
    const mine = flows.filter((f) => f.from === from);
    const allowed = mine.filter((f) => f.expect === "allow");
    const blocked = mine.filter((f) => f.expect === "deny");
    return [
      (async () => {
        // Expected answers are retried for a while; a flow that is wrongly dropped shows as it is.
        const deadline = Date.now() + REACH_WITHIN_MS;
        let pending = allowed;
        while (pending.length) {
          const results = await probe(netns, pending.map(spec), 1000);
          pending.forEach((f, i) => seen.set(f, results[i]));
          pending = pending.filter((_, i) => !results[i].ok);
          if (Date.now() >= deadline) break;
        }
      })(),
      (async () => {
        if (!blocked.length) return;
        const results = await probe(netns, blocked.map(spec), BLOCKED_TIMEOUT_MS);
        blocked.forEach((f, i) => seen.set(f, results[i]));
      })(),
    ];
  }));
  return flows.map((f) => {
    const r = seen.get(f)!;
    if (r.ok) {
      const want = `${f.to} ${f.proto ?? "tcp"} from ${addressIn(net, f, f.from)}`;
      return r.reply === want ? "allow" : `a wrong answer ${JSON.stringify(r.reply)}`;
    }
    return r.error === "timeout" ? "deny" : `no answer (${r.error})`;
  });
}

/** What `policy explain` says of a flow (its exit code must agree with its JSON). */
async function explainVerdict(net: PolicyNet, f: Flow): Promise<{ verdict: string; why: string }> {
  const end = (key: string) => f.byAddress || net.outside.has(key) ? addressIn(net, f, key) : key;
  const out = await net.cli(
    "explain",
    "--from",
    end(f.from),
    "--to",
    end(f.to),
    "--port",
    `${f.port}/${f.proto ?? "tcp"}`,
    ...(f.v6 ? ["--family", "6"] : []),
    "--json",
  );
  const v = out.json as { verdict?: string; egress?: unknown; ingress?: unknown } | undefined;
  if (!v || (v.verdict !== "allow" && v.verdict !== "deny")) {
    return { verdict: `no verdict (exit ${out.code})`, why: `${out.stdout}${out.stderr}`.trim() };
  }
  const code = v.verdict === "allow" ? 0 : 1;
  if (out.code !== code) {
    return { verdict: `${v.verdict} but exit ${out.code}`, why: out.stdout };
  }
  return { verdict: v.verdict, why: JSON.stringify({ egress: v.egress, ingress: v.ingress }) };
}

async function pooled<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * Asserts that every flow gets through or is dropped as expected, and that
 * `policy explain` gives the same verdict for it; lists every flow that
 * differs.
 */
async function assertFlows(net: PolicyNet, flows: Flow[], what: string): Promise<void> {
  const [kernel, explained] = await Promise.all([
    kernelVerdicts(net, flows),
    pooled(flows, EXPLAIN_PARALLEL, (f) => explainVerdict(net, f)),
  ]);
  const wrong = flows.flatMap((f, i) =>
    kernel[i] === f.expect && explained[i].verdict === f.expect ? [] : [
      `${flowName(f)}: expected ${f.expect}, kernel: ${kernel[i]}, explain: ${
        explained[i].verdict
      } ${explained[i].why}`,
    ]
  );
  if (wrong.length) {
    assert.fail(`${what}: flows that differ from the expectation:\n${wrong.join("\n")}`);
  }
}

// ------------------------------------------------------------- nftables and state

interface NftObject {
  kind: string;
  name: string;
  elem: unknown[];
}

/** The policy step's chains, sets and maps in cnichain's table. */
async function policyObjects(lab: Lab): Promise<NftObject[]> {
  const out: NftObject[] = [];
  for (const o of await nftRuleset(lab.host)) {
    const [kind, body] = Object.entries(o)[0] as [string, Record<string, unknown>];
    if (body.family !== "inet" || (body.table ?? body.name) !== TABLE) continue;
    if (kind !== "chain" && kind !== "set" && kind !== "map") continue;
    if (!POLICY_OBJECT.test(String(body.name))) continue;
    out.push({ kind, name: String(body.name), elem: (body.elem as unknown[] | undefined) ?? [] });
  }
  return out;
}

/** The registry's per-pod records (`stateDir/policy/pods/`). */
async function registry(lab: Lab): Promise<string[]> {
  return await listTree(`${lab.stateDir}/policy/pods`);
}

// ------------------------------------------------------------- the test frame

interface Ctx {
  lab: Lab;
  /** Makes the test's network; its servers stop however the test ends. */
  net(subnet: string, source: Record<string, unknown>, subnet6?: string): PolicyNet;
}

/**
 * A kernel test of the policy step (cnichain only, cniVersion 1.1.0) whose
 * servers stop however it ends, and whose failure shows the host netns's
 * ruleset.
 */
function policyTest(name: string, fn: (ctx: Ctx) => Promise<void>): void {
  kernelTest(`policy: ${name}`, async (lab, v) => {
    const nets: PolicyNet[] = [];
    const ctx: Ctx = {
      lab,
      net: (subnet, source, subnet6) => {
        const net = new PolicyNet(lab, v, subnet, source, subnet6);
        nets.push(net);
        return net;
      },
    };
    try {
      await fn(ctx);
    } catch (err) {
      const servers = nets.map((n) => n.serverErrors()).filter(Boolean).join("\n");
      const extra = `\n--- nft list ruleset in the host netns ${lab.host}:\n${await nftRulesetText(
        lab.host,
      )}${servers ? `\n--- server stderr:\n${servers}` : ""}`;
      if (err instanceof Error) {
        err.message += extra;
        if (err.stack) err.stack += extra;
      }
      throw err;
    } finally {
      await Promise.all(nets.map((n) => n.close()));
    }
  }, { only: "cnichain", versions: ["1.1.0"] });
}

// ------------------------------------------------------------- the tests

const A_WEB = keyOf(spec(NS_A, "web"));
const A_CLIENT = keyOf(spec(NS_A, "client"));
const A_OTHER = keyOf(spec(NS_A, "other"));
const B_CLIENT = keyOf(spec(NS_B, "client"));
const B_OTHER = keyOf(spec(NS_B, "other"));

policyTest("with no policy every pod reaches every other pod", async ({ net: make }) => {
  const net = make("10.60.0.0/24", { policies: [] });
  await net.addAll([
    spec(NS_A, "web", { app: "web" }),
    spec(NS_A, "client", { app: "client" }),
    spec(NS_B, "client", { app: "client" }),
    spec(NS_B, "other", { app: "other" }),
  ]);
  const keys = [...net.members.keys()];
  const flows = keys.flatMap((from) =>
    keys.filter((to) => to !== from).map((to) => allow(from, to))
  );
  flows.push(allow(A_CLIENT, A_WEB, 8011), allow(B_OTHER, A_WEB, 8005, { proto: "udp" }));
  // Nothing is blocked: every pair, TCP and UDP.
  await assertFlows(net, flows, "no policy");
});

policyTest(
  "an ingress policy with no rules for all pods of ns-a blocks every flow into ns-a only",
  async ({ net: make }) => {
    const net = make("10.61.0.0/24", {
      policies: [policy(NS_A, "default-deny", {}, {})],
    });
    await net.addAll([
      spec(NS_A, "web", { app: "web" }),
      spec(NS_A, "client", { app: "client" }),
      spec(NS_B, "client", { app: "client" }),
      spec(NS_B, "other", { app: "other" }),
    ]);
    await assertFlows(net, [
      deny(A_CLIENT, A_WEB),
      deny(A_CLIENT, A_WEB, 8005, { proto: "udp" }),
      deny(B_CLIENT, A_WEB),
      deny(B_OTHER, A_CLIENT, 8011),
      // Egress of ns-a is not restricted, nor is ns-b's ingress.
      allow(A_WEB, B_OTHER),
      allow(A_CLIENT, B_CLIENT, 8005, { proto: "udp" }),
      allow(B_OTHER, B_CLIENT),
    ], "default deny in ns-a");
  },
);

policyTest(
  "a podSelector peer lets in the labelled pods of the policy's namespace only",
  async ({ net: make }) => {
    const net = make("10.62.0.0/24", {
      policies: [
        policy(NS_A, "default-deny", {}, {}),
        policy(NS_A, "web-from-clients", { app: "web" }, {
          ingress: [{ from: [{ podSelector: match({ app: "client" }) }] }],
        }),
      ],
    });
    await net.addAll([
      spec(NS_A, "web", { app: "web" }),
      spec(NS_A, "client", { app: "client" }),
      spec(NS_A, "other", { app: "other" }),
      spec(NS_B, "client", { app: "client" }),
    ]);
    await assertFlows(net, [
      allow(A_CLIENT, A_WEB),
      allow(A_CLIENT, A_WEB, 8011),
      deny(A_OTHER, A_WEB),
      // A podSelector alone selects in the policy's own namespace: ns-b's client is not one.
      deny(B_CLIENT, A_WEB),
      // The default deny still holds for the pods the label policy does not select.
      deny(A_WEB, A_CLIENT),
      deny(A_CLIENT, A_OTHER),
      allow(A_CLIENT, B_CLIENT),
    ], "allow from app=client");
  },
);

policyTest(
  "replicas take their plan from the engine memo and are held to it like the first",
  async ({ lab, net: make }) => {
    const net = make("10.76.0.0/24", {
      policies: [
        policy(NS_A, "web-from-clients", { app: "web" }, {
          ingress: [{ from: [{ podSelector: match({ app: "client" }) }] }],
        }),
      ],
    });
    await net.addAll([
      spec(NS_A, "web", { app: "web" }),
      spec(NS_A, "web-2", { app: "web" }),
      spec(NS_A, "web-3", { app: "web" }),
      spec(NS_A, "client", { app: "client" }),
      spec(NS_A, "other", { app: "other" }),
    ]);
    // One entry for the valid policies and one plan per label set (web, client, other): the web
    // replicas share theirs.
    const memo = await listTree(`${lab.stateDir}/policy/engine`);
    assert.equal(memo.length, 4, memo.join(" "));
    const WEB_3 = keyOf(spec(NS_A, "web-3"));
    await assertFlows(net, [
      allow(A_CLIENT, A_WEB),
      allow(A_CLIENT, WEB_3),
      allow(A_CLIENT, WEB_3, 8011),
      deny(A_OTHER, WEB_3),
      deny(A_OTHER, A_WEB),
    ], "replicas from the memo");
  },
);

policyTest(
  "a namespaceSelector peer lets in that namespace's pods, and with a podSelector only its labelled ones",
  async ({ net: make }) => {
    const net = make("10.63.0.0/24", {
      policies: [
        policy(NS_A, "web-from-b-clients", { app: "web" }, {
          ingress: [{ from: [{ ...nsNamed(NS_B), podSelector: match({ app: "client" }) }] }],
        }),
        policy(NS_A, "db-from-b", { app: "db" }, { ingress: [{ from: [nsNamed(NS_B)] }] }),
      ],
    });
    await net.addAll([
      spec(NS_A, "web", { app: "web" }),
      spec(NS_A, "db", { app: "db" }),
      spec(NS_A, "client", { app: "client" }),
      spec(NS_B, "client", { app: "client" }),
      spec(NS_B, "other", { app: "other" }),
    ]);
    const A_DB = keyOf(spec(NS_A, "db"));
    await assertFlows(net, [
      allow(B_CLIENT, A_WEB),
      deny(B_OTHER, A_WEB),
      deny(A_CLIENT, A_WEB),
      allow(B_OTHER, A_DB),
      allow(B_CLIENT, A_DB, 8005),
      deny(A_CLIENT, A_DB),
      deny(A_WEB, A_DB),
      allow(A_CLIENT, B_OTHER),
    ], "namespaceSelector");
  },
);

policyTest(
  "an ipBlock peer lets in sources inside its cidr but not in an except range",
  async ({ net: make }) => {
    const at = (last: number) => `10.64.0.${last}`;
    // Pods get .2, .3, .4, .5 in the order they are added: .2 is in the block, .3 in its
    // except range, .4 outside it; the web pod .5 is the one the policy guards.
    const net = make("10.64.0.0/24", {
      policies: [
        policy(NS_A, "web-from-block", { app: "web" }, {
          ingress: [{
            from: [{ ipBlock: { cidr: `${at(0)}/30`, except: [`${at(3)}/32`] } }],
            ports: [tcpPort(80)],
          }],
        }),
      ],
    });
    const [inside, excepted, outside, web] = await net.addAll([
      spec(NS_A, "in", { app: "client" }),
      spec(NS_B, "except", { app: "client" }),
      spec(NS_B, "outside", { app: "client" }),
      spec(NS_A, "web", { app: "web" }),
    ]);
    assert.deepEqual(
      [inside.ip, excepted.ip, outside.ip, web.ip],
      [at(2), at(3), at(4), at(5)],
      "host-local hands out the addresses the block is written for",
    );
    const [IN, EXCEPT, OUTSIDE] = [inside, excepted, outside].map(keyOf);
    await assertFlows(net, [
      allow(IN, A_WEB),
      allow(IN, A_WEB, 80, { byAddress: true }),
      deny(IN, A_WEB, 8005),
      deny(EXCEPT, A_WEB),
      deny(EXCEPT, A_WEB, 80, { byAddress: true }),
      deny(OUTSIDE, A_WEB),
      deny(OUTSIDE, A_WEB, 80, { byAddress: true }),
      // The block guards web's ingress only.
      allow(OUTSIDE, IN),
    ], "ipBlock with except");
  },
);

policyTest(
  "a port range (port and endPort) opens the ports from port to endPort, TCP only",
  async ({ net: make }) => {
    const net = make("10.65.0.0/24", {
      policies: [
        policy(NS_A, "web-ports", { app: "web" }, {
          ingress: [{ ports: [tcpPort(8000, 8010)] }],
        }),
      ],
    });
    await net.addAll([
      spec(NS_A, "web", { app: "web" }),
      spec(NS_A, "client", { app: "client" }),
      spec(NS_B, "client", { app: "client" }),
      spec(NS_B, "other", { app: "other" }),
    ]);
    await assertFlows(net, [
      allow(A_CLIENT, A_WEB, 8000),
      allow(A_CLIENT, A_WEB, 8005),
      allow(A_CLIENT, A_WEB, 8010),
      allow(B_CLIENT, A_WEB, 8005),
      deny(A_CLIENT, A_WEB, 8011),
      deny(B_CLIENT, A_WEB, 80),
      deny(B_OTHER, A_WEB, 8005, { proto: "udp" }),
      allow(A_WEB, B_OTHER, 80),
    ], "port range 8000-8010/TCP");
  },
);

policyTest(
  "an egress policy limits where a pod may connect to, and the receiver's ingress still decides",
  async ({ net: make }) => {
    const net = make("10.66.0.0/24", {
      policies: [
        policy(NS_A, "client-egress", { app: "client" }, {
          policyTypes: ["Egress"],
          egress: [
            { to: [{ podSelector: match({ app: "web" }) }], ports: [tcpPort(80)] },
            { to: [nsNamed(NS_B)], ports: [tcpPort(8005)] },
            // .5 is ns-b/other (the pods get .2 to .6 in the order they are added).
            {
              to: [{ ipBlock: { cidr: "10.66.0.0/24", except: ["10.66.0.5/32"] } }],
              ports: [tcpPort(8011)],
            },
          ],
        }),
        policy(NS_B, "locked", { app: "locked" }, {}),
      ],
    });
    const pods = await net.addAll([
      spec(NS_A, "client", { app: "client" }),
      spec(NS_A, "web", { app: "web" }),
      spec(NS_A, "other", { app: "other" }),
      spec(NS_B, "other", { app: "other" }),
      spec(NS_B, "locked", { app: "locked" }),
    ]);
    assert.equal(pods[3].ip, "10.66.0.5", "ns-b/other has the address the ipBlock excepts");
    const B_LOCKED = keyOf(spec(NS_B, "locked"));
    await assertFlows(net, [
      allow(A_CLIENT, A_WEB, 80),
      deny(A_CLIENT, A_WEB, 8005),
      deny(A_CLIENT, A_OTHER, 80),
      allow(A_CLIENT, B_OTHER, 8005),
      deny(A_CLIENT, B_OTHER, 80),
      deny(A_CLIENT, B_OTHER, 8005, { proto: "udp" }),
      allow(A_CLIENT, A_OTHER, 8011),
      deny(A_CLIENT, B_OTHER, 8011, { byAddress: true }),
      // Allowed by the sender's egress, refused by the receiver's ingress.
      deny(A_CLIENT, B_LOCKED, 8005),
      // Flows into the restricted pod are not its egress: they and their replies pass.
      allow(A_WEB, A_CLIENT, 8011),
      allow(B_OTHER, A_CLIENT, 80),
      allow(A_OTHER, B_OTHER, 80),
      deny(A_OTHER, B_LOCKED, 80),
    ], "egress of app=client");
  },
);

policyTest(
  "a Deny rule beats an Allow of the same priority, and a priority level beats plain Kubernetes policies",
  async ({ net: make }) => {
    const anyNsPods = (app: string) => ({ namespaceSelector: {}, podSelector: match({ app }) });
    const net = make("10.67.0.0/24", {
      policies: [
        // web: both rules at priority 10; the Allow comes first in the list and still loses.
        policy(NS_A, "web-allow-clients", { app: "web" }, {
          priority: 10,
          ingress: [{ from: [anyNsPods("client")] }],
        }),
        policy(NS_A, "web-deny-b", { app: "web" }, {
          priority: 10,
          ingress: [{ action: "Deny", from: [nsNamed(NS_B)] }],
        }),
        // api: a plain policy allows all; a Deny at priority 5 overrides it for app=other,
        // and an Allow at priority 1 comes before that Deny for port 8005.
        policy(NS_A, "api-allow-all", { app: "api" }, { ingress: [{}] }),
        policy(NS_A, "api-deny-other", { app: "api" }, {
          priority: 5,
          ingress: [{ action: "Deny", from: [anyNsPods("other")] }],
        }),
        policy(NS_A, "api-other-8005", { app: "api" }, {
          priority: 1,
          ingress: [{ from: [anyNsPods("other")], ports: [tcpPort(8005)] }],
        }),
        // client: an egress Deny; a policy with a priority alone does not isolate the pod.
        policy(NS_A, "client-not-api-8011", { app: "client" }, {
          priority: 2,
          policyTypes: ["Egress"],
          egress: [{
            action: "Deny",
            to: [{ podSelector: match({ app: "api" }) }],
            ports: [tcpPort(8011)],
          }],
        }),
      ],
    });
    await net.addAll([
      spec(NS_A, "web", { app: "web" }),
      spec(NS_A, "api", { app: "api" }),
      spec(NS_A, "client", { app: "client" }),
      spec(NS_B, "client", { app: "client" }),
      spec(NS_B, "other", { app: "other" }),
    ]);
    const A_API = keyOf(spec(NS_A, "api"));
    await assertFlows(net, [
      allow(A_CLIENT, A_WEB),
      // Matches the Allow and the Deny of priority 10: Deny wins.
      deny(B_CLIENT, A_WEB),
      deny(B_OTHER, A_WEB),
      // Policies with a priority alone do not isolate web: what no rule matches is let in.
      allow(A_API, A_WEB, 8011),
      deny(B_OTHER, A_API, 80),
      allow(B_OTHER, A_API, 8005),
      allow(A_CLIENT, A_API, 80),
      allow(B_CLIENT, A_API, 8011),
      deny(A_CLIENT, A_API, 8011),
      allow(A_CLIENT, A_WEB, 8011),
    ], "Deny rules and priorities");
  },
);

policyTest(
  "a pod added after the policy is covered at once, as a selected target and as a selector peer",
  async ({ net: make }) => {
    const net = make("10.68.0.0/24", {
      policies: [
        policy(NS_A, "web-from-clients", { app: "web" }, {
          ingress: [{ from: [{ podSelector: match({ app: "client" }) }], ports: [tcpPort(80)] }],
        }),
      ],
    });
    await net.addAll([
      spec(NS_A, "web", { app: "web" }),
      spec(NS_A, "other", { app: "other" }),
      spec(NS_B, "client", { app: "client" }),
    ]);
    await assertFlows(net, [
      deny(A_OTHER, A_WEB),
      deny(B_CLIENT, A_WEB),
      allow(A_WEB, A_OTHER),
    ], "before the new pods");

    // A new client joins the selector set web's rules already match on.
    await net.add(spec(NS_A, "client", { app: "client" }));
    await assertFlows(net, [
      allow(A_CLIENT, A_WEB, 80),
      deny(A_CLIENT, A_WEB, 8005),
      deny(A_OTHER, A_WEB),
    ], "a new peer pod with app=client");

    // A new pod the policy selects is guarded from its ADD on.
    await net.add(spec(NS_A, "web2", { app: "web" }));
    const A_WEB2 = keyOf(spec(NS_A, "web2"));
    await assertFlows(net, [
      allow(A_CLIENT, A_WEB2, 80),
      deny(A_OTHER, A_WEB2, 80),
      deny(B_CLIENT, A_WEB2, 80),
      deny(A_CLIENT, A_WEB2, 8005),
      allow(A_WEB2, A_CLIENT, 80),
    ], "a new target pod with app=web");
  },
);

policyTest(
  "DEL of every pod leaves no policy chain, map or set element, selector set or registry entry",
  async ({ lab, net: make }) => {
    const file = `${lab.dir}/policies.json`;
    const subnet = "10.69.0.0/24";
    await Deno.writeTextFile(
      file,
      JSON.stringify([
        policy(NS_A, "default-deny", {}, {}),
        policy(NS_A, "web-in", { app: "web" }, {
          ingress: [
            { from: [{ podSelector: match({ app: "client" }) }, nsNamed(NS_B)] },
            {
              from: [{ ipBlock: { cidr: subnet, except: ["10.69.0.128/25"] } }],
              ports: [tcpPort(8000, 8010)],
            },
          ],
        }),
        policy(NS_A, "web-deny", { app: "web" }, {
          priority: 1,
          ingress: [{ action: "Deny", from: [{ podSelector: match({ app: "other" }) }] }],
        }),
        policy(NS_B, "b-egress", {}, {
          policyTypes: ["Egress"],
          egress: [{ to: [{ namespaceSelector: {}, podSelector: match({ app: "web" }) }] }],
        }),
      ]),
    );
    const net = make(subnet, { policyFile: file });
    await net.addAll([
      spec(NS_A, "web", { app: "web" }),
      spec(NS_A, "client", { app: "client" }),
      spec(NS_A, "other", { app: "other" }),
      spec(NS_B, "client", { app: "client" }),
    ]);
    await assertFlows(net, [
      allow(A_CLIENT, A_WEB),
      allow(B_CLIENT, A_WEB),
      deny(A_OTHER, A_WEB, 8005),
      deny(B_CLIENT, A_CLIENT),
    ], "with every kind of peer");

    const objects = await policyObjects(lab);
    const names = (re: RegExp) => objects.filter((o) => re.test(o.name));
    assert.equal(names(/^pi_/).length, 4, "an ingress chain per pod");
    assert.equal(names(/^po_/).length, 4, "an egress chain per pod");
    assert.ok(names(/^s[0-9a-f]+_4$/).some((o) => o.elem.length), "a selector set with members");
    assert.equal((await registry(lab)).length, 4, "a registry entry per pod");

    assertOk(await net.del(A_WEB), "DEL of ns-a/web");
    const after = await policyObjects(lab);
    assert.equal(after.filter((o) => /^pi_/.test(o.name)).length, 3, "web's ingress chain goes");
    const webIp = net.member(A_WEB).ip;
    const holding = after.filter((o) => JSON.stringify(o.elem).includes(`"${webIp}"`));
    assert.deepEqual(holding.map((o) => o.name), [], `no set or map still holds web's ${webIp}`);
    assert.equal((await registry(lab)).length, 3, "web's registry entry goes");
    await assertFlows(net, [allow(A_CLIENT, B_CLIENT), deny(B_CLIENT, A_CLIENT)], "the others");

    for (const key of [A_CLIENT, A_OTHER, B_CLIENT]) assertOk(await net.del(key), `DEL of ${key}`);
    assert.deepEqual(await registry(lab), [], "stateDir/policy/pods/ is empty");
    assert.deepEqual(
      (await policyObjects(lab)).map((o) => `${o.kind} ${o.name} (${o.elem.length} elements)`),
      [],
      `no pol_*, pi_*, po_* or s*_4 object is left in table inet ${TABLE}`,
    );
    assertOk(await net.del(A_WEB), "DEL of ns-a/web again");
    assert.deepEqual(await lab.allocations(NETWORK), [], "every address is released");
  },
);

policyTest(
  "policies the engine refuses fail an ADD (code 7, the field named) but never a DEL",
  async ({ lab, net: make }) => {
    const good = policy(NS_A, "web-in", { app: "web" }, {
      ingress: [{ from: [{ podSelector: match({ app: "client" }) }] }],
    });
    const net = make("10.75.0.0/24", { policies: [good] });
    const web = await net.add(spec(NS_A, "web", { app: "web" }));
    // An operator's typo in the conflist, after the pod came up.
    const typo = { policies: [{ ...good, podSelector: { matchLabels: { app: 5 } } }] };

    const pod = await lab.addPod("ns-a-late");
    const refused = await lab.cni("ADD", net.chain({ app: "web" }, typo), { pod });
    assert.equal(refused.json?.code, 7, `ADD with the typo: ${refused.stdout}${refused.stderr}`);
    assert.match(String(refused.json?.msg), /policies\[0\]\.podSelector\.matchLabels\.app/);

    assertOk(await net.del(A_WEB, typo), "DEL with the typo");
    assert.equal(await link(web.pod.name, "eth0"), undefined, "web's eth0 is gone");
    assert.deepEqual(await lab.allocations(NETWORK), [], "web's address is released");
    assert.deepEqual(await registry(lab), [], "web's registry entry is gone");
    assert.deepEqual(await policyObjects(lab), [], "no policy object is left in nftables");
  },
);

policyTest(
  "policy sync applies a changed policyFile to the pods already running",
  async ({ lab, net: make }) => {
    const file = `${lab.dir}/policies.json`;
    const write = (policies: unknown[]) => Deno.writeTextFile(file, JSON.stringify(policies));
    await write([policy(NS_A, "web-from-clients", { app: "web" }, {
      ingress: [{ from: [{ podSelector: match({ app: "client" }) }] }],
    })]);
    const net = make("10.70.0.0/24", { policyFile: file });
    await net.addAll([
      spec(NS_A, "web", { app: "web" }),
      spec(NS_A, "client", { app: "client" }),
      spec(NS_A, "other", { app: "other" }),
      spec(NS_B, "other", { app: "other" }),
    ]);
    await assertFlows(net, [
      allow(A_CLIENT, A_WEB),
      deny(A_OTHER, A_WEB),
      deny(B_OTHER, A_WEB),
    ], "the first policies");

    // Now app=other of every namespace, and no longer app=client.
    await write([policy(NS_A, "web-from-others", { app: "web" }, {
      ingress: [{ from: [{ namespaceSelector: {}, podSelector: match({ app: "other" }) }] }],
    })]);
    const out = await net.cli("sync");
    assert.equal(out.code, 0, `policy sync failed (exit ${out.code}): ${out.stdout}${out.stderr}`);
    await assertFlows(net, [
      deny(A_CLIENT, A_WEB),
      allow(A_OTHER, A_WEB),
      allow(B_OTHER, A_WEB),
      allow(A_WEB, A_CLIENT),
    ], "after the file changed and sync");
  },
);

policyTest(
  "on a dual-stack network the selector peers and the isolation hold for IPv6 flows too",
  async ({ net: make }) => {
    const net = make("10.71.0.0/24", {
      policies: [
        policy(NS_A, "web-in", { app: "web" }, {
          ingress: [
            { from: [{ podSelector: match({ app: "client" }) }], ports: [tcpPort(80)] },
            { from: [{ ipBlock: { cidr: "10.71.0.0/24" } }], ports: [tcpPort(8005)] },
          ],
        }),
      ],
    }, "fd71::/64");
    await net.addAll([
      spec(NS_A, "web", { app: "web" }),
      spec(NS_A, "client", { app: "client" }),
      spec(NS_A, "other", { app: "other" }),
      spec(NS_B, "client", { app: "client" }),
    ]);
    const v6 = { v6: true };
    const v6ByAddress = { v6: true, byAddress: true };
    await assertFlows(net, [
      // The IPv4 ipBlock does not let IPv6 in, and explain answers for the family asked.
      deny(A_OTHER, A_WEB, 8005, v6ByAddress),
      deny(A_OTHER, A_WEB, 8005, v6),
      // The isolated web opens IPv6 connections itself: neighbour discovery must get through.
      allow(A_WEB, B_CLIENT, 80, v6),
      allow(A_CLIENT, A_WEB, 80, v6),
      allow(A_CLIENT, A_WEB, 80, v6ByAddress),
      deny(A_CLIENT, A_WEB, 8011, v6),
      deny(A_OTHER, A_WEB, 80, v6),
      deny(B_CLIENT, A_WEB, 80, v6ByAddress),
      allow(A_OTHER, A_WEB, 8005),
      allow(B_CLIENT, A_WEB, 8005, { byAddress: true }),
      allow(A_OTHER, B_CLIENT, 80, v6),
    ], "dual stack");
  },
);

policyTest(
  "an ipBlock peer filters traffic routed in from outside the node, and explain takes its address",
  async ({ net: make }) => {
    const net = make("10.74.0.0/24", {
      policies: [
        policy(NS_A, "web-from-outside", { app: "web" }, {
          ingress: [
            { from: [{ ipBlock: { cidr: "192.0.2.0/24" } }], ports: [tcpPort(80)] },
            {
              from: [{ ipBlock: { cidr: "192.0.2.0/24", except: ["192.0.2.2/32"] } }],
              ports: [tcpPort(8005)],
            },
          ],
        }),
      ],
    });
    // The replies to the outside host go through the gateway.
    net.bridgeExtra = { isDefaultGateway: true };
    await net.addAll([
      spec(NS_A, "web", { app: "web" }),
      spec(NS_A, "client", { app: "client" }),
      spec(NS_B, "client", { app: "client" }),
      spec(NS_B, "other", { app: "other" }),
    ]);
    const OUTSIDE = "outside";
    await net.addOutside(OUTSIDE, "192.0.2.2");
    await assertFlows(net, [
      allow(OUTSIDE, A_WEB, 80),
      deny(OUTSIDE, A_WEB, 8005),
      deny(OUTSIDE, A_WEB, 8011),
      allow(OUTSIDE, B_OTHER, 8011),
      deny(A_CLIENT, A_WEB, 80),
      deny(B_CLIENT, A_WEB, 8005),
    ], "from outside the node");
  },
);
