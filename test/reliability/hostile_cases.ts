/**
 * Hostile input for the CNI boundary, as a table: every case is an invocation
 * a runtime (or an attacker who can write a conflist or set the variables)
 * could make, and the codes its clean CNI error may carry. hostile_test.ts runs
 * each through the real program; fuzz.ts mutates the valid seeds here.
 *
 * Paths in configs point under the test's temp dir ({@linkcode CaseDirs}), so
 * that "nothing was written" can be checked there.
 */

import { MAX_PORT_MAPPINGS } from "../../chain/plugins/portmap/mod.ts";
import { MAX_RANGE_SETS, MAX_RANGES_PER_SET } from "../../chain/plugins/host_local/config.ts";

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export const CHAIN_VERSIONS: readonly string[] = [
  "0.1.0",
  "0.2.0",
  "0.3.0",
  "0.3.1",
  "0.4.0",
  "1.0.0",
  "1.1.0",
];

/** Where a case's configs may write: all under the test's temp dir. */
export interface CaseDirs {
  stateDir: string;
  dataDir: string;
  logFile: string;
  /** An existing, valid policy file. */
  policyFile: string;
}

export interface CaseContext extends CaseDirs {
  /** A real, empty pod netns path (CNI_NETNS of the base env). */
  netns: string;
  /** CNI_PATH of the base env. */
  cniPath: string;
  /** Existing paths that are not network namespaces. */
  regularFile: string;
  directory: string;
}

export interface HostileCase {
  /** Unique; says what is hostile. */
  name: string;
  /** Which part of the issue it covers. */
  group: string;
  /** The whole environment the program gets. */
  env: Record<string, string>;
  /** Variables whose values are raw bytes (not UTF-8); set through the shell. */
  rawEnv?: Record<string, Uint8Array>;
  stdin: string | Uint8Array;
  /** Run under this multi-call name (a link to the program) instead of `cnichain`. */
  invokedAs?: string;
  /** The codes the error may carry. */
  codes: number[];
}

/** A valid seed: a config that ADD accepts with the base env (the fuzzer's starting points). */
export interface Seed {
  name: string;
  config: Json;
  invokedAs?: string;
  /** CNI_IFNAME, when not eth0. */
  ifname?: string;
}

const POLICY: Json = {
  name: "web",
  namespace: "default",
  podSelector: { matchLabels: { app: "web" } },
  policyTypes: ["Ingress"],
  ingress: [{
    from: [{ ipBlock: { cidr: "10.0.0.0/8", except: ["10.1.0.0/16"] } }],
    ports: [{ protocol: "TCP", port: 80, endPort: 90 }],
  }],
};

/** The full chain every wrong-type case starts from: bridge + host-local, portmap, policy. */
export function fullChain(d: CaseDirs): Record<string, Json> {
  return {
    cniVersion: "1.1.0",
    name: "hostile",
    type: "cnichain",
    capabilities: { portMappings: true },
    stateDir: d.stateDir,
    logFile: d.logFile,
    logLevel: "info",
    plugins: [
      {
        type: "bridge",
        bridge: "hb0",
        isGateway: true,
        isDefaultGateway: false,
        forceAddress: false,
        ipMasq: true,
        ipMasqExclude: ["10.0.0.0/8"],
        mtu: 1400,
        hairpinMode: true,
        promiscMode: false,
        vlan: 0,
        ipam: {
          type: "host-local",
          dataDir: d.dataDir,
          ranges: [[{
            subnet: "10.99.0.0/24",
            rangeStart: "10.99.0.10",
            rangeEnd: "10.99.0.20",
            gateway: "10.99.0.1",
          }]],
          routes: [{ dst: "0.0.0.0/0", gw: "10.99.0.1" }],
        },
      },
      { type: "portmap", capabilities: { portMappings: true }, snat: true, masqAll: false },
      { type: "policy", policies: [POLICY] },
    ],
    args: { cni: { labels: [{ key: "app", value: "web" }] } },
    runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }] },
  };
}

