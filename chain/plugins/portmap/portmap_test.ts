/**
 * The portmap plugin in the kernel, end to end: bridge + host-local + portmap
 * run as a runtime runs them (the chain as one `cnichain` entry, portmap also
 * by its own name), real traffic through the mapped host ports between
 * throwaway namespaces (test/net_probe.ts), and cnichain's nftables
 * state read back with `nft -j`.
 *
 * With CNICHAIN_TEST_PLUGINS=reference the traffic tests run against Debian's
 * reference plugins instead (bridge, then portmap with the bridge's result,
 * as libcni runs a conflist), which checks the tests themselves; the tests of
 * what only cnichain does (nftables layout, port conflicts, GC, dry run,
 * nothing left behind) run with cnichain only.
 */
import assert from "node:assert/strict";
import { BUNDLE, listTree, type RunOutput, runProgram } from "../../../test/helpers.ts";
import {
  assertCniError,
  assertNoLeak,
  assertOk,
  bare,
  HOST_VETH,
  type Ignore,
  ipIn,
  kernelTest,
  type Lab,
  link,
  links,
  MODE,
  nftComment,
  nftRuleset,
  nftRulesetText,
  type Pod,
  type Result,
  setSysctl,
  snapshot,
  sysctl,
} from "../../../test/netns.ts";
import {
  flood,
  probe,
  type ProbeResult,
  serve,
  type Server,
  target,
} from "../../../test/net_probe.ts";
import { MAX_PORT_MAPPINGS } from "./mod.ts";

const IP = "/usr/sbin/ip";
const NFT = "/usr/sbin/nft";
const BRIDGE = "cni0";
const TABLE = "cnichain";

/** The bridge stays on DEL: other attachments may share it (the reference never deletes it). */
const KEEP_BRIDGE: Ignore = {
  devices: { [BRIDGE]: "the bridge itself is kept on DEL, as the reference plugin does" },
};

/**
 * The reference portmap runs `iptables`, found on PATH (real runtimes pass
 * their environment on); cnichain writes nftables itself and gets no PATH.
 */
const PORTMAP_ENV: Record<string, string> = MODE === "reference"
  ? { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" }
  : {};

const PM_MAPS = ["pm_dnat4", "pm_dnat6", "pm_dnat4_ip", "pm_dnat6_ip"];
const PM_SETS = ["pm_hairpin4", "pm_hairpin6", "pm_local4"];
const PM_CHAINS = ["pm_prerouting", "pm_output", "pm_postrouting", "pm_dnat"];

/** Positive probes are retried this long: neighbour discovery and DAD take a moment. */
const REACH_WITHIN_MS = 3000;
/** How long a probe that must fail waits for an answer (UDP gets no refusal to wait for). */
const NO_REACH_TIMEOUT_MS = 500;

/** A host address that is neither the bridge's nor loopback, as a node's own NIC address is. */
const NODE_IP = "198.51.100.7";

interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: "tcp" | "udp";
  hostIP?: string;
}

function tcp(hostPort: number, containerPort = 80, hostIP?: string): PortMapping {
  return { hostPort, containerPort, protocol: "tcp", ...(hostIP ? { hostIP } : {}) };
}

function udp(hostPort: number, containerPort = 80, hostIP?: string): PortMapping {
  return { hostPort, containerPort, protocol: "udp", ...(hostIP ? { hostIP } : {}) };
}

/** A pod attached by a successful ADD. */
interface Attached {
  pod: Pod;
  /** Its CNI_CONTAINERID. */
  id: string;
  result: Result;
  ip4: string;
  ip6?: string;
}

/**
 * One network: bridge (isGateway) with host-local, then portmap; run as one
 * cnichain entry, or with the reference plugins step by step as libcni would.
 */
class Net {
  constructor(
    readonly lab: Lab,
    readonly version: string,
    readonly subnet4: string,
    readonly subnet6?: string,
  ) {}

  get gateway4(): string {
    return this.subnet4.replace(/0\/24$/, "1");
  }

  get gateway6(): string {
    assert.ok(this.subnet6, "a dual-stack network");
    return this.subnet6.replace(/\/64$/, "1");
  }

  bridge(): Record<string, unknown> {
    const ranges = [
      [{ subnet: this.subnet4 }],
      ...(this.subnet6 ? [[{ subnet: this.subnet6 }]] : []),
    ];
    return {
      type: "bridge",
      bridge: BRIDGE,
      isGateway: true,
      // Replies to a host address outside the pod subnet (NODE_IP) go via the gateway.
      isDefaultGateway: true,
      // Where br_netfilter un-NATs bridged traffic, a pod's packets to itself through a host
      // port are bridged back out of the port they came in by, which needs hairpin on that
      // port: the reference portmap leaves that to the bridge's hairpinMode, cnichain's must
      // manage with the config as users write it.
      ...(MODE === "reference" ? { hairpinMode: true } : {}),
      ipam: this.lab.hostLocal(ranges),
    };
  }

  /** Fields to change in portmap's entry. */
  portmapExtra: Record<string, unknown> = {};

  portmap(): Record<string, unknown> {
    return {
      type: "portmap",
      capabilities: { portMappings: true },
      snat: true,
      ...this.portmapExtra,
    };
  }

  /** The runtime's `runtimeConfig`, left out when `mappings` is undefined. */
  runtimeConfig(mappings?: PortMapping[]): Record<string, unknown> {
    return mappings === undefined ? {} : { runtimeConfig: { portMappings: mappings } };
  }

  /** The cnichain entry a runtime would send. */
  chain(mappings?: PortMapping[], extra: Record<string, unknown> = {}): Record<string, unknown> {
    return this.lab.netconf(this.version, {
      type: "cnichain",
      capabilities: { portMappings: true },
      ...this.runtimeConfig(mappings),
      plugins: [this.bridge(), this.portmap()],
      ...extra,
    });
  }

