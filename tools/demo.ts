/**
 * `deno task demo`: the default conflist (deploy/cnichain.conflist: bridge +
 * host-local + portmap + policy) working end to end, on a throwaway network.
 *
 * As root: a "host" netns of its own stands in for the node (the machine's
 * real network is never touched), three pods are attached by running
 * dist/cnichain as a runtime does (CNI variables only, config on stdin), and
 * real connections show pod-to-pod traffic, a host-port forward and a policy
 * denial. Then every pod is deleted, the host netns is checked for leftovers
 * and everything is removed. Exit 0 only when every expectation held.
 *
 * Without root it cannot make namespaces, so it prints the same chain's
 * `--dry-run` plan instead and says why.
 */
import { BUNDLE, runProgram } from "../test/helpers.ts";
import {
  assertNoLeak,
  bare,
  cleanUpOnSignal,
  IS_ROOT,
  type Lab,
  pingWithin,
  type Pod,
  type Result,
  snapshot,
  withLab,
} from "../test/netns.ts";
import { probeOne, serve, type Server, target } from "../test/net_probe.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const CONFLIST = `${ROOT}deploy/cnichain.conflist`;
const HOST_PORT = 8080;
/** The web pod serves both; the policy lets the client reach only the first. */
const WEB_PORT = 80;
const ADMIN_PORT = 9090;

type Json = Record<string, unknown>;

/** The demo's policies: `web` takes TCP 80 from `client` pods, and nothing else. */
const POLICIES = [{
  name: "web-from-clients",
  namespace: "demo",
  podSelector: { matchLabels: { app: "web" } },
  policyTypes: ["Ingress"],
  ingress: [{
    from: [{ podSelector: { matchLabels: { app: "client" } } }],
    ports: [{ protocol: "TCP", port: WEB_PORT }],
  }],
}];

interface DemoPod {
  name: string;
  app: string;
  pod: Pod;
  ip: string;
  addMs: number;
}

const failures: string[] = [];

function say(text = ""): void {
  console.log(text);
}

function expect(ok: boolean, what: string, detail = ""): void {
  say(`  ${ok ? "ok  " : "FAIL"} ${what}${detail ? `: ${detail}` : ""}`);
  if (!ok) failures.push(what);
}

/** The default conflist with every path moved into the lab, so the machine's state is untouched. */
async function demoConflist(lab: Lab): Promise<Json> {
  const conflist = JSON.parse(await Deno.readTextFile(CONFLIST)) as Json;
  const entry = (conflist.plugins as Json[])[0];
  entry.stateDir = lab.stateDir;
  entry.logFile = `${lab.dir}/cnichain.log`;
  for (const step of entry.plugins as Json[]) {
    if (step.ipam) (step.ipam as Json).dataDir = lab.dataDir;
    if (step.type === "policy") step.policyFile = `${lab.dir}/policies.json`;
  }
  await Deno.writeTextFile(`${lab.dir}/policies.json`, JSON.stringify(POLICIES, null, 2));
  return conflist;
}

/** The cnichain entry as a runtime sends it for one pod: name, version, labels, port mappings. */
function podConfig(conflist: Json, app: string, portMappings: Json[]): Json {
  const entry = (conflist.plugins as Json[])[0];
  return {
    ...entry,
    cniVersion: conflist.cniVersion,
    name: conflist.name,
    args: { cni: { labels: [{ key: "app", value: app }] } },
    runtimeConfig: { portMappings },
  };
}

