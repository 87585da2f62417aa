/**
 * `cnichain install`, run as a person (or the DaemonSet) runs it: the bundled
 * program dist/cnichain, into temporary directories only, and in Kubernetes
 * mode against a fake API server on loopback that speaks TLS with its own CA.
 */
import assert from "node:assert/strict";
import { BUNDLE, ROOT, runProgram } from "../test/helpers.ts";
import { SUPPORTED_VERSIONS } from "./spec/version.ts";
import { kubeconfigFile } from "./kube.ts";

const PROGRAM_BODY = (() => {
  const text = Deno.readTextFileSync(BUNDLE);
  return text.slice(text.indexOf("\n"));
})();
const DEFAULT_CONFLIST = JSON.parse(Deno.readTextFileSync(`${ROOT}deploy/cnichain.conflist`));

function install(args: string[], env: Record<string, string> = {}) {
  return runProgram(BUNDLE, { args: ["install", ...args], env });
}

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cnichain-install-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Every path under `dir` (relative, sorted), links marked with their target. */
function tree(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir + prefix)) {
    const rel = `${prefix}/${e.name}`;
    if (e.isSymlink) out.push(`${rel} -> ${Deno.readLinkSync(dir + rel)}`);
    else if (e.isDirectory) out.push(`${rel}/`, ...tree(dir, rel));
    else out.push(rel);
  }
  return out.sort();
}

const lstatOrUndefined = (path: string) => {
  try {
    return Deno.lstatSync(path);
  } catch {
    return undefined;
  }
};
const mode = (path: string) => (Deno.statSync(path).mode ?? 0) & 0o7777;

Deno.test("install: program, Deno and the default conflist; the installed program runs with no environment", async () => {
  await withTemp(async (dir) => {
    const args = [
      "--bin-dir",
      `${dir}/bin`,
      "--deno",
      `${dir}/rt/deno`,
      "--conf-dir",
      `${dir}/net.d`,
      "--policy-file",
      `${dir}/policies.json`,
    ];
    const r = await install(args);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`wrote +${dir}/bin/cnichain \\(runs with ${dir}/rt/deno\\)`));
    assert.match(r.stdout, new RegExp(`wrote +${dir}/net.d/10-cnichain.conflist`));
    // Deno before the program naming it; the conflist, which a runtime acts on, last.
    const order = r.stdout.trim().split("\n").map((l) => l.split(/ +/)[1]);
    assert.deepEqual([order[0], order[1], order.at(-1)], [
      `${dir}/rt/deno`,
      `${dir}/bin/cnichain`,
      `${dir}/net.d/10-cnichain.conflist`,
    ]);
    assert.deepEqual(tree(dir), [
      "/bin/",
      "/bin/cnichain",
      "/net.d/",
      "/net.d/10-cnichain.conflist",
      "/policies.json",
      "/rt/",
      "/rt/deno",
    ]);
    // The default conflist's policy step reads this file on every ADD: an empty list allows all.
    assert.equal(await Deno.readTextFile(`${dir}/policies.json`), "[]\n");

    const program = await Deno.readTextFile(`${dir}/bin/cnichain`);
    assert.equal(
      program.slice(0, program.indexOf("\n")),
      `#!/usr/bin/env -S DENO_NO_UPDATE_CHECK=1 ${dir}/rt/deno run -A --no-config --no-lock -q --ext=js --v8-flags=--no-lazy,--no-enable-lazy-source-positions,--no-sparkplug,--regexp-tier-up-ticks=1000`,
    );
    assert.equal(program.slice(program.indexOf("\n")), PROGRAM_BODY);
    assert.equal(mode(`${dir}/bin/cnichain`), 0o755);
    assert.equal(mode(`${dir}/rt/deno`), 0o755);
    assert.equal(Deno.statSync(`${dir}/rt/deno`).size, Deno.statSync(Deno.execPath()).size);
    assert.equal(mode(`${dir}/net.d/10-cnichain.conflist`), 0o644);
    const written = JSON.parse(await Deno.readTextFile(`${dir}/net.d/10-cnichain.conflist`));
    const policyStep = written.plugins[0].plugins.find((p: { type: string }) =>
      p.type === "policy"
    );
    assert.equal(policyStep.policyFile, `${dir}/policies.json`);
    policyStep.policyFile = "/etc/cni/cnichain/policies.json";
    assert.deepEqual(written, DEFAULT_CONFLIST, "the default conflist, but for --policy-file");

    // As a runtime runs a plugin: nothing but the CNI variables.
    const v = await runProgram(`${dir}/bin/cnichain`, {
      env: { CNI_COMMAND: "VERSION" },
      stdin: '{"cniVersion":"1.1.0"}',
    });
    assert.equal(v.code, 0, v.stderr);
    assert.deepEqual(v.json?.supportedVersions, [...SUPPORTED_VERSIONS]);

    // What an install killed while copying Deno leaves (its process gone) goes with the next one.
    const gone = new Deno.Command("true").spawn();
    await gone.status;
    const stale = `${dir}/rt/.deno.tmp-${gone.pid}-1f2e3d`;
    Deno.writeFileSync(stale, new Uint8Array(1024));
    const again = await install(args);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(lstatOrUndefined(stale), undefined);
    assert.equal(again.stdout.split("\n").filter((l) => l.startsWith("unchanged")).length, 2);
    assert.match(again.stdout, /left +.*10-cnichain\.conflist: unchanged/);
  });
});