  /** portmap's own config, run by its name. */
  portmapConf(mappings?: PortMapping[], prevResult?: unknown): Record<string, unknown> {
    return this.lab.netconf(this.version, {
      ...this.portmap(),
      ...this.runtimeConfig(mappings),
      ...(prevResult !== undefined ? { prevResult } : {}),
    });
  }

  containerId(pod: Pod): string {
    return `ctr-${pod.name.slice(this.lab.prefix.length + 1)}`;
  }

  /** ADD, as the runtime does it; the output of the step that failed, or of the last one. */
  async add(pod: Pod, mappings?: PortMapping[]): Promise<RunOutput> {
    if (MODE === "cnichain") return await this.lab.cni("ADD", this.chain(mappings), { pod });
    const bridgeConf = this.lab.netconf(this.version, this.bridge());
    const first = await this.lab.cni("ADD", bridgeConf, { pod });
    if (first.code !== 0) return first;
    const out = await this.lab.cni("ADD", this.portmapConf(mappings, first.json), {
      pod,
      env: PORTMAP_ENV,
    });
    if (out.code !== 0) {
      // libcni does not undo a failed chain; the test does, as the chain would.
      await this.lab.cni("DEL", { ...bridgeConf, prevResult: first.json }, { pod });
    }
    return out;
  }

  async attach(pod: Pod, mappings?: PortMapping[]): Promise<Attached> {
    const result = assertOk(
      await this.add(pod, mappings),
      `ADD of ${pod.name}`,
    ) as unknown as Result;
    const ips = (result.ips ?? []).map((ip) => bare(ip.address));
    const ip4 = ips.find((ip) => !ip.includes(":"));
    assert.ok(ip4, `an IPv4 address in ${JSON.stringify(result)}`);
    const ip6 = ips.find((ip) => ip.includes(":"));
    return { pod, id: this.containerId(pod), result, ip4, ...(ip6 ? { ip6 } : {}) };
  }

  /**
   * DEL, as the runtime does it: with `prevResult` when given (else none, so
   * cnichain falls back to its cached result, unless `stateDir` points
   * elsewhere).
   */
  async del(
    pod: Pod,
    opts: { prevResult?: Result; mappings?: PortMapping[]; stateDir?: string } = {},
  ): Promise<RunOutput> {
    const prev = opts.prevResult ? { prevResult: opts.prevResult } : {};
    if (MODE === "cnichain") {
      const extra = { ...prev, ...(opts.stateDir ? { stateDir: opts.stateDir } : {}) };
      return await this.lab.cni("DEL", this.chain(opts.mappings, extra), { pod });
    }
    const pm = await this.lab.cni("DEL", this.portmapConf(opts.mappings, opts.prevResult), {
      pod,
      env: PORTMAP_ENV,
    });
    const br = await this.lab.cni("DEL", {
      ...this.lab.netconf(this.version, this.bridge()),
      ...prev,
    }, {
      pod,
    });
    return pm.code !== 0 ? pm : br;
  }
}

/** Servers started by a test; `close()` (in a finally) ends them all. */
class Servers {
  readonly #list: Server[] = [];

  async start(netns: string, token: string, targets: string[]): Promise<Server> {
    const server = await serve(netns, token, targets);
    this.#list.push(server);
    return server;
  }

  /** What the servers wrote to stderr, for a failure message. */
  stderr(): string {
    return this.#list.map((s) => s.stderr().trim()).filter(Boolean).join("\n");
  }

