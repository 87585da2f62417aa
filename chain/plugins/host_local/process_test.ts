/**
 * host-local as separate processes of the bundled program, as runtimes run
 * it: many at once on one store, killed in the middle of their work, and
 * invoked by its multi-call name.
 */
import assert from "node:assert/strict";
import type { ConfigObject } from "../../spec/config.ts";
import type { JsonObject } from "../../spec/types.ts";
import { parseIp } from "../../ip.ts";
import { SEAL_FILE } from "./store.ts";
import {
  ensureBundle,
  finish,
  isCnichainFile,
  type ProcessRun,
  REFERENCE_DIR,
  referenceView,
  runPlugin,
  sealedOnDisk,
  seededRandom,
  snapshot,
  spawnPlugin,
  withTempDir,
} from "../../../test/host_local.ts";
import { multiCallDir } from "../../../test/helpers.ts";

const hasReference = await Deno.stat(`${REFERENCE_DIR}/host-local`).then(() => true, () => false);

function conf(
  dataDir: string,
  ipam: ConfigObject = { ranges: [[{ subnet: "10.1.0.0/24" }]] },
): ConfigObject {
  return {
    cniVersion: "1.0.0",
    name: "net",
    type: "host-local",
    ipam: { type: "host-local", dataDir, ...ipam },
  };
}

const addressOf = (run: ProcessRun) =>
  ((run.out?.ips as JsonObject[])[0].address as string).split("/")[0];

interface StoreView {
  /** address -> owner text */
  allocations: Map<string, string>;
  temps: string[];
}

/**
 * Reads a store and checks that every file in it is one a correct store may
 * hold: the lock, a cursor holding an address, an allocation file named by an
 * address and holding `<id>\r\n<ifname>` in full, or (only when `temps` is
 * allowed) the temporary file of a writer that was killed.
 */
async function readStore(dir: string, allowTemps: boolean): Promise<StoreView> {
  const view: StoreView = { allocations: new Map(), temps: [] };
  const files = referenceView(await snapshot(dir), await sealedOnDisk(dir));
  for (const [name, text] of Object.entries(files)) {
    if (name === "lock") continue;
    if (name.startsWith("last_reserved_ip.")) {
      assert.ok(parseIp(text), `cursor ${name} holds an address, not ${JSON.stringify(text)}`);
    } else if (name.startsWith(".") && allowTemps) {
      view.temps.push(name);
    } else {
      assert.ok(parseIp(name), `unexpected file ${JSON.stringify(name)}`);
      assert.match(text, /^[a-z0-9-]+\r\neth0$/, `allocation ${name} is whole`);
      view.allocations.set(name, text);
    }
  }
  return view;
}

Deno.test("64 processes allocating from one /24 at once get 64 distinct addresses; 64 DELs empty the store", async () => {
  const bin = await ensureBundle();
  await withTempDir(async (dataDir) => {
    const ids = Array.from({ length: 64 }, (_, i) => `c${i}`);
    const adds = await Promise.all(
      ids.map((id) => spawnPlugin(bin, "ADD", conf(dataDir), { id })).map(finish),
    );
    adds.forEach((run, i) =>
      assert.equal(run.code, 0, `ADD ${ids[i]}: ${JSON.stringify(run.out)} ${run.stderr}`)
    );
    const got = adds.map(addressOf);
    assert.equal(new Set(got).size, 64, "no address handed out twice");
    const store = await readStore(`${dataDir}/net`, false);
    assert.deepEqual(
      [...store.allocations].sort(),
      got.map((address, i) => [address, `${ids[i]}\r\neth0`]).sort(),
      "every result is on disk with its owner, and nothing else is",
    );
    // Round-robin from an empty store under one lock hands out exactly .2 to .65.
    assert.deepEqual(
      got.map((a) => Number(a.split(".")[3])).sort((a, b) => a - b),
      ids.map((_, i) => i + 2),
    );
    const dels = await Promise.all(
      ids.map((id) => spawnPlugin(bin, "DEL", conf(dataDir), { id })).map(finish),
    );
    dels.forEach((run, i) =>
      assert.equal(run.code, 0, `DEL ${ids[i]}: ${JSON.stringify(run.out)}`)
    );
    const left = await snapshot(`${dataDir}/net`);
    assert.deepEqual(Object.keys(referenceView(left)), ["last_reserved_ip.0", "lock"]);
    assert.deepEqual(Object.keys(left).filter(isCnichainFile), [SEAL_FILE], "no index left");
  });
});

