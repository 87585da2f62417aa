/**
 * `cnichain install`: puts the running (bundled) program into the CNI bin
 * directory with its first line naming a Deno copied beside it, optional
 * multi-call links, and a conflist when the node has none. With
 * `--kubernetes` the conflist is made from the node's pod CIDRs (read from the
 * API server) and the policy file is put in place, as the DaemonSet's init
 * container does. Every check happens before the first write; every write is
 * a temporary file renamed into place, and an identical file is left as it is.
 */
import { quote } from "./spec/errors.ts";
import { checkConflist, formatProblem, isObject, pathProblem } from "./spec/config.ts";
import { decodeJson } from "./spec/input.ts";
import { builtinRegistry, entryCheck, multiCallNames } from "./registry.ts";
import { familyOf, parseCidr } from "./ip.ts";
import { policyEngine } from "../policy-wasm/host.ts";
import {
  DEFAULT_TIMEOUT_MS,
  inClusterConfig,
  KubeClient,
  type KubeConfig,
  kubeconfigFile,
  podCidrs,
} from "./kube.ts";
// A symlink to deploy/cnichain.conflist: Deno imports JSON only from a file named *.json.
import defaultConflist from "./default_conflist.json" with { type: "json" };

export const DEFAULT_BIN_DIR = "/opt/cni/bin";
export const DEFAULT_DENO = "/opt/cnichain/deno";
export const DEFAULT_CONF_DIR = "/etc/cni/net.d";
export const DEFAULT_POLICY_FILE = "/etc/cni/cnichain/policies.json";
/** The kubeconfig the policy step reads on the node (it runs on the host, with no service account). */
export const DEFAULT_PLUGIN_KUBECONFIG = "/etc/cni/cnichain/kubeconfig.json";
export const CONFLIST_NAME = "10-cnichain.conflist";
const PROGRAM_NAME = "cnichain";

const HELP = `cnichain install [options]

Installs this program (the bundle made by ${"`deno task bundle`"}) as BIN-DIR/cnichain, with
its first line naming the Deno at --deno, and copies the running Deno there. Writes
CONF-DIR/${CONFLIST_NAME} (the default conflist, or --conflist FILE) when CONF-DIR holds no
*.conf, *.conflist or *.json file yet. Writes are atomic; identical files are left alone.

Options:
  --bin-dir DIR        where CNI plugins live (default ${DEFAULT_BIN_DIR})
  --deno PATH          where the Deno binary is copied and what the program runs with
                       (default ${DEFAULT_DENO})
  --conf-dir DIR       the runtime's conflist directory (default ${DEFAULT_CONF_DIR})
  --conflist FILE      install FILE (checked first) instead of the default conflist
  --link NAMES         comma-separated multi-call names to link to cnichain in BIN-DIR
                       (${multiCallNames(builtinRegistry()).join(", ")}); none by default
  --policy-file PATH   the policy file the conflist's policy step reads, written as an empty
                       list [] when missing (default ${DEFAULT_POLICY_FILE})
  --force              replace files that are not ours, write the conflist beside others
  --root DIR           prefix for every file written (e.g. /host for the node's / in a pod);
                       the paths inside the files stay the node's own
  --dry-run            print what would be written; write nothing
  -h, --help           this help

Kubernetes (the DaemonSet's init container):
  --kubernetes         make the conflist from the node's pod CIDRs (spec.podCIDRs / podCIDR)
  --node NAME          the node (default $NODE_NAME)
  --kubeconfig PATH    a JSON kubeconfig (default: the pod's service account)
  --cluster-cidr CIDRS comma-separated cluster CIDRs never masqueraded (ipMasqExclude)
  --plugin-kubeconfig PATH
                       the JSON kubeconfig written for the policy step on the node (mode
                       0600: the API server, its CA and this account's token), named in the
                       conflist's policy step (default ${DEFAULT_PLUGIN_KUBECONFIG})
  --policy-source FILE policies to copy to the policy file (checked first); without it an
                       empty list [] is written if no policy file exists yet
  --timeout SECONDS    for each API request (default ${DEFAULT_TIMEOUT_MS / 1000})`;

