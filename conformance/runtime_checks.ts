/**
 * The runtime side of the spec (section 3, "Execution of Network
 * Configurations", and section 4's exec rules): how a conflist is run. The
 * same checks run against every runtime the project has, each driving a chain
 * of scriptable fake plugins (`test/fake_plugin.ts`, libcni's
 * `noop` plugin in spirit) that record their env and stdin:
 *
 * - `cnichain-cli`: `cnichain add|del|check|gc|status CONFLIST` (the cnitool role);
 * - `cnichain-plugin`: a `cnichain` plugin entry whose nested `plugins` run in-process;
 * - `libcni`: upstream libcni v1.3.x (conformance/libcni-client), the reference runtime.
 */
import { type Call, FakePlugins } from "../test/helpers.ts";
import {
  ALL,
  type Check,
  expect,
  expectEqual,
  FROM_030,
  FROM_040,
  FROM_110,
  NotApplicable,
} from "./harness.ts";
import type { Json } from "./fixtures.ts";
import { withWorld, type World } from "./lab.ts";

const API = "libcni/api_test.go";

export interface Attachment {
  containerId: string;
  netns: string;
  ifname: string;
  capArgs?: Json;
  cniArgs?: string;
  valid?: { containerID: string; ifname: string }[];
}

export interface Answer {
  ok: boolean;
  result?: Json;
  code?: number;
  text: string;
}

export type Verb = "add" | "del" | "check" | "gc" | "status";

/** A runtime: runs one verb of a conflist for an attachment. */
export interface Runtime {
  name: string;
  /** Conflist-level keys it honours (a nested cnichain entry has no conflist of its own). */
  conflistKeys: boolean;
  run(w: World, verb: Verb, conflist: Json, a: Attachment, prevResult?: Json): Promise<Answer>;
}

function answer(out: { code: number; stdout: string; stderr: string }): Answer {
  let json: Json | undefined;
  try {
    json = JSON.parse(out.stdout);
  } catch {
    json = undefined;
  }
  if (out.code === 0) return { ok: true, result: json, text: out.stdout };
  return {
    ok: false,
    code: typeof json?.code === "number" ? json.code : undefined,
    text: (out.stdout + out.stderr).trim().slice(0, 400),
  };
}

export function cliRuntime(bin: string): Runtime {
  return {
    name: "cnichain-cli",
    conflistKeys: true,
    async run(w, verb, conflist, a) {
      const file = `${w.dir}/net.conflist`;
      await Deno.writeTextFile(file, JSON.stringify(conflist));
      const args = [verb, file, "--json", "--cni-path", w.cniPath, "--cache-dir", w.cacheDir];
      if (verb !== "gc" && verb !== "status") {
        args.push("--container-id", a.containerId, "--ifname", a.ifname);
        if (a.netns) args.push("--netns", a.netns);
        if (a.capArgs) args.push("--cap-args", JSON.stringify(a.capArgs));
        if (a.cniArgs) args.push("--cni-args", a.cniArgs);
      }
      if (verb === "gc" && a.valid) args.push("--valid-attachments", JSON.stringify(a.valid));
      return answer(await w.run(`${bin}/cnichain`, args));
    },
  };
}

export function nestedRuntime(bin: string): Runtime {
  return {
    name: "cnichain-plugin",
    conflistKeys: false,
    async run(w, verb, conflist, a, prevResult) {
      const conf: Json = {
        cniVersion: conflist.cniVersion,
        name: conflist.name,
        type: "cnichain",
        stateDir: w.stateDir,
        plugins: conflist.plugins,
      };
      if (verb !== "gc" && verb !== "status" && a.capArgs) conf.runtimeConfig = a.capArgs;
      if ((verb === "del" || verb === "check") && prevResult) conf.prevResult = prevResult;
      if (verb === "gc") conf["cni.dev/valid-attachments"] = a.valid ?? [];
      const env: Record<string, string | undefined> = {};
      if (a.cniArgs) env.CNI_ARGS = a.cniArgs;
      if (verb === "gc" || verb === "status") {
        Object.assign(env, {
          CNI_CONTAINERID: undefined,
          CNI_NETNS: undefined,
          CNI_IFNAME: undefined,
        });
      }
      return answer(
        await w.exec(`${bin}/cnichain`, verb.toUpperCase(), conf, {
          containerId: a.containerId,
          netns: a.netns,
          ifname: a.ifname,
          env,
        }),
      );
    },
  };
}

