/** The policy step's `kubernetes` block and the API objects it reads (no root, no server). */
import assert from "node:assert/strict";
import { readPolicyConfig } from "./mod.ts";
import { labelsOf, namespaceLabels, podAddresses, policyOf } from "./kube_pod.ts";
import { namespace, networkPolicy, pod } from "../../../test/fake_kube.ts";
import { runPlugin } from "../../../test/helpers.ts";
import { policyEngine } from "../../../policy-wasm/host.ts";

Deno.test("readPolicyConfig: kubernetes block, defaults and every bad field named", async (t) => {
  await t.step("defaults", () => {
    const { cfg, problems } = readPolicyConfig({ kubernetes: { kubeconfig: "/etc/k.json" } }, "");
    assert.deepEqual(problems, []);
    assert.deepEqual(cfg.kubernetes, {
      kubeconfig: "/etc/k.json",
      timeoutMs: 2000,
      apiUnavailable: "deny",
    });
  });
  const cases: [unknown, string, RegExp][] = [
    ["yes", "kubernetes", /must be an object/],
    [{}, "kubernetes.kubeconfig", /is required/],
    [{ kubeconfig: "k.json" }, "kubernetes.kubeconfig", /absolute/],
    [{ kubeconfig: "/k", timeoutMs: 0 }, "kubernetes.timeoutMs", /1 to 60000/],
    [{ kubeconfig: "/k", timeoutMs: 2.5 }, "kubernetes.timeoutMs", /whole number/],
    [
      { kubeconfig: "/k", apiUnavailable: "maybe" },
      "kubernetes.apiUnavailable",
      /"deny" or "allow"/,
    ],
    [{ kubeconfig: "/k", server: "x" }, "kubernetes.server", /is not a field/],
  ];
  for (const [kubernetes, path, message] of cases) {
    await t.step(`${JSON.stringify(kubernetes)}: ${path}`, () => {
      const { problems } = readPolicyConfig({ kubernetes }, "plugins[1].");
      assert.equal(problems.length, 1, JSON.stringify(problems));
      assert.equal(problems[0].path, `plugins[1].${path}`);
      assert.match(problems[0].message, message);
    });
  }
});

Deno.test("policy ADD with a bad kubernetes block: code 7 naming the field, before anything", async () => {
  const out = await runPlugin("ADD", {
    cniVersion: "1.1.0",
    name: "n",
    type: "policy",
    kubernetes: { kubeconfig: "/k.json", apiUnavailable: "sometimes" },
    prevResult: { cniVersion: "1.1.0", ips: [{ address: "10.0.0.2/24" }] },
  });
  assert.equal(out.json?.code, 7, out.stdout);
  assert.match(String(out.json?.msg), /kubernetes\.apiUnavailable/);
});

Deno.test("labels, addresses and policies from API objects", () => {
  const p = pod("a", "web", { app: "web" }, { ips: ["10.1.0.2", "fd00::2"] });
  assert.deepEqual(labelsOf(p), { app: "web" });
  assert.deepEqual(podAddresses(p), ["10.1.0.2", "fd00::2"]);
  assert.deepEqual(podAddresses(pod("a", "new", {})), []);
  // Addresses go into nftables batches: anything else is dropped, the rest made canonical.
  const hostile = pod("a", "h", {}, {
    ips: ["10.1.0.3 } ; flush ruleset ; add element inet cnichain x { 10.1.0.4", "not-an-ip"],
  });
  assert.deepEqual(podAddresses(hostile), []);
  assert.deepEqual(podAddresses(pod("a", "v6", {}, { ips: ["FD00:0::3", "10.1.0.3"] })), [
    "fd00::3",
    "10.1.0.3",
  ]);
  assert.deepEqual(namespaceLabels("b", namespace("b", { team: "ops" })), {
    "kubernetes.io/metadata.name": "b",
    team: "ops",
  });
  assert.deepEqual(namespaceLabels("c", undefined), { "kubernetes.io/metadata.name": "c" });
  const np = networkPolicy("a", "p", { podSelector: {}, policyTypes: ["Ingress"] });
  const reduced = policyOf({ ...np, status: {} });
  assert.deepEqual(reduced.metadata, { name: "p", namespace: "a" });
  assert.deepEqual(policyEngine().validate([reduced]), []);
});