export interface InstallIo {
  stdout(text: string): void;
  stderr(text: string): void;
  getEnv(name: string): string | undefined;
}

/** A mistake in the command line: exit code 2, nothing written. */
class UsageError extends Error {}

/** One thing to do, decided (and checked) before anything is written. */
type Step =
  | { kind: "file"; path: string; data: Uint8Array; mode: number; note?: string }
  | { kind: "copy"; path: string; from: string; mode: number; note?: string }
  | { kind: "link"; path: string; target: string; replace: boolean }
  | { kind: "keep"; path: string; why: string };

interface Options {
  root: string;
  binDir: string;
  deno: string;
  confDir: string;
  conflist?: string;
  links: string[];
  force: boolean;
  dryRun: boolean;
  kubernetes: boolean;
  node?: string;
  kubeconfig?: string;
  clusterCidrs: string[];
  policyFile: string;
  /** --policy-file was given: the default conflist's policy step names it. */
  policyFileGiven: boolean;
  policySource?: string;
  pluginKubeconfig: string;
  timeoutMs: number;
}

function absolute(option: string, value: string): string {
  const problem = pathProblem(value);
  if (problem) throw new UsageError(`--${option} ${quote(value)}: ${problem}`);
  return value.length > 1 ? value.replace(/\/+$/, "") : value;
}

function parseOptions(values: Record<string, string | boolean | undefined>, io: InstallIo) {
  const str = (name: string) => values[name] as string | undefined;
  const kubernetes = values.kubernetes === true;
  if (!kubernetes) {
    for (
      const name of [
        "node",
        "kubeconfig",
        "cluster-cidr",
        "policy-source",
        "plugin-kubeconfig",
      ]
    ) {
      if (values[name] !== undefined) throw new UsageError(`--${name} needs --kubernetes`);
    }
  } else if (values.conflist !== undefined) {
    throw new UsageError("--conflist cannot be given with --kubernetes (the conflist is made)");
  }
  if (values.conflist !== undefined && values["policy-file"] !== undefined) {
    throw new UsageError(
      "--policy-file cannot be given with --conflist (its policy step names one)",
    );
  }
  const names = multiCallNames(builtinRegistry());
  const links = (str("link") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  for (const link of links) {
    if (!names.includes(link)) {
      throw new UsageError(
        `--link ${quote(str("link"))}: ${quote(link)} is not one of ${names.join(", ")}`,
      );
    }
  }
  const deno = absolute("deno", str("deno") ?? DEFAULT_DENO);
  if (/\s/.test(deno)) {
    throw new UsageError(`--deno ${quote(deno)}: may not contain white space (it goes on #!)`);
  }
  const clusterCidrs = (str("cluster-cidr") ?? "").split(",").map((s) => s.trim()).filter(
    Boolean,
  );
  for (const cidr of clusterCidrs) {
    if (!parseCidr(cidr)) {
      throw new UsageError(
        `--cluster-cidr ${quote(str("cluster-cidr"))}: ${quote(cidr)} is not a CIDR`,
      );
    }
  }
  const timeout = str("timeout") === undefined ? DEFAULT_TIMEOUT_MS / 1000 : Number(str("timeout"));
  if (!Number.isFinite(timeout) || timeout <= 0 || timeout > 600) {
    throw new UsageError(
      `--timeout ${quote(str("timeout"))}: must be seconds, above 0 and up to 600`,
    );
  }
  const node = str("node") ?? io.getEnv("NODE_NAME");
  if (kubernetes && !node) {
    throw new UsageError("--kubernetes needs the node's name: --node NAME or NODE_NAME");
  }
  const root = str("root") === undefined ? "/" : absolute("root", str("root")!);
  if (root !== "/") {
    let isDir = false;
    try {
      isDir = Deno.statSync(root).isDirectory;
    } catch {
      // reported below
    }
    if (!isDir) throw new UsageError(`--root ${quote(root)}: no such directory`);
  }
  const opts: Options = {
    root,
    binDir: absolute("bin-dir", str("bin-dir") ?? DEFAULT_BIN_DIR),
    deno,
    confDir: absolute("conf-dir", str("conf-dir") ?? DEFAULT_CONF_DIR),
    conflist: str("conflist"),
    links,
    force: values.force === true,
    dryRun: values["dry-run"] === true,
    kubernetes,
    node,
    kubeconfig: str("kubeconfig"),
    clusterCidrs,
    policyFile: absolute("policy-file", str("policy-file") ?? DEFAULT_POLICY_FILE),
    policyFileGiven: values["policy-file"] !== undefined,
    policySource: str("policy-source"),
    pluginKubeconfig: absolute(
      "plugin-kubeconfig",
      str("plugin-kubeconfig") ?? DEFAULT_PLUGIN_KUBECONFIG,
    ),
    timeoutMs: timeout * 1000,
  };
  return opts;
}

/** The node's path under --root. */
function under(root: string, path: string): string {
  return root === "/" ? path : root + path;
}

function lstat(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`stat ${quote(path)}: ${err instanceof Error ? err.message : err}`);
  }
}

