import assert from "node:assert/strict";
import { addChain, type ChainRun, checkChain, delChain, gcChain, statusChain } from "./runner.ts";
import { FakePlugins } from "../test/helpers.ts";
import { memorySystem } from "./system_record.ts";
import { CniError } from "./spec/errors.ts";
import { parseConflist } from "./spec/config.ts";
import { parseEnv } from "./spec/env.ts";
import type { Plugin } from "./plugin.ts";
import type { Verb } from "./spec/types.ts";
import { SUPPORTED_VERSIONS } from "./spec/version.ts";

/** A built-in step for the tests: records its calls and writes one state file per attachment. */
function recorder(calls: { verb: Verb; stdin: Record<string, unknown> }[]): Plugin {
  const file = (id: string) => `/state/${id}`;
  return {
    async add(inv) {
      calls.push({ verb: "ADD", stdin: inv.conf.raw });
      await inv.system.files.createExclusive(file(inv.env.containerId), "taken");
      const prev = inv.conf.prevResult ?? { cniVersion: inv.conf.cniVersion };
      return { ...prev, ips: [...(prev.ips ?? []), { address: "fd00:5::2/64" }] };
    },
    async del(inv) {
      calls.push({ verb: "DEL", stdin: inv.conf.raw });
      await inv.system.files.remove(file(inv.env.containerId));
    },
    check(inv) {
      calls.push({ verb: "CHECK", stdin: inv.conf.raw });
      return Promise.resolve();
    },
    gc(inv) {
      calls.push({ verb: "GC", stdin: { ...inv.conf.raw, kept: inv.validAttachments.length } });
      return Promise.resolve();
    },
    status(inv) {
      calls.push({ verb: "STATUS", stdin: inv.conf.raw });
      return Promise.resolve();
    },
  };
}

async function setup(version: string, types: string[], capabilityArgs = {}) {
  const fakes = await FakePlugins.create(types.filter((t) => t !== "rec"));
  const calls: { verb: Verb; stdin: Record<string, unknown> }[] = [];
  const system = memorySystem();
  const conflist = parseConflist({
    cniVersion: version,
    name: "testnet",
    plugins: types.map((type) => ({ type, capabilities: { portMappings: true }, own: type })),
  });
  const run = (verb: Verb): ChainRun => ({
    conflist,
    env: parseEnv((n) =>
      ({
        CNI_COMMAND: verb,
        CNI_CONTAINERID: "c1",
        CNI_NETNS: "/x",
        CNI_IFNAME: "eth0",
        CNI_PATH: fakes.dir,
      })[n]
    ),
    capabilityArgs,
    context: {
      system,
      registry: new Map([["rec", recorder(calls)]]),
      observer: {},
      execTimeoutMs: 20_000,
      stepPrefix: "",
      baseEnv: {},
    },
  });
  return { fakes, calls, system, run };
}

for (const version of SUPPORTED_VERSIONS) {
  Deno.test(`chain runner at ${version}: ADD in order, DEL in reverse with the final result`, async () => {
    const { fakes, calls, system, run } = await setup(version, ["a", "rec", "b"], {
      portMappings: [{ hostPort: 8080, containerPort: 80 }],
      bandwidth: { rate: 1 },
    });
    try {
      const result = await addChain(run("ADD"));
      assert.equal(result?.cniVersion, version);
      assert.ok(result?.ips?.some((ip) => ip.address === "fd00:5::2/64"));
      const adds = await fakes.calls();
      assert.deepEqual(adds.map((c) => c.type), ["a", "b"]);
      // Every step gets the conflist's version and name, its own fields, and only the
      // capabilities it declared; the first gets no prevResult, the later ones the one before.
      for (const call of adds) {
        assert.equal(call.stdin.cniVersion, version);
        assert.equal(call.stdin.name, "testnet");
        assert.equal(call.stdin.own, call.type);
        assert.deepEqual(call.stdin.runtimeConfig, {
          portMappings: [{ hostPort: 8080, containerPort: 80 }],
        });
        assert.equal(call.env.CNI_COMMAND, "ADD");
        assert.equal(call.env.CNI_CONTAINERID, "c1");
      }
      assert.equal(adds[0].stdin.prevResult, undefined);
      assert.equal(
        calls[0].stdin.prevResult !== undefined,
        true,
        "the built-in step got a's result",
      );
      const bPrev = adds[1].stdin.prevResult as Record<string, unknown>;
      assert.equal(bPrev.cniVersion, version);
      assert.ok(
        JSON.stringify(bPrev).includes("fd00:5::2/64"),
        "b got the built-in step's address",
      );
      assert.deepEqual(system.effects.map((e) => e.op), ["create file"]);

      await fakes.resetCalls();
      await delChain({ ...run("DEL"), prevResult: result });
      const dels = await fakes.calls();
      assert.deepEqual(dels.map((c) => c.type), ["b", "a"]);
      assert.deepEqual(calls.map((c) => c.verb), ["ADD", "DEL"]);
      // libcni hands DEL the cached result only from 0.4.0 on.
      const withPrev = version >= "0.4.0";
      for (const call of dels) {
        assert.equal(call.stdin.prevResult !== undefined, withPrev, `${call.type} prevResult`);
      }
      assert.equal(await system.files.read("/state/c1"), undefined);
    } finally {
      await fakes.cleanup();
    }
  });
}

