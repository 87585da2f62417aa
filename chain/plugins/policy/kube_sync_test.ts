/** What `policy sync --kubernetes` makes of NetworkPolicy objects the engine cannot take whole. */
import assert from "node:assert/strict";
import { policyEngine } from "../../../policy-wasm/host.ts";
import { networkPolicy } from "../../../test/fake_kube.ts";
import { policyOf } from "./kube_pod.ts";
import { withoutNamedPorts } from "./kube_sync.ts";

Deno.test("a NetworkPolicy with named ports still isolates its pods (never fails open)", () => {
  const np = policyOf(networkPolicy("a", "web", {
    podSelector: { matchLabels: { app: "web" } },
    ingress: [
      { ports: [{ port: "http" }] },
      { ports: [{ port: "metrics" }, { protocol: "TCP", port: 9090 }] },
    ],
    egress: [{ ports: [{ port: "dns", protocol: "UDP" }] }],
  }));
  assert.notDeepEqual(policyEngine().validate([np]), []);
  const strict = withoutNamedPorts(np)!;
  assert.deepEqual(policyEngine().validate([strict]), []);
  const spec = strict.spec as Record<string, unknown>;
  assert.deepEqual(spec.ingress, [{ ports: [{ protocol: "TCP", port: 9090 }] }]);
  assert.deepEqual(spec.egress, []);
  assert.deepEqual(spec.policyTypes, ["Ingress", "Egress"]);

  const web = {
    namespace: "a",
    name: "w",
    labels: { app: "web" },
    namespaceLabels: { "kubernetes.io/metadata.name": "a" },
    addresses: ["10.0.0.2"],
  };
  const outside = { address: "10.9.0.9" };
  const verdict = (from: unknown, to: unknown, port: number, proto = "TCP") =>
    policyEngine().verdict([strict], from as never, to as never, port, proto).verdict;
  assert.equal(verdict(outside, web, 9090), "allow");
  assert.equal(verdict(outside, web, 80), "deny");
  assert.equal(verdict(web, outside, 53, "UDP"), "deny");
  assert.equal(
    withoutNamedPorts(policyOf(networkPolicy("a", "n", { podSelector: {} }))),
    undefined,
  );
});
