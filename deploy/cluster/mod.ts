/**
 * A multi-node cluster on one machine: namespaces for an underlay and three
 * nodes, cnichain attaching pods on each, and the flows that show routing,
 * masquerade and policy across nodes.
 *
 * @example
 * ```ts
 * import { checkFlows, PODS, POLICIES, withCluster } from "./mod.ts";
 *
 * await withCluster({ policies: POLICIES }, async (cluster) => {
 *   await cluster.serveOutside();
 *   for (const spec of PODS) await cluster.addPod(spec);
 *   console.log(await checkFlows(cluster));
 * });
 * ```
 */
export * from "./cluster.ts";
export * from "./scenario.ts";