function readFile(path: string, what: string): Uint8Array {
  try {
    return Deno.readFileSync(path);
  } catch (err) {
    throw new Error(`read ${what} ${quote(path)}: ${err instanceof Error ? err.message : err}`);
  }
}

/** The longest `#!` line Linux reads whole (BINPRM_BUF_SIZE, 256 bytes with its newline). */
export const SHEBANG_MAX = 255;

const BUNDLE_SHEBANG = /^(#!\/usr\/bin\/env -S (?:[A-Z_]+=\S* )*)(\/\S+)( run .*)$/;

/** This program's own file, with its first line naming `deno` instead of the Deno that built it. */
function programWithDeno(deno: string): Uint8Array {
  const url = new URL(Deno.mainModule);
  const path = decodeURIComponent(url.pathname);
  const text = url.protocol === "file:"
    ? new TextDecoder().decode(readFile(path, "the program"))
    : "";
  const newline = text.indexOf("\n");
  const first = newline < 0 ? "" : text.slice(0, newline);
  const m = BUNDLE_SHEBANG.exec(first);
  if (!m) {
    throw new UsageError(
      `${Deno.mainModule} is not the bundled program: run ${"`deno task bundle`"} first, then dist/cnichain install`,
    );
  }
  const line = `${m[1]}${deno}${m[3]}`;
  const bytes = new TextEncoder().encode(line).length;
  if (bytes > SHEBANG_MAX) {
    // The kernel would cut the line, and with it the flags: every run would fail.
    throw new UsageError(
      `--deno ${quote(deno)}: makes the program's #! line ${bytes} bytes long; Linux reads ` +
        `${SHEBANG_MAX} at most (a path of ${
          new TextEncoder().encode(deno).length - (bytes - SHEBANG_MAX)
        } bytes at most)`,
    );
  }
  return new TextEncoder().encode(`${line}${text.slice(newline)}`);
}

function checked(doc: unknown, what: string): void {
  const { problems } = checkConflist(doc, entryCheck(builtinRegistry()));
  if (problems.length) {
    throw new UsageError(
      `${what}: ${problems.length} problem${problems.length > 1 ? "s" : ""}: ${
        problems.map(formatProblem).join("; ")
      }`,
    );
  }
}

function jsonBytes(doc: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(doc, null, 2) + "\n");
}