Deno.test("install: links only when asked; a foreign file is replaced only with --force", async () => {
  await withTemp(async (dir) => {
    const base = [
      ...["--bin-dir", `${dir}/bin`, "--deno", `${dir}/rt/deno`, "--conf-dir", `${dir}/n`],
      ...["--policy-file", `${dir}/policies.json`],
    ];
    const plain = await install(base);
    assert.equal(plain.code, 0, plain.stderr);
    assert.deepEqual(tree(`${dir}/bin`), ["/cnichain"]);

    const linked = await install([...base, "--link", "bridge,host-local"]);
    assert.equal(linked.code, 0, linked.stderr);
    assert.deepEqual(tree(`${dir}/bin`), [
      "/bridge -> cnichain",
      "/cnichain",
      "/host-local -> cnichain",
    ]);
    assert.match(linked.stdout, new RegExp(`linked +${dir}/bin/bridge -> cnichain`));
    // Run by its link name, the program is that one plugin.
    const v = await runProgram(`${dir}/bin/bridge`, {
      env: { CNI_COMMAND: "VERSION" },
      stdin: '{"cniVersion":"1.0.0"}',
    });
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.json?.cniVersion, "1.0.0");

    const foreign = "#!/bin/sh\necho reference portmap\n";
    await Deno.writeTextFile(`${dir}/bin/portmap`, foreign);
    const before = tree(dir);
    const refused = await install([...base, "--link", "portmap,ptp"]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, new RegExp(`"${dir}/bin/portmap" exists and is not a link`));
    assert.match(refused.stderr, /--force/);
    assert.match(refused.stderr, /nothing was written/);
    assert.deepEqual(tree(dir), before);
    assert.equal(await Deno.readTextFile(`${dir}/bin/portmap`), foreign);

    const forced = await install([...base, "--link", "portmap", "--force"]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(Deno.readLinkSync(`${dir}/bin/portmap`), "cnichain");
    assert.match(forced.stdout, /portmap -> cnichain \(replaced\)/);
  });
});

Deno.test("install: a directory that holds a conflist is left alone unless --force", async () => {
  await withTemp(async (dir) => {
    await Deno.mkdir(`${dir}/n`);
    const other = '{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"loopback"}]}';
    await Deno.writeTextFile(`${dir}/n/99-other.conflist`, other);
    const base = [
      ...["--bin-dir", `${dir}/bin`, "--deno", `${dir}/rt/deno`, "--conf-dir", `${dir}/n`],
      ...["--policy-file", `${dir}/policies.json`],
    ];
    const r = await install(base);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /left +.*10-cnichain\.conflist: .*holds 99-other\.conflist already/);
    assert.deepEqual(tree(`${dir}/n`), ["/99-other.conflist"]);

    const forced = await install([...base, "--force"]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.deepEqual(tree(`${dir}/n`), ["/10-cnichain.conflist", "/99-other.conflist"]);
    assert.equal(await Deno.readTextFile(`${dir}/n/99-other.conflist`), other);
  });
});

