/**
 * Upstream libcni (v1.3.x, conformance/libcni-client) as the runtime in front
 * of cnichain's real plugins, in a throwaway host netns: the chain conflist
 * (`type: cnichain`, nested bridge + host-local + portmap) and the same chain
 * as a plain conflist of the multi-call names. libcni must accept every result,
 * cache it, drive CHECK and DEL from its cache, and GC/STATUS must behave.
 */
import { links } from "../test/netns.ts";
import { type Check, expect, expectEqual, FROM_030, FROM_040, FROM_110 } from "./harness.ts";
import { addressesOf, ipam, type Json } from "./fixtures.ts";
import { withWorld, type World } from "./lab.ts";
import type { Answer, Attachment, Verb } from "./runtime_checks.ts";

type Shape = "nested" | "multicall";

function conflist(w: World, v: string, shape: Shape, extra: Json = {}): Json {
  const steps: Json[] = [
    { type: "bridge", bridge: w.bridge, isGateway: true, stateDir: w.stateDir, ipam: ipam(w) },
    { type: "portmap", capabilities: { portMappings: true }, stateDir: w.stateDir },
  ];
  const plugins = shape === "multicall" ? steps : [{
    type: "cnichain",
    capabilities: { portMappings: true },
    stateDir: w.stateDir,
    plugins: steps,
  }];
  return { cniVersion: v, name: w.net, plugins, ...extra };
}

/**
 * The shipped deploy/cnichain.conflist with its paths (log, state, host-local store, policy file)
 * moved into the world's directory; the policy file holds no policies.
 */
async function deployConflist(w: World): Promise<Json> {
  const list = JSON.parse(
    await Deno.readTextFile(new URL("../deploy/cnichain.conflist", import.meta.url)),
  ) as Json;
  const outer = (list.plugins as Json[])[0];
  outer.logFile = `${w.dir}/cnichain.log`;
  outer.stateDir = w.stateDir;
  for (const step of outer.plugins as Json[]) {
    if (step.ipam) (step.ipam as Json).dataDir = w.dataDir;
    if (step.type === "policy") step.policyFile = `${w.dir}/policies.json`;
  }
  await Deno.writeTextFile(`${w.dir}/policies.json`, "[]");
  return list;
}

