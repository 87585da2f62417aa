/**
 * Side by side (issue 8): the bridge (isGateway, ipMasq) + host-local + portmap
 * chain run by the reference plugins, exec'd one process per step as libcni
 * does (v1.9.1 built from the Go module, and Debian's 1.1.1 in /usr/lib/cni),
 * against the same chain in one exec of `dist/cnichain`, and cnichain with a
 * `policy` step added. Everything runs inside a throwaway host netns (`cnb…`),
 * each pod in its own throwaway netns; nothing touches the machine's network.
 *
 *   deno task bench [--pods 50] [--concurrency 16] [--quick] [--out bench/results]
 *
 * The outer process makes the host netns and re-runs this file inside it
 * (`nsenter --net`), so that every plugin is exec'd directly from a process
 * that lives in the "node" netns, as a runtime's plugins are: no extra exec
 * per step. The outer process deletes the host netns (and with it every link,
 * iptables and nftables rule made there) whatever happens; the inner one
 * deletes its pod netns and temp dir, also on Ctrl-C.
 *
 * Not a pass/fail test: it prints figures (a markdown table), and writes
 * `latest.json` and `latest.svg` (latency against pod number) under `--out`.
 * It exits non-zero when a run could not be completed or a plugin failed.
 */
import { parseArgs } from "node:util";

const IP = "/usr/sbin/ip";
const NSENTER = "/usr/bin/nsenter";
const TIME = "/usr/bin/time";
const NETNS_DIR = "/var/run/netns";
/** What the reference processes get besides the CNI variables: their portmap runs `iptables`. */
const REF_PATH = "/usr/sbin:/usr/bin:/sbin:/bin";
const CNI_VERSION = "1.0.0";
/** A plugin exec that takes longer than this is a hang. */
const EXEC_TIMEOUT_MS = 60_000;
/** Host ports of implementation j are PORT_BASE + j * PORT_SPAN + pod serial. */
const PORT_BASE = 10_000;
const PORT_SPAN = 12_000;
const MAX_PODS = 5_000;

const root = new URL("..", import.meta.url).pathname;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    pods: { type: "string" },
    concurrency: { type: "string" },
    quick: { type: "boolean", default: false },
    out: { type: "string", default: `${root}bench/results` },
    reference: { type: "string", default: `${root}conformance/.build/plugins-v1.9.1` },
    debian: { type: "string", default: "/usr/lib/cni" },
    bundle: { type: "string", default: `${root}dist/cnichain` },
    growth: { type: "boolean", default: false },
    /** Internal: set on the re-run inside the host netns. */
    inner: { type: "string" },
    help: { type: "boolean", default: false },
  },
});

if (values.help) {
  console.log(
    `usage: deno task bench [--pods N] [--concurrency K] [--quick] [--out DIR]
  --pods N         pods per implementation (default 50; --quick: 8)
  --concurrency K  concurrent ADDs in the throughput run (default 16; --quick: 4)
  --quick          a short run for CI (8 pods, concurrency 4, fewer start-up samples)
  --out DIR        where latest.json and latest.svg go (default bench/results)
  --reference DIR  reference plugins v1.9.1 (default conformance/.build/plugins-v1.9.1)
  --debian DIR     Debian's reference plugins (default /usr/lib/cni)
  --bundle FILE    the cnichain program (default dist/cnichain)
  --growth         cnichain alone on the node: N pods added one by one, the first and last
                   tenth's ADD (wall and in-process) compared; writes growth.json`,
  );
  Deno.exit(0);
}

const pods = Number(values.pods ?? (values.quick ? 8 : 50));
const concurrency = Number(values.concurrency ?? (values.quick ? 4 : 16));
const samples = values.quick ? 3 : 10;
if (!Number.isInteger(pods) || pods < 1 || pods > MAX_PODS) {
  console.error(`bench: --pods must be an integer from 1 to ${MAX_PODS}`);
  Deno.exit(2);
}
if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) {
  console.error("bench: --concurrency must be an integer from 1 to 256");
  Deno.exit(2);
}

// ------------------------------------------------------------------ helpers