/** The conflist for a Kubernetes node: bridge + host-local per pod CIDR, portmap, policy. */
export function nodeConflist(
  cidrs: string[],
  clusterCidrs: string[],
  policyFile: string,
  pluginKubeconfig?: string,
): Record<string, unknown> {
  const families = [...new Set(cidrs.map((c) => familyOf(c)))];
  return {
    cniVersion: "1.1.0",
    name: "cnichain",
    plugins: [{
      type: "cnichain",
      capabilities: { portMappings: true },
      logFile: "/var/log/cnichain.log",
      plugins: [
        {
          type: "bridge",
          bridge: "cni0",
          isGateway: true,
          ipMasq: true,
          hairpinMode: true,
          ...(clusterCidrs.length ? { ipMasqExclude: clusterCidrs } : {}),
          ipam: {
            type: "host-local",
            ranges: cidrs.map((subnet) => [{ subnet }]),
            routes: families.map((f) => ({ dst: f === 6 ? "::/0" : "0.0.0.0/0" })),
          },
        },
        { type: "portmap", capabilities: { portMappings: true }, snat: true },
        {
          type: "policy",
          policyFile,
          ...(pluginKubeconfig ? { kubernetes: { kubeconfig: pluginKubeconfig } } : {}),
        },
      ],
    }],
  };
}

/** Checks a policy list file the way the policy step reads it. */
function checkedPolicies(path: string): Uint8Array {
  const bytes = readFile(path, "--policy-source");
  let doc: unknown;
  try {
    doc = decodeJson(bytes, path);
  } catch (err) {
    throw new UsageError(
      `--policy-source ${quote(path)}: ${err instanceof Error ? err.message : err}`,
    );
  }
  const list = Array.isArray(doc) ? doc : isObject(doc) ? (doc.items ?? doc.policies) : undefined;
  if (!Array.isArray(list)) {
    throw new UsageError(`--policy-source ${quote(path)}: must hold a list of policies`);
  }
  const problems = policyEngine().validate(list);
  if (problems.length) {
    const p = problems[0];
    throw new UsageError(`--policy-source ${quote(path)}: ${p.path}: ${p.message}`);
  }
  return bytes;
}

/** Conflist-like files already in a directory (none when it does not exist). */
function existingConfs(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)]
      .filter((e) => !e.isDirectory && /\.(conf|conflist|json)$/.test(e.name))
      .map((e) => e.name)
      .sort();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw new Error(`list ${quote(dir)}: ${err instanceof Error ? err.message : err}`);
  }
}

/**
 * A flattened JSON kubeconfig holding `cfg` (server, CA, token or client
 * certificate inline), for the policy step, which runs on the host.
 */
export function pluginKubeconfig(cfg: KubeConfig): Uint8Array {
  const b64 = (text: string) => {
    const bytes = new TextEncoder().encode(text);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  };
  const user: Record<string, string> = {};
  if (cfg.token) user.token = cfg.token;
  if (cfg.clientCert) {
    user["client-certificate-data"] = b64(cfg.clientCert.cert);
    user["client-key-data"] = b64(cfg.clientCert.key);
  }
  return jsonBytes({
    apiVersion: "v1",
    kind: "Config",
    "current-context": "cnichain",
    clusters: [{
      name: "cluster",
      cluster: {
        server: cfg.server,
        ...(cfg.caPem ? { "certificate-authority-data": b64(cfg.caPem) } : {}),
      },
    }],
    users: [{ name: "cnichain", user }],
    contexts: [{ name: "cnichain", context: { cluster: "cluster", user: "cnichain" } }],
  });
}

async function fetchNodeCidrs(o: Options, cfg: KubeConfig): Promise<string[]> {
  const client = new KubeClient(cfg, { timeoutMs: o.timeoutMs });
  try {
    const node = await client.getNode(o.node!);
    const cidrs = podCidrs(node);
    if (!cidrs.length) {
      throw new Error(
        `node ${
          quote(o.node)
        } has no pod CIDR yet (spec.podCIDR and spec.podCIDRs are empty): the cluster must allocate them (kube-controller-manager --allocate-node-cidrs=true --cluster-cidr=...) or set them on the node`,
      );
    }
    return cidrs;
  } finally {
    client.close();
  }
}