export function libcniChecks(bin: string, build: string): Check[] {
  const client = `${build}/libcni-client`;
  async function callIn(
    w: World,
    verb: Verb | "cached",
    list: Json,
    a: Attachment,
    cniPath = bin,
  ): Promise<Answer> {
    const req = {
      conflist: list,
      cniPath: [cniPath],
      cacheDir: w.cacheDir,
      containerID: a.containerId,
      netns: a.netns,
      ifname: a.ifname,
      capabilityArgs: a.capArgs ?? {},
      validAttachments: a.valid ?? [],
    };
    const out = await w.run(client, [verb], JSON.stringify(req));
    if (out.code !== 0) throw new Error(`libcni-client ${verb}: ${out.stderr.trim()}`);
    const j = JSON.parse(out.stdout) as { ok: boolean; result?: Json; error?: Json; text?: string };
    return {
      ok: j.ok,
      result: j.result,
      code: j.error?.code as number | undefined,
      text: j.text ?? "",
    };
  }
  const call = (w: World, verb: Verb | "cached", list: Json, a: Attachment) =>
    callIn(w, verb, list, a);
  const must = (a: Answer, what: string): Json => {
    expect(a.ok, `${what}: ${a.text}`);
    return a.result ?? {};
  };

  const checks: Check[] = [];
  for (const shape of ["nested", "multicall"] as Shape[]) {
    const add = async (w: World, v: string, containerId = `ctr-${w.prefix}`) => {
      const pod = await w.addPod();
      const maps = [{ hostPort: 18090 + w.pods.length, containerPort: 80, protocol: "tcp" }];
      const a: Attachment = {
        containerId,
        netns: pod.path,
        ifname: "eth0",
        capArgs: { portMappings: maps },
      };
      const result = must(await call(w, "add", conflist(w, v, shape), a), "libcni ADD");
      return { pod, a, result };
    };
    const one = (
      id: string,
      section: string,
      title: string,
      versions: readonly string[],
      fn: (w: World, v: string) => Promise<void>,
    ) =>
      checks.push({
        id: `libcni.${shape}.${id}`,
        section,
        title: `${
          shape === "nested" ? "chain conflist (type cnichain)" : "multi-call conflist"
        }: ${title}`,
        versions,
        run: (v) => withWorld(bin, (w) => fn(w, v)),
      });

    one(
      "add-result",
      "§3 Adding an attachment; §5 ADD Success",
      "libcni ADD accepts the result: the pod interface with its address, cniVersion kept",
      FROM_030,
      async (w, v) => {
        const { pod, result } = await add(w, v);
        expect(result.cniVersion === v, `result cniVersion ${result.cniVersion}`);
        expect(
          addressesOf(result).length === 1,
          `addresses ${JSON.stringify(addressesOf(result))}`,
        );
        expect((await links(pod.name)).some((l) => l.ifname === "eth0"), "no eth0 in the pod");
      },
    );
    one(
      "cache",
      "§3 Adding an attachment (the runtime must store the final result)",
      "libcni caches the result (0600) and reads back the same result",
      FROM_030,
      async (w, v) => {
        const { a, result } = await add(w, v);
        const file = `${w.cacheDir}/results/${w.net}-${a.containerId}-eth0`;
        const st = await Deno.stat(file);
        expect((st.mode! & 0o777) === 0o600, `cache file mode ${(st.mode! & 0o777).toString(8)}`);
        const cached = must(await call(w, "cached", conflist(w, v, shape), a), "cached result");
        expectEqual(cached, result, "cached result");
      },
    );
    one(
      "check-from-cache",
      "§3 Checking an attachment (prevResult from the cache)",
      "libcni CHECK, fed from its cache, succeeds",
      FROM_040,
      async (w, v) => {
        const { a } = await add(w, v);
        must(await call(w, "check", conflist(w, v, shape), a), "libcni CHECK");
      },
    );
    one(
      "check-detects",
      "§2 CHECK (error if an interface is missing)",
      "libcni CHECK fails once the pod interface is gone",
      FROM_040,
      async (w, v) => {
        const { a, pod } = await add(w, v);
        await w.run("/usr/sbin/ip", ["-n", pod.name, "link", "del", "eth0"]);
        expect(!(await call(w, "check", conflist(w, v, shape), a)).ok, "CHECK succeeded");
      },
    );
    one(
      "del-from-cache",
      "§3 Deleting an attachment (prevResult: the cached ADD result); §2 DEL",
      "libcni DEL removes the interface, the address and the cache entry; a second DEL succeeds",
      FROM_030,
      async (w, v) => {
        const { a, pod } = await add(w, v);
        must(await call(w, "del", conflist(w, v, shape), a), "libcni DEL");
        expect(!(await links(pod.name)).some((l) => l.ifname === "eth0"), "eth0 still there");
        expectEqual(await w.allocations(), [], "allocations");
        const gone = await Deno.stat(`${w.cacheDir}/results/${w.net}-${a.containerId}-eth0`)
          .then(() => false, () => true);
        expect(gone, "cache entry left after DEL");
        must(await call(w, "del", conflist(w, v, shape), a), "second libcni DEL");
      },
    );
    one(
      "gc",
      "§2 GC; §3 Garbage-collecting a network",
      "libcni GC removes the stale attachment (cached and leaked) and keeps the valid one",
      FROM_110,
      async (w, v) => {
        const keep = await add(w, v, "keep");
        const stale = await add(w, v, "stale");
        // An address leaked outside libcni's cache (e.g. across a reboot): only plugin GC finds it.
        await Deno.writeTextFile(`${w.dataDir}/${w.net}/${w.v4}.200`, "leaked\r\neth0");
        must(
          await call(w, "gc", conflist(w, v, shape), {
            ...keep.a,
            valid: [{ containerID: "keep", ifname: "eth0" }],
          }),
          "libcni GC",
        );
        expectEqual(
          await w.allocations(),
          addressesOf(keep.result).map((x) => x.split("/")[0]),
          "allocations after GC",
        );
        expect(
          !(await links(stale.pod.name)).some((l) => l.ifname === "eth0"),
          "the stale attachment's eth0 is still there",
        );
        expect((await links(keep.pod.name)).some((l) => l.ifname === "eth0"), "kept eth0 gone");
      },
    );
    one(
      "gc-disabled",
      "§1 Configuration format (disableGC)",
      "libcni GC of a disableGC conflist leaves everything",
      FROM_110,
      async (w, v) => {
        const { a } = await add(w, v);
        const before = await w.allocations();
        must(await call(w, "gc", conflist(w, v, shape, { disableGC: true }), a), "libcni GC");
        expectEqual(await w.allocations(), before, "allocations");
      },
    );
    one(
      "status",
      "§2 STATUS",
      "libcni STATUS succeeds when every plugin is installed",
      FROM_110,
      async (w, v) => {
        must(
          await call(w, "status", conflist(w, v, shape), {
            containerId: "x",
            netns: "",
            ifname: "eth0",
          }),
          "libcni STATUS",
        );
      },
    );
  }
  for (const shape of ["nested", "multicall"] as Shape[]) {
    checks.push({
      id: `libcni.${shape}.add-legacy`,
      section: "§5 Result (0.1.0/0.2.0 encodings); libcni result parsing",
      title: `${shape}: libcni accepts a 0.1.0/0.2.0 bridge result, caches it and DELs from it`,
      versions: ["0.1.0", "0.2.0"],
      run: (v) =>
        withWorld(bin, async (w) => {
          const step = {
            type: "bridge",
            bridge: w.bridge,
            isGateway: true,
            stateDir: w.stateDir,
            ipam: ipam(w),
          };
          const list = {
            cniVersion: v,
            name: w.net,
            plugins: shape === "multicall"
              ? [step]
              : [{ type: "cnichain", stateDir: w.stateDir, plugins: [step] }],
          };
          const pod = await w.addPod();
          const a: Attachment = { containerId: "legacy", netns: pod.path, ifname: "eth0" };
          const result = must(await call(w, "add", list, a), "libcni ADD");
          expect((result.ip4 as Json | undefined)?.ip, `no ip4 in ${JSON.stringify(result)}`);
          const cached = must(await call(w, "cached", list, a), "cached result");
          expectEqual(cached, result, "cached result");
          must(await call(w, "del", list, a), "libcni DEL");
          expectEqual(await w.allocations(), [], "allocations after DEL");
        }),
    });
  }
  checks.push({
    id: "libcni.deploy-conflist",
    section: "§3 (whole lifecycle); §3 Deriving runtimeConfig (ips, portMappings)",
    title:
      "the shipped deploy/cnichain.conflist through libcni, dist/cnichain copied alone into CNI_PATH: ADD with capability args, CHECK, STATUS, GC, DEL",
    versions: ["1.1.0"],
    run: () =>
      withWorld(bin, async (w) => {
        const list = await deployConflist(w);
        // As an operator installs it: one file, no links, no deno.json or DENO_DIR beside it (and
        // the client, like every libcni check, runs with an empty environment).
        const alone = `${w.dir}/opt-cni-bin`;
        await Deno.mkdir(alone);
        await Deno.copyFile(await Deno.realPath(`${bin}/cnichain`), `${alone}/cnichain`);
        await Deno.chmod(`${alone}/cnichain`, 0o755);
        const call = (cw: World, verb: Verb, l: Json, at: Attachment) =>
          callIn(cw, verb, l, at, alone);
        const pod = await w.addPod();
        const a: Attachment = {
          containerId: "deploy",
          netns: pod.path,
          ifname: "eth0",
          capArgs: {
            ips: ["10.88.7.7/16"],
            portMappings: [{ hostPort: 18099, containerPort: 80, protocol: "tcp" }],
          },
        };
        const result = must(await call(w, "add", list, a), "libcni ADD");
        const [address] = addressesOf(result).map((x) => x.split("/")[0]);
        must(await call(w, "check", list, a), "libcni CHECK");
        must(await call(w, "status", list, a), "libcni STATUS");
        must(
          await call(w, "gc", list, { ...a, valid: [{ containerID: "deploy", ifname: "eth0" }] }),
          "libcni GC",
        );
        expectEqual(
          await w.allocations(list.name as string),
          [address],
          "allocations after GC",
        );
        must(await call(w, "del", list, a), "libcni DEL");
        expectEqual(await w.allocations(list.name as string), [], "allocations after DEL");
      }),
  });
  checks.push({
    id: "libcni.deploy-conflist.ips",
    section: "§3 Deriving runtimeConfig; CONVENTIONS.md (ips)",
    title: "the shipped deploy/cnichain.conflist advertises ips: a requested address is honoured",
    versions: ["1.1.0"],
    run: () =>
      withWorld(bin, async (w) => {
        const list = await deployConflist(w);
        const outer = (list.plugins as Json[])[0];
        expect((outer.capabilities as Json | undefined)?.ips, "the conflist does not declare ips");
        const pod = await w.addPod();
        const a: Attachment = {
          containerId: "deploy",
          netns: pod.path,
          ifname: "eth0",
          capArgs: { ips: ["10.88.7.7/16"] },
        };
        const result = must(await call(w, "add", list, a), "libcni ADD");
        expectEqual(addressesOf(result), ["10.88.7.7/16"], "addresses (runtimeConfig.ips)");
      }),
  });
  checks.push({
    id: "libcni.nested.status-missing-plugin",
    section: "§2 STATUS (code 50: not available)",
    title: "chain conflist: STATUS with a nested plugin that is not installed is code 50",
    versions: FROM_110,
    run: (v) =>
      withWorld(bin, async (w) => {
        const list = conflist(w, v, "nested");
        const steps = (list.plugins as Json[])[0].plugins as Json[];
        steps.push({ type: "not-installed" });
        const a = await call(w, "status", list, { containerId: "x", netns: "", ifname: "eth0" });
        expect(!a.ok && a.code === 50, `STATUS ok=${a.ok} code=${a.code}: ${a.text}`);
      }),
  });
  return checks;
}