export function libcniRuntime(client: string): Runtime {
  return {
    name: "libcni",
    conflistKeys: true,
    async run(w, verb, conflist, a) {
      const req = {
        conflist,
        cniPath: w.cniPath.split(":"),
        cacheDir: w.cacheDir,
        containerID: a.containerId,
        netns: a.netns,
        ifname: a.ifname,
        capabilityArgs: a.capArgs ?? {},
        args: a.cniArgs ? a.cniArgs.split(";").map((kv) => kv.split("=", 2)) : [],
        validAttachments: a.valid ?? [],
      };
      const out = await w.run(client, [verb], JSON.stringify(req));
      if (out.code !== 0) return { ok: false, text: `libcni-client: ${out.stderr.trim()}` };
      const j = JSON.parse(out.stdout) as {
        ok: boolean;
        result?: Json;
        error?: Json;
        text?: string;
      };
      return {
        ok: j.ok,
        result: j.result,
        code: typeof j.error?.code === "number" ? j.error.code as number : undefined,
        text: j.text ?? "",
      };
    },
  };
}

interface Ctx {
  w: World;
  v: string;
  fakes: FakePlugins;
  rt: Runtime;
  att: Attachment;
  conflist: (plugins?: Json[], extra?: Json) => Json;
  run: (verb: Verb, conflist: Json, prev?: Json, a?: Partial<Attachment>) => Promise<Answer>;
  calls: (verb?: string) => Promise<Call[]>;
}

interface Def {
  id: string;
  section: string;
  title: string;
  versions: readonly string[];
  upstream?: string[];
  conflistKey?: boolean;
  run(c: Ctx): Promise<void>;
}

function must(a: Answer, what: string): Json {
  if (!a.ok) throw new Error(`${what}: ${a.text}`);
  return a.result ?? {};
}