Deno.test("chain runner: a failed ADD step is rolled back, the failing step included", async (t) => {
  for (const version of ["0.3.1", "1.0.0", "1.1.0"]) {
    await t.step(version, async () => {
      const { fakes, calls, system, run } = await setup(version, ["a", "rec", "b", "c"]);
      try {
        await fakes.control("b", {
          ADD: { error: { code: 11, msg: "try later", details: "busy" } },
        });
        await assert.rejects(() => addChain(run("ADD")), (e: unknown) => {
          assert.ok(e instanceof CniError);
          assert.equal(e.code, 11);
          assert.equal(e.message, "ADD step 3 (b): try later");
          assert.equal(e.details, "busy");
          return true;
        });
        const seen = (await fakes.calls()).map((c) => `${c.verb} ${c.type}`);
        assert.deepEqual(seen, ["ADD a", "ADD b", "DEL b", "DEL a"]);
        assert.deepEqual(calls.map((c) => c.verb), ["ADD", "DEL"]);
        assert.equal(
          await system.files.read("/state/c1"),
          undefined,
          "the built-in step's file is gone",
        );
      } finally {
        await fakes.cleanup();
      }
    });
  }
  await t.step(
    "a step that refuses with code 100 (already exists) is not torn down, the steps before are",
    async () => {
      const { fakes, run } = await setup("1.0.0", ["a", "b"]);
      try {
        await fakes.control("b", { ADD: { error: { code: 100, msg: "eth0 already exists" } } });
        await assert.rejects(
          () => addChain(run("ADD")),
          (e: unknown) => e instanceof CniError && e.code === 100,
        );
        assert.deepEqual((await fakes.calls()).map((c) => `${c.verb} ${c.type}`), [
          "ADD a",
          "ADD b",
          "DEL a",
        ]);
      } finally {
        await fakes.cleanup();
      }
    },
  );
  await t.step("a missing plugin is found out before any step runs", async () => {
    const { fakes, calls, run } = await setup("1.0.0", ["a", "rec"]);
    try {
      const r = run("ADD");
      r.conflist.plugins.push({ type: "missing" });
      await assert.rejects(
        () => addChain(r),
        /plugins\[2\]\.type: failed to find plugin "missing"/,
      );
      assert.deepEqual(await fakes.calls(), []);
      assert.deepEqual(calls, []);
    } finally {
      await fakes.cleanup();
    }
  });
  await t.step(
    "a missing IPAM plugin of a built-in step is found out before any step runs",
    async () => {
      const { fakes, calls, run } = await setup("1.0.0", ["a", "rec"]);
      try {
        const r = run("ADD");
        // A built-in step hands its ipam to an executable when the type is not built in.
        r.conflist.plugins.push({ type: "rec", ipam: { type: "missing-ipam" } });
        await assert.rejects(
          () => addChain(r),
          /plugins\[2\]\.ipam\.type: failed to find plugin "missing-ipam"/,
        );
        assert.deepEqual(await fakes.calls(), []);
        assert.deepEqual(calls, []);
        // One that is there is no obstacle (run() shares the conflist: replace the entry).
        r.conflist.plugins[2] = { type: "rec", ipam: { type: "a" } };
        await addChain(run("ADD"));
      } finally {
        await fakes.cleanup();
      }
    },
  );
  await t.step("an unparsable result fails the step (code 6) and rolls back", async () => {
    const { fakes, run } = await setup("1.0.0", ["a", "b"]);
    try {
      await fakes.control("b", { ADD: { exit: 0, stdout: "not json" } });
      await assert.rejects(
        () => addChain(run("ADD")),
        (e: unknown) => e instanceof CniError && e.code === 6,
      );
      assert.deepEqual((await fakes.calls()).map((c) => `${c.verb} ${c.type}`), [
        "ADD a",
        "ADD b",
        "DEL b",
        "DEL a",
      ]);
    } finally {
      await fakes.cleanup();
    }
  });
  await t.step(
    "a plugin that exits non-zero without an error JSON is code 999 with its output",
    async () => {
      const { fakes, run } = await setup("1.0.0", ["a"]);
      try {
        await fakes.control("a", { ADD: { exit: 3, stdout: "panic: oops" } });
        await assert.rejects(() => addChain(run("ADD")), (e: unknown) => {
          assert.ok(e instanceof CniError);
          assert.equal(e.code, 999);
          assert.match(e.message, /failed with exit code 3/);
          assert.equal(e.details, "panic: oops");
          return true;
        });
      } finally {
        await fakes.cleanup();
      }
    },
  );
});