export function bridgeAlone(d: CaseDirs): Record<string, Json> {
  return {
    cniVersion: "1.1.0",
    name: "hostile",
    type: "bridge",
    bridge: "hb0",
    ipam: { type: "host-local", dataDir: d.dataDir, ranges: [[{ subnet: "10.99.0.0/24" }]] },
  };
}

export function ptpStatic(d: CaseDirs): Record<string, Json> {
  return {
    cniVersion: "1.1.0",
    name: "hostile",
    type: "ptp",
    stateDir: d.stateDir,
    ipMasq: true,
    mtu: 1400,
    ipam: {
      type: "static",
      addresses: [{ address: "10.98.0.5/24", gateway: "10.98.0.1" }],
      routes: [{ dst: "0.0.0.0/0" }],
      dns: { nameservers: ["10.98.0.1"], search: ["example"] },
    },
  };
}

export function hostLocalLegacy(d: CaseDirs): Record<string, Json> {
  return {
    cniVersion: "1.1.0",
    name: "hostile",
    type: "host-local",
    ipam: {
      type: "host-local",
      subnet: "10.97.0.0/24",
      rangeStart: "10.97.0.10",
      rangeEnd: "10.97.0.20",
      gateway: "10.97.0.1",
      routes: [{ dst: "0.0.0.0/0" }],
      dataDir: d.dataDir,
    },
  };
}

export function policyFromFile(d: CaseDirs): Record<string, Json> {
  return {
    cniVersion: "1.1.0",
    name: "hostile",
    type: "cnichain",
    stateDir: d.stateDir,
    plugins: [
      { type: "ptp", ipam: ptpStatic(d).ipam },
      { type: "policy", policyFile: d.policyFile },
    ],
  };
}

/** A prevResult as a runtime hands it to a chained plugin. */
export const PREV_RESULT: Json = {
  cniVersion: "1.1.0",
  interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
  ips: [{ address: "10.96.0.5/24", gateway: "10.96.0.1", interface: 0 }],
};

export function portmapAlone(d: CaseDirs): Record<string, Json> {
  return {
    cniVersion: "1.1.0",
    name: "hostile",
    type: "portmap",
    stateDir: d.stateDir,
    runtimeConfig: { portMappings: [{ hostPort: 8081, containerPort: 81, protocol: "udp" }] },
    prevResult: PREV_RESULT,
  };
}

/** The valid starting points of the fuzzer (each one ADDs cleanly in the memory system). */
export function validSeeds(d: CaseDirs): Seed[] {
  return [
    { name: "chain", config: fullChain(d) },
    { name: "ptp+static", config: ptpStatic(d) },
    { name: "ptp+static as ptp", config: ptpStatic(d), invokedAs: "ptp" },
    { name: "host-local legacy", config: hostLocalLegacy(d), invokedAs: "host-local" },
    { name: "policy file chain", config: policyFromFile(d) },
    { name: "portmap", config: portmapAlone(d), invokedAs: "portmap" },
    {
      name: "loopback",
      config: { cniVersion: "1.1.0", name: "hostile", type: "loopback" },
      invokedAs: "loopback",
      ifname: "lo",
    },
    {
      name: "static alone",
      config: {
        cniVersion: "1.1.0",
        name: "hostile",
        type: "static",
        ipam: { type: "static", addresses: [{ address: "10.95.0.5/24" }] },
      },
      invokedAs: "static",
    },
  ];
}

// ---------------------------------------------------------------- helpers

type Path = (string | number)[];

function clone<T>(v: T): T {
  return structuredClone(v);
}

/** A copy of `config` with `path` set to `value` (undefined deletes it). */
export function withField(config: Json, path: Path, value: Json | undefined): Json {
  const copy = clone(config);
  let node = copy as Record<string, Json>;
  for (const p of path.slice(0, -1)) node = node[p as string] as Record<string, Json>;
  const last = path[path.length - 1] as string;
  if (value === undefined) delete node[last];
  else node[last] = value;
  return copy;
}

const SAMPLES: Record<string, Json> = {
  number: 42,
  string: "x",
  boolean: true,
  array: [],
  object: {},
};