async function plan(o: Options): Promise<Step[]> {
  const steps: Step[] = [];
  const bin = under(o.root, o.binDir);
  const program = `${bin}/${PROGRAM_NAME}`;
  const deno = under(o.root, o.deno);
  if (deno === program || o.links.some((name) => deno === `${bin}/${name}`)) {
    throw new UsageError(`--deno ${quote(o.deno)}: is where the program or one of its links goes`);
  }
  if (lstat(deno)?.isDirectory) throw new UsageError(`--deno ${quote(o.deno)}: is a directory`);
  // Deno before the program that names it, the conflist (what a runtime acts on) last: an
  // install stopped half way never leaves a conflist whose plugin or policy file is missing.
  steps.push({
    kind: "copy",
    path: deno,
    from: Deno.execPath(),
    mode: 0o755,
    note: `Deno ${Deno.version.deno}`,
  });
  steps.push({
    kind: "file",
    path: program,
    data: programWithDeno(o.deno),
    mode: 0o755,
    note: `runs with ${o.deno}`,
  });
  for (const name of new Set(o.links)) {
    const path = `${bin}/${name}`;
    const info = lstat(path);
    if (info?.isSymlink) {
      const target = Deno.readLinkSync(path);
      if (target === PROGRAM_NAME || target === `${o.binDir}/${PROGRAM_NAME}`) {
        steps.push({ kind: "keep", path, why: `already a link to ${PROGRAM_NAME}` });
        continue;
      }
    }
    if (info && info.isDirectory) throw new Error(`${quote(path)} is a directory`);
    if (info && !o.force) {
      throw new Error(
        `${
          quote(path)
        } exists and is not a link to ${PROGRAM_NAME} (the reference plugin?): --force replaces it`,
      );
    }
    steps.push({ kind: "link", path, target: PROGRAM_NAME, replace: info !== undefined });
  }

  let conflist: Uint8Array;
  let policyFile: string | undefined;
  if (o.kubernetes) {
    const cfg: KubeConfig = o.kubeconfig
      ? kubeconfigFile(o.kubeconfig)
      : inClusterConfig((n) => Deno.env.get(n));
    const cidrs = await fetchNodeCidrs(o, cfg);
    const doc = nodeConflist(cidrs, o.clusterCidrs, o.policyFile, o.pluginKubeconfig);
    checked(doc, `the conflist for node ${quote(o.node)}`);
    conflist = jsonBytes(doc);
    policyFile = o.policyFile;
    // Written every time: the account's token rotates, and a re-run is how the node gets the new one.
    steps.push({
      kind: "file",
      path: under(o.root, o.pluginKubeconfig),
      data: pluginKubeconfig(cfg),
      mode: 0o600,
      note: `the policy step's access to ${cfg.server}`,
    });
  } else if (o.conflist) {
    const bytes = readFile(o.conflist, "--conflist");
    let doc: unknown;
    try {
      doc = decodeJson(bytes, o.conflist);
    } catch (err) {
      throw new UsageError(
        `--conflist ${quote(o.conflist)}: ${err instanceof Error ? err.message : err}`,
      );
    }
    checked(doc, `--conflist ${quote(o.conflist)}`);
    conflist = bytes;
    policyFile = policyFileOf(doc);
  } else {
    const doc = structuredClone(defaultConflist);
    if (o.policyFileGiven) setPolicyFile(doc, o.policyFile);
    checked(doc, "the default conflist");
    conflist = jsonBytes(doc);
    policyFile = policyFileOf(doc);
  }
  const confDir = under(o.root, o.confDir);
  const confPath = `${confDir}/${CONFLIST_NAME}`;
  // Kubernetes mode owns its conflist and remakes it; any other one is the operator's.
  const others = existingConfs(confDir).filter((n) => !(o.kubernetes && n === CONFLIST_NAME));
  let confStep: Step;
  if (others.length && !o.force) {
    const same = others.length === 1 && others[0] === CONFLIST_NAME &&
      sameBytes(lstat(confPath) ? Deno.readFileSync(confPath) : undefined, conflist);
    confStep = {
      kind: "keep",
      path: confPath,
      why: same
        ? "unchanged"
        : `${confDir} holds ${others.join(", ")} already (--force writes ${CONFLIST_NAME} anyway)`,
    };
  } else confStep = { kind: "file", path: confPath, data: conflist, mode: 0o644 };

  // A policy step reads its policy file on every ADD: the node needs one, if only an empty list.
  if (policyFile) {
    const path = under(o.root, policyFile);
    if (o.policySource) {
      steps.push({
        kind: "file",
        path,
        data: checkedPolicies(o.policySource),
        mode: 0o644,
        note: `from ${o.policySource}`,
      });
    } else if (!lstat(path)) {
      steps.push({
        kind: "file",
        path,
        data: new TextEncoder().encode("[]\n"),
        mode: 0o644,
        note: "no policies",
      });
    } else steps.push({ kind: "keep", path, why: "kept (no --policy-source)" });
  }
  steps.push(confStep);
  return steps;
}

