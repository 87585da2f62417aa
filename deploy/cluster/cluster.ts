/**
 * A three-node cluster on one machine, made of network namespaces only, with
 * cnichain as every node's CNI plugin. Nothing here touches the machine's
 * own network: every link, address and route lives in a netns this module
 * makes, and every netns name carries a random `ccl<6 hex>` prefix so that
 * clusters built at the same time (tests run in parallel) never collide.
 *
 *   underlay netns   bridge br0 10.99.0.254/24: the nodes' shared L2, and the
 *                    "outside" (an address not in the cluster CIDR)
 *   node k netns     eth0 10.99.0.k/24 on br0, ip_forward on, a route to
 *                    every other node's pod CIDR 10.244.j.0/24 via 10.99.0.j;
 *                    cnichain's bridge makes cni0 10.244.k.1/24 on first ADD
 *   pod netns        made by {@linkcode Cluster.addPod}, attached by running
 *                    dist/cnichain inside the node netns as a runtime would
 *
 * {@linkcode withCluster} builds the world and removes all of it afterwards,
 * also when the work in between fails.
 */
import { BUNDLE, type RunOutput, runProgram } from "../../test/helpers.ts";
import { allocationNames } from "../../test/host_local.ts";
import {
  addresses,
  assertNoLeak,
  eventually,
  type Ignore,
  ipIn,
  netnsNames,
  randomHex,
  run,
  setSysctl,
  sleep,
  type Snapshot,
  snapshot,
} from "../../test/netns.ts";
import { serve, type Server } from "../../test/net_probe.ts";

const IP = "/usr/sbin/ip";
const TIMEOUT = "/usr/bin/timeout";
const NETNS_DIR = "/var/run/netns";
/** A plugin run that takes longer is a hang. */
const PLUGIN_TIMEOUT_S = 30;
/** How long a new link's addresses may take to settle. */
const SETTLE_MS = 3000;
/** Deleting a netns returns before the kernel has finished with it. */
const TEARDOWN_POLL_MS = 5000;

/** What outlives a node's last pod, by design. */
const NODE_SHARED: Ignore = {
  devices: { cni0: "the bridge outlives its pods, as the reference bridge does" },
};

export const CNI_VERSION = "1.1.0";
/** The CNI network name: host-local's store and cnichain's state are keyed by it. */
export const NETWORK = "cluster";
export const CLUSTER_CIDR = "10.244.0.0/16";
export const UNDERLAY_CIDR = "10.99.0.0/24";
/** The underlay bridge's own address: a server here stands for the world outside the cluster. */
export const OUTSIDE_IP = "10.99.0.254";

/** One node: its netns, its underlay address and pod CIDR, its conflist and state. */
export interface Node {
  /** 1, 2, 3, ... */
  index: number;
  netns: string;
  underlayIp: string;
  podCidr: string;
  /** The conflist file, as a runtime would find it in /etc/cni/net.d. */
  conflist: string;
  stateDir: string;
  dataDir: string;
}

/** A pod as the API server knows it: where it runs and who it is. */
export interface PodSpec {
  node: number;
  namespace: string;
  name: string;
  labels: Record<string, string>;
}

/** A pod attached by ADD. */
export interface Pod extends PodSpec {
  netns: string;
  containerId: string;
  ip: string;
}

/** How long one plugin run took, wall clock, process start included (a runtime pays it too). */
export interface Timed<T> {
  value: T;
  ms: number;
}

export interface ClusterOptions {
  /** How many nodes (1 to 9, the digit in the addresses); default 3. */
  nodes?: number;
  /** The NetworkPolicy list every node's policy step reads (one shared `policyFile`). */
  policies: unknown[];
}

export class Cluster {
  readonly nodes: Node[] = [];
  readonly pods: Pod[] = [];
  readonly #servers: Server[] = [];
  #destroying?: Promise<void>;
  readonly #running = new Set<Promise<RunOutput>>();

  private constructor(
    /** `ccl<6 hex>`: the prefix of every netns of this cluster. */
    readonly prefix: string,
    /** The temp dir holding the policy file and every node's conflist, state and IPAM store. */
    readonly dir: string,
  ) {}

  get underlay(): string {
    return `${this.prefix}-ul`;
  }