function podEnv(name: string): Record<string, string> {
  return { CNI_ARGS: `K8S_POD_NAMESPACE=demo;K8S_POD_NAME=${name}` };
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const began = performance.now();
  const value = await fn();
  return [value, performance.now() - began];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The servers running in pods (module-wide, so that an interrupt can stop them too). */
const servers: Server[] = [];
let starting: Promise<Server> | undefined;

async function demo(lab: Lab): Promise<void> {
  const conflist = await demoConflist(lab);
  const before = await snapshot(lab.host);
  const mappings = [{ hostPort: HOST_PORT, containerPort: WEB_PORT, protocol: "tcp" }];
  const specs = [
    { name: "web", app: "web", mappings },
    { name: "client", app: "client", mappings: [] },
    { name: "stranger", app: "stranger", mappings: [] },
  ];
  const pods: DemoPod[] = [];
  const delMs: number[] = [];
  let webResult: Result | undefined;
  try {
    say(
      `Attaching ${specs.length} pods with ${BUNDLE} (one process per pod, as a runtime runs it)`,
    );
    for (const s of specs) {
      const pod = await lab.addPod(s.name);
      const conf = podConfig(conflist, s.app, s.mappings);
      const [out, ms] = await timed(() => lab.cni("ADD", conf, { pod, env: podEnv(s.name) }));
      if (out.code !== 0) {
        throw new Error(`ADD of pod ${s.name} failed: ${out.stdout}${out.stderr}`);
      }
      const result = out.json as unknown as Result;
      const ip = bare(result.ips?.[0]?.address ?? "");
      pods.push({ name: s.name, app: s.app, pod, ip, addMs: ms });
      if (s.name === "web") webResult = result;
      const ifaces = (result.interfaces ?? []).map((i) => i.name).join(", ");
      say(
        `  ${s.name.padEnd(8)} app=${s.app.padEnd(8)} ${ip.padEnd(12)} interfaces [${ifaces}]` +
          ` ADD ${ms.toFixed(0)} ms`,
      );
    }
    const [web, client, stranger] = pods;
    say(`\nThe result the runtime got for pod web (cniVersion ${conflist.cniVersion}):`);
    say(JSON.stringify(webResult).replace(/^/gm, "  "));
    const check = await lab.cni("CHECK", podConfig(conflist, "web", mappings), {
      pod: web.pod,
      env: podEnv("web"),
    });
    expect(check.code === 0, "CHECK of pod web passes", check.code ? check.stdout : "");

    starting = serve(web.pod.name, "web", [
      target("tcp", web.ip, WEB_PORT),
      target("tcp", web.ip, ADMIN_PORT),
    ]);
    servers.push(await starting);

    say(`\nTraffic (real packets between the namespaces):`);
    expect(
      await pingWithin(stranger.pod.name, client.ip, 3000),
      `ping stranger -> client ${client.ip} (no policy selects either)`,
    );
    const direct = await probeOne(client.pod.name, target("tcp", web.ip, WEB_PORT), 2000);
    expect(
      direct.reply?.startsWith("web tcp from") === true,
      `client -> web:${WEB_PORT} allowed by policy "web-from-clients"`,
      direct.reply ?? direct.error ?? "",
    );
    const forwarded = await probeOne(lab.host, target("tcp", "127.0.0.1", HOST_PORT), 2000);
    expect(
      forwarded.reply?.startsWith("web tcp from") === true,
      `host 127.0.0.1:${HOST_PORT} -> web:${WEB_PORT} (portmap host port)`,
      forwarded.reply ?? forwarded.error ?? "",
    );
    const admin = await probeOne(client.pod.name, target("tcp", web.ip, ADMIN_PORT), 700);
    expect(
      admin.error === "timeout",
      `client -> web:${ADMIN_PORT} denied (the policy allows port ${WEB_PORT} only)`,
      admin.reply ?? admin.error ?? "",
    );
    const denied = await probeOne(stranger.pod.name, target("tcp", web.ip, WEB_PORT), 700);
    expect(
      denied.error === "timeout",
      `stranger -> web:${WEB_PORT} denied (not app=client)`,
      denied.reply ?? denied.error ?? "",
    );
    const explain = await runProgram(BUNDLE, {
      args: [
        "policy",
        "explain",
        "--config",
        await writeConflist(lab, conflist),
        "--from",
        "demo/stranger",
        "--to",
        "demo/web",
        "--port",
        String(WEB_PORT),
      ],
    });
    say(`\ncnichain policy explain --from demo/stranger --to demo/web --port ${WEB_PORT}:`);
    say(explain.stdout.trim().replace(/^/gm, "  "));
  } finally {
    for (const s of servers) await s.close();
    say(`\nDeleting the pods:`);
    for (const p of pods.reverse()) {
      const conf = podConfig(conflist, p.app, p.name === "web" ? mappings : []);
      const [out, ms] = await timed(() =>
        lab.cni("DEL", conf, { pod: p.pod, env: podEnv(p.name) })
      );
      delMs.push(ms);
      expect(out.code === 0, `DEL of pod ${p.name}`, out.code ? out.stdout : "");
    }
  }
  say(`\nAfter DEL of every pod:`);
  try {
    await assertNoLeak(lab.host, before, {
      devices: { cni0: "the bridge stays for the next pod, as the reference plugin leaves it" },
    });
    expect(true, "nothing left in the host netns (links, addresses, routes, nftables)");
  } catch (err) {
    expect(false, "nothing left in the host netns", String(err).split("\n")[0]);
  }
  expect((await lab.allocations("cnichain")).length === 0, "no address left allocated");
  say(`\nTimings (wall time of each cnichain process, start-up included):`);
  say(`  ADD median ${median(pods.map((p) => p.addMs)).toFixed(0)} ms over ${pods.length} pods`);
  say(`  DEL median ${median(delMs).toFixed(0)} ms`);
}

/** The conflist `policy explain` reads. */
async function writeConflist(lab: Lab, conflist: Json): Promise<string> {
  const path = `${lab.dir}/cnichain.conflist`;
  await Deno.writeTextFile(path, JSON.stringify(conflist, null, 2));
  return path;
}

/**
 * Without root: the same chain's `--dry-run` plan. The plan reads real kernel state, which needs
 * privileges, so it runs in a fresh user and network namespace of its own (`unshare -rn`, open to
 * unprivileged users on Debian 12), where the empty network stands for a new node.
 */
async function dryRun(): Promise<number> {
  say("Not root: network namespaces for pods cannot be made, so this prints the chain's --dry-run");
  say(
    "plan instead, in a user and network namespace of its own (run as root for the real demo).\n",
  );
  const dir = await Deno.makeTempDir({ prefix: "cnichain-demo-" });
  try {
    const lab = { stateDir: `${dir}/state`, dataDir: `${dir}/data`, dir } as Lab;
    const conflist = `${dir}/cnichain.conflist`;
    await Deno.writeTextFile(conflist, JSON.stringify(await demoConflist(lab)));
    const out = await runProgram("/usr/bin/unshare", {
      args: [
        "--user",
        "--map-root-user",
        "--net",
        BUNDLE,
        "add",
        "--dry-run",
        conflist,
        "--netns",
        "/proc/self/ns/net",
        "--container-id",
        "demo",
        "--ifname",
        "eth0",
        "--cap-args",
        JSON.stringify({ portMappings: [{ hostPort: HOST_PORT, containerPort: WEB_PORT }] }),
      ],
    });
    say(out.stdout);
    if (out.stderr.trim()) console.error(out.stderr.trim());
    return out.code;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (!IS_ROOT) Deno.exit(await dryRun());
const began = performance.now();
let current: Lab | undefined;
// Ctrl-C in the middle: stop the servers, remove the namespaces and the temp dir, then exit.
const keepSignals = cleanUpOnSignal(async () => {
  await starting?.then((s) => s.close(), () => {});
  for (const s of servers) await s.close();
  await current?.close();
  if (current) say(`removed the demo's ${current.prefix}-* namespaces and ${current.dir}`);
});
await withLab((lab) => {
  current = lab;
  return demo(lab);
});
keepSignals();
say(
  `\nRemoved every namespace and file the demo made (${
    ((performance.now() - began) / 1000).toFixed(1)
  } s in all).`,
);
if (failures.length) {
  console.error(`demo: ${failures.length} expectation(s) failed: ${failures.join("; ")}`);
  Deno.exit(1);
}
say("demo: every expectation held");