Deno.test("install: --conflist installs a checked file as it is; a bad one writes nothing", async () => {
  await withTemp(async (dir) => {
    const good = `${dir}/good.conflist`;
    const text = JSON.stringify({
      cniVersion: "1.0.0",
      name: "mine",
      plugins: [{ type: "cnichain", plugins: [{ type: "loopback" }] }],
    });
    await Deno.writeTextFile(good, text);
    const base = ["--bin-dir", `${dir}/bin`, "--deno", `${dir}/rt/deno`, "--conf-dir", `${dir}/n`];
    const r = await install([...base, "--conflist", good]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await Deno.readTextFile(`${dir}/n/10-cnichain.conflist`), text);

    await withTemp(async (fresh) => {
      const bad = `${dir}/bad.conflist`;
      await Deno.writeTextFile(
        bad,
        JSON.stringify({
          cniVersion: "1.0.0",
          name: "mine",
          plugins: [{ type: "bridge", mtu: "big" }],
        }),
      );
      const b = await install([
        "--bin-dir",
        `${fresh}/bin`,
        "--deno",
        `${fresh}/rt/deno`,
        "--conf-dir",
        `${fresh}/n`,
        "--conflist",
        bad,
      ]);
      assert.equal(b.code, 2);
      assert.match(b.stderr, new RegExp(`--conflist "${bad}": 1 problem: plugins\\[0\\]\\.mtu`));
      assert.deepEqual(tree(fresh), []);
    });
  });
});

