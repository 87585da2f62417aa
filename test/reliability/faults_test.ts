/**
 * Fault injection in CI size: SIGKILLed ADDs and DELs of the full chain,
 * recovered by DEL and GC, leave nothing behind (see faults.ts; the soak
 * runner, soak.ts, runs it at full size).
 */
import assert from "node:assert/strict";
import { runProgram } from "../helpers.ts";
import { IS_ROOT, MODE, nftRuleset, withLab } from "../netns.ts";
import { attachmentTag } from "../../chain/nft_state.ts";
import { shortHash } from "../../chain/hash.ts";
import { runFaults } from "./faults.ts";
import { ChainNet, NETWORK, type PodSlot, policyChains } from "./faults_harness.ts";

Deno.test({
  name: "SIGKILLed ADDs and DELs of the full chain, then DEL and GC, leave nothing behind",
  ignore: !IS_ROOT || MODE !== "cnichain",
  fn: async () => {
    const fig = await runFaults({ rounds: 40, pods: 5 });
    console.log(fig.notes.join("\n"));
    assert.equal(fig.leaks, 0);
    assert.ok(fig.crashes >= 20, `at least half the rounds crash the plugin (${fig.crashes})`);
    assert.ok(fig.midOperation >= 4, `kills land mid-operation (${fig.midOperation})`);
  },
});

Deno.test({
  name: "temporary state files a killed writer left are swept by the next DEL and GC",
  ignore: !IS_ROOT || MODE !== "cnichain",
  fn: async () => {
    await withLab(async (lab) => {
      const net = new ChainNet(lab, { subnet: "10.94.0.0/24" });
      const [a, b, gone] = await net.addSlots(3);
      await net.warmUp(a);
      for (const s of [a, b]) assert.equal((await net.add(s)).code, 0);
      // What a writer killed between writing its temporary file and renaming it leaves.
      const plant = async (dir: string, name: string) => {
        await Deno.mkdir(`${lab.stateDir}/${dir}`, { recursive: true });
        await Deno.writeTextFile(`${lab.stateDir}/${dir}/.${name}.tmp-99999-1f`, "{}");
      };
      const record = (s: PodSlot) => shortHash(attachmentTag(NETWORK, s.id, "eth0"));
      const result = await Deno.readTextFile(`${lab.stateDir}/results/rel-${a.id}-eth0`);
      await plant("results", `rel-${a.id}-eth0`);
      await plant("nft/masquerade", record(a));
      await plant("nft/portmap", record(gone));
      await plant("policy/pods", record(a));
      await plant("policy/engine", "e2ed4dcc"); // an engine memo: nobody's, and b stays
      assert.equal((await net.del(a)).code, 0);
      await net.assertState([b], "after the DEL of a");
      // An ADD killed while saving its result, whose DEL never comes: GC's to collect.
      await Deno.writeTextFile(
        `${lab.stateDir}/results/.rel-${gone.id}-eth0.tmp-99999-2f`,
        result.replaceAll(a.id, gone.id),
      );
      await plant("results", `rel-${gone.id}-eth0`);
      await plant("nft/masquerade", record(gone));
      await plant("policy/engine", "6115ad9e");
      assert.equal((await net.gc([b])).code, 0);
      await net.assertState([b], "after a GC keeping b");
      assert.equal((await net.del(b)).code, 0);
      await net.assertState([], "after the DEL of b: the table is retired too");
    });
  },
});

Deno.test({
  name: "GC leaves the result copy an ADD is still saving, and a valid attachment's to its DEL",
  ignore: !IS_ROOT || MODE !== "cnichain",
  fn: async () => {
    await withLab(async (lab) => {
      const net = new ChainNet(lab, { subnet: "10.93.0.0/24" });
      const [b, gone] = await net.addSlots(2);
      await net.warmUp(b);
      assert.equal((await net.add(b)).code, 0);
      const results = `${lab.stateDir}/results`;
      // An ADD of `gone` half-way through writing its copy: its writer (this test) still runs.
      const saving = `${results}/.rel-${gone.id}-eth0.tmp-${Deno.pid}-3f`;
      await Deno.writeTextFile(saving, '{"cniVersion":"1.1.0","networkNa');
      // A killed ADD's copy of b, which the runtime still lists: b's DEL clears it.
      const killed = `${results}/.rel-${b.id}-eth0.tmp-99999-4f`;
      await Deno.writeTextFile(killed, "{}");
      assert.equal((await net.gc([b])).code, 0);
      for (const path of [saving, killed]) {
        assert.ok(await Deno.stat(path).then(() => true, () => false), `${path} is kept`);
      }
      await Deno.remove(saving);
      assert.equal((await net.del(b)).code, 0);
      await net.assertState([], "after the DEL of b");
    });
  },
});

Deno.test({
  name:
    "a DEL killed after the last record went, before the table was retired: the retried DEL retires it",
  ignore: !IS_ROOT || MODE !== "cnichain",
  fn: async () => {
    await withLab(async (lab) => {
      const net = new ChainNet(lab, { subnet: "10.95.0.0/24" });
      const [a] = await net.addSlots(1);
      await net.warmUp(a);
      assert.equal((await net.add(a)).code, 0);
      // Where the first DEL died: masquerade's and policy's elements, the pod's policy chains and
      // both records gone, their sets and chains still there.
      const sets = (await nftRuleset(lab.host)).flatMap((o) => {
        const body = (o.set ?? o.map) as { name: string; table: string } | undefined;
        return body?.table === "cnichain" && /^(masq4|nomasq4|pol_|s[0-9a-f]+_)/.test(body.name)
          ? [`flush ${o.set ? "set" : "map"} inet cnichain ${body.name}`]
          : [];
      });
      const chains = policyChains(a.id).map((c) => `delete chain inet cnichain ${c}`);
      for (const command of [...sets, ...chains]) {
        const out = await runProgram("/usr/sbin/ip", {
          args: ["netns", "exec", lab.host, "/usr/sbin/nft", command],
        });
        assert.equal(out.code, 0, `${command}: ${out.stderr}`);
      }
      const record = shortHash(attachmentTag(NETWORK, a.id, "eth0"));
      await Deno.remove(`${lab.stateDir}/nft/masquerade/${record}`);
      await Deno.remove(`${lab.stateDir}/policy/pods/${record}`);
      assert.equal((await net.del(a)).code, 0);
      await net.assertState([], "after the retried DEL");
    });
  },
});

Deno.test({
  name: "an ADD killed between the policy batch and its record: GC removes the pod's rules",
  ignore: !IS_ROOT || MODE !== "cnichain",
  fn: async () => {
    await withLab(async (lab) => {
      const net = new ChainNet(lab, { subnet: "10.96.0.0/24" });
      const [a, b] = await net.addSlots(2);
      await net.warmUp(a);
      for (const s of [a, b]) assert.equal((await net.add(s)).code, 0);
      // Where the ADD died: the policy step's elements and chains in, its record not yet written
      // (nor the chain's result, which comes last).
      const record = shortHash(attachmentTag(NETWORK, a.id, "eth0"));
      await Deno.remove(`${lab.stateDir}/policy/pods/${record}`);
      await Deno.remove(`${lab.stateDir}/results/rel-${a.id}-eth0`);
      assert.equal((await net.gc([b])).code, 0);
      await net.assertState([b], "after a GC keeping b", undefined, { linked: [a] });
      for (const s of [a, b]) assert.equal((await net.del(s)).code, 0);
      await net.assertState([], "after the DELs");
    });
  },
});