Deno.test("processes racing for a range too small for them all: each address once, the rest a clear error", async () => {
  const bin = await ensureBundle();
  await withTempDir(async (dataDir) => {
    // .10 to .49: 40 usable addresses for 64 callers.
    const small = conf(dataDir, {
      ranges: [[{ subnet: "10.1.0.0/24", rangeStart: "10.1.0.10", rangeEnd: "10.1.0.49" }]],
    });
    const ids = Array.from({ length: 64 }, (_, i) => `c${i}`);
    const runs = await Promise.all(
      ids.map((id) => spawnPlugin(bin, "ADD", small, { id })).map(finish),
    );
    const won = runs.filter((r) => r.code === 0);
    const lost = runs.filter((r) => r.code !== 0);
    assert.equal(won.length, 40);
    assert.equal(new Set(won.map(addressOf)).size, 40);
    for (const run of lost) {
      assert.equal(
        run.out?.msg,
        "range set ipam.ranges[0] (10.1.0.10-10.1.0.49) is full: 40 usable addresses, all allocated",
      );
    }
    assert.equal(
      (await readStore(`${dataDir}/net`, false)).allocations.size,
      40,
      "no partial state from the losers",
    );
  });
});

Deno.test({
  name: "cnichain and the reference plugin allocating at once share the store's flock",
  ignore: !hasReference,
  fn: async () => {
    const bin = await ensureBundle();
    await withTempDir(async (dataDir) => {
      const ids = Array.from({ length: 64 }, (_, i) => `c${i}`);
      const children = ids.map((id, i) => {
        const config = { ...conf(dataDir), cniVersion: "1.0.0" };
        return spawnPlugin(i % 2 ? `${REFERENCE_DIR}/host-local` : bin, "ADD", config, { id });
      });
      const runs = await Promise.all(children.map(finish));
      runs.forEach((run, i) =>
        assert.equal(run.code, 0, `ADD ${ids[i]}: ${JSON.stringify(run.out)}`)
      );
      assert.equal(new Set(runs.map(addressOf)).size, 64);
      assert.equal((await readStore(`${dataDir}/net`, false)).allocations.size, 64);
    });
  },
});