Deno.test("chain runner: DEL keeps going past failures and reports them all", async () => {
  const { fakes, calls, run } = await setup("1.0.0", ["a", "rec", "b"]);
  try {
    await fakes.control("a", { DEL: { error: { code: 5, msg: "a broke" } } });
    await fakes.control("b", { DEL: { error: { code: 3, msg: "b broke" } } });
    await assert.rejects(() => delChain(run("DEL")), (e: unknown) => {
      assert.ok(e instanceof CniError);
      assert.equal(e.code, 3, "the first failure's code");
      assert.match(
        e.message,
        /DEL failed in 2 steps: step 3 \(b\): \[3\] b broke; step 1 \(a\): \[5\] a broke/,
      );
      return true;
    });
    assert.deepEqual((await fakes.calls()).map((c) => c.type), ["b", "a"]);
    assert.deepEqual(calls.map((c) => c.verb), ["DEL"], "the step between the failures ran");
  } finally {
    await fakes.cleanup();
  }
});

Deno.test("chain runner: CHECK, GC and STATUS", async (t) => {
  await t.step(
    "CHECK runs in order with the final result and stops at the first failure",
    async () => {
      const { fakes, run } = await setup("1.0.0", ["a", "b", "c"]);
      try {
        const prevResult = { cniVersion: "1.0.0", ips: [{ address: "10.0.0.9/24" }] };
        await checkChain({ ...run("CHECK"), prevResult });
        const seen = await fakes.calls();
        assert.deepEqual(seen.map((c) => c.type), ["a", "b", "c"]);
        for (const c of seen) assert.deepEqual(c.stdin.prevResult, prevResult);
        await fakes.resetCalls();
        await fakes.control("b", { CHECK: { error: { code: 7, msg: "address gone" } } });
        await assert.rejects(
          () => checkChain({ ...run("CHECK"), prevResult }),
          /CHECK step 2 \(b\): address gone/,
        );
        assert.deepEqual((await fakes.calls()).map((c) => c.type), ["a", "b"]);
      } finally {
        await fakes.cleanup();
      }
    },
  );
  await t.step("CHECK below 0.4.0 is code 1 from the plugin", async () => {
    const { fakes, calls, run } = await setup("0.3.1", ["rec"]);
    try {
      await assert.rejects(
        () => checkChain({ ...run("CHECK"), prevResult: { cniVersion: "0.3.1" } }),
        (e: unknown) => {
          assert.ok(e instanceof CniError);
          assert.equal(e.code, 1);
          return true;
        },
      );
      assert.deepEqual(calls, []);
    } finally {
      await fakes.cleanup();
    }
  });
  await t.step("GC reaches every step with valid-attachments, past failures", async () => {
    const { fakes, calls, run } = await setup("1.1.0", ["a", "rec", "b"]);
    try {
      await fakes.control("a", { GC: { error: { code: 5, msg: "disk" } } });
      const valid = [{ containerID: "c1", ifname: "eth0" }, { containerID: "c2", ifname: "net1" }];
      await assert.rejects(
        () => gcChain({ ...run("GC"), validAttachments: valid }),
        /GC step 1 \(a\): disk/,
      );
      const seen = await fakes.calls();
      assert.deepEqual(seen.map((c) => c.type), ["a", "b"]);
      for (const c of seen) {
        assert.deepEqual(c.stdin["cni.dev/valid-attachments"], valid);
        assert.equal(c.stdin.runtimeConfig, undefined);
      }
      assert.equal(calls[0].stdin.kept, 2);
    } finally {
      await fakes.cleanup();
    }
  });
  await t.step("GC and STATUS below 1.1.0 are code 1", async () => {
    const { fakes, run } = await setup("1.0.0", ["rec"]);
    try {
      for (const [verb, fn] of [["GC", gcChain], ["STATUS", statusChain]] as const) {
        await assert.rejects(
          () => fn(run(verb)),
          (e: unknown) => e instanceof CniError && e.code === 1,
        );
      }
    } finally {
      await fakes.cleanup();
    }
  });
  await t.step("STATUS answers 50 when a step's plugin is not installed", async () => {
    const { fakes, run } = await setup("1.1.0", ["a"]);
    try {
      await statusChain(run("STATUS"));
      const r = run("STATUS");
      r.conflist.plugins.push({ type: "gone" });
      await assert.rejects(
        () => statusChain(r),
        (e: unknown) => e instanceof CniError && e.code === 50,
      );
    } finally {
      await fakes.cleanup();
    }
  });
});