  async close(): Promise<void> {
    await Promise.all(this.#list.map((s) => s.close()));
  }
}

interface Ctx {
  lab: Lab;
  v: string;
  servers: Servers;
}

/**
 * A kernel test with servers that are stopped however it ends, and, when it
 * fails, the host netns's nftables ruleset in the error.
 */
function portmapTest(
  name: string,
  fn: (ctx: Ctx) => Promise<void>,
  opts: Parameters<typeof kernelTest>[2] = {},
): void {
  kernelTest(name, async (lab, v) => {
    const servers = new Servers();
    try {
      await fn({ lab, v, servers });
    } catch (err) {
      const extra = `\n--- nft list ruleset in the host netns ${lab.host}:\n${await nftRulesetText(
        lab.host,
      )}${servers.stderr() ? `\n--- server stderr:\n${servers.stderr()}` : ""}`;
      if (err instanceof Error) {
        err.message += extra;
        if (err.stack) err.stack += extra;
      }
      throw err;
    } finally {
      await servers.close();
    }
  }, opts);
}

function describe(results: ProbeResult[]): string {
  return results.map((r) => `${r.target}: ${r.ok ? `"${r.reply}"` : r.error}`).join("; ");
}

/**
 * Asserts that every target answers from `netns` with `token`'s server,
 * retrying failed ones for a short while.
 */
async function assertReaches(netns: string, targets: string[], token: string, what: string) {
  const deadline = Date.now() + REACH_WITHIN_MS;
  let pending = targets;
  const done: ProbeResult[] = [];
  let last: ProbeResult[] = [];
  while (pending.length) {
    last = await probe(netns, pending, 1000);
    done.push(...last.filter((r) => r.ok));
    pending = last.filter((r) => !r.ok).map((r) => r.target);
    if (Date.now() >= deadline) break;
  }
  const failed = last.filter((r) => !r.ok);
  assert.deepEqual(
    failed,
    [],
    `${what}: no answer within ${REACH_WITHIN_MS} ms: ${describe(failed)}`,
  );
  for (const r of done) {
    assert.ok(
      r.reply?.startsWith(`${token} `),
      `${what}: ${r.target} should be answered by ${token}'s server, got ${
        JSON.stringify(r.reply)
      }`,
    );
  }
}

/**
 * Asserts that no target answers from `netns`; TCP targets listed in
 * `refused` must be refused (nothing listens there and nothing forwards),
 * not time out as a stale mapping to a gone pod would.
 */
async function assertNoReach(
  netns: string,
  targets: string[],
  what: string,
  refused: string[] = [],
) {
  const results = await probe(netns, targets, NO_REACH_TIMEOUT_MS);
  const answered = results.filter((r) => r.ok);
  assert.deepEqual(answered, [], `${what}: should not be forwarded: ${describe(results)}`);
  for (const r of results.filter((r) => refused.includes(r.target))) {
    assert.equal(
      r.error,
      "refused",
      `${what}: ${r.target} should be refused: ${describe(results)}`,
    );
  }
}

/** One element of a pm_* map or set in cnichain's table. */
interface PmElement {
  set: string;
  /** The element as nft -j prints it. */
  json: string;
  comment?: string;
}

/** The nftables objects of cnichain's table in the host netns, by kind and name. */
async function pmTable(lab: Lab): Promise<{ kind: string; name: string; elem: unknown[] }[]> {
  const out: { kind: string; name: string; elem: unknown[] }[] = [];
  for (const o of await nftRuleset(lab.host)) {
    const [kind, body] = Object.entries(o)[0] as [string, Record<string, unknown>];
    if (body.family !== "inet" || (body.table ?? body.name) !== TABLE) continue;
    if (kind === "table") continue;
    if (kind !== "set" && kind !== "map" && kind !== "chain") continue;
    out.push({ kind, name: String(body.name), elem: (body.elem as unknown[] | undefined) ?? [] });
  }
  return out;
}

/** Every element of every pm_* map and set. */
async function pmElements(lab: Lab): Promise<PmElement[]> {
  return (await pmTable(lab))
    .filter((o) => o.kind !== "chain" && o.name.startsWith("pm_"))
    .flatMap((o) =>
      o.elem.map((e) => {
        const comment = nftComment(e);
        return {
          set: o.name,
          json: JSON.stringify(e),
          ...(comment !== undefined ? { comment } : {}),
        };
      })
    );
}

/** The elements whose comment names the attachment (container id and ifname eth0). */
function ownedBy(elements: PmElement[], id: string): PmElement[] {
  return elements.filter((e) => e.comment?.split(" ").includes(id));
}

async function assertNoPmElements(lab: Lab, what: string) {
  if (MODE !== "cnichain") return;
  const left = await pmElements(lab);
  assert.deepEqual(left, [], `${what}: no element may remain in a pm_* map or set`);
}

/**
 * Asserts cnichain's table has the portmap maps, sets and chains, and that
 * `owner` has an element in `map` mentioning each of `mentions`, every
 * element commented with an attachment.
 */
async function assertMapped(lab: Lab, owner: Attached, map: string, mentions: string[]) {
  if (MODE !== "cnichain") return;
  const table = await pmTable(lab);
  const has = (kind: string, name: string) => table.some((o) => o.kind === kind && o.name === name);
  for (const name of PM_MAPS) assert.ok(has("map", name), `map ${name} in table inet ${TABLE}`);
  for (const name of PM_SETS) assert.ok(has("set", name), `set ${name} in table inet ${TABLE}`);
  for (const name of PM_CHAINS) {
    assert.ok(has("chain", name), `chain ${name} in table inet ${TABLE}`);
  }
  const elements = await pmElements(lab);
  for (const e of elements) {
    assert.ok(
      e.comment,
      `every pm_* element names its attachment in a comment: ${e.set} ${e.json}`,
    );
  }
  const mine = ownedBy(elements, owner.id).filter((e) => e.set === map);
  assert.ok(
    mine.some((e) => mentions.every((m) => e.json.includes(m))),
    `an element of ${map} commented with ${owner.id} mentions ${mentions.join(", ")}: ${
      JSON.stringify(elements)
    }`,
  );
}

/**
 * Runs `fn` under each setting of `net/bridge/bridge-nf-call-ip{,6}tables`
 * in the test's host netns: with br_netfilter, traffic between pods on the
 * bridge passes nftables and a bridged reply is un-NATed there; without it,
 * only the plugin's hairpin SNAT brings the reply back through the host.
 * Both are set explicitly so that the test does not depend on the machine's
 * setting; without br_netfilter only the second kind exists.
 */
async function underBridgeNf(lab: Lab, family: 4 | 6, fn: (setting: string) => Promise<void>) {
  const key = `net/bridge/bridge-nf-call-ip${family === 6 ? "6" : ""}tables`;
  const present = await sysctl(lab.host, key).then(() => true, () => false);
  if (!present) return await fn("absent: no br_netfilter");
  for (const value of ["1", "0"]) {
    await setSysctl(lab.host, key, value);
    await fn(`${key.slice(key.lastIndexOf("/") + 1)}=${value}`);
  }
}

/** Runs one nft command in `netns` (to change nftables by hand, as a reboot or an operator would). */
async function nftIn(netns: string, command: string) {
  const out = await runProgram(IP, { args: ["netns", "exec", netns, NFT, command] });
  assert.equal(out.code, 0, `nft ${command} in ${netns}: ${out.stderr}`);
}

// ---------------------------------------------------------------- the tests

portmapTest(
  "portmap: a TCP hostPort reaches the pod from the host, localhost, a neighbour pod and the pod itself",
  async ({ lab, v, servers }) => {
    const net = new Net(lab, v, "10.41.0.0/24");
    await ipIn(lab.host, "addr", "add", `${NODE_IP}/32`, "dev", "lo");
    const a = await net.attach(await lab.addPod("a"), [tcp(18080), tcp(18090, 80, NODE_IP)]);
    const b = await net.attach(await lab.addPod("b"));
    await servers.start(a.pod.name, "pod-a", [target("tcp", a.ip4, 80)]);
    const gw = net.gateway4;

    await assertReaches(
      lab.host,
      [
        target("tcp", gw, 18080),
        target("tcp", NODE_IP, 18080),
        target("tcp", "127.0.0.1", 18080),
      ],
      "pod-a",
      "from the host netns (gateway, node address, localhost)",
    );
    assert.equal(
      await sysctl(lab.host, `net/ipv4/conf/${BRIDGE}/route_localnet`),
      "1",
      "the plugin sets route_localnet on the bridge for the localhost case",
    );
    await underBridgeNf(lab, 4, async (setting) => {
      const to = [target("tcp", gw, 18080)];
      await assertReaches(a.pod.name, to, "pod-a", `from pod a to itself (${setting})`);
      await assertReaches(b.pod.name, to, "pod-a", `from neighbour pod b (${setting})`);
    });
    await assertReaches(
      lab.host,
      [target("tcp", NODE_IP, 18090)],
      "pod-a",
      "a mapping with hostIP, to that address",
    );
    await assertNoReach(
      lab.host,
      [target("tcp", gw, 18090), target("tcp", gw, 18081)],
      "a hostIP mapping to another local address, and an unmapped port",
      [target("tcp", gw, 18090), target("tcp", gw, 18081)],
    );

    await assertMapped(lab, a, "pm_dnat4", ["18080", `"${a.ip4}"`]);
    await assertMapped(lab, a, "pm_dnat4_ip", ["18090", `"${a.ip4}"`, `"${NODE_IP}"`]);
    if (MODE === "cnichain") {
      assert.deepEqual(ownedBy(await pmElements(lab), b.id), [], "pod b has no mappings");
    }
  },
);

portmapTest(
  "portmap: a UDP hostPort reaches the pod from the host and a neighbour pod, apart from TCP on the same port",
  async ({ lab, v, servers }) => {
    const net = new Net(lab, v, "10.42.0.0/24");
    const gw = net.gateway4;
    const b = await net.attach(await lab.addPod("b"), [tcp(18180)]);
    // A UDP flow to the port before it is mapped: the kernel tracks it as the host's own, and
    // would keep it so (un-NATed) while packets keep coming, unless ADD forgets it.
    const early = target("udp", gw, 18180, 40180);
    await assertNoReach(lab.host, [early], "UDP before the mapping");
    // The same host port for the other protocol is no conflict.
    const a = await net.attach(await lab.addPod("a"), [udp(18180)]);
    await servers.start(a.pod.name, "pod-a", [target("udp", a.ip4, 80)]);
    await servers.start(b.pod.name, "pod-b", [target("tcp", b.ip4, 80)]);

    await assertReaches(
      lab.host,
      [target("udp", gw, 18180), target("udp", "127.0.0.1", 18180)],
      "pod-a",
      "UDP from the host netns (gateway, localhost)",
    );
    await assertReaches(lab.host, [early], "pod-a", "a UDP flow that began before the mapping");
    await assertReaches(lab.host, [target("tcp", gw, 18180)], "pod-b", "TCP on the same port");
    await underBridgeNf(lab, 4, async (setting) => {
      const udpTo = [target("udp", gw, 18180)];
      await assertReaches(a.pod.name, udpTo, "pod-a", `UDP from pod a to itself (${setting})`);
      await assertReaches(b.pod.name, udpTo, "pod-a", `UDP from neighbour pod b (${setting})`);
      const tcpTo = [target("tcp", gw, 18180)];
      await assertReaches(a.pod.name, tcpTo, "pod-b", `TCP from neighbour pod a (${setting})`);
    });
    await assertMapped(lab, a, "pm_dnat4", ["18180", `"${a.ip4}"`, "udp"]);
    await assertMapped(lab, b, "pm_dnat4", ["18180", `"${b.ip4}"`, "tcp"]);
  },
);

portmapTest(
  "portmap: on a dual-stack bridge the hostPort forwards IPv6 from the host and a neighbour pod",
  async ({ lab, v, servers }) => {
    const net = new Net(lab, v, "10.43.0.0/24", "fd43::/64");
    const a = await net.attach(await lab.addPod("a"), [tcp(18280), udp(18280)]);
    const b = await net.attach(await lab.addPod("b"));
    assert.ok(a.ip6 && b.ip6, "both pods have an IPv6 address");
    await servers.start(a.pod.name, "pod-a", [
      target("tcp", a.ip4, 80),
      target("tcp", a.ip6, 80),
      target("udp", a.ip6, 80),
    ]);
    const [gw4, gw6] = [net.gateway4, net.gateway6];

    await assertReaches(
      lab.host,
      [
        target("tcp", gw6, 18280),
        target("udp", gw6, 18280),
        target("tcp", gw4, 18280),
      ],
      "pod-a",
      "from the host netns over IPv6 (and IPv4)",
    );
    await underBridgeNf(lab, 6, async (setting) => {
      const to = [target("tcp", gw6, 18280), target("udp", gw6, 18280)];
      await assertReaches(a.pod.name, to, "pod-a", `from pod a to itself over IPv6 (${setting})`);
      await assertReaches(b.pod.name, to, "pod-a", `from neighbour pod b over IPv6 (${setting})`);
    });
    await assertMapped(lab, a, "pm_dnat6", ["18280", `"${a.ip6}"`]);
    await assertMapped(lab, a, "pm_dnat4", ["18280", `"${a.ip4}"`]);
  },
);

portmapTest(
  "portmap: DEL stops the forwarding and leaves no element, with or without prevResult and after the netns is gone",
  async ({ lab, v, servers }) => {
    const net = new Net(lab, v, "10.44.0.0/24");
    const gw = net.gateway4;
    // The same ports every time: a DEL must also free them for the next pod.
    const mappings = [tcp(18380), udp(18380)];
    const variants: {
      name: string;
      del: (x: Attached, server: Server) => Promise<RunOutput>;
    }[] = [
      {
        name: "DEL with prevResult",
        del: (x) => net.del(x.pod, { prevResult: x.result, mappings }),
      },
      {
        // cnichain would use its cached result: a fresh state dir has none.
        name: "DEL without prevResult or cached result",
        del: (x) => net.del(x.pod, { mappings, stateDir: `${lab.dir}/state-lost` }),
      },
      {
        name: "DEL after the pod netns is deleted",
        del: async (x, server) => {
          // As a runtime does: the pod's processes end, then its netns goes.
          await server.close();
          await lab.deletePod(x.pod);
          return await net.del(x.pod, { mappings });
        },
      },
    ];
    for (const [i, variant] of variants.entries()) {
      const x = await net.attach(await lab.addPod(`p${i}`), mappings);
      const server = await servers.start(x.pod.name, x.id, [
        target("tcp", x.ip4, 80),
        target("udp", x.ip4, 80),
      ]);
      await assertReaches(
        lab.host,
        [target("tcp", gw, 18380), target("udp", gw, 18380)],
        x.id,
        `${variant.name}: before it`,
      );
      assertOk(await variant.del(x, server), variant.name);
      await assertNoReach(
        lab.host,
        [target("tcp", gw, 18380), target("tcp", "127.0.0.1", 18380), target("udp", gw, 18380)],
        `${variant.name}: after it`,
        [target("tcp", gw, 18380), target("tcp", "127.0.0.1", 18380)],
      );
      await assertNoPmElements(lab, variant.name);
      assertOk(await net.del(x.pod, { mappings }), `${variant.name}, then DEL again`);
    }
    assert.deepEqual(await lab.allocations(), [], "every address is released");
  },
);

portmapTest(
  "portmap run by its own name forwards with the bridge result as prevResult, and DEL without prevResult stops it",
  async ({ lab, v, servers }) => {
    const net = new Net(lab, v, "10.45.0.0/24");
    const pod = await lab.addPod("a");
    const bridgeConf = lab.netconf(v, net.bridge());
    const prev = assertOk(await lab.cni("ADD", bridgeConf, { pod }), "bridge ADD");
    const mappings = [tcp(18480), udp(18480)];
    const ip4 = bare((prev as unknown as Result).ips![0].address);
    const a: Attached = { pod, id: net.containerId(pod), result: prev as unknown as Result, ip4 };

    const noPrev = await lab.cni("ADD", net.portmapConf(mappings), { pod, env: PORTMAP_ENV });
    assertCniError(noPrev, v, "portmap ADD without prevResult (it is a chained plugin)");
    await assertNoPmElements(lab, "a refused ADD");

    const out = await lab.cni("ADD", net.portmapConf(mappings, prev), { pod, env: PORTMAP_ENV });
    assert.deepEqual(assertOk(out, "portmap ADD"), prev, "portmap passes prevResult on unchanged");
    await servers.start(pod.name, "pod-a", [target("tcp", ip4, 80), target("udp", ip4, 80)]);
    const targets = [
      target("tcp", net.gateway4, 18480),
      target("tcp", "127.0.0.1", 18480),
      target("udp", net.gateway4, 18480),
    ];
    await assertReaches(lab.host, targets, "pod-a", "from the host netns");
    await assertMapped(lab, a, "pm_dnat4", ["18480", `"${ip4}"`]);

    const del = await lab.cni("DEL", net.portmapConf(mappings), { pod, env: PORTMAP_ENV });
    assertOk(del, "portmap DEL without prevResult");
    // The pod is still attached and serving: only the mapping is gone.
    await assertNoReach(lab.host, targets, "after portmap DEL", targets.slice(0, 2));
    await assertNoPmElements(lab, "after portmap DEL");
    assertOk(
      await lab.cni("DEL", net.portmapConf(mappings), { pod, env: PORTMAP_ENV }),
      "portmap DEL again",
    );
    assertOk(await lab.cni("DEL", { ...bridgeConf, prevResult: prev }, { pod }), "bridge DEL");
  },
);

portmapTest(
  "portmap: a pod with the most host ports allowed, the table already there, is added and deleted whole",
  async ({ lab, v }) => {
    // Small attachments change elements over netlink in one batch; this one would overflow the
    // socket's buffers that way (EMSGSIZE) and goes through libnftables, in pages.
    const net = new Net(lab, v, "10.47.0.0/24");
    const a = await net.attach(await lab.addPod("a"), [tcp(18680)]);
    const many = Array.from({ length: MAX_PORT_MAPPINGS }, (_, i) => tcp(20000 + i));
    const b = await net.attach(await lab.addPod("b"), many);
    const dnat = ownedBy(await pmElements(lab), b.id).filter((e) => e.set === "pm_dnat4");
    assert.equal(dnat.length, many.length, "one DNAT element per host port");
    assertOk(await net.del(b.pod, { prevResult: b.result, mappings: many }), "DEL of b");
    assert.deepEqual(ownedBy(await pmElements(lab), b.id), [], "no element of b is left");
    assert.equal(ownedBy(await pmElements(lab), a.id).length > 0, true, "a keeps its mapping");
    assertOk(await net.del(a.pod, { prevResult: a.result }), "DEL of a");
    await assertNoPmElements(lab, "after both DELs");
  },
  { only: "cnichain" },
);

portmapTest(
  "portmap: a second pod asking for a taken hostPort fails, leaves nothing and the first keeps it",
  async ({ lab, v, servers }) => {
    const net = new Net(lab, v, "10.46.0.0/24");
    const a = await net.attach(await lab.addPod("a"), [tcp(18580)]);
    await servers.start(a.pod.name, "pod-a", [target("tcp", a.ip4, 80)]);
    const before = ownedBy(await pmElements(lab), a.id);
    const podB = await lab.addPod("b");
    const bId = net.containerId(podB);

    const err = assertCniError(
      await net.add(podB, [tcp(18580, 8080)]),
      v,
      "ADD of a second pod for the same hostPort",
    );
    assert.match(err.msg, /18580/, `the error names the port: ${err.msg}`);
    assert.ok(err.msg.includes(a.id), `the error names the owner ${a.id}: ${err.msg}`);

    assert.equal(await link(podB.name, "eth0"), undefined, "pod b has no eth0 left");
    const veths = (await links(lab.host)).filter((l) => HOST_VETH.test(l.ifname));
    assert.deepEqual(
      veths.map((l) => l.ifname),
      [a.result.interfaces![1].name],
      "only pod a's host veth is left",
    );
    assert.deepEqual(await lab.allocations(), [a.ip4], "only pod a's address is allocated");
    const elements = await pmElements(lab);
    assert.deepEqual(ownedBy(elements, bId), [], "no element of pod b");
    assert.deepEqual(ownedBy(elements, a.id), before, "pod a's elements are untouched");
    await assertReaches(
      lab.host,
      [target("tcp", net.gateway4, 18580), target("tcp", "127.0.0.1", 18580)],
      "pod-a",
      "pod a's mapping after the failed ADD",
    );
  },
  { only: "cnichain" },
);

portmapTest(
  "portmap: DEL of a pod whose mappings were lost (nftables flushed, as by a reboot) leaves the port's new owner alone",
  async ({ lab, v, servers }) => {
    const net = new Net(lab, v, "10.51.0.0/24");
    // Without hairpin elements a pod's state is its DNAT elements alone: nothing tells the
    // old owner's record from the new owner's elements but their comments.
    net.portmapExtra = { snat: false };
    const a = await net.attach(await lab.addPod("a"), [tcp(19080)]);
    // A reboot empties nftables; the state on disk (/var/lib/...) stays.
    await nftIn(lab.host, "flush ruleset");
    const b = await net.attach(await lab.addPod("b"), [tcp(19080)]);
    await servers.start(b.pod.name, "pod-b", [target("tcp", b.ip4, 80)]);
    const to = [target("tcp", net.gateway4, 19080)];
    await assertReaches(lab.host, to, "pod-b", "the port's new owner");
    const bElements = MODE === "cnichain" ? ownedBy(await pmElements(lab), b.id) : [];

    // The runtime cleans up the sandbox that did not survive the reboot.
    assertOk(await net.del(a.pod, { prevResult: a.result }), "DEL of the old owner");
    await assertReaches(lab.host, to, "pod-b", "the new owner after the old owner's DEL");
    if (MODE === "cnichain") {
      assert.deepEqual(
        ownedBy(await pmElements(lab), b.id),
        bElements,
        "the new owner's elements are untouched",
      );
    }
  },
);

portmapTest(
  "portmap: DEL removes those of a pod's elements that still carry its name, whether or not some are gone",
  async ({ lab, v }) => {
    const net = new Net(lab, v, "10.53.0.0/24");
    net.portmapExtra = { snat: false };
    // a: one port will be taken over, one survives, one is gone (DEL asks nft element by element).
    // c: one port will be taken over, one survives (DEL asks nft about both at once).
    const a = await net.attach(await lab.addPod("a"), [tcp(19480), udp(19480), tcp(19481)]);
    const c = await net.attach(await lab.addPod("c"), [tcp(19580), udp(19580)]);
    const before = await pmElements(lab);
    // The element of `pod`'s UDP `port`, as the command that puts it back.
    const survivor = (pod: Attached, port: number) => {
      const e = ownedBy(before, pod.id).find((e) =>
        e.json.includes(`"udp"`) && e.json.includes(`${port}`)
      );
      assert.ok(e?.comment, `${pod.pod.name}'s UDP ${port} element`);
      return `add element inet ${TABLE} pm_dnat4 { udp . ${port} comment "${e.comment}" : ${pod.ip4} . 80 }`;
    };
    const keep = [survivor(a, 19480), survivor(c, 19580)];
    await nftIn(lab.host, "flush ruleset");
    const b = await net.attach(await lab.addPod("b"), [tcp(19480), tcp(19580)]);
    for (const line of keep) await nftIn(lab.host, line);
    const bElements = ownedBy(await pmElements(lab), b.id);
    assert.equal(bElements.length, 2, "b's two DNAT elements");

    assertOk(await net.del(a.pod, { prevResult: a.result }), "DEL of a");
    assertOk(await net.del(c.pod, { prevResult: c.result }), "DEL of c");
    const left = await pmElements(lab);
    assert.deepEqual(ownedBy(left, a.id), [], "nothing of a's is left");
    assert.deepEqual(ownedBy(left, c.id), [], "nothing of c's is left");
    assert.deepEqual(ownedBy(left, b.id), bElements, "b's elements are untouched");
  },
  { only: "cnichain" },
);

/** How many connections the netns's conntrack table holds. */
async function trackedCount(netns: string): Promise<number> {
  return Number(await sysctl(netns, "net/netfilter/nf_conntrack_count"));
}

portmapTest(
  "portmap: on a host tracking thousands of connections, ADD forgets the host port's old UDP flow and no other",
  async ({ lab, v, servers }) => {
    const net = new Net(lab, v, "10.54.0.0/24");
    const gw = net.gateway4;
    // The first attachment makes the NAT table, so the host netns tracks connections from now on.
    await net.attach(await lab.addPod("b"), [tcp(19680)]);
    // Past the few thousand where ADD stops reading /proc and asks the kernel for the port's.
    await flood(lab.host, "127.0.0.1", 30000, 6000);
    const early = target("udp", gw, 19680, 40680);
    await assertNoReach(lab.host, [early], "UDP before the mapping");
    const before = await trackedCount(lab.host);
    assert.ok(before > 6000, `the host tracks ${before} connections`);
    const a = await net.attach(await lab.addPod("a"), [udp(19680)]);
    await servers.start(a.pod.name, "pod-a", [target("udp", a.ip4, 80)]);
    await assertReaches(lab.host, [early], "pod-a", "a UDP flow that began before the mapping");
    const after = await trackedCount(lab.host);
    assert.ok(after > before - 100, `${before} connections tracked before the ADD, ${after} after`);
  },
  { only: "cnichain" },
);

portmapTest(
  "portmap: CHECK passes after ADD and fails once a mapping is gone from nftables",
  async ({ lab, v }) => {
    const net = new Net(lab, v, "10.52.0.0/24");
    const mappings = [tcp(19180)];
    const a = await net.attach(await lab.addPod("a"), mappings);
    const withPrev = net.chain(mappings, { prevResult: a.result });
    assertOk(await lab.cni("CHECK", withPrev, { pod: a.pod }), "CHECK after ADD");
    // An older cnichain kept the pod's localhost hairpin in pm_hairpin4 (127.0.0.0/8 . pod),
    // where pm_local4 now holds the pod: an attachment it made still passes.
    const [local] = ownedBy(await pmElements(lab), a.id).filter((e) => e.set === "pm_local4");
    assert.ok(local?.comment, "ADD put the pod in pm_local4");
    const ip = bare(a.result.ips![0].address);
    await nftIn(lab.host, `delete element inet ${TABLE} pm_local4 { ${ip} }`);
    await nftIn(
      lab.host,
      `add element inet ${TABLE} pm_hairpin4 { 127.0.0.0/8 . ${ip} comment "${local.comment}" }`,
    );
    assertOk(await lab.cni("CHECK", withPrev, { pod: a.pod }), "CHECK of the older layout");
    await nftIn(lab.host, `delete element inet ${TABLE} pm_hairpin4 { 127.0.0.0/8 . ${ip} }`);
    assertCniError(
      await lab.cni("CHECK", withPrev, { pod: a.pod }),
      v,
      "CHECK without the localhost hairpin",
    );
    await nftIn(
      lab.host,
      `add element inet ${TABLE} pm_local4 { ${ip} comment "${local.comment}" }`,
    );
    assertOk(await lab.cni("CHECK", withPrev, { pod: a.pod }), "CHECK with it back");
    await nftIn(lab.host, `delete element inet ${TABLE} pm_dnat4 { tcp . 19180 }`);
    assertCniError(
      await lab.cni("CHECK", withPrev, { pod: a.pod }),
      v,
      "CHECK without the mapping",
    );
  },
  { only: "cnichain" },
);

portmapTest(
  "portmap: no port mappings, empty or absent, passes prevResult on and adds nothing to nftables",
  async ({ lab, v }) => {
    const net = new Net(lab, v, "10.47.0.0/24");
    const rulesetBefore = await nftRuleset(lab.host);
    const pod = await lab.addPod("a");
    const bridgeConf = lab.netconf(v, net.bridge());
    const prev = assertOk(await lab.cni("ADD", bridgeConf, { pod }), "bridge ADD");
    for (const mappings of [[], undefined]) {
      const what = `portmap ADD with ${mappings ? "portMappings []" : "no portMappings"}`;
      const out = await lab.cni("ADD", net.portmapConf(mappings, prev), { pod, env: PORTMAP_ENV });
      assert.deepEqual(assertOk(out, what), prev, `${what} returns prevResult unchanged`);
      assert.deepEqual(await nftRuleset(lab.host), rulesetBefore, `${what} adds nothing`);
    }
    for (const [i, mappings] of [[], undefined].entries()) {
      const what = `chain ADD with ${mappings ? "portMappings []" : "no portMappings"}`;
      const x = await net.attach(await lab.addPod(`c${i}`), mappings);
      assert.deepEqual(await nftRuleset(lab.host), rulesetBefore, `${what} adds nothing`);
      assertOk(await net.del(x.pod, { prevResult: x.result, mappings }), `${what}, then DEL`);
    }
    assertOk(await lab.cni("DEL", net.portmapConf([], prev), { pod, env: PORTMAP_ENV }), "DEL");
    assert.deepEqual(await nftRuleset(lab.host), rulesetBefore, "DEL with no mappings");
  },
);

portmapTest(
  "portmap: GC keeps the valid attachment's mappings and removes the others'",
  async ({ lab, v, servers }) => {
    const net = new Net(lab, v, "10.48.0.0/24");
    const a = await net.attach(await lab.addPod("a"), [tcp(18680)]);
    const b = await net.attach(await lab.addPod("b"), [tcp(18681), udp(18681)]);
    await servers.start(a.pod.name, "pod-a", [target("tcp", a.ip4, 80)]);
    await servers.start(b.pod.name, "pod-b", [target("tcp", b.ip4, 80)]);
    const gw = net.gateway4;
    await assertReaches(lab.host, [target("tcp", gw, 18681)], "pod-b", "pod b before GC");
    const elements = await pmElements(lab);
    const aBefore = ownedBy(elements, a.id);
    assert.notDeepEqual(ownedBy(elements, b.id), [], "pod b has elements before GC");

    const gc = await lab.cni("GC", {
      ...net.chain(),
      "cni.dev/valid-attachments": [{ containerID: a.id, ifname: "eth0" }],
    });
    assertOk(gc, "GC");
    const after = await pmElements(lab);
    assert.deepEqual(ownedBy(after, a.id), aBefore, "pod a's elements are kept");
    assert.deepEqual(ownedBy(after, b.id), [], "pod b's elements are removed");
    await assertReaches(lab.host, [target("tcp", gw, 18680)], "pod-a", "pod a after GC");
    await assertNoReach(lab.host, [target("tcp", gw, 18681)], "pod b after GC", [
      target("tcp", gw, 18681),
    ]);
  },
  { only: "cnichain", versions: ["1.1.0"] },
);

portmapTest(
  "cnichain add --dry-run of bridge, host-local and portmap prints the nftables batch and changes nothing",
  async ({ lab, v }) => {
    const net = new Net(lab, v, "10.49.0.0/24");
    const withState = (entry: Record<string, unknown>) => ({ ...entry, stateDir: lab.stateDir });
    const file = `${lab.dir}/portmap.conflist`;
    await Deno.writeTextFile(
      file,
      JSON.stringify({
        cniVersion: v,
        name: "kt",
        plugins: [withState(net.bridge()), withState(net.portmap())],
      }),
    );
    const pod = await lab.addPod("a");
    const hostBefore = await snapshot(lab.host);
    const filesBefore = await listTree(lab.dir);
    const out = await runProgram(IP, {
      args: [
        "netns",
        "exec",
        lab.host,
        BUNDLE,
        "add",
        "--dry-run",
        file,
        "--netns",
        pod.path,
        "--container-id",
        "ctr-dry",
        "--ifname",
        "eth0",
        "--cni-path",
        lab.cniPath,
        "--cache-dir",
        `${lab.dir}/cache`,
        "--cap-args",
        JSON.stringify({ portMappings: [tcp(18780), udp(18781, 53)] }),
      ],
    });
    assert.equal(out.code, 0, `dry run failed (exit ${out.code}): ${out.stdout}${out.stderr}`);
    const lines = out.stdout.split("\n");
    const start = lines.findIndex((l) => /^step \d+: portmap ADD/.test(l));
    assert.ok(start >= 0, `a portmap step in the plan:\n${out.stdout}`);
    const end = lines.findIndex((l, i) => i > start && /^step \d+:/.test(l));
    const section = lines.slice(start, end < 0 ? undefined : end).join("\n");
    for (const want of ["pm_dnat4", "18780", "18781", "10.49.0.2", "ctr-dry"]) {
      assert.ok(section.includes(want), `the portmap step's batch mentions ${want}:\n${section}`);
    }
    const elementLines = section.split("\n").filter((l) =>
      /\b(add|create) element inet cnichain pm_dnat4 /.test(l)
    );
    for (const [port, to] of [["18780", "10.49.0.2 . 80"], ["18781", "10.49.0.2 . 53"]]) {
      assert.ok(
        elementLines.some((l) => l.includes(port) && l.includes(to)),
        `the batch adds a pm_dnat4 element for ${port} to ${to}:\n${section}`,
      );
    }

    assert.deepEqual(await snapshot(lab.host), hostBefore, "the host netns is unchanged");
    assert.deepEqual(
      (await nftRuleset(lab.host)).filter((o) => !o.metainfo),
      [],
      "nothing in nftables",
    );
    assert.equal(await link(pod.name, "eth0"), undefined, "no eth0 in the pod");
    assert.deepEqual(await listTree(lab.dir), filesBefore, "no file written");
  },
  { only: "cnichain" },
);

portmapTest(
  "portmap: hostIP 0.0.0.0 forwards from every IPv4 address of the host; :: forwards nothing to an IPv4 pod",
  async ({ lab, v, servers }) => {
    const net = new Net(lab, v, "10.55.0.0/24");
    const gw = net.gateway4;
    const a = await net.attach(await lab.addPod("a"), [
      tcp(19780, 80, "0.0.0.0"),
      tcp(19790, 80, "::"),
    ]);
    await servers.start(a.pod.name, "pod-a", [target("tcp", a.ip4, 80)]);
    await assertReaches(
      lab.host,
      [target("tcp", gw, 19780), target("tcp", "127.0.0.1", 19780)],
      "pod-a",
      "hostIP 0.0.0.0, to the gateway and to localhost",
    );
    await assertNoReach(lab.host, [target("tcp", gw, 19790)], "hostIP :: with an IPv4-only pod");
    assertOk(await net.del(a.pod, { prevResult: a.result }), "DEL");
  },
);

portmapTest(
  "portmap: a host port listed twice works once; the same port to two container ports is refused, nothing changed",
  async ({ lab, v, servers }) => {
    const net = new Net(lab, v, "10.56.0.0/24");
    const gw = net.gateway4;
    const before = await snapshot(lab.host);
    const twice = [tcp(19880), tcp(19880), tcp(19880, 80, "0.0.0.0")];
    const a = await net.attach(await lab.addPod("a"), twice);
    await servers.start(a.pod.name, "pod-a", [target("tcp", a.ip4, 80)]);
    await assertReaches(lab.host, [target("tcp", gw, 19880)], "pod-a", "a host port listed twice");
    assertOk(
      await lab.cni("CHECK", net.chain(twice, { prevResult: a.result }), { pod: a.pod }),
      "CHECK",
    );
    assertOk(await net.del(a.pod, { prevResult: a.result }), "DEL");
    await assertNoLeak(lab.host, before, KEEP_BRIDGE);

    const b = await lab.addPod("b");
    const clash = [tcp(19890, 80), tcp(19890, 81)];
    const refused = await lab.cni("ADD", net.chain(clash), { pod: b });
    const error = assertCniError(refused, v, "the same host port to two container ports");
    assert.equal(error.code, 7);
    assert.match(
      error.msg,
      /portMappings\[1\]: forwards host port tcp\/19890 to container port 81, but .*portMappings\[0\] forwards it to 80/,
    );
    await assertNoLeak(lab.host, before, KEEP_BRIDGE);
  },
  { only: "cnichain" },
);

portmapTest(
  "portmap: after ADD and DEL of every pod nothing but the bridge is left in the host netns",
  async ({ lab, v }) => {
    const net = new Net(lab, v, "10.50.0.0/24", "fd50::/64");
    const before = await snapshot(lab.host);
    const a = await net.attach(await lab.addPod("a"), [
      tcp(18880),
      udp(18880),
      tcp(18890, 80, "10.50.0.1"),
      tcp(18891, 80, "fd50::1"),
    ]);
    const b = await net.attach(await lab.addPod("b"), [tcp(18881)]);
    await assertMapped(lab, a, "pm_dnat6_ip", ["18891", `"${a.ip6}"`]);
    await assertMapped(lab, b, "pm_dnat4", ["18881", `"${b.ip4}"`]);
    assertOk(await net.del(a.pod, { prevResult: a.result }), "DEL of pod a with prevResult");
    assertOk(await net.del(b.pod), "DEL of pod b without prevResult");
    assert.deepEqual(await lab.allocations(), [], "every address is released");
    await assertNoLeak(lab.host, before, KEEP_BRIDGE);
    const files = [];
    for (const path of await listTree(lab.stateDir)) {
      if ((await Deno.stat(`${lab.stateDir}/${path}`)).isFile && !path.endsWith(".lock")) {
        files.push(path);
      }
    }
    assert.deepEqual(files, [], `no per-attachment file is left in the state dir ${lab.stateDir}`);
  },
  { only: "cnichain" },
);
