/**
 * Differential runs: the same conflist, driven by upstream libcni, once with
 * the reference plugins and once with cnichain's multi-call names, each in its
 * own throwaway host netns with the same names and subnets. The results, the
 * kernel state (links, flags, addresses, routes, ip_forward, in the host and
 * the pods), what a host port forwards to, and the host-local store are
 * compared after normalising what legitimately differs: random veth names and
 * MACs (and the IPv6 link-local addresses derived from them), the rule engine
 * (iptables or nftables objects are not compared; forwarding is probed),
 * `"dns": {}`, file modes.
 */
import { addresses, links, routes } from "../test/netns.ts";
import { referenceView, snapshot } from "../test/host_local.ts";
import { probeOne, serve } from "../test/net_probe.ts";
import { type Check, expect, Failure, FROM_030, sortKeys, versionsFrom } from "./harness.ts";
import type { Json } from "./fixtures.ts";
import { type Pod, withWorld, type World } from "./lab.ts";

const NET = "cncdiff";
const BRIDGE = "cncbr0";
const SUBNET = "10.222.0";
const HOST_PORT = 8080;
/** Environment for the reference binaries: portmap 1.1.1 and 1.9.x run `iptables`. */
const REF_ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" };

type Shape = "bridge-portmap" | "bridge-dual-stack" | "ptp" | "host-local";

function conflist(w: World, v: string, shape: Shape): Json {
  const ipam = {
    type: "host-local",
    dataDir: w.dataDir,
    ranges: [[{ subnet: `${SUBNET}.0/24` }]],
    routes: [{ dst: "0.0.0.0/0" }],
  };
  const dual = {
    ...ipam,
    ranges: [[{ subnet: `${SUBNET}.0/24` }], [{ subnet: "fd00:222::/64" }]],
    routes: [{ dst: "0.0.0.0/0" }, { dst: "::/0" }],
  };
  const plugins: Json[] = shape === "bridge-dual-stack"
    ? [{ type: "bridge", bridge: BRIDGE, isGateway: true, stateDir: w.stateDir, ipam: dual }]
    : shape === "bridge-portmap"
    ? [
      { type: "bridge", bridge: BRIDGE, isGateway: true, ipMasq: true, stateDir: w.stateDir, ipam },
      {
        type: "portmap",
        capabilities: { portMappings: true },
        backend: "nftables",
        stateDir: w.stateDir,
      },
    ]
    : shape === "ptp"
    ? [{ type: "ptp", ipMasq: true, stateDir: w.stateDir, ipam }]
    : [{ type: "host-local", ipam }];
  return { cniVersion: v, name: NET, plugins };
}

interface Run {
  results: unknown[];
  afterAdd: Json;
  store: Json;
  afterDel: Json;
  storeAfterDel: Json;
  forwards?: string[];
}

/** Replaces what differs by nature between two runs of the same thing. */
function normalise(value: unknown, pods: Pod[]): unknown {
  let text = JSON.stringify(value);
  pods.forEach((p, i) => {
    text = text.replaceAll(p.path, `<pod${i + 1}>`).replaceAll(p.name, `<pod${i + 1}>`);
  });
  text = text
    .replace(/veth[0-9a-f]{8}/g, "vethX")
    .replace(/"([0-9a-f]{2}:){5}[0-9a-f]{2}"/gi, '"<mac>"')
    .replace(/,"dns":\{\}/g, "")
    .replace(/"dns":\{\},?/g, "");
  return sortKeys(JSON.parse(text));
}

async function kernel(ns: string): Promise<Json> {
  const [ls, as, rs] = await Promise.all([links(ns), addresses(ns), routes(ns)]);
  return {
    links: ls.map((l) =>
      `${l.ifname} ${l.linkinfo?.info_kind ?? "device"} mtu ${l.mtu} ${
        // Carrier comes up asynchronously after the plugin returns: not a difference.
        l.flags.filter((f) => f !== "NO-CARRIER" && f !== "LOWER_UP").sort().join(",")} master ${
        l.master ?? "-"
      }`
    ).sort(),
    addresses: as.filter((a) => !a.local.startsWith("fe80:"))
      .map((a) => `${a.dev} ${a.local}/${a.prefixlen} ${a.scope}`).sort(),
    routes: rs.filter((r) =>
      !r.dst.startsWith("fe80") && !r.dst.startsWith("ff00") && r.dst !== "multicast" &&
      !(r.type === "multicast")
    ).map((r) =>
      `${r.table ?? "main"} ${r.type ?? "unicast"} ${r.dst}${r.gateway ? ` via ${r.gateway}` : ""}${
        r.dev ? ` dev ${r.dev}` : ""
      } scope ${r.scope ?? "global"}${r.prefsrc ? ` src ${r.prefsrc}` : ""}`
    ).sort(),
  };
}

async function sysctl(w: World, ns: string, key: string): Promise<string> {
  const out = await w.run("/usr/sbin/ip", [
    "netns",
    "exec",
    ns,
    "/usr/bin/cat",
    `/proc/sys/${key}`,
  ]);
  return out.stdout.trim();
}

/** The store as the reference plugin sees it (cnichain's indexes and seal left out). */
async function store(w: World): Promise<Json> {
  return referenceView(await snapshot(`${w.dataDir}/${NET}`));
}

