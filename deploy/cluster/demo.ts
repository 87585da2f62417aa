/**
 * `deno task cluster-demo`: builds the three-node cluster of ./cluster.ts,
 * attaches two pods per node with cnichain, checks the flows of
 * ./scenario.ts, deletes every pod, checks that no node kept anything of
 * them, and removes the whole world. Exits 1 when any expectation fails (or
 * without root, which network namespaces need).
 */
import {
  checkFlows,
  Cluster,
  CLUSTER_CIDR,
  describeFlow,
  FLOWS,
  OUTSIDE_IP,
  PODS,
  POLICIES,
  POLICY_SUMMARY,
  UNDERLAY_CIDR,
} from "./mod.ts";
import { cleanUpOnSignal } from "../../test/netns.ts";

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function ms(values: number[]): string {
  const s = [...values].sort((a, b) => a - b);
  return `median ${median(s).toFixed(0)} ms (min ${s[0].toFixed(0)}, max ${
    s[s.length - 1].toFixed(0)
  }, ${s.length} runs)`;
}

function showTopology(cluster: Cluster): void {
  console.log(`cluster ${cluster.prefix}: ${cluster.nodes.length} nodes, pods in ${CLUSTER_CIDR}`);
  console.log(`  underlay  netns ${cluster.underlay}, bridge br0 ${UNDERLAY_CIDR}`);
  console.log(`            outside server ${OUTSIDE_IP}:80 (not in the cluster CIDR)`);
  for (const n of cluster.nodes) {
    const routes = cluster.nodes.filter((o) => o !== n)
      .map((o) => `${o.podCidr} via ${o.underlayIp}`).join(", ");
    console.log(`  node ${n.index}    netns ${n.netns}, eth0 ${n.underlayIp}, pods ${n.podCidr}`);
    console.log(`            routes ${routes}`);
  }
  console.log(`  policy    ${POLICY_SUMMARY} (one policyFile for all nodes)`);
}

async function demo(cluster: Cluster): Promise<boolean> {
  showTopology(cluster);
  const before = await cluster.snapshots();
  await cluster.serveOutside();

  console.log("\nADD (dist/cnichain in the node's netns, CNI env only)");
  const adds: number[] = [];
  for (const spec of PODS) {
    const { value: pod, ms } = await cluster.addPod(spec);
    adds.push(ms);
    console.log(
      `  node ${pod.node}  ${pod.namespace}/${pod.name.padEnd(9)} ${pod.ip.padEnd(12)} ${
        JSON.stringify(pod.labels)
      }  ${ms.toFixed(0)} ms`,
    );
  }

  console.log("\nflows (TCP connections; blocked = no answer within 1 s)");
  const started = performance.now();
  const results = await checkFlows(cluster, FLOWS);
  for (const r of results) {
    console.log(`  ${describeFlow(cluster, r)}`);
    console.log(`       ${r.flow.why}`);
  }
  console.log(`  (${(performance.now() - started).toFixed(0)} ms for all flows, in parallel)`);

  console.log("\nDEL");
  const dels: number[] = [];
  for (const pod of [...cluster.pods]) dels.push((await cluster.delPod(pod)).ms);
  let clean = true;
  try {
    await cluster.assertNoPodLeft(before);
    console.log(
      `  ${dels.length} pods deleted; no node kept a veth, address, route, nftables element or IP allocation of them`,
    );
  } catch (err) {
    clean = false;
    console.log(`  FAIL ${err instanceof Error ? err.message : err}`);
  }

  console.log(`\ntimings  ADD ${ms(adds)}`);
  console.log(`         DEL ${ms(dels)}`);
  const failed = results.filter((r) => !r.ok).length;
  console.log(
    `\n${results.length - failed}/${results.length} flows as expected${
      clean ? "" : "; pods left something behind"
    }`,
  );
  return failed === 0 && clean;
}

if (import.meta.main) {
  if (Deno.uid() !== 0) {
    console.error("cluster-demo needs root (it makes network namespaces, links and nftables)");
    Deno.exit(1);
  }
  const started = performance.now();
  let ok = false;
  let cluster: Cluster | undefined;
  const creating = Cluster.create({ policies: POLICIES });
  // Ctrl-C in the middle (also while the nodes are being built): remove the whole world, then exit.
  cleanUpOnSignal(async () => {
    const made = cluster ?? await creating.catch(() => undefined);
    await made?.destroy();
    if (made) console.log(`removed everything (${made.prefix}-* netns, ${made.dir})`);
  });
  try {
    cluster = await creating;
    ok = await demo(cluster);
  } catch (err) {
    console.error(`cluster-demo: ${err instanceof Error ? err.message : err}`);
  } finally {
    try {
      await cluster?.destroy();
      console.log(
        `removed everything (${cluster?.prefix ?? "ccl"}-* netns, temp dir) -- ${
          ((performance.now() - started) / 1000).toFixed(1)
        } s in all`,
      );
    } catch (err) {
      ok = false;
      console.error(`cluster-demo: ${err instanceof Error ? err.message : err}`);
    }
  }
  Deno.exit(ok ? 0 : 1);
}