  get policyFile(): string {
    return `${this.dir}/policies.json`;
  }

  /** Builds the underlay and the nodes; on failure removes what it made and throws. */
  static async create(opts: ClusterOptions): Promise<Cluster> {
    await Deno.stat(BUNDLE).catch(() => {
      throw new Error(`${BUNDLE} is missing: run "deno task bundle" first`);
    });
    const count = opts.nodes ?? 3;
    if (!(count >= 1 && count <= 9)) throw new Error(`nodes: 1 to 9 (got ${count})`);
    const dir = await Deno.makeTempDir({ prefix: "cnichain-cluster-" });
    const cluster = new Cluster(`ccl${randomHex(3)}`, dir);
    try {
      await Deno.writeTextFile(cluster.policyFile, JSON.stringify(opts.policies, null, 2));
      await cluster.#makeUnderlay();
      for (let k = 1; k <= count; k++) await cluster.#makeNode(k);
      for (const node of cluster.nodes) await cluster.#routePods(node);
    } catch (err) {
      await cluster.destroy().catch((cleanup) => console.error(String(cleanup)));
      throw err;
    }
    return cluster;
  }

  async #makeUnderlay(): Promise<void> {
    await run([IP, "netns", "add", this.underlay], "make the underlay netns");
    await ipIn(this.underlay, "link", "set", "lo", "up");
    await ipIn(this.underlay, "link", "add", "br0", "type", "bridge");
    await ipIn(this.underlay, "addr", "add", `${OUTSIDE_IP}/24`, "dev", "br0");
    await ipIn(this.underlay, "link", "set", "br0", "up");
  }

  async #makeNode(k: number): Promise<void> {
    const netns = `${this.prefix}-n${k}`;
    const home = `${this.dir}/n${k}`;
    const node: Node = {
      index: k,
      netns,
      underlayIp: `10.99.0.${k}`,
      podCidr: `10.244.${k}.0/24`,
      conflist: `${home}/net.d/10-${NETWORK}.conflist`,
      stateDir: `${home}/state`,
      dataDir: `${home}/networks`,
    };
    await Deno.mkdir(`${home}/net.d`, { recursive: true });
    // An empty CNI_PATH dir: every step is built in, so nothing may be exec'd from it.
    await Deno.mkdir(`${home}/bin`);
    await Deno.writeTextFile(node.conflist, JSON.stringify(this.conflist(node), null, 2));
    await run([IP, "netns", "add", netns], `make node ${k}'s netns`);
    this.nodes.push(node);
    await ipIn(netns, "link", "set", "lo", "up");
    // The link names are per netns: "n1" in the underlay, "eth0" in the node.
    await ipIn(
      this.underlay,
      "link",
      "add",
      `n${k}`,
      "type",
      "veth",
      "peer",
      "eth0",
      "netns",
      netns,
    );
    await ipIn(this.underlay, "link", "set", `n${k}`, "master", "br0", "up");
    await ipIn(netns, "addr", "add", `${node.underlayIp}/24`, "dev", "eth0");
    // Nothing on the underlay can collide with eth0's link-local address; without DAD it is
    // settled (with its local route) at once, so a snapshot taken now stays true.
    await setSysctl(netns, "net/ipv6/conf/eth0/accept_dad", "0");
    await ipIn(netns, "link", "set", "eth0", "up");
    await setSysctl(netns, "net/ipv4/ip_forward", "1");
    const settled = await eventually(async () => {
      const v6 = (await addresses(netns, "eth0")).filter((a) => a.family === "inet6");
      return v6.length > 0 && v6.every((a) => !a.tentative);
    }, SETTLE_MS);
    if (!settled) throw new Error(`node ${k}: eth0's IPv6 link-local address did not settle`);
  }

  /** What kube-router or a cloud's route table does: each pod CIDR via its node. */
  async #routePods(node: Node): Promise<void> {
    for (const other of this.nodes) {
      if (other === node) continue;
      await ipIn(node.netns, "route", "add", other.podCidr, "via", other.underlayIp);
    }
  }

  /**
   * The node's conflist: one `cnichain` entry whose nested chain is bridge
   * (host-local on the node's pod CIDR) and policy. Traffic to the cluster CIDR
   * keeps the pod's address, so that policy on the receiving node sees who
   * sent it; everything else leaves with the node's address.
   */
  conflist(node: Node): Record<string, unknown> {
    return {
      cniVersion: CNI_VERSION,
      name: NETWORK,
      plugins: [{
        type: "cnichain",
        stateDir: node.stateDir,
        plugins: [
          {
            type: "bridge",
            bridge: "cni0",
            isGateway: true,
            // The pods need a way out of their /24: other nodes' pods and the outside.
            isDefaultGateway: true,
            ipMasq: true,
            ipMasqExclude: [CLUSTER_CIDR],
            ipam: {
              type: "host-local",
              dataDir: node.dataDir,
              ranges: [[{ subnet: node.podCidr }]],
            },
          },
          { type: "policy", policyFile: this.policyFile },
        ],
      }],
    };
  }

  node(k: number): Node {
    const node = this.nodes.find((n) => n.index === k);
    if (!node) throw new Error(`node ${k}: the cluster has ${this.nodes.length} nodes`);
    return node;
  }

  /**
   * Runs cnichain for `pod` as a runtime does: inside the node's netns, with
   * only the CNI variables in the environment and the network config (the
   * conflist's one entry, with `cniVersion`, `name` and the pod's labels in
   * `args.cni.labels`) on stdin.
   */
  async cni(
    verb: "ADD" | "DEL",
    node: Node,
    pod: PodSpec & { netns: string; containerId: string },
  ): Promise<Timed<RunOutput>> {
    const { cniVersion, name, plugins } = this.conflist(node) as {
      cniVersion: string;
      name: string;
      plugins: Record<string, unknown>[];
    };
    const labels = Object.entries(pod.labels).map(([key, value]) => ({ key, value }));
    const config = { cniVersion, name, ...plugins[0], args: { cni: { labels } } };
    if (this.#destroying) throw new Error(`cluster ${this.prefix} is being removed`);
    const started = performance.now();
    const running = runProgram(TIMEOUT, {
      args: [
        "--kill-after=2",
        String(PLUGIN_TIMEOUT_S),
        IP,
        "netns",
        "exec",
        node.netns,
        BUNDLE,
      ],
      env: {
        CNI_COMMAND: verb,
        CNI_CONTAINERID: pod.containerId,
        CNI_NETNS: `${NETNS_DIR}/${pod.netns}`,
        CNI_IFNAME: "eth0",
        CNI_PATH: `${this.dir}/n${node.index}/bin`,
        CNI_ARGS: `K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name}`,
      },
      stdin: JSON.stringify(config),
    });
    // destroy() waits for it: a plugin still running would write into the removed temp dir again.
    this.#running.add(running);
    const out = await running.finally(() => this.#running.delete(running));
    const ms = performance.now() - started;
    if (out.code !== 0) {
      throw new Error(
        `${verb} of ${pod.namespace}/${pod.name} on node ${node.index} exited ${out.code}: ${out.stdout}${out.stderr}`
          .trim(),
      );
    }
    return { value: out, ms };
  }

  /** Makes the pod's netns, attaches it with ADD and starts a TCP server on its address. */
  async addPod(spec: PodSpec, ports: number[] = [80]): Promise<Timed<Pod>> {
    const node = this.node(spec.node);
    const netns = `${this.prefix}-n${spec.node}-${spec.name}`;
    const containerId = `${this.prefix}-${spec.namespace}-${spec.name}`;
    if (this.#destroying) throw new Error(`cluster ${this.prefix} is being removed`);
    await run([IP, "netns", "add", netns], `make pod ${spec.name}'s netns`);
    const added = await this.cni("ADD", node, { ...spec, netns, containerId });
    const ips = (added.value.json?.ips ?? []) as { address: string }[];
    const ip = ips[0]?.address.split("/")[0];
    if (!ip) throw new Error(`ADD of ${spec.name}: no address in ${added.value.stdout}`);
    const pod: Pod = { ...spec, netns, containerId, ip };
    this.pods.push(pod);
    await this.serve(netns, pod.name, ip, ports);
    return { value: pod, ms: added.ms };
  }

  /** DEL of a pod (no prevResult: cnichain uses the result it cached), then its netns goes. */
  async delPod(pod: Pod): Promise<Timed<void>> {
    const { ms } = await this.cni("DEL", this.node(pod.node), pod);
    this.pods.splice(this.pods.indexOf(pod), 1);
    await run([IP, "netns", "delete", pod.netns], `delete pod ${pod.name}'s netns`);
    return { value: undefined, ms };
  }

  /** A TCP server answering `<token> tcp from <source it saw>`; stopped by destroy(). */
  async serve(netns: string, token: string, ip: string, ports: number[] = [80]): Promise<void> {
    const server = await serve(netns, token, ports.map((p) => `tcp:${ip}:${p}`));
    this.#servers.push(server);
    // Started while destroy() ran (an interrupt): destroy() has stopped the others already.
    if (this.#destroying) {
      await server.close();
      throw new Error(`cluster ${this.prefix} is being removed`);
    }
  }

  /** A server on the underlay bridge's own address: outside the cluster CIDR. */
  serveOutside(ports: number[] = [80]): Promise<void> {
    return this.serve(this.underlay, "outside", OUTSIDE_IP, ports);
  }

  /** The addresses host-local still holds on a node (its allocation files). */
  allocations(node: Node): Promise<string[]> {
    return allocationNames(`${node.dataDir}/${NETWORK}`);
  }

  /** What every node netns holds now (links, addresses, routes, nftables), in node order. */
  snapshots(): Promise<Snapshot[]> {
    return Promise.all(this.nodes.map((n) => snapshot(n.netns)));
  }

  /**
   * Asserts that every node holds again what it held in `before` (taken
   * before its first ADD), but for what the first ADD made for all pods to
   * share, and that host-local holds no address on any node.
   */
  async assertNoPodLeft(before: Snapshot[]): Promise<void> {
    for (const [i, node] of this.nodes.entries()) {
      await assertNoLeak(node.netns, before[i], NODE_SHARED);
      const held = await this.allocations(node);
      if (held.length) {
        throw new Error(`node ${node.index}: host-local still holds ${held.join(", ")}`);
      }
    }
  }

  /**
   * Stops the servers, deletes every netns carrying the prefix and the temp
   * dir, then polls until `ip netns list` shows none of them. Keeps going past
   * errors and throws them all together; safe to call twice.
   */
  destroy(): Promise<void> {
    // One teardown: a second call (an interrupt during the first) waits for the same one.
    this.#destroying ??= this.#destroy();
    return this.#destroying;
  }

  async #destroy(): Promise<void> {
    await Promise.allSettled([...this.#running]);
    const problems: string[] = [];
    // A process inside a netns keeps it alive: the servers go first.
    await Promise.all(this.#servers.map((s) => s.close()));
    const mine = async () => (await netnsNames()).filter((n) => n.startsWith(`${this.prefix}-`));
    // Pods before nodes before the underlay, the order a real teardown goes in.
    for (const name of (await mine()).sort((a, b) => b.length - a.length)) {
      const out = await runProgram(IP, { args: ["netns", "delete", name] });
      if (out.code !== 0) problems.push(`delete netns ${name}: ${out.stderr.trim()}`);
    }
    await Deno.remove(this.dir, { recursive: true }).catch((err) => {
      problems.push(`remove ${this.dir}: ${err}`);
    });
    const deadline = Date.now() + TEARDOWN_POLL_MS;
    let left = await mine();
    while (left.length && Date.now() < deadline) {
      await sleep(50);
      left = await mine();
    }
    if (left.length) problems.push(`netns left behind: ${left.join(", ")}`);
    if (problems.length) throw new Error(`cluster ${this.prefix} teardown: ${problems.join("; ")}`);
  }
}

/**
 * Runs `fn` with a fresh cluster and removes it afterwards, also when `fn`
 * fails (a teardown failure then goes to stderr, so the first error is the
 * one reported).
 */
export async function withCluster<T>(
  opts: ClusterOptions,
  fn: (cluster: Cluster) => Promise<T>,
): Promise<T> {
  const cluster = await Cluster.create(opts);
  let result: T;
  try {
    result = await fn(cluster);
  } catch (err) {
    await cluster.destroy().catch((cleanup) => console.error(String(cleanup)));
    throw err;
  }
  await cluster.destroy();
  return result;
}