/** A conflist's policy step (nested in a `cnichain` entry or not) that reads a `policyFile`. */
function policyStep(doc: unknown): Record<string, unknown> | undefined {
  const steps = (isObject(doc) && Array.isArray(doc.plugins) ? doc.plugins : []).flatMap((p) =>
    isObject(p) && Array.isArray(p.plugins) ? [p, ...p.plugins] : [p]
  );
  const policy = steps.find((p) => isObject(p) && p.type === "policy" && p.policyFile);
  return isObject(policy) ? policy : undefined;
}

function policyFileOf(doc: unknown): string | undefined {
  const file = policyStep(doc)?.policyFile;
  return typeof file === "string" ? file : undefined;
}

function setPolicyFile(doc: unknown, path: string): void {
  const step = policyStep(doc);
  if (step) step.policyFile = path;
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Whether two files hold the same bytes, read a chunk at a time (the Deno binary is large). */
function sameFiles(a: string, b: string): boolean {
  const sa = lstat(a);
  const sb = lstat(b);
  if (!sa?.isFile || !sb?.isFile || sa.size !== sb.size) return false;
  const fa = Deno.openSync(a);
  const fb = Deno.openSync(b);
  try {
    const ba = new Uint8Array(1 << 20);
    const bb = new Uint8Array(1 << 20);
    for (;;) {
      const na = readFull(fa, ba);
      const nb = readFull(fb, bb);
      if (na !== nb) return false;
      if (na === 0) return true;
      if (!sameBytes(ba.subarray(0, na), bb.subarray(0, nb))) return false;
    }
  } finally {
    fa.close();
    fb.close();
  }
}

function readFull(file: Deno.FsFile, buf: Uint8Array): number {
  let n = 0;
  while (n < buf.length) {
    const got = file.readSync(buf.subarray(n));
    if (got === null) break;
    n += got;
  }
  return n;
}

function tempBeside(path: string): string {
  const rand = crypto.getRandomValues(new Uint32Array(1))[0].toString(16);
  const dir = path.slice(0, path.lastIndexOf("/"));
  return `${dir}/.${path.slice(path.lastIndexOf("/") + 1)}.tmp-${Deno.pid}-${rand}`;
}

/**
 * Removes what an earlier install killed half way left beside `path` (its temporary file, which
 * for the Deno binary is tens of MB), once the process that made it is gone.
 */
function removeStaleTemps(path: string): void {
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  const prefix = `.${path.slice(path.lastIndexOf("/") + 1)}.tmp-`;
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return;
  }
  for (const e of entries) {
    const m = e.name.startsWith(prefix)
      ? /^(\d+)-[0-9a-f]+$/.exec(e.name.slice(prefix.length))
      : null;
    if (!m || !e.isFile || Number(m[1]) === Deno.pid || lstat(`/proc/${m[1]}`)) continue;
    try {
      Deno.removeSync(`${dir}/${e.name}`);
    } catch {
      // gone already, or not ours to remove
    }
  }
}