export function runtimeChecks(rt: Runtime, dir: string): Check[] {
  const defs: Def[] = [];
  const def = (d: Def) => defs.push(d);

  def({
    id: "chain.add-in-order",
    section: "§3 Adding an attachment (every plugin, in order)",
    title: "ADD runs the plugins in list order",
    versions: FROM_030,
    upstream: [`${API}: AddNetworkList executes all plugins with command ADD`],
    async run(c) {
      must(await c.run("add", c.conflist()), "ADD");
      expectEqual((await c.calls("ADD")).map((x) => x.type), ["fa", "fb"], "ADD order");
    },
  });
  def({
    id: "chain.add-prevresult",
    section: "§3 Adding an attachment (no prevResult first; then the previous result)",
    title: "the first plugin gets no prevResult, the next one the first one's result",
    versions: FROM_030,
    upstream: [`${API}: AddNetworkList ... returns an intermediate result`],
    async run(c) {
      const first = { cniVersion: c.v, interfaces: [{ name: "from-fa" }], ips: [] };
      await c.fakes.control("fa", { ADD: { result: first } });
      const res = must(await c.run("add", c.conflist()), "ADD");
      const [a, b] = await c.calls("ADD");
      expect(a.stdin.prevResult === undefined, "the first plugin got a prevResult");
      expectEqual(
        (b.stdin.prevResult as Json | undefined)?.interfaces,
        first.interfaces,
        "second plugin's prevResult.interfaces",
      );
      expectEqual(
        (res.interfaces as Json[]).map((i) => i.name),
        ["from-fa", "fb"],
        "final result interfaces",
      );
    },
  });
  def({
    id: "chain.add-stops-at-error",
    section: "§3 Adding an attachment (halt at the first error and return it)",
    title: "a failing plugin stops ADD and its error code is returned",
    versions: FROM_030,
    upstream: [
      `${API}: AddNetworkList when the second plugin errors: unmarshals and returns the error`,
    ],
    async run(c) {
      await c.fakes.control("fa", { ADD: { error: { code: 11, msg: "not now" } } });
      const a = await c.run("add", c.conflist());
      expect(!a.ok, "ADD succeeded");
      expect(a.code === 11, `code ${a.code}, want the plugin's 11 (${a.text})`);
      expect(!(await c.calls("ADD")).some((x) => x.type === "fb"), "fb ran after fa failed");
    },
  });
  def({
    id: "chain.add-type-missing",
    section: "§3 Adding an attachment (a type not found is an error)",
    title: "a plugin type missing from CNI_PATH fails ADD",
    versions: FROM_030,
    upstream: [`${API}: AddNetworkList when finding the plugin fails: returns the error`],
    async run(c) {
      const list = c.conflist([{ type: "fa" }, { type: "nosuchplugin" }]);
      expect(!(await c.run("add", list)).ok, "ADD succeeded");
    },
  });
  def({
    id: "chain.inject-version-name",
    section: "§3 Deriving request configuration (cniVersion and name inserted)",
    title: "every plugin gets the conflist's cniVersion and name, over its own",
    versions: FROM_030,
    async run(c) {
      const other = c.v === "1.0.0" ? "0.4.0" : "1.0.0";
      const list = c.conflist([{ type: "fa", cniVersion: other, name: "other" }, { type: "fb" }]);
      must(await c.run("add", list), "ADD");
      for (const call of await c.calls("ADD")) {
        expect(call.stdin.cniVersion === c.v, `${call.type} cniVersion ${call.stdin.cniVersion}`);
        expect(call.stdin.name === c.w.net, `${call.type} name ${call.stdin.name}`);
      }
    },
  });
  def({
    id: "chain.unknown-fields",
    section: "§1 Plugin configuration objects (runtime MUST pass unknown fields through)",
    title: "unknown plugin fields reach the plugin unchanged",
    versions: FROM_030,
    async run(c) {
      const extra = { keyA: ["some more", { deep: [1, 2.5, null, true] }], "x.y/z": "w" };
      must(await c.run("add", c.conflist([{ type: "fa", ...extra }, { type: "fb" }])), "ADD");
      const [a] = await c.calls("ADD");
      for (const [k, v] of Object.entries(extra)) expectEqual(a.stdin[k], v, `field ${k}`);
    },
  });
  def({
    id: "chain.runtime-config",
    section: "§3 Deriving runtimeConfig (declared capabilities x capability arguments)",
    title: "runtimeConfig holds exactly the capability args each plugin declares",
    versions: FROM_030,
    upstream: [`${API}: Capabilities adds correct runtime config for capabilities to stdin`],
    async run(c) {
      const list = c.conflist([
        { type: "fa", capabilities: { portMappings: true, bandwidth: false } },
        { type: "fb" },
      ]);
      const capArgs = {
        portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }],
        bandwidth: { ingressRate: 1 },
        dns: { nameservers: ["192.0.2.1"] },
      };
      must(await c.run("add", list, undefined, { capArgs }), "ADD");
      const [a] = await c.calls("ADD");
      expectEqual(
        a.stdin.runtimeConfig,
        { portMappings: capArgs.portMappings },
        "fa runtimeConfig",
      );
    },
  });
  def({
    id: "chain.runtime-config-none",
    section: "§3 Deriving runtimeConfig",
    title: "a plugin declaring no capability gets no runtimeConfig",
    versions: FROM_030,
    upstream: [
      `${API}: Capabilities adds no runtimeConfig when the plugin advertises no used capabilities`,
    ],
    async run(c) {
      const capArgs = { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }] };
      must(await c.run("add", c.conflist(), undefined, { capArgs }), "ADD");
      for (const call of await c.calls("ADD")) {
        expect(call.stdin.runtimeConfig === undefined, `${call.type} got runtimeConfig`);
      }
    },
  });
  def({
    id: "chain.attachment-env",
    section: "§3 Attachment Parameters; §2 Parameters",
    title: "every plugin gets the attachment's CNI variables and CNI_ARGS",
    versions: FROM_030,
    async run(c) {
      must(
        await c.run("add", c.conflist(), undefined, { cniArgs: "IgnoreUnknown=1;K8S_POD_NAME=p" }),
        "ADD",
      );
      for (const call of await c.calls("ADD")) {
        expect(call.env.CNI_CONTAINERID === c.att.containerId, `${call.type} CNI_CONTAINERID`);
        expect(call.env.CNI_NETNS === c.att.netns, `${call.type} CNI_NETNS ${call.env.CNI_NETNS}`);
        expect(call.env.CNI_IFNAME === c.att.ifname, `${call.type} CNI_IFNAME`);
        expect(call.env.CNI_COMMAND === "ADD", `${call.type} CNI_COMMAND`);
        expect(
          (call.env.CNI_PATH ?? "").split(":").includes(c.fakes.dir),
          `${call.type} CNI_PATH ${call.env.CNI_PATH}`,
        );
        expect(
          call.env.CNI_ARGS === "IgnoreUnknown=1;K8S_POD_NAME=p",
          `${call.type} CNI_ARGS ${call.env.CNI_ARGS}`,
        );
      }
    },
  });
  def({
    id: "chain.del-reverse",
    section: "§3 Deleting an attachment (reverse order)",
    title: "DEL runs the plugins in reverse order",
    versions: FROM_030,
    upstream: [`${API}: DelNetworkList executes all the plugins in reverse order with command DEL`],
    async run(c) {
      const prev = must(await c.run("add", c.conflist()), "ADD");
      must(await c.run("del", c.conflist(), prev), "DEL");
      expectEqual((await c.calls("DEL")).map((x) => x.type), ["fb", "fa"], "DEL order");
    },
  });
  def({
    id: "chain.del-final-result",
    section: "§3 Deleting an attachment (prevResult: the final ADD result)",
    title: "every plugin's DEL gets the final ADD result as prevResult",
    versions: FROM_040,
    upstream: [`${API}: DelNetworkList is 0.4.0: passes a cached result to the first plugin`],
    async run(c) {
      const prev = must(await c.run("add", c.conflist()), "ADD");
      must(await c.run("del", c.conflist(), prev), "DEL");
      for (const call of await c.calls("DEL")) {
        expectEqual(
          ((call.stdin.prevResult as Json | undefined)?.interfaces as Json[] | undefined)?.map((
            i,
          ) => i.name),
          ["fa", "fb"],
          `${call.type} DEL prevResult interfaces`,
        );
      }
    },
  });
  def({
    id: "chain.del-repeat",
    section: "§3 Lifecycle (delete may be followed by additional deletes)",
    title: "a second DEL of the attachment succeeds",
    versions: FROM_030,
    upstream: [`${API}: DelNetwork when DEL is called twice: deletes the cached result`],
    async run(c) {
      const prev = must(await c.run("add", c.conflist()), "ADD");
      must(await c.run("del", c.conflist(), prev), "first DEL");
      must(await c.run("del", c.conflist()), "second DEL");
    },
  });
  def({
    id: "chain.del-error",
    section: "§3 Deleting an attachment (an error is returned to the caller)",
    title: "a plugin's DEL error comes back with its code",
    versions: FROM_030,
    upstream: [`${API}: DelNetworkList when the plugin errors: unmarshals and returns the error`],
    async run(c) {
      const prev = must(await c.run("add", c.conflist()), "ADD");
      await c.fakes.control("fb", { DEL: { error: { code: 5, msg: "disk" } } });
      const a = await c.run("del", c.conflist(), prev);
      expect(!a.ok && a.code === 5, `DEL: ok=${a.ok} code=${a.code}, want code 5`);
    },
  });
  def({
    id: "chain.check-final-result",
    section: "§3 Checking an attachment (in order, prevResult: the final ADD result)",
    title: "CHECK runs in order and every plugin gets the final ADD result",
    versions: FROM_040,
    upstream: [
      `${API}: CheckNetworkList executes all plugins with command CHECK`,
      `${API}: CheckNetworkList is 0.4.0: passes a cached result to the first plugin`,
    ],
    async run(c) {
      const prev = must(await c.run("add", c.conflist()), "ADD");
      must(await c.run("check", c.conflist(), prev), "CHECK");
      const calls = await c.calls("CHECK");
      expectEqual(calls.map((x) => x.type), ["fa", "fb"], "CHECK order");
      for (const call of calls) {
        expectEqual(
          ((call.stdin.prevResult as Json).interfaces as Json[]).map((i) => i.name),
          ["fa", "fb"],
          `${call.type} CHECK prevResult interfaces`,
        );
      }
    },
  });
  def({
    id: "chain.check-error",
    section: "§3 Checking an attachment (an error is returned to the caller)",
    title: "a plugin's CHECK error comes back with its code",
    versions: FROM_040,
    upstream: [
      `${API}: CheckNetworkList when the second plugin errors: unmarshals and returns the error`,
    ],
    async run(c) {
      const prev = must(await c.run("add", c.conflist()), "ADD");
      await c.fakes.control("fb", { CHECK: { error: { code: 11, msg: "later" } } });
      const a = await c.run("check", c.conflist(), prev);
      expect(!a.ok && a.code === 11, `CHECK: ok=${a.ok} code=${a.code}, want code 11`);
    },
  });
  def({
    id: "chain.disable-check",
    section: "§1 Configuration format (disableCheck); §3 Checking an attachment",
    title: "with disableCheck, CHECK succeeds without running any plugin",
    versions: FROM_040,
    conflistKey: true,
    upstream: [
      `${API}: CheckNetworkList does not executes plugins with command CHECK when disableCheck is true`,
    ],
    async run(c) {
      const list = c.conflist(undefined, { disableCheck: true });
      const prev = must(await c.run("add", list), "ADD");
      await c.fakes.control("fa", { CHECK: { error: { code: 11, msg: "must not run" } } });
      must(await c.run("check", list, prev), "CHECK");
      expectEqual(await c.calls("CHECK"), [], "CHECK calls");
    },
  });
  def({
    id: "chain.gc-every-plugin",
    section: "§3 Garbage-collecting a network (every plugin, continue past errors)",
    title: "GC runs every plugin even after one fails, and returns the error",
    versions: FROM_110,
    upstream: [`${API}: GCNetworkList issues a DEL and GC as necessary`],
    async run(c) {
      await c.fakes.control("fa", { GC: { error: { code: 5, msg: "gc failed" } } });
      const a = await c.run("gc", c.conflist(), undefined, { valid: [] });
      expect(!a.ok, "GC succeeded although fa failed");
      expectEqual((await c.calls("GC")).map((x) => x.type).sort(), ["fa", "fb"], "GC calls");
    },
  });
  def({
    id: "chain.gc-valid-attachments",
    section: "§2 GC input; §3 Deriving request configuration (cni.dev/valid-attachments)",
    title: "GC gives every plugin cni.dev/valid-attachments, cniVersion and name",
    versions: FROM_110,
    async run(c) {
      const valid = [{ containerID: "keep-me", ifname: "eth0" }];
      must(await c.run("gc", c.conflist(), undefined, { valid }), "GC");
      const calls = await c.calls("GC");
      expect(calls.length === 2, `${calls.length} GC calls`);
      for (const call of calls) {
        expectEqual(call.stdin["cni.dev/valid-attachments"], valid, `${call.type} valid list`);
        expect(call.stdin.cniVersion === c.v && call.stdin.name === c.w.net, "cniVersion/name");
        expect(call.stdin.prevResult === undefined, `${call.type} GC got a prevResult`);
      }
    },
  });
  def({
    id: "chain.disable-gc",
    section: "§1 Configuration format (disableGC)",
    title: "with disableGC, GC runs no plugin",
    versions: FROM_110,
    conflistKey: true,
    async run(c) {
      must(
        await c.run("gc", c.conflist(undefined, { disableGC: true }), undefined, { valid: [] }),
        "GC",
      );
      expectEqual(await c.calls("GC"), [], "GC calls");
    },
  });
  def({
    id: "chain.status",
    section: "§2 STATUS; libcni GetStatusNetworkList",
    title: "STATUS asks every plugin and returns a plugin's error code",
    versions: FROM_110,
    upstream: [
      `${API}: GetStatusNetworkList issues a STATUS request`,
      `${API}: GetStatusNetworkList correctly reports an error`,
    ],
    async run(c) {
      must(await c.run("status", c.conflist()), "STATUS");
      expectEqual((await c.calls("STATUS")).map((x) => x.type), ["fa", "fb"], "STATUS calls");
      await c.fakes.control("fb", { STATUS: { error: { code: 50, msg: "not ready" } } });
      const a = await c.run("status", c.conflist());
      expect(!a.ok && a.code === 50, `STATUS: ok=${a.ok} code=${a.code}, want code 50`);
    },
  });
  def({
    id: "chain.cni-versions",
    section: "§1 Version considerations (MUST pick the highest of cniVersion and cniVersions)",
    title: "cniVersions with a higher version than cniVersion: the highest is used",
    versions: ["1.1.0"],
    conflistKey: true,
    async run(c) {
      const list = {
        ...c.conflist(),
        cniVersion: "0.4.0",
        cniVersions: ["0.4.0", "1.1.0", "1.0.0"],
      };
      must(await c.run("add", list), "ADD");
      for (const call of await c.calls("ADD")) {
        expect(call.stdin.cniVersion === "1.1.0", `${call.type} got ${call.stdin.cniVersion}`);
      }
    },
  });
  def({
    id: "chain.invalid-ifname",
    section: "§2 Parameters (CNI_IFNAME)",
    title: "a runtime refuses an ifname longer than 15 bytes before running a plugin",
    versions: ALL.filter((v) => v >= "0.3.0"),
    upstream: [
      `${API}: AddNetworkList return errors when interface name is invalid: interface name is too long`,
    ],
    async run(c) {
      const a = await c.run("add", c.conflist(), undefined, { ifname: "0123456789abcdefg" });
      expect(!a.ok, "ADD succeeded");
      expectEqual(await c.calls("ADD"), [], "ADD calls");
    },
  });
  def({
    id: "chain.invalid-container-id",
    section: "§3 Attachment Parameters (container id charset)",
    title: "a runtime refuses a container id with invalid characters",
    versions: FROM_030,
    upstream: [`${API}: AddNetworkList when there is an invalid containerID: returns the error`],
    async run(c) {
      const a = await c.run("add", c.conflist(), undefined, { containerId: "a/../b" });
      expect(!a.ok, "ADD succeeded");
      expectEqual(await c.calls("ADD"), [], "ADD calls");
    },
  });

  return defs.map((d) => ({
    id: d.id,
    section: d.section,
    title: d.title,
    versions: d.versions,
    upstream: d.upstream,
    run: (v: string) =>
      withWorld(dir, async (w) => {
        if (d.conflistKey && !rt.conflistKeys) {
          throw new NotApplicable(`${rt.name} runs a nested chain; the conflist is the runtime's`);
        }
        const fakes = await FakePlugins.create(["fa", "fb"]);
        try {
          w.cniPath = `${fakes.dir}:${dir}`;
          const pod = await w.addPod();
          const att: Attachment = {
            containerId: `ctr-${w.prefix}`,
            netns: pod.path,
            ifname: "eth0",
          };
          const ctx: Ctx = {
            w,
            v,
            fakes,
            rt,
            att,
            conflist: (plugins = [{ type: "fa" }, { type: "fb" }], extra = {}) => ({
              cniVersion: v,
              name: w.net,
              plugins,
              ...extra,
            }),
            run: (verb, conflist, prev, a = {}) =>
              rt.run(w, verb, conflist, { ...att, ...a }, prev),
            calls: async (verb) => (await fakes.calls()).filter((x) => !verb || x.verb === verb),
          };
          await d.run(ctx);
        } finally {
          await fakes.cleanup();
        }
      }),
  }));
}