async function runOnce(
  w: World,
  client: string,
  v: string,
  shape: Shape,
  env: Record<string, string>,
): Promise<Run> {
  const list = conflist(w, v, shape);
  const pods = [await w.addPod("a"), await w.addPod("b")];
  const call = async (verb: string, pod: Pod, id: string) => {
    const req = {
      conflist: list,
      cniPath: [w.cniPath],
      cacheDir: w.cacheDir,
      containerID: id,
      netns: pod.path,
      ifname: "eth0",
      capabilityArgs: {
        portMappings: [{ hostPort: HOST_PORT, containerPort: 80, protocol: "tcp" }],
      },
    };
    const out = await w.run(client, [verb], JSON.stringify(req), env);
    const j = JSON.parse(out.stdout || "{}") as { ok: boolean; result?: unknown; text?: string };
    if (!j.ok) throw new Failure(`${verb} ${id} (${w.cniPath}): ${j.text ?? out.stderr}`);
    return j.result;
  };
  const results = [await call("add", pods[0], "ctr-a")];
  if (shape !== "bridge-portmap") results.push(await call("add", pods[1], "ctr-b"));
  const snap = async () => {
    // The reference adds the bridge's IPv6 gateway with DAD, cnichain without (README): wait for
    // DAD to finish, so that the kernel's local routes for those addresses exist in both.
    const deadline = Date.now() + 5000;
    const namespaces = [w.host, ...pods.map((p) => p.name)];
    while (Date.now() < deadline) {
      const all = (await Promise.all(namespaces.map((ns) => addresses(ns)))).flat();
      if (!all.some((a) => a.tentative)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    return await state();
  };
  const state = async () => ({
    host: await kernel(w.host),
    pods: await Promise.all(pods.map((p) => kernel(p.name))),
    ipForward: await sysctl(w, w.host, "net/ipv4/ip_forward"),
  });
  const afterAdd = await snap();
  const st = await store(w);
  let forwards: string[] | undefined;
  if (shape === "bridge-portmap") {
    const server = await serve(pods[0].name, "pod-a", ["tcp:0.0.0.0:80"]);
    try {
      forwards = [];
      for (const target of [`${SUBNET}.1`, "127.0.0.1"]) {
        const r = await probeOne(w.host, `tcp:${target}:${HOST_PORT}`, 1500);
        forwards.push(`host -> ${target}:${HOST_PORT}: ${r.reply ? "pod-a" : r.error}`);
      }
    } finally {
      await server.close();
    }
  }
  for (let i = results.length - 1; i >= 0; i--) await call("del", pods[i], `ctr-${"ab"[i]}`);
  return {
    results: normalise(results, pods) as unknown[],
    afterAdd: normalise(afterAdd, pods) as Json,
    store: st,
    afterDel: normalise(await snap(), pods) as Json,
    storeAfterDel: await store(w),
    forwards,
  };
}

function diff(ref: Run, ours: Run): string[] {
  const out: string[] = [];
  const walk = (a: unknown, b: unknown, path: string) => {
    if (JSON.stringify(a) === JSON.stringify(b)) return;
    if (Array.isArray(a) && Array.isArray(b) && a.every((x) => typeof x === "string")) {
      const onlyA = a.filter((x) => !b.includes(x));
      const onlyB = b.filter((x) => !a.includes(x));
      out.push(
        `${path}: reference only ${JSON.stringify(onlyA)}; cnichain only ${JSON.stringify(onlyB)}`,
      );
      return;
    }
    if (a && b && typeof a === "object" && typeof b === "object") {
      const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
      for (const k of keys) walk((a as Json)[k], (b as Json)[k], `${path}.${k}`);
      return;
    }
    out.push(`${path}: reference ${JSON.stringify(a)}, cnichain ${JSON.stringify(b)}`);
  };
  walk(ref as unknown as Json, ours as unknown as Json, "");
  return out;
}

export function differentialChecks(bin: string, refDir: string, debianDir: string): Check[] {
  const client = new URL(".build/libcni-client", import.meta.url).pathname;
  const refs = [
    { key: "v1.9.1", dir: refDir, versions: versionsFrom("0.1.0") },
    { key: "debian-1.1.1", dir: debianDir, versions: versionsFrom("0.1.0", "1.0.0") },
  ];
  const checks: Check[] = [];
  const shapes: Shape[] = ["bridge-portmap", "bridge-dual-stack", "ptp", "host-local"];
  for (const shape of shapes) {
    for (const ref of refs) {
      const versions = shape === "bridge-portmap"
        ? ref.versions.filter((v) => FROM_030.includes(v))
        : ref.versions;
      checks.push({
        id: `diff.${shape}.${ref.key}`,
        section: "SPEC_NOTES: results and host-local store match the reference plugins",
        title:
          `${shape}: reference ${ref.key} and cnichain give the same results, kernel state and store`,
        versions,
        async run(v) {
          const theirs = await withWorld(ref.dir, (w) => runOnce(w, client, v, shape, REF_ENV));
          const ours = await withWorld(bin, (w) => runOnce(w, client, v, shape, {}));
          if (Deno.env.get("CONFORMANCE_DEBUG")) console.error(JSON.stringify({ theirs, ours }));
          const problems = diff(theirs, ours);
          expect(problems.length === 0, problems.join("; "));
        },
      });
    }
  }
  return checks;
}