interface Output {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Children running now, so that an interrupt can stop them before cleaning up. */
const active = new Set<Deno.ChildProcess>();
let interrupted = false;

async function exec(
  file: string,
  args: string[],
  env: Record<string, string>,
  stdin = "",
): Promise<Output> {
  if (interrupted) throw new Error("interrupted");
  const began = performance.now();
  const child = new Deno.Command(file, {
    args,
    env,
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  active.add(child);
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }, EXEC_TIMEOUT_MS);
  try {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
    const out = await child.output();
    const ms = performance.now() - began;
    return {
      code: out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
      ms,
    };
  } finally {
    clearTimeout(timer);
    active.delete(child);
  }
}

async function must(args: string[], what: string): Promise<void> {
  const out = await exec(args[0], args.slice(1), { PATH: REF_PATH });
  if (out.code !== 0) throw new Error(`${what}: ${args.join(" ")}: ${out.stderr.trim()}`);
}

function hex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

function sorted(xs: number[]): number[] {
  return [...xs].sort((a, b) => a - b);
}

/** Nearest-rank percentile (p in 0..100); NaN for no samples. */
function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = sorted(xs);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

function median(xs: number[]): number {
  if (!xs.length) return NaN;
  const s = sorted(xs);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function round(x: number, digits = 2): number | null {
  return Number.isFinite(x) ? Number(x.toFixed(digits)) : null;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

// -------------------------------------------------------------- outer process

if (values.inner === undefined) {
  Deno.exit(await outer());
}

/** Makes the host netns, re-runs this file inside it, and removes the netns whatever happens. */
async function outer(): Promise<number> {
  if (Deno.uid() !== 0) {
    console.error("bench: needs root (it makes network namespaces)");
    return 2;
  }
  const missing = [
    `${values.reference}/bridge`,
    `${values.reference}/portmap`,
    `${values.reference}/host-local`,
    `${values.debian}/bridge`,
    `${values.debian}/portmap`,
    `${values.debian}/host-local`,
    values.bundle,
    IP,
    NSENTER,
  ].filter((p) => !exists(p));
  if (missing.length) {
    console.error(
      `bench: missing ${
        missing.join(", ")
      } (run \`bash conformance/build.sh\` and \`deno task bundle\`, or use \`deno task bench\`)`,
    );
    return 2;
  }
  const host = `cnb${hex(3)}`;
  await must([IP, "netns", "add", host], "make the host netns");
  let child: Deno.ChildProcess | undefined;
  const onSignal = (sig: Deno.Signal) => () => {
    // Ctrl-C reaches the inner process too (same process group); SIGTERM is passed on.
    if (sig !== "SIGINT") {
      try {
        child?.kill(sig);
      } catch {
        // Gone already.
      }
    }
  };
  const listeners: [Deno.Signal, () => void][] = [
    ["SIGINT", onSignal("SIGINT")],
    ["SIGTERM", onSignal("SIGTERM")],
    ["SIGHUP", onSignal("SIGHUP")],
  ];
  for (const [s, f] of listeners) Deno.addSignalListener(s, f);
  let code = 1;
  try {
    await must([IP, "-n", host, "link", "set", "lo", "up"], "bring lo up");
    const args = Deno.args.filter((a) => a !== "--inner");
    // nsenter, not `ip netns exec`: that one also gives the process a mount namespace of its own
    // (with a fresh /sys and no /sys/fs/cgroup), where every later pod's netns mount arrives as a
    // slave. Deno and Go read /proc/self/mountinfo at start to find their CPU quota, and there that
    // grew by 4-5 ms per process with 1,000 pod netns (none in the host's mount namespace, where a
    // runtime runs its plugins): it charged both sides for the bench's own harness.
    child = new Deno.Command(NSENTER, {
      args: [
        `--net=${NETNS_DIR}/${host}`,
        Deno.execPath(),
        "run",
        "--allow-all",
        "--quiet",
        new URL(import.meta.url).pathname,
        ...args,
        "--inner",
        host,
      ],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    code = (await child.status).code;
  } finally {
    // Pod netns the inner process could not remove (killed hard), then the host netns.
    for await (const e of Deno.readDir(NETNS_DIR)) {
      if (e.name.startsWith(`${host}-`)) {
        await exec(IP, ["netns", "delete", e.name], {}).catch(() => {});
      }
    }
    await exec(IP, ["netns", "delete", host], {}).catch(() => {});
    for (const [s, f] of listeners) Deno.removeSignalListener(s, f);
    const left = [];
    for await (const e of Deno.readDir(NETNS_DIR)) {
      if (e.name === host || e.name.startsWith(`${host}-`)) left.push(e.name);
    }
    if (left.length) {
      console.error(`bench: could not remove netns ${left.join(", ")}`);
      code = code || 1;
    }
  }
  return code;
}

// -------------------------------------------------------------- inner process

type Json = Record<string, unknown>;

interface Impl {
  key: string;
  label: string;
  kind: "reference" | "cnichain";
  /** Plugin directory (reference) or the program (cnichain). */
  dir: string;
  policy: boolean;
  network: string;
  bridge: string;
  subnet: string;
  index: number;
}

interface PodRun {
  pod: number;
  ms: number;
}

interface ImplRuns {
  add: PodRun[];
  del: PodRun[];
  errors: string[];
  concurrent?: {
    addSeconds: number;
    delSeconds: number;
    addErrors: number;
    delErrors: number;
    distinctAddresses: number;
  };
  rssKiB?: Record<string, number>;
  /** The first ADD of the run, not in the figures: it makes the bridge, loads modules. */
  coldAddMs?: number;
}

const hostNs = values.inner as string;
const work = await Deno.makeTempDir({ prefix: "cnichain-bench-" });
const podNetns = new Set<string>();
const serial = new Map<string, number>();

const impls: Impl[] = [
  {
    key: "ref-1.9.1",
    label: "reference v1.9.1",
    kind: "reference",
    dir: values.reference,
  },
  {
    key: "ref-1.1.1",
    label: "reference 1.1.1 (Debian)",
    kind: "reference",
    dir: values.debian,
  },
  { key: "cnichain", label: "cnichain", kind: "cnichain", dir: values.bundle },
  { key: "cnichain-policy", label: "cnichain + policy", kind: "cnichain", dir: values.bundle },
].map((x, j) => ({
  ...x,
  kind: x.kind as Impl["kind"],
  policy: x.key === "cnichain-policy",
  network: `cnb${x.key.replace(/[^a-z0-9]/g, "")}`,
  bridge: `${hostNs}b${j}`,
  subnet: `10.${200 + j}.0.0/16`,
  index: j,
}));

async function cleanup(): Promise<void> {
  for (const name of podNetns) {
    await exec(IP, ["netns", "delete", name], {}).catch(() => {});
  }
  podNetns.clear();
  await Deno.remove(work, { recursive: true }).catch(() => {});
}

async function onInterrupt(): Promise<void> {
  if (interrupted) return;
  interrupted = true;
  console.error("\nbench: interrupted; cleaning up");
  for (const c of active) {
    try {
      c.kill("SIGKILL");
    } catch {
      // Gone already.
    }
  }
  await Promise.allSettled([...active].map((c) => c.status));
  await cleanup();
  Deno.exit(130);
}
for (const s of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  Deno.addSignalListener(s, () => void onInterrupt());
}

async function newPod(impl: Impl): Promise<{ id: string; netns: string; port: number }> {
  const n = serial.get(impl.key) ?? 0;
  serial.set(impl.key, n + 1);
  const name = `${hostNs}-${impl.index}-${n}`;
  await must([IP, "netns", "add", name], "make a pod netns");
  podNetns.add(name);
  return {
    id: `cnb-${impl.index}-${n}`,
    netns: `${NETNS_DIR}/${name}`,
    port: PORT_BASE + impl.index * PORT_SPAN + n,
  };
}

async function dropPod(netns: string): Promise<void> {
  const name = netns.slice(NETNS_DIR.length + 1);
  await exec(IP, ["netns", "delete", name], {}).catch(() => {});
  podNetns.delete(name);
}

function portMappings(port: number): Json[] {
  return [
    { hostPort: port, containerPort: 80, protocol: "tcp" },
    { hostPort: port, containerPort: 53, protocol: "udp" },
  ];
}

function bridgeStep(impl: Impl): Json {
  return {
    type: "bridge",
    bridge: impl.bridge,
    isGateway: true,
    ipMasq: true,
    ipam: {
      type: "host-local",
      ranges: [[{ subnet: impl.subnet }]],
      dataDir: `${work}/${impl.key}/data`,
    },
  };
}

const POLICY = {
  name: "web-from-clients",
  namespace: "default",
  podSelector: { matchLabels: { app: "web" } },
  policyTypes: ["Ingress"],
  ingress: [{
    from: [{ podSelector: { matchLabels: { app: "client" } } }],
    ports: [{ protocol: "TCP", port: 80 }],
  }],
};

/** The one entry a runtime hands cnichain (runtimeConfig filled in, as libcni does). */
function chainEntry(impl: Impl, port: number): Json {
  const plugins: Json[] = [
    bridgeStep(impl),
    { type: "portmap", capabilities: { portMappings: true } },
  ];
  if (impl.policy) plugins.push({ type: "policy", policies: [POLICY] });
  return {
    cniVersion: CNI_VERSION,
    name: impl.network,
    type: "cnichain",
    capabilities: { portMappings: true },
    stateDir: `${work}/${impl.key}/state`,
    ...(impl.policy ? { args: { cni: { labels: [{ key: "app", value: "web" }] } } } : {}),
    runtimeConfig: { portMappings: portMappings(port) },
    plugins,
  };
}

function cniEnv(
  impl: Impl,
  verb: string,
  pod: { id: string; netns: string },
): Record<string, string> {
  const env: Record<string, string> = {
    CNI_COMMAND: verb,
    CNI_CONTAINERID: pod.id,
    CNI_NETNS: pod.netns,
    CNI_IFNAME: "eth0",
    CNI_PATH: impl.kind === "reference" ? impl.dir : impl.dir.slice(0, impl.dir.lastIndexOf("/")),
  };
  if (impl.kind === "reference") env.PATH = REF_PATH;
  return env;
}

interface Attachment {
  id: string;
  netns: string;
  port: number;
  result?: Json;
}

/** One verb of the whole chain, driven as libcni drives a conflist. Returns its wall ms. */
async function runChain(
  impl: Impl,
  verb: "ADD" | "DEL",
  pod: Attachment,
  opts: { wrap?: (step: string) => string[]; extraEnv?: Record<string, string> } = {},
): Promise<{ ms: number; stderr: string }> {
  const call = async (step: string, file: string, conf: Json): Promise<Json> => {
    const env = { ...cniEnv(impl, verb, pod), ...opts.extraEnv };
    const wrap = opts.wrap?.(step) ?? [];
    const out = wrap.length
      ? await exec(wrap[0], [...wrap.slice(1), file], env, JSON.stringify(conf))
      : await exec(file, [], env, JSON.stringify(conf));
    stderr += out.stderr;
    if (out.code !== 0) {
      throw new Error(
        `${impl.key} ${verb} ${step} (${pod.id}): exit ${out.code}: ${
          (out.stdout.trim() || out.stderr.trim()).slice(0, 400)
        }`,
      );
    }
    return out.stdout.trim() ? JSON.parse(out.stdout) : {};
  };
  let stderr = "";
  const began = performance.now();
  if (impl.kind === "cnichain") {
    const conf = chainEntry(impl, pod.port);
    if (verb === "ADD") pod.result = await call("cnichain", impl.dir, conf);
    else await call("cnichain", impl.dir, { ...conf, prevResult: pod.result });
  } else {
    const common = { cniVersion: CNI_VERSION, name: impl.network };
    const bridge = { ...common, ...bridgeStep(impl) };
    const portmap = {
      ...common,
      type: "portmap",
      capabilities: { portMappings: true },
      snat: true,
      runtimeConfig: { portMappings: portMappings(pod.port) },
    };
    if (verb === "ADD") {
      const first = await call("bridge", `${impl.dir}/bridge`, bridge);
      pod.result = await call("portmap", `${impl.dir}/portmap`, { ...portmap, prevResult: first });
    } else {
      await call("portmap", `${impl.dir}/portmap`, { ...portmap, prevResult: pod.result });
      await call("bridge", `${impl.dir}/bridge`, { ...bridge, prevResult: pod.result });
    }
  }
  return { ms: performance.now() - began, stderr };
}

function firstAddress(result: Json | undefined): string | undefined {
  const ips = result?.ips as { address?: string }[] | undefined;
  return ips?.[0]?.address;
}

const runs = new Map<string, ImplRuns>(
  impls.map((i) => [i.key, { add: [], del: [], errors: [] }]),
);

function note(impl: Impl, err: unknown): void {
  if (interrupted) throw new Error("interrupted");
  const msg = err instanceof Error ? err.message : String(err);
  runs.get(impl.key)!.errors.push(msg);
  console.error(`bench: ${msg}`);
}

/** N pods one at a time, A B C D per pod; then DEL of each pod, in the same interleaving. */
async function sequential(): Promise<void> {
  const warm: [Impl, Attachment][] = [];
  for (const impl of impls) {
    const pod: Attachment = await newPod(impl);
    warm.push([impl, pod]);
    try {
      runs.get(impl.key)!.coldAddMs = (await runChain(impl, "ADD", pod)).ms;
    } catch (err) {
      note(impl, err);
    }
  }
  const live: Attachment[][] = [];
  for (let i = 0; i < pods; i++) {
    const row: Attachment[] = [];
    for (const impl of impls) {
      const pod: Attachment = await newPod(impl);
      row.push(pod);
      try {
        const { ms } = await runChain(impl, "ADD", pod);
        runs.get(impl.key)!.add.push({ pod: i, ms });
      } catch (err) {
        note(impl, err);
      }
    }
    live.push(row);
    if ((i + 1) % 10 === 0 || i + 1 === pods) progress(`sequential ADD ${i + 1}/${pods}`);
  }
  for (let i = 0; i < pods; i++) {
    for (const impl of impls) {
      const pod = live[i][impl.index];
      try {
        if (pod.result) {
          const { ms } = await runChain(impl, "DEL", pod);
          runs.get(impl.key)!.del.push({ pod: i, ms });
        }
      } catch (err) {
        note(impl, err);
      }
      await dropPod(pod.netns);
    }
    if ((i + 1) % 10 === 0 || i + 1 === pods) progress(`sequential DEL ${i + 1}/${pods}`);
  }
  for (const [impl, pod] of warm) {
    try {
      if (pod.result) await runChain(impl, "DEL", pod);
    } catch (err) {
      note(impl, err);
    }
    await dropPod(pod.netns);
  }
}

async function pool<T>(items: T[], k: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(k, items.length) }, worker));
}

/** N pods, K ADDs at a time, one implementation after the other; then DEL the same way. */
async function concurrent(impl: Impl): Promise<void> {
  const atts: Attachment[] = [];
  for (let i = 0; i < pods; i++) atts.push(await newPod(impl));
  let addErrors = 0;
  let delErrors = 0;
  let began = performance.now();
  await pool(atts, concurrency, async (pod) => {
    try {
      await runChain(impl, "ADD", pod);
    } catch (err) {
      addErrors++;
      note(impl, err);
    }
  });
  const addSeconds = (performance.now() - began) / 1000;
  const addresses = new Set(atts.map((a) => firstAddress(a.result)).filter((a) => a));
  began = performance.now();
  await pool(atts.filter((a) => a.result), concurrency, async (pod) => {
    try {
      await runChain(impl, "DEL", pod);
    } catch (err) {
      delErrors++;
      note(impl, err);
    }
  });
  const delSeconds = (performance.now() - began) / 1000;
  for (const a of atts) await dropPod(a.netns);
  runs.get(impl.key)!.concurrent = {
    addSeconds,
    delSeconds,
    addErrors,
    delErrors,
    distinctAddresses: addresses.size,
  };
  progress(`concurrent ${impl.key}: ${pods} pods, ${concurrency} at a time`);
}

/** Peak RSS (VmHWM, KiB) of each process of one ADD, measured by GNU time around each exec. */
async function peakRss(impl: Impl): Promise<Record<string, number> | undefined> {
  if (!exists(TIME)) return undefined;
  const pod: Attachment = await newPod(impl);
  const files: Record<string, string> = {};
  try {
    await runChain(impl, "ADD", pod, {
      wrap: (step) => {
        files[step] = `${work}/rss-${impl.key}-${step}`;
        return [TIME, "-f", "%M", "-o", files[step]];
      },
    });
    const out: Record<string, number> = {};
    for (const [step, f] of Object.entries(files)) {
      out[step] = Number((await Deno.readTextFile(f)).trim().split("\n").pop());
    }
    await runChain(impl, "DEL", pod);
    return out;
  } catch (err) {
    note(impl, err);
    return undefined;
  } finally {
    await dropPod(pod.netns);
  }
}

interface Traced {
  /** In-process time of the chain. */
  inProcess: number[];
  /** From the runtime's start to the end of the chain, as the program sees it. */
  sinceStart: number[];
  /** Wall time of the exec, as the runtime sees it. */
  wall: number[];
}

const TRACE_LINE =
  /cnichain trace: (\w+) total ([\d.]+) ms in-process \(([\d.]+) ms since the runtime started/;

/**
 * In-process time of the chain (CNICHAIN_TRACE=1), ADD and DEL, a few pods, with one other pod
 * attached throughout: a node's usual state. Without it each ADD would be a node's first (the
 * table and its rules made again, the policy engine compiled: the "first ADD" row shows that).
 */
async function traced(impl: Impl): Promise<{ add: Traced; del: Traced }> {
  const add: Traced = { inProcess: [], sinceStart: [], wall: [] };
  const del: Traced = { inProcess: [], sinceStart: [], wall: [] };
  const grab = (into: Traced, r: { ms: number; stderr: string }) => {
    const m = TRACE_LINE.exec(r.stderr);
    if (!m) return;
    into.inProcess.push(Number(m[2]));
    into.sinceStart.push(Number(m[3]));
    into.wall.push(r.ms);
  };
  const anchor: Attachment = await newPod(impl);
  try {
    await runChain(impl, "ADD", anchor);
    for (let i = 0; i < samples; i++) {
      const pod: Attachment = await newPod(impl);
      try {
        const env = { extraEnv: { CNICHAIN_TRACE: "1" } };
        grab(add, await runChain(impl, "ADD", pod, env));
        grab(del, await runChain(impl, "DEL", pod, env));
      } catch (err) {
        note(impl, err);
      } finally {
        await dropPod(pod.netns);
      }
    }
    if (anchor.result) await runChain(impl, "DEL", anchor);
  } catch (err) {
    note(impl, err);
  } finally {
    await dropPod(anchor.netns);
  }
  return { add, del };
}

function tracedSummary(t: { add: Traced; del: Traced }): Json {
  const one = (x: Traced) => ({
    inProcessMs: round(median(x.inProcess)),
    sinceRuntimeStartMs: round(median(x.sinceStart)),
    wallMs: round(median(x.wall)),
  });
  return { add: one(t.add), del: one(t.del) };
}

/** The interpreter line of the bundle: `#!/usr/bin/env -S [VAR=value...] DENO run FLAGS`. */
async function interpreter(): Promise<{ argv: string[]; env: Record<string, string> }> {
  const first = (await Deno.readTextFile(values.bundle)).split("\n", 1)[0];
  const words = first.replace(/^#!\s*/, "").split(/\s+/).filter((w) => w);
  if (words[0]?.endsWith("/env")) words.shift();
  if (words[0] === "-S") words.shift();
  const env: Record<string, string> = {};
  while (words[0] && /^[A-Z_][A-Z0-9_]*=/.test(words[0])) {
    const [k, ...v] = words.shift()!.split("=");
    env[k] = v.join("=");
  }
  return { argv: words, env };
}

async function startup(): Promise<Json> {
  const version = async (file: string) => {
    const out: number[] = [];
    for (let i = 0; i < samples; i++) {
      const r = await exec(
        file,
        [],
        { CNI_COMMAND: "VERSION", CNI_PATH: "/nonexistent" },
        JSON.stringify({ cniVersion: CNI_VERSION }),
      );
      if (r.code !== 0) throw new Error(`${file} VERSION: exit ${r.code}: ${r.stdout}`);
      out.push(r.ms);
    }
    return out;
  };
  const interp = await interpreter();
  const empty = `${work}/empty.js`;
  await Deno.writeTextFile(empty, "");
  const floor: number[] = [];
  for (let i = 0; i < samples; i++) {
    const r = await exec(interp.argv[0], [...interp.argv.slice(1), empty], interp.env);
    if (r.code !== 0) throw new Error(`empty deno run: exit ${r.code}: ${r.stderr}`);
    floor.push(r.ms);
  }
  const cnichainVersion = await version(values.bundle);
  const refVersion = await version(`${values.reference}/bridge`);
  const chain = impls.find((i) => i.key === "cnichain")!;
  const withPolicy = impls.find((i) => i.key === "cnichain-policy")!;
  const t1 = await traced(chain);
  const t2 = await traced(withPolicy);
  return {
    samples,
    interpreter: [...Object.entries(interp.env).map(([k, v]) => `${k}=${v}`), ...interp.argv].join(
      " ",
    ),
    emptyDenoRunMs: round(median(floor)),
    cnichainVersionMs: round(median(cnichainVersion)),
    referenceBridgeVersionMs: round(median(refVersion)),
    traced: { cnichain: tracedSummary(t1), "cnichain-policy": tracedSummary(t2) },
  };
}

function progress(msg: string): void {
  console.error(`bench: ${msg}`);
}

// -------------------------------------------------------------------- report

/** Pods in a tenth of the run: the growth figures compare the first tenth with the last. */
const tenth = Math.max(1, Math.floor(pods / 10));

/** The medians of the first and the last tenth's times, and how much the last grew. */
function tenths(first: number[], last: number[]) {
  return {
    firstTenthMedianMs: round(median(first)),
    lastTenthMedianMs: round(median(last)),
    growthPercent: round((median(last) / median(first) - 1) * 100, 1),
  };
}

function summary(xs: PodRun[]): Json {
  const ms = xs.map((x) => x.ms);
  return {
    n: ms.length,
    medianMs: round(median(ms)),
    p90Ms: round(pct(ms, 90)),
    p99Ms: round(pct(ms, 99)),
    ...tenths(
      xs.filter((x) => x.pod < tenth).map((x) => x.ms),
      xs.filter((x) => x.pod >= pods - tenth).map((x) => x.ms),
    ),
  };
}

/** Median over pods of (a's time / b's time) for the same pod. */
function ratio(a: PodRun[], b: PodRun[]): number | null {
  const bm = new Map(b.map((x) => [x.pod, x.ms]));
  const rs = a.filter((x) => bm.has(x.pod)).map((x) => x.ms / bm.get(x.pod)!);
  return round(median(rs), 3);
}

async function machine(): Promise<Json> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ??
    /^Model\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  const nproc = await exec("/usr/bin/nproc", [], {}).then((o) => Number(o.stdout.trim()))
    .catch(() => navigator.hardwareConcurrency);
  const load = (await Deno.readTextFile("/proc/loadavg").catch(() => "")).split(" ", 3).join(" ");
  return {
    nproc,
    kernel: Deno.osRelease(),
    cpu: model.trim(),
    deno: Deno.version.deno,
    loadAverageAtEnd: load,
  };
}

const fmt = (x: unknown, d = 1) => typeof x === "number" ? x.toFixed(d) : "-";

function markdown(report: Json): string {
  const m = report.machine as Json;
  const res = report.implementations as Record<string, Json>;
  const keys = impls.map((i) => i.key);
  const row = (name: string, f: (r: Json) => string) =>
    `| ${name} | ${keys.map((k) => f(res[k])).join(" | ")} |`;
  const lat = (verb: "add" | "del") => (r: Json) => {
    const s = r[verb] as Json;
    return `${fmt(s.medianMs)} / ${fmt(s.p90Ms)} / ${fmt(s.p99Ms)}`;
  };
  const growth = (verb: "add" | "del") => (r: Json) => {
    const s = r[verb] as Json;
    return `${fmt(s.firstTenthMedianMs)} → ${fmt(s.lastTenthMedianMs)} (${
      typeof s.growthPercent === "number" && s.growthPercent >= 0 ? "+" : ""
    }${fmt(s.growthPercent)} %)`;
  };
  const conc = (field: string) => (r: Json) => {
    const c = r.concurrent as Json | undefined;
    return c ? fmt(c[field]) : "-";
  };
  const lines = [
    `Machine: ${m.nproc} CPUs (${m.cpu}), Linux ${m.kernel}, Deno ${m.deno}; ${pods} pods, ` +
    `${concurrency} concurrent; load ${m.loadAverageAtEnd} at the end; cniVersion ${CNI_VERSION}; chain bridge (isGateway, ipMasq) + ` +
    `host-local + portmap (2 mappings per pod). Wall times in ms, as the runtime sees them.`,
    "",
    `| | ${impls.map((i) => i.label).join(" | ")} |`,
    `| --- | ${keys.map(() => "---").join(" | ")} |`,
    row("ADD median / p90 / p99 (ms)", lat("add")),
    row("DEL median / p90 / p99 (ms)", lat("del")),
    row(
      "processes per ADD",
      (r) => String(r.processesPerAdd),
    ),
    row("ADD first → last tenth of pods (median ms)", growth("add")),
    row("DEL first → last tenth of pods (median ms)", growth("del")),
    row(`ADD pods/s, ${concurrency} concurrent`, conc("addPodsPerSecond")),
    row(`DEL pods/s, ${concurrency} concurrent`, conc("delPodsPerSecond")),
    row("concurrent ADDs: errors, distinct addresses", (r) => {
      const c = r.concurrent as Json | undefined;
      return c ? `${c.addErrors}, ${c.distinctAddresses}/${pods}` : "-";
    }),
    row("peak RSS of one ADD (MiB, largest process)", (r) => {
      const rss = r.peakRssKiB as Record<string, number> | undefined;
      if (!rss) return "-";
      const parts = Object.entries(rss).map(([s, k]) => `${s} ${(k / 1024).toFixed(1)}`);
      return parts.join(", ");
    }),
    row("first ADD of the run (makes the bridge; not above)", (r) => fmt(r.coldAddMs)),
    row("errors", (r) => String((r.errors as string[]).length)),
    "",
    "| cnichain / reference, median of per-pod ratios | ADD | DEL |",
    "| --- | --- | --- |",
    ...(report.ratios as Json[]).map((r) => `| ${r.pair} | ${fmt(r.add, 2)} | ${fmt(r.del, 2)} |`),
  ];
  const s = report.startup as Json | undefined;
  if (s) {
    const tr = s.traced as Record<string, Record<string, Json>>;
    const t = (k: string, verb: string) => {
      const x = tr[k][verb];
      return `${fmt(x.inProcessMs)} / ${fmt(x.sinceRuntimeStartMs)} / ${fmt(x.wallMs)}`;
    };
    lines.push(
      "",
      `| start-up budget (median of ${s.samples}) | ms |`,
      "| --- | --- |",
      `| empty \`deno run\` with the bundle's flags (the floor) | ${fmt(s.emptyDenoRunMs)} |`,
      `| \`dist/cnichain\` VERSION, wall | ${fmt(s.cnichainVersionMs)} |`,
      `| reference v1.9.1 \`bridge\` VERSION, wall | ${fmt(s.referenceBridgeVersionMs)} |`,
      "",
      "| `CNICHAIN_TRACE=1`, another pod attached (median ms) | in-process / since runtime start / exec wall |",
      "| --- | --- |",
      `| cnichain ADD | ${t("cnichain", "add")} |`,
      `| cnichain DEL | ${t("cnichain", "del")} |`,
      `| cnichain + policy ADD | ${t("cnichain-policy", "add")} |`,
      `| cnichain + policy DEL | ${t("cnichain-policy", "del")} |`,
    );
  }
  return lines.join("\n");
}

const COLORS = ["#d62728", "#ff7f0e", "#1f77b4", "#2ca02c"];

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Two panels (ADD, DEL): wall ms against pod number, one line per implementation. */
function svg(title: string): string {
  const W = 860;
  const panelH = 300;
  const left = 60;
  const right = 200;
  const top = 56;
  const gap = 60;
  const plotW = W - left - right;
  const H = top + 2 * panelH + gap + 40;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${left}" y="22" font-size="14" font-weight="bold">${esc(title)}</text>`,
  ];
  (["add", "del"] as const).forEach((verb, p) => {
    const y0 = top + p * (panelH + gap);
    const all = impls.flatMap((i) => runs.get(i.key)![verb].map((x) => x.ms));
    const max = Math.max(1, ...all);
    const step = niceStep(max / 5);
    const yMax = Math.ceil(max / step) * step;
    const sx = (pod: number) => left + (pods <= 1 ? plotW / 2 : (pod / (pods - 1)) * plotW);
    const sy = (ms: number) => y0 + panelH - (ms / yMax) * panelH;
    out.push(
      `<text x="${left}" y="${y0 - 8}" font-weight="bold">${verb.toUpperCase()} wall ms</text>`,
    );
    for (let v = 0; v <= yMax + 1e-9; v += step) {
      out.push(
        `<line x1="${left}" x2="${left + plotW}" y1="${sy(v).toFixed(1)}" y2="${
          sy(v).toFixed(1)
        }" stroke="#ddd"/>`,
        `<text x="${left - 6}" y="${(sy(v) + 4).toFixed(1)}" text-anchor="end">${
          Number(v.toFixed(3))
        }</text>`,
      );
    }
    const xStep = Math.max(1, niceStep(pods / 8));
    for (let n = 0; n < pods; n += xStep) {
      out.push(
        `<text x="${sx(n).toFixed(1)}" y="${y0 + panelH + 16}" text-anchor="middle">${
          n + 1
        }</text>`,
      );
    }
    out.push(
      `<text x="${left + plotW / 2}" y="${
        y0 + panelH + 32
      }" text-anchor="middle">pod number</text>`,
      `<rect x="${left}" y="${y0}" width="${plotW}" height="${panelH}" fill="none" stroke="#888"/>`,
    );
    impls.forEach((impl, j) => {
      const pts = runs.get(impl.key)![verb].map((x) =>
        `${sx(x.pod).toFixed(1)},${sy(x.ms).toFixed(1)}`
      );
      if (pts.length) {
        out.push(
          `<polyline fill="none" stroke="${COLORS[j]}" stroke-width="1.5" points="${
            pts.join(" ")
          }"/>`,
        );
      }
      const ly = y0 + 16 + j * 18;
      out.push(
        `<line x1="${left + plotW + 12}" x2="${left + plotW + 32}" y1="${ly - 4}" y2="${
          ly - 4
        }" stroke="${COLORS[j]}" stroke-width="3"/>`,
        `<text x="${left + plotW + 38}" y="${ly}">${esc(impl.label)}</text>`,
      );
    });
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

function niceStep(x: number): number {
  if (!(x > 0)) return 1;
  const e = 10 ** Math.floor(Math.log10(x));
  const f = x / e;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * e;
}

// ----------------------------------------------------------------------- run

/**
 * `--growth`: how cnichain's ADD grows with the pods on a node when the node is its own (in the
 * full run four implementations share the host netns: 4 x N veths and the reference's iptables
 * rules, which slow every process's kernel work).
 */
async function growth(): Promise<void> {
  const impl = impls.find((i) => i.key === "cnichain")!;
  const rows: {
    wall: number;
    inProcess: number;
    sinceStart: number;
    steps: Record<string, number>;
  }[] = [];
  const live: Attachment[] = [];
  try {
    for (let i = 0; i < pods; i++) {
      const pod = await newPod(impl);
      live.push(pod);
      const r = await runChain(impl, "ADD", pod, { extraEnv: { CNICHAIN_TRACE: "1" } });
      const m = TRACE_LINE.exec(r.stderr);
      const steps: Record<string, number> = {};
      for (const s of r.stderr.matchAll(/ADD step \S+ (\S+) \(built-in\) ([\d.]+) ms/g)) {
        steps[s[1]] = Number(s[2]);
      }
      rows.push({
        wall: r.ms,
        inProcess: Number(m?.[2] ?? NaN),
        sinceStart: Number(m?.[3] ?? NaN),
        steps,
      });
      if ((i + 1) % 50 === 0 || i + 1 === pods) progress(`growth ADD ${i + 1}/${pods}`);
    }
  } finally {
    for (const pod of live) {
      if (pod.result) await runChain(impl, "DEL", pod).catch((err) => note(impl, err));
      await dropPod(pod.netns);
    }
  }
  const of = (time: (r: typeof rows[number]) => number) =>
    tenths(rows.slice(0, tenth).map(time), rows.slice(-tenth).map(time));
  const part = (key: "wall" | "inProcess" | "sinceStart") => of((r) => r[key]);
  const report = {
    date: new Date().toISOString(),
    machine: await machine(),
    pods,
    chain: "bridge (isGateway, ipMasq) + host-local + portmap (2 mappings per pod), cnichain alone",
    wall: part("wall"),
    inProcess: part("inProcess"),
    sinceRuntimeStart: part("sinceStart"),
    stepsMs: Object.fromEntries(
      Object.keys(rows[0]?.steps ?? {}).map((step) => [step, of((r) => r.steps[step])]),
    ),
    wallMs: rows.map((r) => round(r.wall, 3)),
    inProcessMs: rows.map((r) => round(r.inProcess, 3)),
  };
  await Deno.mkdir(values.out, { recursive: true });
  await Deno.writeTextFile(`${values.out}/growth.json`, JSON.stringify(report, null, 2) + "\n");
  const row = (what: string, x: ReturnType<typeof part>) =>
    `| ${what} | ${fmt(x.firstTenthMedianMs)} | ${fmt(x.lastTenthMedianMs)} | ${
      fmt(x.growthPercent)
    } % |`;
  console.log(
    [
      `cnichain alone, ${pods} pods; ${report.machine.nproc} CPUs, load ${report.machine.loadAverageAtEnd} at the end:`,
      "",
      "| ADD (median ms) | first tenth | last tenth | growth |",
      "| --- | --- | --- | --- |",
      row("wall", report.wall),
      row("since the runtime started", report.sinceRuntimeStart),
      row("in-process (`CNICHAIN_TRACE=1`)", report.inProcess),
    ].join("\n"),
  );
}

/** Runs a mode of the bench and exits (1 on errors); pod netns and work dir go whatever happens. */
async function runMode(mode: () => Promise<boolean>): Promise<never> {
  let ok = false;
  try {
    ok = await mode();
  } catch (err) {
    if (!interrupted) console.error(`bench: ${err instanceof Error ? err.stack : err}`);
  } finally {
    await cleanup();
  }
  Deno.exit(ok ? 0 : 1);
}

if (values.growth) {
  await runMode(async () => {
    progress(`host netns ${hostNs}; growth of cnichain alone, ${pods} pods; work dir ${work}`);
    await growth();
    return runs.get("cnichain")!.errors.length === 0;
  });
}
await runMode(async () => {
  const began = performance.now();
  progress(
    `host netns ${hostNs}; ${pods} pods, concurrency ${concurrency}; work dir ${work}`,
  );
  await sequential();
  for (const impl of impls) await concurrent(impl);
  for (const impl of impls) {
    const rss = await peakRss(impl);
    if (rss) runs.get(impl.key)!.rssKiB = rss;
  }
  const start = await startup();
  const implementations: Record<string, Json> = {};
  for (const impl of impls) {
    const r = runs.get(impl.key)!;
    const c = r.concurrent;
    implementations[impl.key] = {
      label: impl.label,
      plugins: impl.dir,
      processesPerAdd: impl.kind === "reference"
        ? "2 (+ host-local, iptables)"
        : impl.policy
        ? "1 (3 steps)"
        : "1 (2 steps)",
      add: summary(r.add),
      del: summary(r.del),
      concurrent: c
        ? {
          ...c,
          addSeconds: round(c.addSeconds, 3),
          delSeconds: round(c.delSeconds, 3),
          addPodsPerSecond: round((pods - c.addErrors) / c.addSeconds, 1),
          delPodsPerSecond: round((pods - c.addErrors - c.delErrors) / c.delSeconds, 1),
        }
        : undefined,
      peakRssKiB: r.rssKiB,
      peakRssNote: exists(TIME)
        ? "VmHWM (KiB) of each exec of one ADD, by GNU time; for a reference step it is the largest of the plugin and the processes it waited for (host-local, iptables)"
        : `skipped: ${TIME} is not installed`,
      coldAddMs: round(r.coldAddMs ?? NaN),
      errors: r.errors,
      addMs: r.add.map((x) => round(x.ms, 3)),
      delMs: r.del.map((x) => round(x.ms, 3)),
    };
  }
  const ratios: Json[] = [];
  for (const a of impls.filter((i) => i.kind === "cnichain")) {
    for (const b of impls.filter((i) => i.kind === "reference")) {
      ratios.push({
        pair: `${a.label} / ${b.label}`,
        add: ratio(runs.get(a.key)!.add, runs.get(b.key)!.add),
        del: ratio(runs.get(a.key)!.del, runs.get(b.key)!.del),
      });
    }
  }
  const report: Json = {
    date: new Date().toISOString(),
    machine: await machine(),
    pods,
    concurrency,
    cniVersion: CNI_VERSION,
    chain: "bridge (isGateway, ipMasq) + host-local + portmap (2 mappings per pod)",
    policy: POLICY,
    implementations,
    ratios,
    startup: start,
    seconds: round((performance.now() - began) / 1000, 1),
  };
  const md = markdown(report);
  await Deno.mkdir(values.out, { recursive: true });
  await Deno.writeTextFile(`${values.out}/latest.json`, JSON.stringify(report, null, 2) + "\n");
  await Deno.writeTextFile(
    `${values.out}/latest.svg`,
    svg(`cnichain vs reference CNI plugins: ${pods} pods, one at a time`),
  );
  // The results are committed next to the code: keep them as `deno fmt` would write them.
  const fmtOut = await exec(
    Deno.execPath(),
    ["fmt", "--quiet", `${values.out}/latest.json`, `${values.out}/latest.svg`],
    { PATH: REF_PATH, HOME: Deno.env.get("HOME") ?? "/root" },
  ).catch((err) => ({ code: 1, stderr: String(err) }));
  if (fmtOut.code !== 0) console.error(`bench: deno fmt of the results: ${fmtOut.stderr.trim()}`);
  console.log(md);
  console.log(`\nwrote ${values.out}/latest.json and latest.svg in ${report.seconds} s`);
  const errors = impls.reduce((n, i) => n + runs.get(i.key)!.errors.length, 0);
  const short = impls.filter((i) => {
    const c = runs.get(i.key)!.concurrent;
    return !c || c.distinctAddresses !== pods;
  });
  if (errors || short.length) {
    console.error(
      `bench: ${errors} plugin error(s)${
        short.length ? `; duplicate or missing addresses: ${short.map((i) => i.key)}` : ""
      }`,
    );
    return false;
  }
  return true;
});
