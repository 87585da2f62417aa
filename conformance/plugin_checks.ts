/**
 * The plugin-level part: each check execs plugins of one target directory
 * (`bridge`, `ptp`, `host-local`, `portmap`) the way runtimes do and checks
 * one normative point of SPEC.md at one spec version. Nothing here knows
 * which implementation it runs: the same checks run against cnichain's
 * multi-call names and the reference plugins.
 */
import { FakePlugins } from "../test/helpers.ts";
import { addresses, links } from "../test/netns.ts";
import {
  ALL,
  BELOW_040,
  BELOW_110,
  type Check,
  expect,
  expectEqual,
  type Feature,
  FROM_030,
  FROM_040,
  FROM_110,
  versionsFrom,
} from "./harness.ts";
import {
  addressesOf,
  bridge,
  err,
  expectCode,
  hostLocal,
  isLegacy,
  type Json,
  ok,
  portmap,
  ptp,
  sandboxIndex,
} from "./fixtures.ts";
import { withWorld, type World } from "./lab.ts";

/** Where `VERSION` and every spec version run without a version-specific meaning. */
const ANY = ["1.0.0"];
const SKEL = "pkg/skel/skel_test.go";

interface Def {
  id: string;
  section: string;
  title: string;
  versions: readonly string[];
  upstream?: string[];
  features?: Feature[];
  run(w: World, version: string): Promise<void>;
}

/**
 * Every plugin-level check, for the plugins in `dir`, exec'd with the CNI
 * variables and `baseEnv` only.
 */
