/**
 * The policy step and `cnichain policy sync --kubernetes` in the kernel,
 * against a fake API server (test/fake_kube.ts): plain http on 127.0.0.1
 * inside the lab's host netns (the socket is opened there, so the plugin,
 * which runs in that netns, reaches it and nothing else can). Pods are
 * attached with dist/cnichain as a runtime does it (CNI_ARGS names the pod,
 * no labels: they come from the API), servers run in them
 * (test/net_probe.ts), and every expectation is a real TCP connection
 * through the host's forward hook.
 */
import assert from "node:assert/strict";
import { BUNDLE, listTree } from "../../../test/helpers.ts";
import {
  assertCniError,
  assertOk,
  bare,
  ipIn,
  kernelTest,
  type Lab,
  links,
  nftRuleset,
  nftRulesetText,
  type Pod,
  type Result,
  setSysctl,
} from "../../../test/netns.ts";
import { probe, serve, type Server, target } from "../../../test/net_probe.ts";
import { FakeKube, namespace, networkPolicy, type Obj, pod } from "../../../test/fake_kube.ts";
import { inNetns } from "../../../ffi/netns.ts";

const IP = "/usr/sbin/ip";
const NETWORK = "kpol";
const NODE = "node-1";
const PORTS = [80, 8000];
/** Changes must show in real connections within this (the goal is well under a second). */
const DEADLINE_MS = 10_000;
const BLOCKED_MS = 400;

interface Member {
  key: string;
  netns: string;
  ip: string;
}

/** One node: the lab's host netns, the fake API server in it, a bridge + policy chain. */
class KubeNode {
  readonly fake: FakeKube;
  readonly members = new Map<string, Member>();
  readonly pods = new Map<string, Pod>();
  readonly #servers: Server[] = [];
  #sync?: { child: Deno.ChildProcess; lines: { at: number; text: string }[]; done: Promise<void> };
  readonly syncLog: string[] = [];

  constructor(
    readonly lab: Lab,
    readonly version: string,
    readonly subnet: string,
    readonly kubernetes: Record<string, unknown> = {},
  ) {
    this.fake = inNetns(`/var/run/netns/${lab.host}`, () => new FakeKube());
    Deno.writeTextFileSync(this.kubeconfig, this.fake.kubeconfig());
    Deno.writeTextFileSync(this.policyFile, "[]\n");
    const { cniVersion, name, ...entry } = this.chain();
    Deno.writeTextFileSync(this.conflist, JSON.stringify({ cniVersion, name, plugins: [entry] }));
  }

  get kubeconfig(): string {
    return `${this.lab.dir}/kubeconfig.json`;
  }
  get policyFile(): string {
    return `${this.lab.dir}/policies.json`;
  }
  get conflist(): string {
    return `${this.lab.dir}/${NETWORK}.conflist`;
  }

  chain(labels: Record<string, string> = {}): Record<string, unknown> {
    const entries = Object.entries(labels).map(([key, value]) => ({ key, value }));
    return this.lab.netconf(this.version, {
      type: "cnichain",
      logFile: `${this.lab.dir}/cnichain.log`,
      ...(entries.length ? { args: { cni: { labels: entries } } } : {}),
      plugins: [
        {
          type: "bridge",
          bridge: "cni0",
          isGateway: true,
          isDefaultGateway: true,
          ipam: this.lab.hostLocal([[{ subnet: this.subnet }]]),
        },
        {
          type: "policy",
          policyFile: this.policyFile,
          kubernetes: { kubeconfig: this.kubeconfig, ...this.kubernetes },
        },
      ],
    }, NETWORK);
  }