function typeOf(v: Json): string {
  return Array.isArray(v) ? "array" : v === null ? "null" : typeof v;
}

/** Values of every JSON type but the one `value` has (null only where the field is required). */
function wrongTypes(value: Json): [string, Json][] {
  return Object.entries(SAMPLES).filter(([t]) => t !== typeOf(value));
}

/** Every field a case varies, per seed: [path, required (null is not "absent")]. */
const CHAIN_FIELDS: [Path, boolean][] = [
  [["cniVersion"], true],
  [["name"], true],
  [["plugins"], true],
  [["plugins", 0], true],
  [["plugins", 0, "type"], true],
  [["stateDir"], false],
  [["logFile"], false],
  [["logLevel"], false],
  [["args"], false],
  [["args", "cni"], false],
  [["args", "cni", "labels"], false],
  [["args", "cni", "labels", 0], false],
  [["runtimeConfig"], false],
  [["runtimeConfig", "portMappings"], false],
  [["runtimeConfig", "portMappings", 0], true],
  [["runtimeConfig", "portMappings", 0, "hostPort"], true],
  [["runtimeConfig", "portMappings", 0, "containerPort"], true],
  [["runtimeConfig", "portMappings", 0, "protocol"], false],
  // bridge
  ...["bridge", "isGateway", "isDefaultGateway", "forceAddress", "ipMasq", "ipMasqExclude", "mtu"]
    .map((k): [Path, boolean] => [["plugins", 0, k], false]),
  ...["hairpinMode", "promiscMode", "vlan", "ipam"]
    .map((k): [Path, boolean] => [["plugins", 0, k], false]),
  [["plugins", 0, "ipMasqExclude", 0], true],
  // host-local
  [["plugins", 0, "ipam", "type"], true],
  [["plugins", 0, "ipam", "dataDir"], false],
  [["plugins", 0, "ipam", "ranges"], true],
  [["plugins", 0, "ipam", "ranges", 0], true],
  [["plugins", 0, "ipam", "ranges", 0, 0], true],
  ...["subnet", "rangeStart", "rangeEnd", "gateway"]
    .map((k): [Path, boolean] => [["plugins", 0, "ipam", "ranges", 0, 0, k], k === "subnet"]),
  [["plugins", 0, "ipam", "routes"], false],
  [["plugins", 0, "ipam", "routes", 0], true],
  [["plugins", 0, "ipam", "routes", 0, "dst"], true],
  [["plugins", 0, "ipam", "routes", 0, "gw"], false],
  // portmap
  [["plugins", 1, "snat"], false],
  [["plugins", 1, "masqAll"], false],
  [["plugins", 1, "capabilities"], false],
  // policy
  [["plugins", 2, "policies"], false],
  [["plugins", 2, "policies", 0], true],
  [["plugins", 2, "policies", 0, "name"], true],
  [["plugins", 2, "policies", 0, "podSelector"], false],
  [["plugins", 2, "policies", 0, "ingress"], false],
  [["plugins", 2, "policies", 0, "ingress", 0, "ports", 0, "port"], false],
  [["plugins", 2, "policies", 0, "ingress", 0, "from", 0, "ipBlock", "cidr"], true],
];

const PTP_FIELDS: [Path, boolean][] = [
  [["ipMasq"], false],
  [["mtu"], false],
  [["ipam"], true],
  [["ipam", "addresses"], false],
  [["ipam", "addresses", 0], true],
  [["ipam", "addresses", 0, "address"], true],
  [["ipam", "addresses", 0, "gateway"], false],
  [["ipam", "routes"], false],
  [["ipam", "dns"], false],
  [["ipam", "dns", "nameservers"], false],
];

const LEGACY_FIELDS: [Path, boolean][] = ["subnet", "rangeStart", "rangeEnd", "gateway", "routes"]
  .map((k): [Path, boolean] => [["ipam", k], k === "subnet"]).concat([[
    ["ipam", "dataDir"],
    false,
  ]]);

