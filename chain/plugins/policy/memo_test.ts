import assert from "node:assert/strict";
import { memorySystem } from "../../system_record.ts";
import { type Identity, type Plan, policyEngine } from "../../../policy-wasm/host.ts";
import { EngineMemo, memoDir } from "./memo.ts";

const POLICY = {
  name: "web",
  namespace: "shop",
  podSelector: { matchLabels: { app: "web" } },
  policyTypes: ["Ingress"],
  ingress: [{ from: [{ podSelector: { matchLabels: { app: "client" } } }] }],
};

function pod(labels: Record<string, string>, more: Partial<Identity> = {}): Identity {
  return {
    namespace: "shop",
    name: "p",
    labels,
    namespaceLabels: { "kubernetes.io/metadata.name": "shop" },
    addresses: ["10.1.0.2"],
    ...more,
  };
}

Deno.test("the engine memo answers only for the same engine, policies and labels", async (t) => {
  const system = memorySystem();
  const memo = new EngineMemo(system.files, "/state");
  const web = pod({ app: "web", tier: "front" });
  const plan = policyEngine().plan([POLICY], web);
  await t.step("nothing is known at first", () => {
    assert.equal(memo.valid([POLICY]), false);
    assert.equal(memo.plan([POLICY], web), undefined);
  });
  await memo.remember([POLICY], web, plan);
  await t.step("the same policies (another copy) are valid, the plan is the engine's", () => {
    assert.equal(memo.valid(structuredClone([POLICY])), true);
    assert.deepEqual(memo.plan(structuredClone([POLICY]), web), plan);
  });
  await t.step("a pod like it: labels in another order, another name and address", () => {
    const like = pod({ tier: "front", app: "web" }, { name: "q", addresses: ["10.1.0.9"] });
    assert.deepEqual(memo.plan([POLICY], like), plan);
    assert.deepEqual(policyEngine().plan([POLICY], like), plan, "what the engine says too");
  });
  await t.step("other labels, namespace or policies: not known", () => {
    assert.equal(memo.plan([POLICY], pod({ app: "web" })), undefined);
    assert.equal(
      memo.plan([POLICY], pod({ app: "web", tier: "front" }, { namespace: "x" })),
      undefined,
    );
    const other = { ...POLICY, name: "web2" };
    assert.equal(memo.valid([other]), false);
    assert.equal(memo.plan([other], web), undefined);
  });
  await t.step("an entry that holds another key is not believed", async () => {
    const dir = memoDir("/state");
    for (const name of await system.files.list(dir)) {
      const entry = JSON.parse(new TextDecoder().decode(await system.files.read(`${dir}/${name}`)));
      entry.key = `${entry.key.slice(0, -1)},"another"]`;
      await system.files.writeAtomic(`${dir}/${name}`, JSON.stringify(entry));
    }
    assert.equal(memo.valid([POLICY]), false);
    assert.equal(memo.plan([POLICY], web), undefined);
  });
});

Deno.test("the engine memo keeps no large policy lists and stays small", async () => {
  const system = memorySystem();
  const memo = new EngineMemo(system.files, "/state");
  const big = Array.from({ length: 200 }, (_, i) => ({ ...POLICY, name: `p${i}` }));
  const plan: Plan = policyEngine().plan(big, pod({ app: "web" }));
  await memo.remember(big, pod({ app: "web" }), plan);
  assert.deepEqual(await system.files.list(memoDir("/state")), [], "over 32 KiB of policies");
  for (let i = 0; i < 300; i++) {
    const p = pod({ app: `a${i}` });
    await memo.remember([POLICY], p, policyEngine().plan([POLICY], p));
  }
  const left = (await system.files.list(memoDir("/state"))).length;
  assert.ok(left <= 257, `${left} entries`);
  assert.ok(memo.valid([POLICY]));
});