/** Does one step; returns the summary line. */
function apply(step: Step, dryRun: boolean): string {
  const head = (verb: string) => (dryRun ? `would ${verb}` : verb).padEnd(dryRun ? 16 : 10);
  if (step.kind === "keep") return `${head(dryRun ? "leave" : "left")}${step.path}: ${step.why}`;
  const dir = step.path.slice(0, step.path.lastIndexOf("/")) || "/";
  const note = step.kind !== "link" && step.note ? ` (${step.note})` : "";
  if (step.kind === "link") {
    if (!dryRun) {
      Deno.mkdirSync(dir, { recursive: true, mode: 0o755 });
      const tmp = tempBeside(step.path);
      Deno.symlinkSync(step.target, tmp);
      try {
        Deno.renameSync(tmp, step.path);
      } catch (err) {
        Deno.removeSync(tmp);
        throw err;
      }
    }
    return `${head(dryRun ? "link" : "linked")}${step.path} -> ${step.target}${
      step.replace ? " (replaced)" : ""
    }`;
  }
  if (!dryRun) removeStaleTemps(step.path);
  const info = lstat(step.path);
  const same = info?.isFile === true &&
    (step.kind === "file"
      ? sameBytes(Deno.readFileSync(step.path), step.data)
      : sameFiles(step.path, step.from));
  if (same) {
    if (!dryRun && ((info!.mode ?? 0) & 0o7777) !== step.mode) Deno.chmodSync(step.path, step.mode);
    return `${head(dryRun ? "leave" : "unchanged")}${step.path}${note}${
      dryRun ? " (unchanged)" : ""
    }`;
  }
  if (!dryRun) {
    Deno.mkdirSync(dir, { recursive: true, mode: 0o755 });
    const tmp = tempBeside(step.path);
    try {
      if (step.kind === "file") Deno.writeFileSync(tmp, step.data, { mode: step.mode });
      else Deno.copyFileSync(step.from, tmp);
      Deno.chmodSync(tmp, step.mode);
      Deno.renameSync(tmp, step.path);
    } catch (err) {
      try {
        Deno.removeSync(tmp);
      } catch {
        // it was not made, or already renamed
      }
      throw err;
    }
  }
  return `${head(dryRun ? "write" : "wrote")}${step.path}${note}`;
}

export async function runInstall(args: string[], io: InstallIo): Promise<number> {
  let o: Options;
  try {
    const { parseArgs } = await import("node:util");
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        "bin-dir": { type: "string" },
        deno: { type: "string" },
        "conf-dir": { type: "string" },
        conflist: { type: "string" },
        link: { type: "string" },
        force: { type: "boolean" },
        root: { type: "string" },
        "dry-run": { type: "boolean" },
        kubernetes: { type: "boolean" },
        node: { type: "string" },
        kubeconfig: { type: "string" },
        "cluster-cidr": { type: "string" },
        "policy-file": { type: "string" },
        "policy-source": { type: "string" },
        "plugin-kubeconfig": { type: "string" },
        timeout: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (values.help) {
      io.stdout(HELP);
      return 0;
    }
    if (positionals.length) throw new UsageError(`unexpected argument ${quote(positionals[0])}`);
    o = parseOptions(values, io);
  } catch (err) {
    io.stderr(
      `cnichain install: ${
        err instanceof Error ? err.message : err
      }; nothing was written (cnichain install --help lists the options)`,
    );
    return 2;
  }
  let steps: Step[];
  try {
    steps = await plan(o);
  } catch (err) {
    io.stderr(
      `cnichain install: ${err instanceof Error ? err.message : err}; nothing was written`,
    );
    return err instanceof UsageError ? 2 : 1;
  }
  const lines: string[] = [];
  try {
    for (const step of steps) lines.push(apply(step, o.dryRun));
  } catch (err) {
    if (lines.length) io.stdout(lines.join("\n"));
    io.stderr(`cnichain install: ${err instanceof Error ? err.message : err}`);
    return 1;
  }
  io.stdout(lines.join("\n") + (o.dryRun ? "\n(dry run: nothing was written)" : ""));
  return 0;
}