export function pluginChecks(dir: string, baseEnv: Record<string, string> = {}): Check[] {
  const defs: Def[] = [];
  const def = (d: Def) => defs.push(d);

  // ------------------------------------------------------------ VERSION
  for (const plugin of ["bridge", "ptp", "host-local", "portmap"]) {
    def({
      id: `version.${plugin}.output`,
      section: "§2 VERSION; §5 VERSION Success",
      title: `${plugin}: VERSION exits 0 with {cniVersion, supportedVersions} on stdout`,
      versions: ALL,
      upstream: [`${SKEL}: VERSION prints the version to stdout`],
      async run(w, v) {
        const j = ok(await w.exec(plugin, "VERSION", { cniVersion: v }), "VERSION");
        expect(typeof j.cniVersion === "string", "no cniVersion string");
        expect(
          Array.isArray(j.supportedVersions) &&
            (j.supportedVersions as unknown[]).every((x) => typeof x === "string"),
          "supportedVersions is not a list of strings",
        );
      },
    });
    def({
      id: `version.${plugin}.echo-input`,
      section: "§5 VERSION Success (cniVersion: the value specified on input)",
      title: `${plugin}: VERSION answers with the input's cniVersion`,
      versions: ALL,
      features: ["version-echo"],
      async run(w, v) {
        const j = ok(await w.exec(plugin, "VERSION", { cniVersion: v }), "VERSION");
        expect(j.cniVersion === v, `VERSION answered cniVersion ${j.cniVersion} to input ${v}`);
      },
    });
    def({
      id: `version.${plugin}.supports-input`,
      section: "§1 Version considerations; §5 VERSION Success",
      title: `${plugin}: supportedVersions lists the spec version`,
      versions: ALL,
      async run(w, v) {
        const j = ok(await w.exec(plugin, "VERSION", { cniVersion: v }), "VERSION");
        expect(
          (j.supportedVersions as string[]).includes(v),
          `${v} not in ${JSON.stringify(j.supportedVersions)}`,
        );
      },
    });
  }
  def({
    id: "version.env-command-only",
    section: "§2 VERSION (required: CNI_COMMAND)",
    title: "VERSION needs nothing but CNI_COMMAND in the environment",
    versions: ALL,
    upstream: [`${SKEL}: VERSION does not call cmdAdd or cmdDel`],
    async run(w, v) {
      const out = await w.exec("host-local", "VERSION", { cniVersion: v }, {
        env: {
          CNI_CONTAINERID: undefined,
          CNI_NETNS: undefined,
          CNI_IFNAME: undefined,
          CNI_PATH: undefined,
        },
      });
      ok(out, "VERSION with only CNI_COMMAND");
    },
  });

  // ------------------------------------------------------------ environment per verb
  const required: [string, string, readonly string[], string][] = [
    ["ADD", "CNI_CONTAINERID", ALL, "container id"],
    ["ADD", "CNI_NETNS", ALL, "net ns"],
    ["ADD", "CNI_IFNAME", ALL, "if name"],
    ["CHECK", "CNI_CONTAINERID", FROM_040, "container id"],
    ["CHECK", "CNI_NETNS", FROM_040, "net ns"],
    ["CHECK", "CNI_IFNAME", FROM_040, "if name"],
    ["DEL", "CNI_CONTAINERID", ALL, "container id"],
    ["DEL", "CNI_IFNAME", ALL, "if name"],
    ["GC", "CNI_PATH", FROM_110, "path"],
  ];
  for (const [verb, name, versions, entry] of required) {
    def({
      id: `env.${verb.toLowerCase()}.${name.slice(4).toLowerCase()}-required`,
      section: `§2 Parameters; §2 ${verb} (required environment)`,
      title: `${verb} without ${name}: code 4 naming ${name}`,
      versions,
      upstream: [`${SKEL}: CNI_COMMAND is ${verb}: Entry("${entry}", "${name}", true)`],
      async run(w, v) {
        const pod = await w.addPod();
        const out = await w.exec("host-local", verb, hostLocal(w, v), {
          pod,
          env: { [name]: undefined },
        });
        const j = expectCode(out, 4, `${verb} without ${name}`);
        expect(String(j.msg).includes(name), `msg does not name ${name}: ${j.msg}`);
      },
    });
  }
  def({
    id: "env.add.all-missing-named",
    section: "§5 Error (code 4: the message must contain the names of invalid variables)",
    title: "ADD missing several variables: one code 4 error naming every one",
    versions: ALL,
    upstream: [`${SKEL}: ADD reports that all of them are missing, not just the first`],
    async run(w, v) {
      const names = ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"];
      const out = await w.exec("host-local", "ADD", hostLocal(w, v), {
        env: Object.fromEntries(names.map((n) => [n, undefined])),
      });
      const j = expectCode(out, 4, "ADD without three variables");
      const text = `${j.msg} ${j.details ?? ""}`;
      for (const n of names) expect(text.includes(n), `error does not name ${n}: ${text}`);
    },
  });
  def({
    id: "env.del.netns-optional",
    section: "§2 DEL (CNI_NETNS optional)",
    title: "DEL without CNI_NETNS succeeds and releases the address",
    versions: ALL,
    upstream: [`${SKEL}: CNI_COMMAND is DEL: Entry("net ns", "CNI_NETNS", false)`],
    async run(w, v) {
      const pod = await w.addPod();
      const conf = hostLocal(w, v);
      ok(await w.exec("host-local", "ADD", conf, { pod }), "ADD");
      ok(await w.exec("host-local", "DEL", conf, { env: { CNI_NETNS: undefined } }), "DEL");
      expectEqual(await w.allocations(), [], "allocations after DEL");
    },
  });
  def({
    id: "env.gc.attachment-optional",
    section: "§2 GC (required: CNI_COMMAND, CNI_PATH only)",
    title: "GC needs no CNI_CONTAINERID, CNI_NETNS or CNI_IFNAME",
    versions: FROM_110,
    upstream: [
      `${SKEL}: CNI_COMMAND is GC: Entry("container id"|"net ns"|"if name", false)`,
    ],
    async run(w, v) {
      const out = await w.exec("host-local", "GC", {
        ...hostLocal(w, v),
        "cni.dev/valid-attachments": [],
      }, {
        env: { CNI_CONTAINERID: undefined, CNI_NETNS: undefined, CNI_IFNAME: undefined },
      });
      ok(out, "GC with only CNI_COMMAND and CNI_PATH");
    },
  });
  def({
    id: "env.status.path-only",
    section: "§2 STATUS (input: the config; optional: CNI_PATH)",
    title: "STATUS needs no attachment variables",
    versions: FROM_110,
    features: ["status"],
    async run(w, v) {
      const out = await w.exec("host-local", "STATUS", hostLocal(w, v), {
        env: { CNI_CONTAINERID: undefined, CNI_NETNS: undefined, CNI_IFNAME: undefined },
      });
      ok(out, "STATUS with only CNI_COMMAND and CNI_PATH");
    },
  });
  def({
    id: "env.cni-args-ignore-unknown",
    section: "§2 Parameters (CNI_ARGS); CONVENTIONS.md (IgnoreUnknown)",
    title: "CNI_ARGS with unknown keys and IgnoreUnknown=1 does not fail ADD",
    versions: ALL,
    upstream: [
      "pkg/types/args_test.go: When unknown arguments are passed and ignored: LoadArgs should succeed",
    ],
    async run(w, v) {
      const pod = await w.addPod();
      const out = await w.exec("host-local", "ADD", hostLocal(w, v), {
        pod,
        env: { CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p" },
      });
      ok(out, "ADD with CNI_ARGS");
    },
  });
  def({
    id: "env.unknown-command",
    section: "§2 Parameters (CNI_COMMAND); §5 Error code 4",
    title: "an unknown CNI_COMMAND is code 4",
    versions: ALL,
    upstream: [`${SKEL}: CNI_COMMAND is unrecognized: returns an error`],
    async run(w, v) {
      const pod = await w.addPod();
      expectCode(
        await w.exec("host-local", "FROB", hostLocal(w, v), { pod }),
        4,
        "CNI_COMMAND=FROB",
      );
    },
  });
  def({
    id: "env.containerid-charset",
    section: "§2 Parameters (CNI_CONTAINERID: alphanumeric first, then [a-zA-Z0-9_.-])",
    title: "a container id with a slash is refused with code 4",
    versions: ALL,
    upstream: [`${SKEL}: ADD returns an error when containerID has invalid characters`],
    async run(w, v) {
      const pod = await w.addPod();
      const out = await w.exec("host-local", "ADD", hostLocal(w, v), {
        pod,
        containerId: "some-%%bad-id/x",
      });
      expectCode(out, 4, "ADD with a bad container id");
      expectEqual(await w.allocations(), [], "allocations");
    },
  });
  const badIfnames: [string, string, string][] = [
    ["too-long", "1234567890123456", "interface name is too long"],
    ["dot", ".", "interface name is ."],
    ["dotdot", "..", "interface name is .."],
    ["slash", "eth/0", "interface name contains invalid characters /"],
    ["colon", "eth:0", "interface name contains invalid characters :"],
    ["whitespace", "eth 0", "interface name contains invalid characters whitespace"],
  ];
  for (const [id, name, upstream] of badIfnames) {
    def({
      id: `env.ifname-${id}`,
      section: "§2 Parameters (CNI_IFNAME: an unusable name must be an error)",
      title: `CNI_IFNAME ${JSON.stringify(name)} is refused with code 4`,
      versions: ALL,
      upstream: [`${SKEL}: ADD: return errors when interface name is invalid: ${upstream}`],
      async run(w, v) {
        const pod = await w.addPod();
        const out = await w.exec("bridge", "ADD", bridge(w, v), { pod, ifname: name });
        expectCode(out, 4, `ADD with CNI_IFNAME ${JSON.stringify(name)}`);
        expectEqual(await w.allocations(), [], "allocations");
      },
    });
  }

  // ------------------------------------------------------------ config and errors
  def({
    id: "conf.name-required",
    section: "§1 Configuration format (name); §5 Error code 7",
    title: "a config without a network name is code 7",
    versions: ALL,
    upstream: [`${SKEL}: GC: when the config has a bad name`],
    async run(w, v) {
      const pod = await w.addPod();
      const conf = hostLocal(w, v);
      delete conf.name;
      expectCode(await w.exec("host-local", "ADD", conf, { pod }), 7, "ADD without name");
    },
  });
  def({
    id: "conf.name-charset",
    section: "§1 Configuration format (name: alphanumeric first, no path characters)",
    title: "a network name with a slash is code 7",
    versions: ALL,
    upstream: [
      `${SKEL}: CHECK: when the config has a bad name immediately returns invalid network config`,
    ],
    async run(w, v) {
      const pod = await w.addPod();
      const conf = { ...hostLocal(w, v), name: "bad/name" };
      expectCode(await w.exec("host-local", "ADD", conf, { pod }), 7, "ADD with a bad name");
      expectEqual(await w.allocations("bad"), [], "allocations");
    },
  });
  def({
    id: "conf.version-unsupported",
    section: "§1 Version considerations; §5 Error code 1",
    title: "a cniVersion the plugin does not support is code 1",
    versions: ANY,
    upstream: [
      `${SKEL}: CHECK: when the config has a bad version immediately returns a useful error`,
    ],
    async run(w) {
      const pod = await w.addPod();
      const out = await w.exec("host-local", "ADD", hostLocal(w, "9.9.9"), { pod });
      expectCode(out, 1, "ADD at cniVersion 9.9.9");
    },
  });
  def({
    id: "conf.version-absent-is-0.1.0",
    section: "§1 Configuration format (cniVersion); libcni/skel: absent means 0.1.0",
    title: "a config without cniVersion is read as 0.1.0 (0.1.0 result shape)",
    versions: ["0.1.0"],
    upstream: [
      `${SKEL}: when the stdin data is missing the required cniVersion config: infers 0.1.0`,
    ],
    async run(w) {
      const pod = await w.addPod();
      const conf = hostLocal(w, "0.1.0");
      delete conf.cniVersion;
      const j = ok(await w.exec("host-local", "ADD", conf, { pod }), "ADD without cniVersion");
      expect((j.ip4 as Json | undefined)?.ip, `no ip4.ip in ${JSON.stringify(j)}`);
      expect(j.ips === undefined, "a 0.1.0 result has no ips list");
    },
  });
  def({
    id: "conf.decode-error",
    section: "§5 Error code 6 (failed to decode content)",
    title: "stdin that is not JSON is code 6",
    versions: ANY,
    async run(w) {
      const pod = await w.addPod();
      const out = await w.exec("host-local", "ADD", undefined, {
        pod,
        stdin: '{"cniVersion": "1.0.0", "name": ',
      });
      expectCode(out, 6, "ADD with truncated JSON");
    },
  });
  def({
    id: "error.shape",
    section: "§2 Errors; §5 Error",
    title: "a failure exits non-zero with {code, msg[, details]} on stdout",
    versions: ALL,
    upstream: ["pkg/types/types_test.go: Error: Print/Error()"],
    async run(w, v) {
      const pod = await w.addPod();
      const conf = hostLocal(w, v, {
        type: "host-local",
        dataDir: w.dataDir,
        ranges: [[{ subnet: "not-a-subnet" }]],
      });
      const j = err(await w.exec("host-local", "ADD", conf, { pod }), "ADD with a bad subnet");
      expect(
        j.details === undefined || typeof j.details === "string",
        `details is not a string: ${JSON.stringify(j.details)}`,
      );
    },
  });
  def({
    id: "error.cniversion",
    section: "§5 Error (cniVersion: the protocol version in use)",
    title: "the error JSON carries the config's cniVersion",
    versions: ALL,
    features: ["error-cniversion"],
    async run(w, v) {
      const pod = await w.addPod();
      const conf = hostLocal(w, v, {
        type: "host-local",
        dataDir: w.dataDir,
        ranges: [[{ subnet: "not-a-subnet" }]],
      });
      const j = err(await w.exec("host-local", "ADD", conf, { pod }), "ADD with a bad subnet");
      expect(j.cniVersion === v, `error cniVersion ${JSON.stringify(j.cniVersion)}, want ${v}`);
    },
  });
  def({
    id: "check.below-0.4.0",
    section: "§2 CHECK (introduced in 0.4.0); §5 Error code 1",
    title: "CHECK at a version before 0.4.0 is code 1",
    versions: BELOW_040,
    upstream: [
      `${SKEL}: CHECK: when cniVersion is less than 0.4.0 immediately returns a useful error`,
    ],
    async run(w, v) {
      const pod = await w.addPod();
      expectCode(await w.exec("host-local", "CHECK", hostLocal(w, v), { pod }), 1, "CHECK");
    },
  });
  def({
    id: "gc.below-1.1.0",
    section: "§2 GC (introduced in 1.1.0); §5 Error code 1",
    title: "GC at a version before 1.1.0 is code 1",
    versions: BELOW_110,
    features: ["gc"],
    upstream: [
      `${SKEL}: GC: when cniVersion is less than 1.1.0 immediately returns a useful error`,
    ],
    async run(w, v) {
      expectCode(await w.exec("host-local", "GC", hostLocal(w, v)), 1, "GC");
    },
  });
  def({
    id: "status.below-1.1.0",
    section: "§2 STATUS (introduced in 1.1.0); §5 Error code 1",
    title: "STATUS at a version before 1.1.0 is code 1",
    versions: BELOW_110,
    features: ["status"],
    async run(w, v) {
      expectCode(await w.exec("host-local", "STATUS", hostLocal(w, v)), 1, "STATUS");
    },
  });

  // ------------------------------------------------------------ ADD and results
  def({
    id: "add.result-cniversion",
    section: "§5 ADD Success (cniVersion: the same version supplied on input)",
    title: "the ADD result carries the input's cniVersion",
    versions: ALL,
    upstream: ["pkg/types/*/types_test.go: converts to and from <version>"],
    async run(w, v) {
      const pod = await w.addPod();
      const j = ok(await w.exec("host-local", "ADD", hostLocal(w, v), { pod }), "ADD");
      expect(j.cniVersion === v, `result cniVersion ${j.cniVersion}, want ${v}`);
    },
  });
  def({
    id: "add.ipam-abbreviated",
    section: "§5 Delegated plugins (IPAM): no interfaces, no ips[].interface",
    title: "an IPAM result has ips with addresses and no interfaces",
    versions: FROM_030,
    async run(w, v) {
      const pod = await w.addPod();
      const j = ok(await w.exec("host-local", "ADD", hostLocal(w, v), { pod }), "ADD");
      expect(Array.isArray(j.ips) && (j.ips as Json[]).length === 1, "want one ip");
      expect(j.interfaces === undefined, "an IPAM result lists interfaces");
      for (const ip of j.ips as Json[]) {
        expect(ip.interface === undefined, "an IPAM ip names an interface");
        expect(/^[\d.]+\/\d+$/.test(String(ip.address)), `address ${ip.address} is not CIDR`);
      }
    },
  });
  def({
    id: "add.result-legacy-shape",
    section: "§5 Result (0.1.0/0.2.0: ip4/ip6 objects)",
    title: "a 0.1.0/0.2.0 result has ip4 {ip, gateway} and no ips list",
    versions: ["0.1.0", "0.2.0"],
    upstream: ["pkg/types/020/types_test.go: correctly encodes a 0.1.0/0.2.0 Result"],
    async run(w, v) {
      const pod = await w.addPod();
      const j = ok(await w.exec("host-local", "ADD", hostLocal(w, v), { pod }), "ADD");
      const ip4 = j.ip4 as Json | undefined;
      expect(ip4 && /^[\d.]+\/24$/.test(String(ip4.ip)), `ip4.ip: ${JSON.stringify(ip4)}`);
      expect(ip4!.gateway === `${w.v4}.1`, `ip4.gateway ${ip4!.gateway}`);
      expect(j.ips === undefined && j.interfaces === undefined, "0.x.0 result has ips/interfaces");
    },
  });
  def({
    id: "add.result-legacy-dual-stack",
    section: "§5 Result (0.1.0/0.2.0: one ip4 and one ip6)",
    title: "a dual-stack allocation becomes ip4 and ip6 at 0.1.0/0.2.0",
    versions: ["0.1.0", "0.2.0"],
    upstream: ["pkg/types/020/types_test.go: correctly encodes a 0.2.0 Result (ip4 and ip6)"],
    async run(w, v) {
      const pod = await w.addPod();
      const conf = hostLocal(w, v, {
        type: "host-local",
        dataDir: w.dataDir,
        ranges: [[{ subnet: `${w.v4}.0/24` }], [{ subnet: `${w.v6}:/64` }]],
      });
      const j = ok(await w.exec("host-local", "ADD", conf, { pod }), "ADD");
      expect((j.ip4 as Json | undefined)?.ip, "no ip4");
      expect(String((j.ip6 as Json | undefined)?.ip ?? "").includes(":"), "no ip6");
    },
  });
  def({
    id: "add.ip-version-field",
    section: "§5 Result (0.3.x/0.4.0: ips[].version)",
    title: "0.3.0-0.4.0 results give every ip its version, 4 or 6",
    versions: versionsFrom("0.3.0", "0.4.0"),
    upstream: ["pkg/types/040/types_test.go: correctly encodes a 0.4.0 Result"],
    async run(w, v) {
      const pod = await w.addPod();
      const conf = hostLocal(w, v, {
        type: "host-local",
        dataDir: w.dataDir,
        ranges: [[{ subnet: `${w.v4}.0/24` }], [{ subnet: `${w.v6}:/64` }]],
      });
      const j = ok(await w.exec("host-local", "ADD", conf, { pod }), "ADD");
      const versions = (j.ips as Json[]).map((ip) => ip.version).sort();
      expectEqual(versions, ["4", "6"], "ips[].version");
    },
  });
  def({
    id: "add.ip-no-version-field",
    section: "§5 ADD Success (1.0.0+: ips without version)",
    title: "1.0.0+ results have no ips[].version",
    versions: versionsFrom("1.0.0"),
    upstream: ["pkg/types/100/types_test.go: correctly encodes a 1.0.0 Result"],
    async run(w, v) {
      const pod = await w.addPod();
      const j = ok(await w.exec("host-local", "ADD", hostLocal(w, v), { pod }), "ADD");
      for (const ip of j.ips as Json[]) expect(ip.version === undefined, "ips[].version set");
    },
  });
  def({
    id: "add.routes",
    section: "§5 ADD Success (routes)",
    title: "IPAM routes come back in the result (ip4.routes before 0.3.0)",
    versions: ALL,
    async run(w, v) {
      const pod = await w.addPod();
      const conf = hostLocal(w, v, {
        type: "host-local",
        dataDir: w.dataDir,
        ranges: [[{ subnet: `${w.v4}.0/24` }]],
        routes: [{ dst: "192.0.2.0/24" }, { dst: "198.51.100.0/24", gw: `${w.v4}.254` }],
      });
      const j = ok(await w.exec("host-local", "ADD", conf, { pod }), "ADD");
      const list = (isLegacy(v) ? (j.ip4 as Json).routes : j.routes) as Json[];
      expectEqual(
        list.map((r) => `${r.dst} ${r.gw ?? "-"}`).sort(),
        ["192.0.2.0/24 -", `198.51.100.0/24 ${w.v4}.254`],
        "routes",
      );
    },
  });
  def({
    id: "add.dns-empty-omitted",
    section: "§5 ADD Success (dns); pkg/types/100 encoding",
    title: "a result without DNS information has no dns key (1.0.0+)",
    versions: versionsFrom("1.0.0"),
    features: ["dns-omitted"],
    upstream: ["pkg/types/100/types_test.go: correctly encodes a 1.0.0 Result (no empty dns)"],
    async run(w, v) {
      const pod = await w.addPod();
      const j = ok(await w.exec("host-local", "ADD", hostLocal(w, v), { pod }), "ADD");
      expect(j.dns === undefined, `result has dns ${JSON.stringify(j.dns)}`);
    },
  });
  for (const plugin of ["bridge", "ptp"] as const) {
    def({
      id: `add.${plugin}.dns-from-config`,
      section: "§1 Configuration format (well-known key dns); §5 ADD Success (dns)",
      title: `${plugin}: the config's dns comes back in the result`,
      versions: ALL,
      async run(w, v) {
        const pod = await w.addPod();
        const dns = { nameservers: ["192.0.2.53"], domain: "example.test", search: ["a.test"] };
        const conf = plugin === "bridge" ? bridge(w, v, { dns }) : ptp(w, v, { dns });
        const j = ok(await w.exec(plugin, "ADD", conf, { pod }), "ADD");
        expectEqual(j.dns, dns, "result dns");
      },
    });
  }
  for (const plugin of ["bridge", "ptp"] as const) {
    def({
      id: `add.${plugin}.sandbox-interface`,
      section: "§5 ADD Success (interfaces[].sandbox = CNI_NETNS; ips[].interface)",
      title: `${plugin}: the result lists CNI_IFNAME in CNI_NETNS and its ip points at it`,
      versions: FROM_030,
      async run(w, v) {
        const pod = await w.addPod();
        const conf = plugin === "bridge" ? bridge(w, v) : ptp(w, v);
        const j = ok(await w.exec(plugin, "ADD", conf, { pod, ifname: "net1" }), "ADD");
        const i = sandboxIndex(j, "net1", pod.path);
        expect(
          i >= 0,
          `no interface net1 with sandbox ${pod.path}: ${JSON.stringify(j.interfaces)}`,
        );
        const ips = j.ips as Json[];
        expect(ips.length > 0 && ips.every((ip) => ip.interface === i), "ips[].interface");
        for (const iface of j.interfaces as Json[]) {
          expect(typeof iface.name === "string", "interface without name");
        }
      },
    });
    def({
      id: `add.${plugin}.configures-netns`,
      section: "§2 ADD (create the interface CNI_IFNAME inside CNI_NETNS)",
      title: `${plugin}: CNI_IFNAME exists in the pod with the result's address`,
      versions: ALL,
      async run(w, v) {
        const pod = await w.addPod();
        const conf = plugin === "bridge" ? bridge(w, v) : ptp(w, v);
        const j = ok(await w.exec(plugin, "ADD", conf, { pod }), "ADD");
        const want = addressesOf(j);
        const have = (await addresses(pod.name, "eth0")).map((a) => `${a.local}/${a.prefixlen}`);
        for (const a of want) expect(have.includes(a), `${a} not on eth0 (${have.join(", ")})`);
      },
    });
    def({
      id: `add.${plugin}.interface-exists`,
      section: "§2 ADD (an existing interface of that name MUST be an error)",
      title: `${plugin}: ADD into a netns that already has CNI_IFNAME fails`,
      versions: ALL,
      async run(w, v) {
        const pod = await w.addPod();
        const conf = plugin === "bridge" ? bridge(w, v) : ptp(w, v);
        ok(await w.exec(plugin, "ADD", conf, { pod, containerId: "first" }), "first ADD");
        err(await w.exec(plugin, "ADD", conf, { pod, containerId: "second" }), "second ADD");
      },
    });
  }
  def({
    id: "add.prevresult-passthrough",
    section: "§2 ADD (MUST handle prevResult); §5 ADD Success (output prevResult)",
    title: "portmap without mappings outputs its prevResult unchanged",
    versions: FROM_030,
    async run(w, v) {
      const pod = await w.addPod();
      const prev = ok(await w.exec("bridge", "ADD", bridge(w, v), { pod }), "bridge ADD");
      const j = ok(await w.exec("portmap", "ADD", portmap(w, v, prev), { pod }), "portmap ADD");
      expectEqual(j, prev, "portmap result");
    },
  });
  def({
    id: "add.prevresult-with-mapping",
    section: "§2 ADD (MUST pass prevResult through or modify it)",
    title: "portmap with a mapping outputs a result equivalent to its prevResult",
    versions: FROM_030,
    async run(w, v) {
      const pod = await w.addPod();
      const prev = ok(await w.exec("bridge", "ADD", bridge(w, v), { pod }), "bridge ADD");
      const maps = [{ hostPort: 18080, containerPort: 80, protocol: "tcp" }];
      const j = ok(await w.exec("portmap", "ADD", portmap(w, v, prev, maps), { pod }), "ADD");
      expectEqual(j, prev, "portmap result");
    },
  });

  // ------------------------------------------------------------ DEL
  def({
    id: "del.repeat",
    section: "§2 DEL (MUST accept multiple DEL calls)",
    title: "host-local: ADD, DEL, DEL all succeed and the address is released",
    versions: ALL,
    async run(w, v) {
      const pod = await w.addPod();
      const conf = hostLocal(w, v);
      ok(await w.exec("host-local", "ADD", conf, { pod }), "ADD");
      ok(await w.exec("host-local", "DEL", conf, { pod }), "first DEL");
      ok(await w.exec("host-local", "DEL", conf, { pod }), "second DEL");
      expectEqual(await w.allocations(), [], "allocations");
    },
  });
  def({
    id: "del.never-added",
    section: "§2 DEL (missing resources are success)",
    title: "DEL of an attachment never added succeeds",
    versions: ALL,
    async run(w, v) {
      ok(await w.exec("host-local", "DEL", hostLocal(w, v), { containerId: "ghost" }), "DEL");
      ok(await w.exec("bridge", "DEL", bridge(w, v), { containerId: "ghost" }), "bridge DEL");
    },
  });
  for (const plugin of ["bridge", "ptp"] as const) {
    def({
      id: `del.${plugin}.repeat`,
      section: "§2 DEL (MUST accept multiple DEL calls)",
      title: `${plugin}: DEL twice succeeds, the pod interface and the address are gone`,
      versions: ALL,
      async run(w, v) {
        const pod = await w.addPod();
        const conf = plugin === "bridge" ? bridge(w, v) : ptp(w, v);
        const prev = ok(await w.exec(plugin, "ADD", conf, { pod }), "ADD");
        const withPrev = isLegacy(v) ? conf : { ...conf, prevResult: prev };
        ok(await w.exec(plugin, "DEL", withPrev, { pod }), "first DEL");
        ok(await w.exec(plugin, "DEL", withPrev, { pod }), "second DEL");
        expect(!(await links(pod.name)).some((l) => l.ifname === "eth0"), "eth0 still in pod");
        expectEqual(await w.allocations(), [], "allocations");
      },
    });
    def({
      id: `del.${plugin}.netns-gone`,
      section: "§2 DEL (clean up even if the netns no longer exists)",
      title: `${plugin}: DEL after the pod netns was deleted succeeds and releases the address`,
      versions: ALL,
      async run(w, v) {
        const pod = await w.addPod();
        const conf = plugin === "bridge" ? bridge(w, v) : ptp(w, v);
        ok(await w.exec(plugin, "ADD", conf, { pod }), "ADD");
        await w.deletePod(pod);
        ok(await w.exec(plugin, "DEL", conf, { pod }), "DEL with a deleted netns");
        ok(await w.exec(plugin, "DEL", conf, { netns: "" }), "DEL without netns");
        expectEqual(await w.allocations(), [], "allocations");
      },
    });
  }
  def({
    id: "del.without-prevresult",
    section: "§2 DEL; §3 Deleting an attachment",
    title: "bridge DEL without prevResult still removes the attachment",
    versions: FROM_030,
    async run(w, v) {
      const pod = await w.addPod();
      ok(await w.exec("bridge", "ADD", bridge(w, v), { pod }), "ADD");
      ok(await w.exec("bridge", "DEL", bridge(w, v), { pod }), "DEL");
      expectEqual(await w.allocations(), [], "allocations");
    },
  });
  def({
    id: "del.portmap-repeat",
    section: "§2 DEL (MUST accept multiple DEL calls)",
    title: "portmap DEL twice with its prevResult succeeds",
    versions: FROM_030,
    async run(w, v) {
      const pod = await w.addPod();
      const prev = ok(await w.exec("bridge", "ADD", bridge(w, v), { pod }), "bridge ADD");
      const conf = portmap(w, v, prev, [{ hostPort: 18081, containerPort: 80, protocol: "tcp" }]);
      ok(await w.exec("portmap", "ADD", conf, { pod }), "portmap ADD");
      ok(await w.exec("portmap", "DEL", conf, { pod }), "first DEL");
      ok(await w.exec("portmap", "DEL", conf, { pod }), "second DEL");
    },
  });

  // ------------------------------------------------------------ CHECK
  def({
    id: "check.host-local-after-add",
    section: "§2 CHECK (consult prevResult)",
    title: "host-local CHECK with the ADD result succeeds",
    versions: FROM_040,
    async run(w, v) {
      const pod = await w.addPod();
      const prev = ok(await w.exec("host-local", "ADD", hostLocal(w, v), { pod }), "ADD");
      ok(
        await w.exec("host-local", "CHECK", { ...hostLocal(w, v), prevResult: prev }, { pod }),
        "CHECK",
      );
    },
  });
  def({
    id: "check.missing-reservation",
    section: "§2 CHECK (error if IP reservations are missing)",
    title: "host-local CHECK of an address it does not hold fails",
    versions: FROM_040,
    async run(w, v) {
      const pod = await w.addPod();
      const prev = ok(await w.exec("host-local", "ADD", hostLocal(w, v), { pod }), "ADD");
      ok(await w.exec("host-local", "DEL", hostLocal(w, v), { pod }), "DEL");
      err(
        await w.exec("host-local", "CHECK", { ...hostLocal(w, v), prevResult: prev }, { pod }),
        "CHECK after DEL",
      );
    },
  });
  for (const plugin of ["bridge", "ptp"] as const) {
    const conf = (w: World, v: string) => plugin === "bridge" ? bridge(w, v) : ptp(w, v);
    def({
      id: `check.${plugin}.after-add`,
      section: "§2 CHECK (consult prevResult; handle CHECK right after ADD)",
      title: `${plugin}: CHECK with the ADD result succeeds`,
      versions: FROM_040,
      async run(w, v) {
        const pod = await w.addPod();
        const prev = ok(await w.exec(plugin, "ADD", conf(w, v), { pod }), "ADD");
        ok(await w.exec(plugin, "CHECK", { ...conf(w, v), prevResult: prev }, { pod }), "CHECK");
      },
    });
    def({
      id: `check.${plugin}.missing-interface`,
      section: "§2 CHECK (error if an interface in prevResult is missing)",
      title: `${plugin}: CHECK fails once the pod interface is gone`,
      versions: FROM_040,
      async run(w, v) {
        const pod = await w.addPod();
        const prev = ok(await w.exec(plugin, "ADD", conf(w, v), { pod }), "ADD");
        await w.run("/usr/sbin/ip", ["-n", pod.name, "link", "del", "eth0"]);
        err(await w.exec(plugin, "CHECK", { ...conf(w, v), prevResult: prev }, { pod }), "CHECK");
      },
    });
    def({
      id: `check.${plugin}.missing-address`,
      section: "§2 CHECK (error if an address in prevResult is missing)",
      title: `${plugin}: CHECK fails once the pod address is gone`,
      versions: FROM_040,
      async run(w, v) {
        const pod = await w.addPod();
        const prev = ok(await w.exec(plugin, "ADD", conf(w, v), { pod }), "ADD");
        const a = addressesOf(prev)[0];
        await w.run("/usr/sbin/ip", ["-n", pod.name, "addr", "del", a, "dev", "eth0"]);
        err(await w.exec(plugin, "CHECK", { ...conf(w, v), prevResult: prev }, { pod }), "CHECK");
      },
    });
    def({
      id: `check.${plugin}.later-changes`,
      section: "§2 CHECK (MUST allow later plugins to have modified routes)",
      title: `${plugin}: CHECK still succeeds after a route was added in the pod`,
      versions: FROM_040,
      async run(w, v) {
        const pod = await w.addPod();
        const prev = ok(await w.exec(plugin, "ADD", conf(w, v), { pod }), "ADD");
        const gw = ((prev.ips as Json[])[0].gateway as string | undefined) ?? `${w.v4}.1`;
        const added = await w.run("/usr/sbin/ip", [
          "-n",
          pod.name,
          "route",
          "add",
          "203.0.113.0/24",
          "via",
          gw,
          "dev",
          "eth0",
          "onlink",
        ]);
        expect(added.code === 0, `add a route: ${added.stderr}`);
        ok(await w.exec(plugin, "CHECK", { ...conf(w, v), prevResult: prev }, { pod }), "CHECK");
      },
    });
  }
  def({
    id: "check.ipam-delegated",
    section: "§2 CHECK (call CHECK on delegated plugins); §4 Delegated plugin execution",
    title: "bridge CHECK fails when its IPAM no longer holds the address",
    versions: FROM_040,
    async run(w, v) {
      const pod = await w.addPod();
      const prev = ok(await w.exec("bridge", "ADD", bridge(w, v), { pod }), "ADD");
      for (const a of await w.allocations()) await Deno.remove(`${w.dataDir}/${w.net}/${a}`);
      err(await w.exec("bridge", "CHECK", { ...bridge(w, v), prevResult: prev }, { pod }), "CHECK");
    },
  });
  def({
    id: "check.portmap-after-add",
    section: "§2 CHECK (consult prevResult)",
    title: "portmap CHECK with its mapping and the ADD result succeeds",
    versions: FROM_040,
    async run(w, v) {
      const pod = await w.addPod();
      const prev = ok(await w.exec("bridge", "ADD", bridge(w, v), { pod }), "bridge ADD");
      const maps = [{ hostPort: 18082, containerPort: 80, protocol: "tcp" }];
      const res = ok(await w.exec("portmap", "ADD", portmap(w, v, prev, maps), { pod }), "ADD");
      ok(await w.exec("portmap", "CHECK", portmap(w, v, res, maps), { pod }), "CHECK");
    },
  });

  // ------------------------------------------------------------ GC
  def({
    id: "gc.releases-stale",
    section: "§2 GC (remove resources of attachments not in cni.dev/valid-attachments)",
    title: "host-local GC releases the other attachments' addresses and keeps the valid one",
    versions: FROM_110,
    features: ["gc"],
    async run(w, v) {
      const p1 = await w.addPod("a");
      const p2 = await w.addPod("b");
      const conf = hostLocal(w, v);
      const a = addressesOf(
        ok(await w.exec("host-local", "ADD", conf, { pod: p1, containerId: "keep" }), "ADD"),
      );
      ok(await w.exec("host-local", "ADD", conf, { pod: p2, containerId: "stale" }), "ADD");
      const gc = {
        ...conf,
        "cni.dev/valid-attachments": [{ containerID: "keep", ifname: "eth0" }],
      };
      const out = ok(await w.exec("host-local", "GC", gc), "GC");
      expectEqual(out, {}, "GC output");
      expectEqual(await w.allocations(), a.map((x) => x.split("/")[0]), "allocations after GC");
    },
  });
  def({
    id: "gc.no-output",
    section: "§2 GC (output: nothing on success)",
    title: "a successful GC prints nothing",
    versions: FROM_110,
    async run(w, v) {
      const out = await w.exec("host-local", "GC", {
        ...hostLocal(w, v),
        "cni.dev/valid-attachments": [],
      });
      ok(out, "GC");
      expect(out.stdout.trim() === "", `GC printed ${out.stdout.trim().slice(0, 200)}`);
    },
  });
  def({
    id: "gc.empty-list",
    section: "§2 GC",
    title: "GC with an empty valid list releases every address",
    versions: FROM_110,
    features: ["gc"],
    async run(w, v) {
      const pod = await w.addPod();
      ok(await w.exec("host-local", "ADD", hostLocal(w, v), { pod }), "ADD");
      ok(
        await w.exec("host-local", "GC", { ...hostLocal(w, v), "cni.dev/valid-attachments": [] }),
        "GC",
      );
      expectEqual(await w.allocations(), [], "allocations after GC");
    },
  });
  def({
    id: "gc.delegated",
    section: "§2 GC (MUST forward GC to delegated plugins); §4",
    title: "bridge GC reaches its IPAM: a stale attachment's address is released",
    versions: FROM_110,
    features: ["gc"],
    async run(w, v) {
      const pod = await w.addPod();
      ok(await w.exec("bridge", "ADD", bridge(w, v), { pod, containerId: "stale" }), "ADD");
      await w.deletePod(pod);
      ok(await w.exec("bridge", "GC", { ...bridge(w, v), "cni.dev/valid-attachments": [] }), "GC");
      expectEqual(await w.allocations(), [], "allocations after GC");
    },
  });

  // ------------------------------------------------------------ STATUS
  for (const plugin of ["host-local", "bridge", "ptp", "portmap"]) {
    def({
      id: `status.${plugin}.ready`,
      section: "§2 STATUS (exit 0 when ready to service ADD)",
      title: `${plugin}: STATUS of a usable config exits 0`,
      versions: FROM_110,
      features: ["status"],
      async run(w, v) {
        const conf = plugin === "host-local"
          ? hostLocal(w, v)
          : plugin === "bridge"
          ? bridge(w, v)
          : plugin === "ptp"
          ? ptp(w, v)
          : portmap(w, v, undefined);
        ok(await w.exec(plugin, "STATUS", conf), "STATUS");
      },
    });
  }

  // ------------------------------------------------------------ delegation (fake IPAM)
  const delegation = (
    id: string,
    section: string,
    title: string,
    versions: readonly string[],
    verb: string,
    features: Feature[],
    body: (w: World, v: string, fakes: FakePlugins, conf: Json) => Promise<void>,
  ) =>
    def({
      id,
      section,
      title,
      versions,
      features,
      async run(w, v) {
        const fakes = await FakePlugins.create(["fakeipam"]);
        try {
          w.cniPath = `${w.cniPath}:${fakes.dir}`;
          const address = `${w.v4}.7/24`;
          const gateway = `${w.v4}.1`;
          const result = isLegacy(v) ? { cniVersion: v, ip4: { ip: address, gateway } } : {
            cniVersion: v,
            ips: [{ address, gateway, ...(v < "1.0.0" ? { version: "4" } : {}) }],
          };
          await fakes.control("fakeipam", { ADD: { result } });
          const conf = bridge(w, v, { ipam: { type: "fakeipam", note: verb } });
          await body(w, v, fakes, conf);
        } finally {
          await fakes.cleanup();
        }
      },
    });
  const CNI_VARS = ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"];
  delegation(
    "delegate.same-env",
    "§4 Delegated Plugin protocol (same environment variables)",
    "bridge runs its IPAM with the CNI variables it was given",
    ALL,
    "ADD",
    [],
    async (w, v, fakes, conf) => {
      const pod = await w.addPod();
      await w.exec("bridge", "ADD", conf, { pod, env: { CNI_ARGS: "IgnoreUnknown=1;K=V" } });
      const call = (await fakes.calls()).find((c) => c.verb === "ADD");
      expect(call, "IPAM not called");
      const want: Record<string, string> = {
        CNI_COMMAND: "ADD",
        CNI_CONTAINERID: `ctr-${w.prefix}`,
        CNI_NETNS: pod.path,
        CNI_IFNAME: "eth0",
        CNI_PATH: w.cniPath,
        CNI_ARGS: "IgnoreUnknown=1;K=V",
      };
      for (const k of [...CNI_VARS, "CNI_ARGS"]) {
        expect(call.env[k] === want[k], `${k}: IPAM got ${call.env[k]}, want ${want[k]}`);
      }
      void v;
    },
  );
  delegation(
    "delegate.complete-config",
    "§4 Delegated Plugin protocol (the complete network configuration)",
    "the IPAM gets the whole bridge config, not only its ipam section",
    ALL,
    "ADD",
    [],
    async (w, v, fakes, conf) => {
      const pod = await w.addPod();
      await w.exec("bridge", "ADD", conf, { pod });
      const call = (await fakes.calls()).find((c) => c.verb === "ADD");
      expect(call, "IPAM not called");
      for (const k of ["cniVersion", "name", "type", "bridge", "ipam"]) {
        expectEqual(call.stdin[k], conf[k], `IPAM stdin ${k}`);
      }
      void v;
    },
  );
  const forwarded: [string, string, readonly string[], Feature[]][] = [
    ["DEL", "§4 Delegated plugin execution (DEL must run delegated plugins)", ALL, []],
    ["CHECK", "§2 CHECK; §4 (CHECK must run delegated plugins)", FROM_040, []],
    ["GC", "§2 GC (MUST forward GC to delegated plugins); §4", FROM_110, ["gc"]],
    ["STATUS", "§2 STATUS (MUST execute STATUS of the delegated plugin)", FROM_110, ["status"]],
  ];
  for (const [verb, section, versions, features] of forwarded) {
    delegation(
      `delegate.${verb.toLowerCase()}-forwarded`,
      section,
      `bridge ${verb} runs the IPAM's ${verb}`,
      versions,
      verb,
      features,
      async (w, v, fakes, conf) => {
        const pod = await w.addPod();
        const prev = ok(await w.exec("bridge", "ADD", conf, { pod }), "ADD");
        await fakes.resetCalls();
        const input: Json = verb === "GC"
          ? { ...conf, "cni.dev/valid-attachments": [] }
          : verb === "STATUS" || isLegacy(v)
          ? conf
          : { ...conf, prevResult: prev };
        ok(await w.exec("bridge", verb, input, { pod }), verb);
        const calls = (await fakes.calls()).filter((c) => c.verb === verb);
        expect(calls.length === 1, `IPAM got ${calls.length} ${verb} calls, want 1`);
      },
    );
  }
  const errorForwarded: [string, readonly string[], Feature[]][] = [
    ["ADD", ALL, []],
    ["DEL", ALL, []],
    ["CHECK", FROM_040, []],
    ["STATUS", FROM_110, ["status"]],
  ];
  for (const [verb, versions, features] of errorForwarded) {
    delegation(
      `delegate.${verb.toLowerCase()}-error`,
      "§4 Delegated plugin execution (a delegated error is returned by the upper plugin)",
      `an IPAM error on ${verb} (code 11) comes back from bridge`,
      versions,
      verb,
      features,
      async (w, v, fakes, conf) => {
        const pod = await w.addPod();
        const prev = verb === "ADD" ? {} : ok(await w.exec("bridge", "ADD", conf, { pod }), "ADD");
        await fakes.control("fakeipam", {
          ADD: verb === "ADD" ? { error: { code: 11, msg: "try later" } } : {
            result: prev,
          },
          [verb]: { error: { code: 11, msg: "try later", details: "from the fake IPAM" } },
        });
        const input: Json = verb === "STATUS" || verb === "ADD" || isLegacy(v)
          ? conf
          : { ...conf, prevResult: prev };
        const j = err(await w.exec("bridge", verb, input, { pod }), verb);
        expect(j.code === 11, `bridge ${verb} returned code ${j.code}, want the IPAM's 11`);
      },
    );
  }

  return defs.map((d) => ({
    id: d.id,
    section: d.section,
    title: d.title,
    versions: d.versions,
    upstream: d.upstream,
    features: d.features,
    run: (v: string) => withWorld(dir, (w) => d.run(w, v), baseEnv),
  }));
}