Deno.test("SIGKILL in the middle of many ADDs and DELs leaves a consistent store of valid allocations", async () => {
  const bin = await ensureBundle();
  const { next, int } = seededRandom("host-local kill");
  await withTempDir(async (dataDir) => {
    // Sixteen range sets, so that one ADD makes 32 changes and a kill often lands among them.
    const SETS = 16;
    const ranges = Array.from({ length: SETS }, (_, j) => [{ subnet: `10.1.${j}.0/26` }]);
    const config = conf(dataDir, { ranges });
    const dir = `${dataDir}/net`;
    const held = (store: StoreView, id: string) =>
      [...store.allocations].filter(([, text]) => text === `${id}\r\neth0`).map(([name]) => name)
        .sort();
    // How long a call takes now (other test files share the CPU), learnt from completed calls.
    let callMs = 0;
    for (const id of ["warm1", "warm2", "warm3"]) {
      const began = performance.now();
      assert.equal((await runPlugin(bin, "ADD", config, { id })).code, 0);
      callMs = Math.max(callMs, performance.now() - began);
    }
    const attempted = new Set(["warm1", "warm2", "warm3"]);
    /** What each id must hold by now, when its last call completed: its addresses, or none. */
    const known = new Map<string, string[]>();
    const killed: string[] = [];
    for (let i = 0; i < 40; i++) {
      const del = i % 4 === 3;
      const id = del ? [...attempted][int(attempted.size)] : `k${i}`;
      attempted.add(id);
      const began = performance.now();
      const child = spawnPlugin(bin, del ? "DEL" : "ADD", config, { id });
      // Delays spread over one call's duration: some kills hit start-up, many the work, some miss.
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // Already gone.
        }
      }, callMs * (0.3 + 1.0 * next()));
      const run = await finish(child);
      clearTimeout(timer);
      if (run.code === 0) {
        if (!del) callMs = 0.7 * callMs + 0.3 * (performance.now() - began);
        const ips = del
          ? []
          : (run.out?.ips as JsonObject[]).map((ip) => (ip.address as string).split("/")[0]);
        known.set(id, ips.sort());
      } else {
        assert.equal(run.signal, "SIGKILL", `${id}: ${JSON.stringify(run.out)} ${run.stderr}`);
        if (!del) killed.push(id);
        known.delete(id);
      }
    }
    const store = await readStore(dir, true);
    const partial = killed.filter((id) =>
      held(store, id).length > 0 && held(store, id).length < SETS
    );
    console.log(
      `kill test: ${killed.length} of 30 ADDs killed, ${partial.length} of them part-way through ` +
        `their ${SETS} range sets; ${store.temps.length} temporary files left behind`,
    );
    for (const text of store.allocations.values()) {
      assert.ok(attempted.has(text.split("\r\n")[0]), `${JSON.stringify(text)} was never added`);
    }
    for (const id of attempted) {
      const subnets = held(store, id).map((a) => a.split(".").slice(0, 3).join("."));
      assert.equal(
        new Set(subnets).size,
        subnets.length,
        `${id} holds one address per range set at most`,
      );
    }
    for (const [id, addresses] of known) {
      assert.deepEqual(held(store, id), addresses, `${id} holds what its last completed call left`);
    }
    // The next callers work from what is left: fresh addresses, and the leftovers are swept.
    for (const id of ["f1", "f2", "f3"]) {
      const run = await runPlugin(bin, "ADD", config, { id });
      assert.equal(run.code, 0, JSON.stringify(run.out));
      for (const ip of run.out?.ips as JsonObject[]) {
        const address = (ip.address as string).split("/")[0];
        assert.ok(!store.allocations.has(address), `${address} was handed out twice`);
      }
    }
    assert.deepEqual(
      (await readStore(dir, true)).temps,
      [],
      "temporary files are removed under the lock",
    );
    await Promise.all([...attempted, "f1", "f2", "f3"].map(async (id) => {
      assert.equal((await runPlugin(bin, "DEL", config, { id })).code, 0);
    }));
    const left = Object.keys(referenceView(await snapshot(dir)));
    assert.deepEqual(left.filter((name) => !name.startsWith("last_reserved_ip.")), ["lock"]);
  });
});

Deno.test("the program linked as host-local or static acts as that plugin for any config type", async (t) => {
  await ensureBundle();
  const links = await multiCallDir();
  await withTempDir(async (tmp) => {
    const delegated = {
      cniVersion: "1.0.0",
      name: "net",
      type: "bridge",
      ipam: { type: "host-local", dataDir: `${tmp}/data`, subnet: "10.1.0.0/24" },
    };
    await t.step("host-local allocates from the bridge's ipam section", async () => {
      const run = await runPlugin(`${links}/host-local`, "ADD", delegated, { id: "c1" });
      assert.equal(run.code, 0, JSON.stringify(run.out));
      assert.deepEqual(run.out, {
        cniVersion: "1.0.0",
        ips: [{ address: "10.1.0.2/24", gateway: "10.1.0.1" }],
      });
      assert.equal(await Deno.readTextFile(`${tmp}/data/net/10.1.0.2`), "c1\r\neth0");
    });
    await t.step("static answers from its config", async () => {
      const config = {
        ...delegated,
        ipam: { type: "static", addresses: [{ address: "10.9.0.5/24" }] },
      };
      const run = await runPlugin(`${links}/static`, "ADD", config, { id: "c1" });
      assert.deepEqual(run.out, { cniVersion: "1.0.0", ips: [{ address: "10.9.0.5/24" }] });
    });
    await t.step("VERSION", async () => {
      const run = await runPlugin(`${links}/host-local`, "VERSION", { cniVersion: "1.0.0" });
      assert.equal(run.out?.cniVersion, "1.0.0");
    });
  });
});
