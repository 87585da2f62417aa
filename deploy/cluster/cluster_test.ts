/**
 * The three-node cluster end to end (./cluster.ts, ./scenario.ts): cnichain
 * attaches two pods per node, every flow of the scenario does what it must
 * (pod to pod across nodes keeps the pod's address, pod to outside takes the
 * node's, the ipBlock policy on node 2 lets node 1 in and keeps node 3 out),
 * DEL leaves nothing of the pods on any node, and teardown removes every
 * namespace and the temp dir. Needs root and the bundle (`deno task bundle`).
 */
import assert from "node:assert/strict";
import { IS_ROOT, netnsNames } from "../../test/netns.ts";
import { checkFlows, Cluster, describeFlow, PODS, POLICIES } from "./mod.ts";

if (!IS_ROOT) {
  console.warn(
    "skipping deploy/cluster/cluster_test.ts: the cluster test needs root (network namespaces, links, nftables)",
  );
}

Deno.test({
  name:
    "cluster: pods on three nodes reach each other unmasqueraded, reach the outside masqueraded, and an ipBlock policy holds across nodes",
  ignore: !IS_ROOT,
  async fn() {
    const cluster = await Cluster.create({ policies: POLICIES });
    try {
      const before = await cluster.snapshots();
      await cluster.serveOutside();
      for (const spec of PODS) {
        const { value: pod } = await cluster.addPod(spec);
        assert.match(
          pod.ip,
          new RegExp(`^10\\.244\\.${spec.node}\\.\\d+$`),
          `${pod.name}'s address`,
        );
      }

      const wrong = (await checkFlows(cluster)).filter((r) => !r.ok);
      assert.deepEqual(
        wrong.map((r) => `${describeFlow(cluster, r)} (${r.flow.why})`),
        [],
        "flows that differ from the expectation",
      );

      for (const pod of [...cluster.pods]) await cluster.delPod(pod);
      await cluster.assertNoPodLeft(before);
    } catch (err) {
      await cluster.destroy().catch((cleanup) => console.error(String(cleanup)));
      throw err;
    }
    await cluster.destroy();
    const left = (await netnsNames()).filter((n) => n.startsWith(`${cluster.prefix}-`));
    assert.deepEqual(left, [], "no netns of the cluster is left");
    await assert.rejects(Deno.stat(cluster.dir), Deno.errors.NotFound, "the temp dir is gone");
  },
});