  /** The runtime's ADD (CNI_ARGS names the pod; `runtimeLabels` as args.cni.labels). */
  async cniAdd(ns: string, name: string, runtimeLabels: Record<string, string> = {}) {
    const p = await this.lab.addPod(`${ns}-${name}`);
    this.pods.set(`${ns}/${name}`, p);
    const out = await this.lab.cni("ADD", this.chain(runtimeLabels), {
      pod: p,
      env: { CNI_ARGS: `K8S_POD_NAMESPACE=${ns};K8S_POD_NAME=${name}` },
    });
    return { pod: p, out };
  }

  /**
   * A pod of this node: in the API first (labels, no address yet), then ADD,
   * then its address in the API's status (as the kubelet reports it), then
   * its servers.
   */
  async add(
    ns: string,
    name: string,
    labels: Record<string, string>,
    runtimeLabels: Record<string, string> = {},
  ): Promise<Member> {
    this.fake.put("pods", pod(ns, name, labels, { node: NODE }));
    const { pod: p, out } = await this.cniAdd(ns, name, runtimeLabels);
    const result = assertOk(out, `ADD of ${ns}/${name}`) as unknown as Result;
    const ip = bare(result.ips![0].address);
    this.fake.update("pods", `${ns}/${name}`, (o) => {
      (o.status as Obj).podIP = ip;
      (o.status as Obj).podIPs = [{ ip }];
    });
    const member = { key: `${ns}/${name}`, netns: p.name, ip };
    this.members.set(member.key, member);
    this.#servers.push(
      await serve(p.name, member.key, PORTS.map((port) => target("tcp", ip, port))),
    );
    return member;
  }

  /**
   * A pod on another node: only in the API (node-2), its address routed to
   * a netns of its own through the host, as a pod network between nodes is.
   */
  async addRemote(
    ns: string,
    name: string,
    labels: Record<string, string>,
    address: string,
  ): Promise<Member> {
    const p = await this.lab.addPod(`r-${name}`);
    const hostSide = address.replace(/\.\d+$/, ".1");
    const link = `r${this.lab.prefix}`;
    await ipIn(this.lab.host, "link", "add", link, "type", "veth", "peer", "eth0", "netns", p.name);
    await ipIn(this.lab.host, "addr", "add", `${hostSide}/24`, "dev", link);
    await ipIn(this.lab.host, "link", "set", link, "up");
    await ipIn(p.name, "addr", "add", `${address}/24`, "dev", "eth0");
    await ipIn(p.name, "link", "set", "eth0", "up");
    await ipIn(p.name, "route", "add", this.subnet, "via", hostSide);
    await setSysctl(this.lab.host, "net/ipv4/ip_forward", "1");
    this.fake.put("pods", pod(ns, name, labels, { node: "node-2", ips: [address] }));
    const member = { key: `${ns}/${name}`, netns: p.name, ip: address };
    this.members.set(member.key, member);
    return member;
  }

  /** `cnichain policy sync --kubernetes` in the host netns, its stderr lines kept with their time. */
  startSync(): void {
    const child = new Deno.Command(IP, {
      args: [
        "netns",
        "exec",
        this.lab.host,
        BUNDLE,
        "policy",
        "sync",
        "--kubernetes",
        "--config",
        this.conflist,
        "--node",
        NODE,
      ],
      clearEnv: true,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const lines: { at: number; text: string }[] = [];
    const done = (async () => {
      let buf = "";
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const text = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          lines.push({ at: Date.now(), text });
          this.syncLog.push(text);
        }
      }
    })();
    this.#sync = { child, lines, done };
  }

  async stopSync(): Promise<void> {
    const s = this.#sync;
    if (!s) return;
    this.#sync = undefined;
    try {
      s.child.kill("SIGTERM");
    } catch {
      // already gone
    }
    const status = await s.child.status;
    await s.done;
    assert.ok(status.success || status.signal === "SIGTERM", `policy sync exited ${status.code}`);
  }

  /** Waits for a sync log line matching `re` that came after `since` (ms); its time. */
  async syncLine(re: RegExp, since: number, withinMs = DEADLINE_MS): Promise<number> {
    const end = Date.now() + withinMs;
    for (;;) {
      const hit = this.#sync?.lines.find((l) => l.at >= since && re.test(l.text));
      if (hit) {
        // The line's own timestamp (when the batch was applied), not when it was read.
        const stamp = Date.parse(hit.text.split(" ")[0]);
        return Number.isNaN(stamp) ? hit.at : stamp;
      }
      if (Date.now() > end) {
        throw new Error(`no sync line ${re} within ${withinMs} ms:\n${this.syncLog.join("\n")}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async close(): Promise<void> {
    await this.stopSync().catch(() => {});
    await Promise.all(this.#servers.map((s) => s.close()));
    await this.fake.close();
  }
}

type Expect = [from: string, to: string, port: number, verdict: "allow" | "deny"];

/** What the kernel does with each flow now: "allow" (the right answer) or "deny" (dropped). */
async function verdicts(node: KubeNode, flows: Expect[]): Promise<string[]> {
  const out: string[] = new Array(flows.length);
  const bySource = new Map<string, number[]>();
  flows.forEach(([from], i) => bySource.set(from, [...(bySource.get(from) ?? []), i]));
  await Promise.all([...bySource].map(async ([from, idx]) => {
    const src = node.members.get(from)!;
    const results = await probe(
      src.netns,
      idx.map((i) => target("tcp", node.members.get(flows[i][1])!.ip, flows[i][2])),
      BLOCKED_MS,
    );
    idx.forEach((i, k) => {
      const r = results[k];
      out[i] = r.ok
        ? r.reply === `${flows[i][1]} tcp from ${src.ip}` ? "allow" : `wrong reply ${r.reply}`
        : r.error === "timeout"
        ? "deny"
        : `error ${r.error}`;
    });
  }));
  return out;
}

/** Polls until every flow is as expected; the milliseconds it took from `since`. */
async function flowsBecome(
  node: KubeNode,
  flows: Expect[],
  what: string,
  since = Date.now(),
): Promise<number> {
  let last: string[] = [];
  while (Date.now() - since < DEADLINE_MS) {
    last = await verdicts(node, flows);
    if (last.every((v, i) => v === flows[i][3])) return Date.now() - since;
  }
  const wrong = flows.flatMap((f, i) =>
    last[i] === f[3] ? [] : [`${f[0]} -> ${f[1]}:${f[2]}: expected ${f[3]}, got ${last[i]}`]
  );
  throw new Error(
    `${what}: not within ${DEADLINE_MS} ms:\n${wrong.join("\n")}\n--- sync log:\n${
      node.syncLog.join("\n")
    }\n--- ruleset:\n${await nftRulesetText(node.lab.host)}`,
  );
}

function kubeTest(
  name: string,
  fn: (node: (subnet: string, k8s?: Record<string, unknown>) => KubeNode) => Promise<void>,
): void {
  kernelTest(`policy (kubernetes): ${name}`, async (lab, v) => {
    const nodes: KubeNode[] = [];
    try {
      await fn((subnet, k8s) => {
        const n = new KubeNode(lab, v, subnet, k8s);
        nodes.push(n);
        return n;
      });
    } finally {
      for (const n of nodes) await n.close();
    }
  }, { only: "cnichain", versions: ["1.1.0"] });
}

const WEB_FROM_FE = networkPolicy("a", "web-from-fe", {
  podSelector: { matchLabels: { app: "web" } },
  policyTypes: ["Ingress"],
  ingress: [
    {
      from: [{ podSelector: { matchLabels: { role: "fe" } } }],
      ports: [{ protocol: "TCP", port: 80 }],
    },
    {
      from: [{ namespaceSelector: { matchLabels: { team: "ops" } } }],
      ports: [{ protocol: "TCP", port: 8000 }],
    },
  ],
});

kubeTest("ADD takes the pod's and its namespace's labels from the API server", async (make) => {
  const node = make("10.72.0.0/24");
  node.fake.put("namespaces", namespace("a"));
  node.fake.put("namespaces", namespace("b", { team: "ops" }));
  // The policy file as the sync writes it: a NetworkPolicyList of API objects.
  await Deno.writeTextFile(node.policyFile, JSON.stringify({ items: [WEB_FROM_FE] }));
  await node.add("a", "web", { app: "web" });
  await node.add("a", "client", { role: "fe" });
  await node.add("a", "other", { role: "db" });
  await node.add("b", "tool", { role: "db" });
  // The runtime's labels win over the API's.
  await node.add("a", "fake-fe", { role: "fe" }, { role: "impostor" });
  assert.ok(node.fake.requests.includes("GET /api/v1/namespaces/a/pods/web"));
  assert.ok(node.fake.requests.includes("GET /api/v1/namespaces/a"));
  assert.ok(node.fake.requests.includes("GET /api/v1/namespaces/b/pods/tool"));
  await flowsBecome(node, [
    ["a/client", "a/web", 80, "allow"],
    ["a/client", "a/web", 8000, "deny"],
    ["a/other", "a/web", 80, "deny"],
    ["b/tool", "a/web", 8000, "allow"],
    ["b/tool", "a/web", 80, "deny"],
    ["a/fake-fe", "a/web", 80, "deny"],
    ["a/web", "a/client", 80, "allow"],
  ], "labels from the API");
  const records = await listTree(`${node.lab.stateDir}/policy/pods`);
  assert.equal(records.length, 5);
});

kubeTest(
  "sync: policies created, changed and deleted, label changes, a pod on another node, drops and 410",
  async (make) => {
    const node = make("10.73.0.0/24");
    node.fake.put("namespaces", namespace("a"));
    node.fake.put("namespaces", namespace("b"));
    await node.add("a", "web", { app: "web" });
    await node.add("a", "client", { role: "fe" });
    await node.add("a", "other", { role: "db" });
    await node.addRemote("a", "far", { role: "fe" }, "10.73.9.2");
    node.startSync();
    await node.syncLine(/from scratch/, 0);
    await flowsBecome(node, [
      ["a/client", "a/web", 80, "allow"],
      ["a/other", "a/web", 80, "allow"],
      ["a/far", "a/web", 80, "allow"],
    ], "no policy");

    const delays: Record<string, { applied: number; observed: number }> = {};
    const step = async (what: string, change: () => void, flows: Expect[], log: RegExp) => {
      const t0 = Date.now();
      change();
      const observed = await flowsBecome(node, flows, what, t0);
      const applied = (await node.syncLine(log, t0)) - t0;
      delays[what] = { applied, observed };
    };

    await step("policy created", () => node.fake.put("networkpolicies", WEB_FROM_FE), [
      ["a/client", "a/web", 80, "allow"],
      ["a/other", "a/web", 80, "deny"],
      ["a/far", "a/web", 80, "allow"], // another node's pod, in the selector set
      ["a/client", "a/other", 80, "allow"],
    ], /networkpolicies added a\/web-from-fe/);

    // Another node's pod changes labels: it leaves the set, no rule is touched.
    await step("remote pod relabelled", () =>
      node.fake.update("pods", "a/far", (o) => {
        (o.metadata as Obj).labels = { role: "db" };
      }), [
      ["a/far", "a/web", 80, "deny"],
      ["a/client", "a/web", 80, "allow"],
    ], /pods modified a\/far: 0 local pods re-planned, 0 set elements added, 1 deleted/);

    // This node's pod changes labels: it joins the set.
    await step("local pod relabelled", () =>
      node.fake.update("pods", "a/other", (o) => {
        (o.metadata as Obj).labels = { role: "fe" };
      }), [
      ["a/other", "a/web", 80, "allow"],
      ["a/far", "a/web", 80, "deny"],
    ], /pods modified a\/other/);

    await step("policy changed", () =>
      node.fake.update("networkpolicies", "a/web-from-fe", (o) => {
        const spec = o.spec as Obj;
        (spec.ingress as Obj[])[0].ports = [{ protocol: "TCP", port: 8000 }];
      }), [
      ["a/client", "a/web", 80, "deny"],
      ["a/client", "a/web", 8000, "allow"],
    ], /networkpolicies modified a\/web-from-fe/);

    // The watch connections drop: the sync reconnects and the next change still arrives.
    assert.ok(node.fake.dropWatches() >= 3);
    await step(
      "change after a dropped connection",
      () =>
        node.fake.update("pods", "a/far", (o) => {
          (o.metadata as Obj).labels = { role: "fe" };
        }),
      [["a/far", "a/web", 8000, "allow"]],
      /pods modified a\/far/,
    );

    // The API server forgets history: 410 Gone, a relist, and the state is right again.
    node.fake.expire();
    await step(
      "policy deleted after 410 Gone",
      () => node.fake.remove("networkpolicies", "a/web-from-fe"),
      [
        ["a/client", "a/web", 80, "allow"],
        ["a/far", "a/web", 80, "allow"],
      ],
      /networkpolicies/,
    );
    assert.ok(node.syncLog.some((l) => /listing again/.test(l)), node.syncLog.join("\n"));
    assert.ok(node.syncLog.some((l) => /reconnecting/.test(l)), node.syncLog.join("\n"));

    // The policy file the next ADD reads holds the API's policies (none now).
    const written = JSON.parse(await Deno.readTextFile(node.policyFile));
    assert.equal(written.kind, "NetworkPolicyList");
    assert.deepEqual(written.items, []);
    console.log(
      `policy change delays (ms; applied = API event to nftables batch, observed = to the first probe round that saw it):\n${
        Object.entries(delays).map(([k, d]) =>
          `  ${k}: applied ${d.applied}, observed ${d.observed}`
        )
          .join("\n")
      }`,
    );
    for (const [k, d] of Object.entries(delays)) {
      assert.ok(d.applied < 1000, `${k}: applied after ${d.applied} ms`);
    }
    await node.stopSync();
  },
);

kubeTest("sync: after an nftables flush, a restart of the sync heals", async (make) => {
  const node = make("10.74.0.0/24");
  node.fake.put("namespaces", namespace("a"));
  node.fake.put("networkpolicies", WEB_FROM_FE);
  await node.add("a", "web", { app: "web" });
  await node.add("a", "client", { role: "fe" });
  await node.add("a", "other", { role: "db" });
  await node.addRemote("a", "far", { role: "fe" }, "10.74.9.2");
  node.startSync();
  await node.syncLine(/from scratch/, 0);
  const enforced: Expect[] = [
    ["a/client", "a/web", 80, "allow"],
    ["a/far", "a/web", 80, "allow"],
    ["a/other", "a/web", 80, "deny"],
  ];
  await flowsBecome(node, enforced, "enforced");
  await node.stopSync();
  const out = await new Deno.Command(IP, {
    args: ["netns", "exec", node.lab.host, "nft", "flush", "ruleset"],
  }).output();
  assert.ok(out.success);
  await flowsBecome(node, [["a/other", "a/web", 80, "allow"]], "flushed: nothing enforced");
  node.startSync();
  const t0 = Date.now();
  await flowsBecome(node, enforced, "healed by the restart", t0);
  // And `--once` on a healthy table changes nothing that matters.
  await node.stopSync();
  const once = await new Deno.Command(IP, {
    args: [
      "netns",
      "exec",
      node.lab.host,
      BUNDLE,
      "policy",
      "sync",
      "--kubernetes",
      "--once",
      "--config",
      node.conflist,
      "--node",
      NODE,
    ],
    clearEnv: true,
  }).output();
  const text = new TextDecoder().decode(once.stdout);
  assert.ok(once.success, new TextDecoder().decode(once.stderr));
  assert.match(text, /3 local pods re-planned, 1 set element added/);
  await flowsBecome(node, enforced, "after --once");
});

kubeTest(
  "ADD with the API server down: deny fails with code 11 and leaves nothing",
  async (make) => {
    const node = make("10.75.0.0/24", { timeoutMs: 500 });
    node.fake.put("namespaces", namespace("a"));
    await node.add("a", "web", { app: "web" });
    const before = {
      nft: JSON.stringify(await nftRuleset(node.lab.host)),
      links: (await links(node.lab.host)).map((l) => l.ifname).sort(),
      records: await listTree(`${node.lab.stateDir}/policy/pods`),
      ips: await node.lab.allocations(NETWORK),
    };
    const url = node.fake.url;
    await node.fake.close();
    const t0 = Date.now();
    const { pod: p, out } = await node.cniAdd("a", "late");
    const took = Date.now() - t0;
    const err = assertCniError(out, node.version, "ADD with the API server down");
    assert.equal(err.code, 11, out.stdout);
    assert.match(err.msg, /cannot read the labels of pod "a\/late" from the API server/);
    assert.ok(err.msg.includes(`${url}/api/v1/namespaces/a`), err.msg);
    assert.match(err.msg, /refused|connect/i);
    assert.ok(took < 5000, `took ${took} ms`);
    assert.deepEqual({
      nft: JSON.stringify(await nftRuleset(node.lab.host)),
      links: (await links(node.lab.host)).map((l) => l.ifname).sort(),
      records: await listTree(`${node.lab.stateDir}/policy/pods`),
      ips: await node.lab.allocations(NETWORK),
    }, before);
    assert.deepEqual((await links(p.name)).map((l) => l.ifname), ["lo"]);
  },
);

kubeTest(
  "ADD that names no pod (not from Kubernetes) is not looked up: it works with the API down",
  async (make) => {
    const node = make("10.74.0.0/24", { timeoutMs: 500 });
    await node.fake.close();
    const p = await node.lab.addPod("podman-ctr");
    const out = await node.lab.cni("ADD", node.chain({ app: "web" }), { pod: p });
    const result = assertOk(out, "ADD without K8S_POD_NAME") as unknown as Result;
    assert.ok(result.ips?.length, JSON.stringify(result));
    assert.doesNotMatch(out.stderr, /API server/);
  },
);

kubeTest("ADD with a silent API server: code 11 within timeoutMs", async (make) => {
  const node = make("10.76.0.0/24", { timeoutMs: 500 });
  node.fake.silent = true;
  const t0 = Date.now();
  const { out } = await node.cniAdd("a", "web");
  const took = Date.now() - t0;
  const err = assertCniError(out, node.version, "ADD with a silent API server");
  assert.equal(err.code, 11);
  assert.match(err.msg, /no answer within 0\.5 s/);
  assert.ok(took < 500 + 3000, `took ${took} ms`);
});

kubeTest(
  "ADD with the API server down and apiUnavailable allow: a warning, and on",
  async (make) => {
    const node = make("10.77.0.0/24", { apiUnavailable: "allow" });
    await node.fake.close();
    const { out } = await node.cniAdd("a", "web", { app: "web" });
    assertOk(out, "ADD with apiUnavailable allow");
    assert.match(out.stderr, /warning: no labels from the API server for pod "a\/web"/);
    assert.match(out.stderr, /apiUnavailable is "allow"/);
    const log = await Deno.readTextFile(`${node.lab.dir}/cnichain.log`);
    assert.match(log, /"warning":"cnichain policy: warning: no labels from the API server/);
    const records = await listTree(`${node.lab.stateDir}/policy/pods`);
    assert.equal(records.length, 1);
    const record = JSON.parse(
      await Deno.readTextFile(`${node.lab.stateDir}/policy/pods/${records[0].replace(/^\//, "")}`),
    );
    assert.deepEqual(record.identity.labels, { app: "web" });
  },
);
