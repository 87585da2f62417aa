/**
 * Differential tests against Debian's reference host-local (1.1.1, spec
 * 1.0.0 at most): the same calls give the same results and leave the same
 * store files, and a node that switches plugins midway (either way) keeps
 * every allocation. Two differences of that build are normalised: it prints
 * `"dns": {}` and writes files with mode 0644 (we compare bytes, not modes).
 */
import assert from "node:assert/strict";
import type { ConfigObject } from "../../spec/config.ts";
import type { JsonObject, Verb } from "../../spec/types.ts";
import {
  type CallOptions,
  ensureBundle,
  REFERENCE_DIR,
  referenceView,
  runPlugin,
  sealedOnDisk,
  snapshot,
  withTempDir,
} from "../../../test/host_local.ts";

const REFERENCE = `${REFERENCE_DIR}/host-local`;
const hasReference = await Deno.stat(REFERENCE).then(() => true, () => false);

interface Step {
  verb: Verb;
  opts: CallOptions;
  /** Fields merged into the network config (args, runtimeConfig). */
  extra?: ConfigObject;
}

const add = (id: string, more: Partial<Step> = {}): Step => ({
  verb: "ADD",
  opts: { id },
  ...more,
});
const del = (id: string, ifname = "eth0"): Step => ({ verb: "DEL", opts: { id, ifname } });

/** Dual stack, small enough to wrap and fill: .2-.6 and ::2-::7. */
const STEPS: Step[] = [
  add("a"),
  add("b"),
  add("c"),
  add("c", { opts: { id: "c", ifname: "eth1" } }),
  { verb: "CHECK", opts: { id: "a" } },
  del("b"),
  add("d"),
  add("e"), // IPv4 wraps round to the address b gave back
  add("f"), // IPv4 is full
  del("a"),
  add("g", { opts: { id: "g", args: "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.0.2" } }),
  del("g"),
  del("g"),
  add("h", { extra: { runtimeConfig: { ips: ["fd00::4"] } } }), // taken: the IPv4 address is given back
  add("i", { extra: { args: { cni: { ips: ["10.1.0.2"] } } } }),
  del("zzz"),
  del("c"),
  { verb: "CHECK", opts: { id: "c", ifname: "eth1" } },
  add("j"),
  { verb: "CHECK", opts: { id: "c", ifname: "eth0" } },
];

function config(dataDir: string, step: Step): ConfigObject {
  return {
    cniVersion: "1.0.0",
    name: "net",
    type: "host-local",
    ipam: {
      type: "host-local",
      dataDir,
      ranges: [[{ subnet: "10.1.0.0/29" }], [{ subnet: "fd00::/125" }]],
      routes: [{ dst: "0.0.0.0/0" }, { dst: "fd00:1::/64", gw: "fd00::1" }],
    },
    ...step.extra,
  };
}

/** What one step showed: success or not, the result, and the store after it. */
interface Seen {
  ok: boolean;
  result?: JsonObject;
  store: Record<string, string>;
}

/** Runs every step, each with the plugin `pick(i)` names, on one fresh store. */
async function replay(pick: (i: number) => string): Promise<Seen[]> {
  return await withTempDir(async (dataDir) => {
    const seen: Seen[] = [];
    for (const [i, step] of STEPS.entries()) {
      const run = await runPlugin(pick(i), step.verb, config(dataDir, step), step.opts);
      const result = run.code === 0 ? run.out : undefined;
      if (result && JSON.stringify(result.dns) === "{}") delete result.dns;
      // cnichain's indexes are checked (when sealed) and left out (see store.ts).
      const dir = `${dataDir}/net`;
      const store = referenceView(await snapshot(dir), await sealedOnDisk(dir));
      seen.push({ ok: run.code === 0, result, store });
    }
    return seen;
  });
}

Deno.test({
  name:
    "cnichain and the reference host-local give the same allocations and store files, switched either way",
  ignore: !hasReference,
  fn: async (t) => {
    const ours = await ensureBundle();
    const expected = await replay(() => REFERENCE);
    // The sequence must exercise what it claims to: failures and wrap-around included.
    assert.deepEqual(expected.map((s) => s.ok), [
      true,
      true,
      true,
      true,
      true,
      true,
      true,
      true,
      false,
      true,
      true,
      true,
      true,
      false,
      true,
      true,
      true,
      true,
      true,
      false,
    ]);
    assert.equal(expected[7].store["10.1.0.3"], "e\r\neth0");
    const half = Math.floor(STEPS.length / 2);
    const schedules: [string, (i: number) => string][] = [
      ["cnichain only", () => ours],
      ["reference, then cnichain", (i) => (i < half ? REFERENCE : ours)],
      ["cnichain, then reference", (i) => (i < half ? ours : REFERENCE)],
      ["alternating", (i) => (i % 2 ? REFERENCE : ours)],
    ];
    for (const [name, pick] of schedules) {
      await t.step(name, async () => {
        const got = await replay(pick);
        for (const [i, step] of STEPS.entries()) {
          const what = `step ${i + 1} (${step.verb} ${step.opts.id}${
            step.opts.ifname ? `/${step.opts.ifname}` : ""
          })`;
          assert.equal(got[i].ok, expected[i].ok, `${what} succeeds or fails alike`);
          assert.deepEqual(got[i].result, expected[i].result, `${what} gives the same result`);
          assert.deepEqual(
            got[i].store,
            expected[i].store,
            `${what} leaves the same files, byte for byte`,
          );
        }
      });
    }
  },
});

Deno.test({
  name:
    "cnichain and the reference host-local encode the same result for every version up to 1.0.0",
  ignore: !hasReference,
  fn: async (t) => {
    const ours = await ensureBundle();
    for (const version of ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]) {
      await t.step(version, async () => {
        const results = [];
        for (const bin of [REFERENCE, ours]) {
          results.push(
            await withTempDir(async (dataDir) => {
              const step = add("a");
              const run = await runPlugin(bin, "ADD", {
                ...config(dataDir, step),
                cniVersion: version,
              }, step.opts);
              assert.equal(run.code, 0, JSON.stringify(run.out));
              if (JSON.stringify(run.out?.dns) === "{}") delete run.out!.dns;
              return run.out;
            }),
          );
        }
        assert.deepEqual(results[1], results[0]);
      });
    }
  },
});