Deno.test("install: bad options name the option and value, exit 2 and write nothing", async () => {
  await withTemp(async (dir) => {
    const base = ["--bin-dir", `${dir}/bin`, "--deno", `${dir}/rt/deno`, "--conf-dir", `${dir}/n`];
    const cases: [string[], RegExp][] = [
      [["--link", "bridge,flannel"], /--link "bridge,flannel": "flannel" is not one of .*portmap/],
      [["--deno", "deno"], /--deno "deno": must be an absolute path/],
      [["--bin-dir", "opt/cni/bin"], /--bin-dir "opt\/cni\/bin": must be an absolute path/],
      [["--deno", "/opt/my deno"], /--deno "\/opt\/my deno": may not contain white space/],
      [["--root", `${dir}/nowhere`], /--root ".*\/nowhere": no such directory/],
      [["--no-such-option"], /Unknown option '--no-such-option'/],
      [["--node", "n1"], /--node needs --kubernetes/],
      [["--conflist", "/x.conflist", "--policy-file", "/p.json"], /--policy-file cannot be given/],
      [
        ["--kubernetes", "--node", "n1", "--cluster-cidr", "10.0.0.0/33"],
        /--cluster-cidr "10\.0\.0\.0\/33": "10\.0\.0\.0\/33" is not a CIDR/,
      ],
      [["--kubernetes"], /needs the node's name: --node NAME or NODE_NAME/],
      [["--kubernetes", "--node", "n1", "--timeout", "soon"], /--timeout "soon"/],
      // Deno copied over the program (or a link), or onto a directory, would break the install.
      [["--deno", `${dir}/bin/cnichain`], /--deno ".*\/bin\/cnichain": is where the program/],
      [["--link", "ptp", "--deno", `${dir}/bin/ptp`], /is where the program or one of its links/],
      [["--deno", dir], /--deno ".*": is a directory/],
      // Linux would cut the #! line, and the program's flags with it.
      [["--deno", `/opt/${"d".repeat(120)}/deno`], /makes the program's #! line \d+ bytes long/],
    ];
    for (const [extra, message] of cases) {
      const r = await install([...base, ...extra]);
      assert.equal(r.code, 2, `${extra.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.match(r.stderr, /nothing was written/);
      assert.deepEqual(tree(dir), [], extra.join(" "));
    }
  });
});

Deno.test("install: --root prefixes every write, the files name the node's paths; --dry-run writes nothing", async () => {
  await withTemp(async (dir) => {
    const dry = await install(["--root", dir, "--link", "loopback", "--dry-run"]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, new RegExp(`would write +${dir}/opt/cni/bin/cnichain`));
    assert.match(dry.stdout, /nothing was written/);
    assert.deepEqual(tree(dir), []);

    const r = await install(["--root", dir, "--link", "loopback"]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(tree(dir).filter((p) => !p.endsWith("/")), [
      "/etc/cni/cnichain/policies.json",
      "/etc/cni/net.d/10-cnichain.conflist",
      "/opt/cni/bin/cnichain",
      "/opt/cni/bin/loopback -> cnichain",
      "/opt/cnichain/deno",
    ]);
    const program = await Deno.readTextFile(`${dir}/opt/cni/bin/cnichain`);
    assert.match(program.slice(0, program.indexOf("\n")), / \/opt\/cnichain\/deno run /);
    // The default conflist's policy step reads this file on every ADD: an empty list allows all.
    assert.equal(await Deno.readTextFile(`${dir}/etc/cni/cnichain/policies.json`), "[]\n");
  });
});

Deno.test("install: refuses to run from source", async () => {
  await withTemp(async (dir) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "--quiet", `${ROOT}main.ts`, "install", "--root", dir],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 2);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.match(stderr, /main\.ts is not the bundled program: run `deno task bundle` first/);
    assert.deepEqual(tree(dir), []);
  });
});

// ---- Kubernetes mode, against a fake API server ----

const TOKEN = "t0ken-of-cnichain";
const LIMITED_TOKEN = "t0ken-without-rbac";

interface Pki {
  dir: string;
  caPem: string;
  cert: string;
  key: string;
}

async function sh(cmd: string, cwd: string): Promise<void> {
  const out = await new Deno.Command("/bin/sh", { args: ["-c", cmd], cwd, stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`${cmd}: ${new TextDecoder().decode(out.stderr)}`);
}

/** A CA and a server certificate for 127.0.0.1 it signed, made with openssl. */
async function makePki(): Promise<Pki> {
  const dir = await Deno.makeTempDir({ prefix: "cnichain-pki-" });
  try {
    const ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    await sh(
      `openssl req -x509 ${ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=fake-kube-ca ` +
        `-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign`,
      dir,
    );
    await sh(`openssl req ${ec} -keyout srv.key -out srv.csr -subj /CN=127.0.0.1`, dir);
    await Deno.writeTextFile(
      `${dir}/ext.cnf`,
      "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    await sh(
      "openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 2 -extfile ext.cnf",
      dir,
    );
    return {
      dir,
      caPem: await Deno.readTextFile(`${dir}/ca.crt`),
      cert: await Deno.readTextFile(`${dir}/srv.crt`),
      key: await Deno.readTextFile(`${dir}/srv.key`),
    };
  } catch (err) {
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
}

function status(code: number, reason: string, message: string, details?: object): Response {
  return Response.json({
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  }, { status: code });
}

/** A Node as the API server returns it. */
function node(name: string, spec: Record<string, unknown>) {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name,
      uid: "5d6b1b0e-4c1e-4a55-9d0a-2f0f3c4f6a10",
      resourceVersion: "48213",
      creationTimestamp: "2026-11-30T08:00:00Z",
      labels: {
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
      },
      annotations: { "node.alpha.kubernetes.io/ttl": "0" },
    },
    spec: { providerID: `fake://${name}`, ...spec },
    status: {
      capacity: { cpu: "2", memory: "4026372Ki", pods: "110" },
      allocatable: { cpu: "2", memory: "3923972Ki", pods: "110" },
      conditions: [{
        type: "Ready",
        status: "False",
        reason: "KubeletNotReady",
        message: "container runtime network not ready: NetworkReady=false",
      }],
      addresses: [{ type: "InternalIP", address: "192.168.1.10" }, {
        type: "Hostname",
        address: name,
      }],
      nodeInfo: { kubeletVersion: "v1.31.2", containerRuntimeVersion: "containerd://1.7.22" },
    },
  };
}

const NODES: Record<string, unknown> = {
  "node-v4": node("node-v4", { podCIDR: "10.244.1.0/24", podCIDRs: ["10.244.1.0/24"] }),
  "node-dual": node("node-dual", {
    podCIDR: "10.244.2.0/24",
    podCIDRs: ["10.244.2.0/24", "fd00:10:244:2::/64"],
  }),
  "node-old": node("node-old", { podCIDR: "10.244.3.0/24" }),
  "node-bare": node("node-bare", {}),
};

/** The fake API server on 127.0.0.1 (TLS with the test CA); `requests` records each path. */
function fakeApi(pki: Pki) {
  const requests: string[] = [];
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: pki.cert,
    key: pki.key,
    onListen: () => {},
  }, (req) => {
    const url = new URL(req.url);
    requests.push(`${req.method} ${url.pathname}`);
    const auth = req.headers.get("authorization");
    if (auth !== `Bearer ${TOKEN}` && auth !== `Bearer ${LIMITED_TOKEN}`) {
      return status(401, "Unauthorized", "Unauthorized");
    }
    const m = /^\/api\/v1\/nodes\/([^/]+)$/.exec(url.pathname);
    if (!m || req.method !== "GET") {
      return status(404, "NotFound", "the server could not find the requested resource");
    }
    const name = decodeURIComponent(m[1]);
    if (auth === `Bearer ${LIMITED_TOKEN}`) {
      return status(
        403,
        "Forbidden",
        `nodes "${name}" is forbidden: User "system:serviceaccount:kube-system:cnichain" cannot get resource "nodes" in API group "" at the cluster scope`,
        { name, kind: "nodes" },
      );
    }
    const found = NODES[name];
    if (!found) {
      return status(404, "NotFound", `nodes "${name}" not found`, { name, kind: "nodes" });
    }
    return Response.json(found);
  });
  return { server, requests, url: `https://127.0.0.1:${server.addr.port}` };
}

/** A JSON kubeconfig for a service account: server, CA (as a file or inline) and token. */
function kubeconfig(server: string, pki: Pki, token: string, inlineCa: boolean) {
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    "current-context": "cnichain@fake",
    clusters: [{
      name: "fake",
      cluster: inlineCa
        ? { server, "certificate-authority-data": btoa(pki.caPem) }
        : { server, "certificate-authority": "ca.crt" },
    }],
    contexts: [{ name: "cnichain@fake", context: { cluster: "fake", user: "cnichain" } }],
    users: [{ name: "cnichain", user: { token } }],
  });
}

/** Runs `fn` with the PKI, a running fake API server and a kubeconfig; everything goes after. */
async function withApi(
  fn: (
    api: {
      url: string;
      requests: string[];
      kubeconfig: (token?: string, inline?: boolean) => string;
    },
    root: string,
  ) => Promise<void>,
): Promise<void> {
  const pki = await makePki();
  const api = fakeApi(pki);
  try {
    await withTemp(async (root) => {
      let n = 0;
      const write = (token = TOKEN, inline = false) => {
        const path = `${pki.dir}/kubeconfig-${n++}.json`;
        Deno.writeTextFileSync(path, kubeconfig(api.url, pki, token, inline));
        return path;
      };
      await fn({ url: api.url, requests: api.requests, kubeconfig: write }, root);
    });
  } finally {
    await api.server.shutdown();
    await Deno.remove(pki.dir, { recursive: true });
  }
}

function bridgeOf(conflist: Record<string, unknown>) {
  // deno-lint-ignore no-explicit-any
  const chain = (conflist as any).plugins[0].plugins;
  return { bridge: chain[0], portmap: chain[1], policy: chain[2], chain };
}

Deno.test("install --kubernetes: single-stack node, CA file, cluster CIDR excluded from masquerade", async () => {
  await withApi(async (api, root) => {
    const r = await install([
      "--kubernetes",
      "--root",
      root,
      "--kubeconfig",
      api.kubeconfig(),
      "--cluster-cidr",
      "10.244.0.0/16",
    ], { NODE_NAME: "node-v4" });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(api.requests, ["GET /api/v1/nodes/node-v4"]);
    assert.deepEqual(tree(root).filter((p) => !p.endsWith("/")), [
      "/etc/cni/cnichain/kubeconfig.json",
      "/etc/cni/cnichain/policies.json",
      "/etc/cni/net.d/10-cnichain.conflist",
      "/opt/cni/bin/cnichain",
      "/opt/cnichain/deno",
    ]);
    const file = `${root}/etc/cni/net.d/10-cnichain.conflist`;
    const conflist = JSON.parse(await Deno.readTextFile(file));
    assert.equal(conflist.plugins[0].type, "cnichain");
    assert.deepEqual(conflist.plugins[0].capabilities, { portMappings: true });
    const { bridge, portmap, policy, chain } = bridgeOf(conflist);
    assert.equal(chain.length, 3);
    assert.equal(bridge.type, "bridge");
    assert.equal(bridge.bridge, "cni0");
    assert.equal(bridge.isGateway, true);
    assert.equal(bridge.ipMasq, true);
    assert.deepEqual(bridge.ipMasqExclude, ["10.244.0.0/16"]);
    assert.deepEqual(bridge.ipam, {
      type: "host-local",
      ranges: [[{ subnet: "10.244.1.0/24" }]],
      routes: [{ dst: "0.0.0.0/0" }],
    });
    assert.deepEqual(portmap, {
      type: "portmap",
      capabilities: { portMappings: true },
      snat: true,
    });
    assert.deepEqual(policy, {
      type: "policy",
      policyFile: "/etc/cni/cnichain/policies.json",
      kubernetes: { kubeconfig: "/etc/cni/cnichain/kubeconfig.json" },
    });
    assert.equal(await Deno.readTextFile(`${root}/etc/cni/cnichain/policies.json`), "[]\n");
    // The policy step's own kubeconfig: flattened (CA inline), readable by root only.
    const pluginKc = `${root}/etc/cni/cnichain/kubeconfig.json`;
    assert.equal(mode(pluginKc), 0o600);
    const kc = kubeconfigFile(pluginKc);
    assert.equal(kc.server, api.url);
    assert.equal(kc.token, TOKEN);
    assert.match(kc.caPem ?? "", /BEGIN CERTIFICATE/);

    const v = await runProgram(BUNDLE, { args: ["validate", file] });
    assert.equal(v.code, 0, v.stdout);
    assert.equal(v.stdout.trim(), `${file}: valid`);

    // Run again (the init container on each pod start): the same files, left as they are.
    const again = await install([
      "--kubernetes",
      "--root",
      root,
      "--kubeconfig",
      api.kubeconfig(),
      "--cluster-cidr",
      "10.244.0.0/16",
      "--node",
      "node-v4",
    ]);
    assert.equal(again.code, 0, again.stderr);
    assert.doesNotMatch(again.stdout, /^wrote/m);
    assert.match(again.stdout, /left +.*policies\.json: kept/);
  });
});

Deno.test("install --kubernetes: dual-stack node, inline CA, policies from the ConfigMap", async () => {
  await withApi(async (api, root) => {
    const source = `${root}-policies.json`;
    const policies = [{
      name: "deny-all-ingress",
      namespace: "default",
      podSelector: {},
      policyTypes: ["Ingress"],
    }];
    await Deno.writeTextFile(source, JSON.stringify(policies));
    try {
      const r = await install([
        "--kubernetes",
        "--root",
        root,
        "--node",
        "node-dual",
        "--kubeconfig",
        api.kubeconfig(TOKEN, true),
        "--policy-file",
        "/etc/cni/cnichain/node-policies.json",
        "--policy-source",
        source,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const file = `${root}/etc/cni/net.d/10-cnichain.conflist`;
      const { bridge, policy } = bridgeOf(JSON.parse(await Deno.readTextFile(file)));
      assert.deepEqual(bridge.ipam.ranges, [
        [{ subnet: "10.244.2.0/24" }],
        [{ subnet: "fd00:10:244:2::/64" }],
      ]);
      assert.deepEqual(bridge.ipam.routes, [{ dst: "0.0.0.0/0" }, { dst: "::/0" }]);
      assert.equal(bridge.ipMasqExclude, undefined);
      assert.equal(policy.policyFile, "/etc/cni/cnichain/node-policies.json");
      const installed = `${root}/etc/cni/cnichain/node-policies.json`;
      assert.deepEqual(JSON.parse(await Deno.readTextFile(installed)), policies);
      assert.equal(mode(installed), 0o644);
      assert.match(r.stdout, new RegExp(`wrote +${installed} \\(from ${source}\\)`));
      const v = await runProgram(BUNDLE, { args: ["validate", file] });
      assert.equal(v.code, 0, v.stdout);

      // A bad policy in the ConfigMap is refused before anything changes.
      await Deno.writeTextFile(
        source,
        JSON.stringify([{
          name: "p",
          podSelector: { matchExpressions: [{ key: "a", operator: "Near" }] },
        }]),
      );
      const before = tree(root);
      const bad = await install([
        "--kubernetes",
        "--root",
        root,
        "--node",
        "node-dual",
        "--kubeconfig",
        api.kubeconfig(),
        "--policy-file",
        "/etc/cni/cnichain/node-policies.json",
        "--policy-source",
        source,
      ]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, new RegExp(`--policy-source "${source}": .*operator`));
      assert.deepEqual(tree(root), before);
      assert.deepEqual(JSON.parse(await Deno.readTextFile(installed)), policies);
    } finally {
      await Deno.remove(source);
    }
  });
});

Deno.test("install --kubernetes: a node with only spec.podCIDR (older clusters)", async () => {
  await withApi(async (api, root) => {
    const r = await install([
      "--kubernetes",
      "--root",
      root,
      "--node",
      "node-old",
      "--kubeconfig",
      api.kubeconfig(),
    ]);
    assert.equal(r.code, 0, r.stderr);
    const { bridge } = bridgeOf(
      JSON.parse(await Deno.readTextFile(`${root}/etc/cni/net.d/10-cnichain.conflist`)),
    );
    assert.deepEqual(bridge.ipam.ranges, [[{ subnet: "10.244.3.0/24" }]]);
  });
});

Deno.test("install --kubernetes: no pod CIDR, unknown node, bad or weak token: clear errors, nothing written", async () => {
  await withApi(async (api, root) => {
    const run = (node: string, token = TOKEN) =>
      install([
        "--kubernetes",
        "--root",
        root,
        "--node",
        node,
        "--kubeconfig",
        api.kubeconfig(token),
      ]);

    const bare = await run("node-bare");
    assert.equal(bare.code, 1);
    assert.match(bare.stderr, /node "node-bare" has no pod CIDR yet/);
    assert.match(bare.stderr, /--allocate-node-cidrs/);
    assert.match(bare.stderr, /nothing was written/);

    const unknown = await run("node-x");
    assert.equal(unknown.code, 1);
    assert.match(
      unknown.stderr,
      new RegExp(`GET ${api.url}/api/v1/nodes/node-x: 404 Not Found: nodes "node-x" not found`),
    );

    const wrong = await run("node-v4", "not-the-token");
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, new RegExp(`GET ${api.url}/api/v1/nodes/node-v4: 401 Unauthorized`));
    assert.match(wrong.stderr, /did not accept the credentials/);

    const weak = await run("node-v4", LIMITED_TOKEN);
    assert.equal(weak.code, 1);
    assert.match(weak.stderr, /403 Forbidden: nodes "node-v4" is forbidden/);
    assert.match(weak.stderr, /needs permission to get nodes/);

    assert.deepEqual(tree(root), []);
  });
});

Deno.test("install --kubernetes: API server down or silent: error within the timeout, nothing written", async () => {
  await withTemp(async (root) => {
    const pki = await makePki();
    try {
      // A closed port: take a free one and close it.
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const closed = (l.addr as Deno.NetAddr).port;
      l.close();
      const config = (port: number) => {
        const path = `${pki.dir}/kc-${port}.json`;
        Deno.writeTextFileSync(path, kubeconfig(`https://127.0.0.1:${port}`, pki, TOKEN, false));
        return path;
      };
      let began = performance.now();
      const down = await install([
        "--kubernetes",
        "--root",
        root,
        "--node",
        "n1",
        "--kubeconfig",
        config(closed),
      ]);
      assert.ok(performance.now() - began < 5000 + 3000, "within the timeout");
      assert.equal(down.code, 1);
      assert.match(
        down.stderr,
        new RegExp(`GET https://127.0.0.1:${closed}/api/v1/nodes/n1: .*(refused|connect)`, "i"),
      );
      assert.deepEqual(tree(root), []);

      // A server that accepts and never answers: --timeout 1.
      const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const held: Deno.Conn[] = [];
      const accepting = (async () => {
        try {
          for await (const c of silent) held.push(c);
        } catch {
          // closed
        }
      })();
      try {
        began = performance.now();
        const port = (silent.addr as Deno.NetAddr).port;
        const r = await install([
          "--kubernetes",
          "--root",
          root,
          "--node",
          "n1",
          "--kubeconfig",
          config(port),
          "--timeout",
          "1",
        ]);
        const took = performance.now() - began;
        assert.equal(r.code, 1);
        assert.match(
          r.stderr,
          new RegExp(`GET https://127.0.0.1:${port}/api/v1/nodes/n1: no answer within 1 s`),
        );
        assert.ok(took < 1000 + 3000, `took ${took} ms`);
        assert.deepEqual(tree(root), []);
      } finally {
        silent.close();
        for (const c of held) c.close();
        await accepting;
      }
    } finally {
      await Deno.remove(pki.dir, { recursive: true });
    }
  });
});