const PORTMAP_FIELDS: [Path, boolean][] = [
  [["prevResult"], true],
  [["prevResult", "ips"], false],
  [["prevResult", "ips", 0], true],
  [["prevResult", "ips", 0, "address"], true],
  [["prevResult", "interfaces"], false],
  [["runtimeConfig", "portMappings", 0, "hostIP"], false],
];

function getAt(v: Json, path: Path): Json {
  let node = v;
  for (const p of path) node = (node as Record<string, Json>)[p as string];
  return node;
}

// ---------------------------------------------------------------- the table

export function hostileCases(c: CaseContext): HostileCase[] {
  const cases: HostileCase[] = [];
  const env = (verb = "ADD", more: Record<string, string> = {}): Record<string, string> => ({
    CNI_COMMAND: verb,
    CNI_CONTAINERID: "hostile1",
    CNI_NETNS: c.netns,
    CNI_IFNAME: "eth0",
    CNI_PATH: c.cniPath,
    ...more,
  });
  const add = (
    group: string,
    name: string,
    stdin: string | Uint8Array | Json,
    codes: number[],
    extra: Partial<HostileCase> = {},
  ) =>
    cases.push({
      group,
      name,
      env: env(),
      stdin: typeof stdin === "string" || stdin instanceof Uint8Array
        ? stdin
        : JSON.stringify(stdin),
      codes,
      ...extra,
    });
  const chain = fullChain(c);

  // Malformed and truncated JSON: every truncation point of a real (bridge) config.
  const bridgeText = JSON.stringify(bridgeAlone(c));
  for (let at = 0; at < bridgeText.length; at++) {
    add("truncated", `bridge config cut at byte ${at}`, bridgeText.slice(0, at), [6], {
      invokedAs: "bridge",
    });
  }
  const malformed: [string, string][] = [
    ["trailing garbage", `${JSON.stringify(chain)}x`],
    ["two objects", `${JSON.stringify(chain)}${JSON.stringify(chain)}`],
    ["single quotes", "{'cniVersion': '1.1.0'}"],
    ["trailing comma", '{"cniVersion": "1.1.0", "name": "x",}'],
    ["comment", '{"cniVersion": "1.1.0" /* x */}'],
    ["NaN", '{"cniVersion": "1.1.0", "name": "x", "mtu": NaN}'],

    ["a bare string", '"cnichain"'],
    ["an array", "[]"],
    ["null", "null"],
    ["a number", "42"],
    ["only whitespace", " \n\t "],
    ["empty", ""],
    ["an unterminated string", '{"name": "abc'],
    ["a bad escape", '{"name": "\\q"}'],
    ["a raw control character in a string", '{"name": "a\u0001b"}'],
  ];
  for (const [name, text] of malformed) add("malformed", name, text, [6]);
  // JSON.parse reads 1e999 as Infinity, which no field accepts.
  add(
    "malformed",
    "a number too large for JSON",
    JSON.stringify(fullChain(c)).replace('"mtu":1400', '"mtu":1e999'),
    [6, 7],
  );

  // Wrong JSON types for every field of every built-in's config.
  const typeCases = (label: string, seed: Json, fields: [Path, boolean][], invokedAs?: string) => {
    for (const [path, required] of fields) {
      const values = wrongTypes(getAt(seed, path));
      if (required) values.push(["null", null]);
      for (const [t, v] of values) {
        add("wrong type", `${label} ${path.join(".")} as ${t}`, withField(seed, path, v), [1, 7], {
          invokedAs,
        });
      }
    }
  };
  typeCases("chain", chain, CHAIN_FIELDS);
  typeCases("ptp+static", ptpStatic(c), PTP_FIELDS, "ptp");
  typeCases("host-local legacy", hostLocalLegacy(c), LEGACY_FIELDS, "host-local");
  typeCases("portmap", portmapAlone(c), PORTMAP_FIELDS, "portmap");
  for (const [t, v] of wrongTypes("x")) {
    add(
      "wrong type",
      `policy policyFile as ${t}`,
      withField(policyFromFile(c), ["plugins", 1, "policyFile"], v),
      [7],
    );
  }

  // Huge inputs.
  const big = (bytes: number) => {
    const head = new TextEncoder().encode('{"cniVersion": "1.1.0", "name": "');
    const out = new Uint8Array(bytes).fill(0x61);
    out.set(head);
    return out;
  };
  add("huge", "9 MiB of stdin (past the 8 MiB limit)", big(9 * 1024 * 1024), [6]);
  add("huge", "64 MiB of stdin", big(64 * 1024 * 1024), [6]);
  add("huge", "a 7 MiB network name", { ...chain, name: "n".repeat(7 * 1024 * 1024) }, [7]);
  add("huge", "a network name of 129 characters", { ...chain, name: "n".repeat(129) }, [7]);
  add(
    "huge",
    "a 300-character name to bridge alone",
    withField(bridgeAlone(c), ["name"], "n".repeat(300)),
    [7],
    { invokedAs: "bridge" },
  );
  const steps = (n: number) => Array.from({ length: n }, () => ({ type: "loopback" }));
  add("huge", "10,000 plugins in a chain", { ...chain, plugins: steps(10_000) }, [7]);
  add("huge", "65 plugins in a chain (one past the limit)", { ...chain, plugins: steps(65) }, [7]);
  const mappings = (n: number) =>
    Array.from({ length: n }, (_, i) => ({
      hostPort: 1 + (i % 65535),
      containerPort: 80,
      protocol: ["tcp", "udp", "sctp"][Math.floor(i / 65535) % 3],
    }));
  add("huge", "100,000 port mappings", {
    ...chain,
    runtimeConfig: { portMappings: mappings(100_000) },
  }, [7]);
  add("huge", `${MAX_PORT_MAPPINGS + 1} port mappings (one past the limit)`, {
    ...chain,
    runtimeConfig: { portMappings: mappings(MAX_PORT_MAPPINGS + 1) },
  }, [7]);
  add(
    "huge",
    "100,000 port mappings to portmap alone",
    {
      ...portmapAlone(c),
      runtimeConfig: { portMappings: mappings(100_000) },
    },
    [7],
    { invokedAs: "portmap" },
  );
  const sets = (n: number) =>
    Array.from({ length: n }, (_, i) => [{ subnet: `10.${(i >> 8) & 255}.${i & 255}.0/24` }]);
  const ranges = (v: Json) => withField(chain, ["plugins", 0, "ipam", "ranges"], v);
  add("huge", "20,000 range sets", ranges(sets(20_000)), [7]);
  add(
    "huge",
    `${MAX_RANGE_SETS + 1} range sets (one past the limit)`,
    ranges(sets(MAX_RANGE_SETS + 1)),
    [7],
  );
  add("huge", "20,000 ranges in one set", ranges([sets(20_000).flat()]), [7]);
  add(
    "huge",
    `${MAX_RANGES_PER_SET + 1} ranges in one set (one past the limit)`,
    ranges([sets(MAX_RANGES_PER_SET + 1).flat()]),
    [7],
  );
  add(
    "huge",
    "a million wrong-typed routes",
    withField(chain, ["plugins", 0, "ipam", "routes"], Array(1_000_000).fill(0)),
    [7],
  );
  add(
    "huge",
    "a million-element ranges list",
    withField(chain, ["plugins", 0, "ipam", "ranges"], Array(1_000_000).fill(0)),
    [7],
  );

  // Deep nesting.
  const nest = (n: number, inner: string) => "[".repeat(n) + inner + "]".repeat(n);
  add("nesting", "65 levels in args", `{"cniVersion":"1.1.0","name":"x","args":${nest(64, "1")}}`, [
    6,
  ]);
  add("nesting", "100,000 levels of arrays", nest(100_000, ""), [6]);
  add("nesting", "100,000 levels of objects", '{"a":'.repeat(100_000) + "1" + "}".repeat(100_000), [
    6,
  ]);
  add("nesting", "100,000 unclosed brackets", "[".repeat(100_000), [6]);
  add(
    "nesting",
    "a deep prevResult",
    withField(chain, ["prevResult"], JSON.parse(nest(70, "{}"))),
    [6],
  );

  // Not UTF-8.
  const withBytes = (text: string, bytes: number[]) => {
    const t = new TextEncoder().encode(text);
    const at = t.indexOf(0x40); // "@" marks where the bytes go
    return new Uint8Array([...t.slice(0, at), ...bytes, ...t.slice(at + 1)]);
  };
  const nameWith = '{"cniVersion":"1.1.0","name":"@","type":"loopback"}';
  add("utf-8", "0xff in a string", withBytes(nameWith, [0xff]), [6]);
  add("utf-8", "an overlong encoding of /", withBytes(nameWith, [0xc0, 0xaf]), [6]);
  add("utf-8", "an encoded surrogate", withBytes(nameWith, [0xed, 0xa0, 0x80]), [6]);
  add("utf-8", "a truncated sequence at the end", withBytes('{"name":"x"}@', [0xe2, 0x82]), [6]);
  add(
    "utf-8",
    "UTF-16 with a BOM",
    new Uint8Array([0xff, 0xfe, ...[...'{"a":1}'].flatMap((ch) => [ch.charCodeAt(0), 0])]),
    [6],
  );
  add("utf-8", "Latin-1 outside a string", withBytes('{"cniVersion":"1.1.0"@}', [0xa0]), [6]);

  // Path traversal.
  const badNames = ["..", ".", "../x", "a/b", "/abs", "a\u0000b", "", " x", "x\n"];
  for (const n of badNames) {
    add("traversal", `network name ${JSON.stringify(n)}`, { ...chain, name: n }, [7]);
  }
  // "" means the default for dataDir (as in the reference), so it is only bad elsewhere.
  const badPaths = (base: string, emptyIsBad = true): [string, string][] => [
    ["relative", "relative/dir"],
    ["starting with ..", "../up"],
    ["climbing out with ..", `${base}/../../etc`],
    ["holding NUL", `${base}/a\u0000b`],
    ...(emptyIsBad ? [["empty", ""] as [string, string]] : []),
    ["of 5001 characters", "/" + "a".repeat(5000)],
  ];
  const pathField = (label: string, seed: Json, path: Path, base: string, invokedAs?: string) => {
    for (const [what, p] of badPaths(base, !label.includes("dataDir"))) {
      add(
        "traversal",
        `${label} ${what}`,
        withField(seed, path, p),
        [7],
        { invokedAs },
      );
    }
  };
  pathField("stateDir", chain, ["stateDir"], c.stateDir);
  pathField("logFile", chain, ["logFile"], c.logFile);
  pathField("dataDir", chain, ["plugins", 0, "ipam", "dataDir"], c.dataDir);
  pathField("legacy dataDir", hostLocalLegacy(c), ["ipam", "dataDir"], c.dataDir, "host-local");
  pathField("policyFile", policyFromFile(c), ["plugins", 1, "policyFile"], c.policyFile);
  pathField("portmap stateDir", portmapAlone(c), ["stateDir"], c.stateDir, "portmap");
  for (const n of ["..", ".", "../eth0", "a/b", "eth0:1", "a b", "x\ny", "sixteen-bytes-xx", ""]) {
    cases.push({
      group: "traversal",
      name: `CNI_IFNAME ${JSON.stringify(n)}`,
      env: env("ADD", { CNI_IFNAME: n }),
      stdin: JSON.stringify(chain),
      codes: [4],
    });
  }

  // A policy file that cannot be used: the ptp step before it ran and is rolled back.
  const policyAt = (file: string) =>
    withField(policyFromFile(c), ["plugins", 1, "policyFile"], file);
  add("policy file", "a policyFile that does not exist", policyAt(`${c.directory}/missing.json`), [
    5,
    7,
  ]);
  add("policy file", "a policyFile that is a directory", policyAt(c.directory), [5, 7]);
  add("policy file", "a policyFile that is not JSON", policyAt(c.regularFile), [6, 7]);
  add("policy file", "a policyFile that is /dev/zero", policyAt("/dev/zero"), [5, 6, 7]);

  // Shell metacharacters in string fields and variables.
  const meta = ["a;touch /tmp/pwned", "$(touch /tmp/pwned)", "`touch /tmp/pwned`", "a|b", "a\nb"];
  const metaFields: [string, Json, Path, string?][] = [
    ["chain name", chain, ["name"]],
    ["chain logLevel", chain, ["logLevel"]],
    ["chain cniVersion", chain, ["cniVersion"]],
    ["step type", chain, ["plugins", 0, "type"]],
    ["stateDir", chain, ["stateDir"]],
    ["logFile", chain, ["logFile"]],
    ["bridge ipMasqExclude", chain, ["plugins", 0, "ipMasqExclude", 0]],
    ["host-local dataDir", chain, ["plugins", 0, "ipam", "dataDir"]],
    ["host-local subnet", chain, ["plugins", 0, "ipam", "ranges", 0, 0, "subnet"]],
    ["host-local rangeStart", chain, ["plugins", 0, "ipam", "ranges", 0, 0, "rangeStart"]],
    ["host-local rangeEnd", chain, ["plugins", 0, "ipam", "ranges", 0, 0, "rangeEnd"]],
    ["host-local gateway", chain, ["plugins", 0, "ipam", "ranges", 0, 0, "gateway"]],
    ["host-local route dst", chain, ["plugins", 0, "ipam", "routes", 0, "dst"]],
    ["host-local route gw", chain, ["plugins", 0, "ipam", "routes", 0, "gw"]],
    ["portmap protocol", chain, ["runtimeConfig", "portMappings", 0, "protocol"]],
    ["policy cidr", chain, [
      "plugins",
      2,
      "policies",
      0,
      "ingress",
      0,
      "from",
      0,
      "ipBlock",
      "cidr",
    ]],
    ["policy protocol", chain, ["plugins", 2, "policies", 0, "ingress", 0, "ports", 0, "protocol"]],
    ["policyFile", policyFromFile(c), ["plugins", 1, "policyFile"]],
    ["static address", ptpStatic(c), ["ipam", "addresses", 0, "address"], "ptp"],
    ["static gateway", ptpStatic(c), ["ipam", "addresses", 0, "gateway"], "ptp"],
    ["portmap hostIP", portmapAlone(c), ["runtimeConfig", "portMappings", 0, "hostIP"], "portmap"],
    ["portmap prevResult address", portmapAlone(c), ["prevResult", "ips", 0, "address"], "portmap"],
  ];
  for (const [label, seed, path, invokedAs] of metaFields) {
    for (const m of meta) {
      add("shell", `${label} ${JSON.stringify(m)}`, withField(seed, path, m), [1, 7], {
        invokedAs,
      });
    }
  }
  for (const m of meta) {
    for (
      const [name, codes] of [["CNI_COMMAND", [4]], ["CNI_CONTAINERID", [4]], ["CNI_ARGS", [
        4,
      ]]] as const
    ) {
      cases.push({
        group: "shell",
        name: `${name} ${JSON.stringify(m)}`,
        env: env("ADD", { [name]: m === "a|b" && name === "CNI_ARGS" ? "a|b" : m }),
        stdin: JSON.stringify(chain),
        codes: [...codes],
      });
    }
    cases.push({
      group: "shell",
      name: `CNI_NETNS ${JSON.stringify(m)}`,
      env: env("ADD", { CNI_NETNS: m }),
      stdin: JSON.stringify(chain),
      codes: [4],
    });
    cases.push({
      group: "shell",
      name: `CNI_PATH ${JSON.stringify(m)} with an external step`,
      env: env("ADD", { CNI_PATH: m }),
      stdin: JSON.stringify(withField(chain, ["plugins", 1, "type"], "not-installed")),
      codes: [7],
    });
  }

  // Every CNI variable missing or garbage, for each verb.
  const required: Record<string, string[]> = {
    ADD: ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
    CHECK: ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
    DEL: ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
    GC: ["CNI_COMMAND", "CNI_PATH"],
    STATUS: ["CNI_COMMAND", "CNI_PATH"],
    VERSION: [],
  };
  const garbage: Record<string, string[]> = {
    CNI_COMMAND: ["add", "ADD ", "VERSIONS", "\u00e9"],
    CNI_CONTAINERID: ["-lead", "a b", "\u00e9t\u00e9", "a/b", "."],
    CNI_IFNAME: ["much-too-long-ifname", "a:b", "..", "a\tb"],
    CNI_ARGS: ["novalue", "=x", ";=;", "a=1;;b"],
  };
  for (const [verb, vars] of Object.entries(required)) {
    for (const v of vars) {
      const e = env(verb);
      delete e[v];
      cases.push({
        group: "env",
        name: `${verb} without ${v}`,
        env: e,
        stdin: JSON.stringify(chain),
        codes: [4],
        // Without CNI_COMMAND the program is the command line, unless run as a plugin.
        ...(v === "CNI_COMMAND" ? { invokedAs: "bridge" } : {}),
      });
      cases.push({
        group: "env",
        name: `${verb} with ${v} empty`,
        env: { ...e, [v]: "" },
        stdin: JSON.stringify(chain),
        codes: [4],
      });
    }
    for (const [v, values] of Object.entries(garbage)) {
      if (v === "CNI_COMMAND" && verb !== "ADD") continue;
      if (v === "CNI_ARGS" && verb === "ADD") {
        // "a=1;;b": the empty pair is skipped, "b" has no value.
      }
      for (const value of values) {
        if (verb === "VERSION" && v !== "CNI_COMMAND") continue;
        cases.push({
          group: "env",
          name: `${verb} with ${v}=${JSON.stringify(value)}`,
          env: env(verb, { [v]: value }),
          stdin: JSON.stringify(chain),
          codes: [4],
        });
      }
    }
    cases.push({
      group: "env",
      name: `${verb} with a non-UTF-8 CNI_IFNAME`,
      env: env(verb),
      rawEnv: { CNI_IFNAME: new Uint8Array([0x65, 0xff]) },
      stdin: JSON.stringify(chain),
      codes: [4],
    });
    cases.push({
      group: "env",
      name: `${verb} with a non-UTF-8 CNI_COMMAND`,
      env: (() => {
        const e = env(verb);
        delete e.CNI_COMMAND;
        return e;
      })(),
      rawEnv: { CNI_COMMAND: new Uint8Array([0x41, 0x44, 0xff]) },
      stdin: JSON.stringify(chain),
      codes: [4],
    });
  }

  // CNI_NETNS paths that are not network namespaces.
  const notNetns = [
    ["a regular file", c.regularFile],
    ["a directory", c.directory],
    ["/dev/null", "/dev/null"],
    ["a dangling path", `${c.directory}/gone/netns`],
    ["/proc/self/fd/0", "/proc/self/fd/0"],
    ["a relative path", "netns"],
  ];
  for (const verb of ["ADD", "CHECK"]) {
    for (const [what, path] of notNetns) {
      cases.push({
        group: "netns",
        name: `${verb} with CNI_NETNS ${what}`,
        env: env(verb, { CNI_NETNS: path }),
        stdin: JSON.stringify(verb === "ADD" ? chain : { ...chain, prevResult: PREV_RESULT }),
        // CHECK of an attachment that was never added may fail on the store first (999, by design).
        codes: verb === "ADD" ? [4] : [4, 999],
      });
      cases.push({
        group: "netns",
        name: `${verb} to ptp with CNI_NETNS ${what}`,
        env: env(verb, { CNI_NETNS: path }),
        stdin: JSON.stringify(
          verb === "ADD" ? ptpStatic(c) : { ...ptpStatic(c), prevResult: PREV_RESULT },
        ),
        codes: verb === "ADD" ? [4] : [4, 999],
        invokedAs: "ptp",
      });
    }
  }
  const names = new Set<string>();
  for (const k of cases) {
    if (names.has(k.name)) throw new Error(`hostile case named twice: ${k.name}`);
    names.add(k.name);
  }
  return cases;
}
