/**
 * The loopback plugin in the kernel: pods in throwaway network namespaces,
 * plugin run as a runtime runs it (see test/netns.ts), checked
 * against the reference plugin's documented behaviour. Run with
 * CNICHAIN_TEST_PLUGINS=reference to check the tests themselves against
 * Debian's reference plugins.
 */
import assert from "node:assert/strict";
import {
  assertCniError,
  assertNoLeak,
  assertOk,
  type CniCall,
  ipIn,
  kernelTest,
  type Lab,
  link,
  ping,
  type Result,
  snapshot,
} from "../../../test/netns.ts";

/** Runtimes call loopback with CNI_IFNAME "lo". */
const LO = { ifname: "lo" };

function loConf(lab: Lab, version: string) {
  return lab.netconf(version, { type: "loopback" }, "kt-lo");
}

kernelTest(
  "loopback: ADD brings lo up in the pod and reports it, DEL takes it down",
  async (lab, v) => {
    const before = await snapshot(lab.host);
    const conf = loConf(lab, v);
    const pod = await lab.addPod();
    assert.ok(!(await link(pod.name, "lo"))?.flags.includes("UP"), "a new netns has lo down");
    const result = assertOk(await lab.cni("ADD", conf, { pod, ...LO }), "ADD") as unknown as Result;
    const lo = await link(pod.name, "lo");
    assert.ok(lo?.flags.includes("UP"), `lo is up in the pod: ${JSON.stringify(lo?.flags)}`);
    assert.ok(await ping(pod.name, "127.0.0.1"), "the pod reaches 127.0.0.1");
    assert.ok(await ping(pod.name, "::1"), "the pod reaches ::1");
    // The reference's result also carries an empty "dns": {}, which the spec says to omit.
    const { dns, ...rest } = result;
    assert.ok(dns === undefined || Object.keys(dns).length === 0, `no dns: ${JSON.stringify(dns)}`);
    assert.deepEqual(rest, {
      cniVersion: v,
      interfaces: [{ name: "lo", mac: "00:00:00:00:00:00", sandbox: pod.path }],
      ips: [{ interface: 0, address: "127.0.0.1/8" }, { interface: 0, address: "::1/128" }],
    });
    assertOk(await lab.cni("DEL", { ...conf, prevResult: result }, { pod, ...LO }), "DEL");
    assert.ok(!(await link(pod.name, "lo"))?.flags.includes("UP"), "DEL sets lo down again");
    await assertNoLeak(lab.host, before);
  },
);

kernelTest("loopback: DEL is repeatable and works once the netns is gone", async (lab, v) => {
  const before = await snapshot(lab.host);
  const conf = loConf(lab, v);
  const pod = await lab.addPod();
  const result = assertOk(await lab.cni("ADD", conf, { pod, ...LO }), "ADD");
  const steps: { what: string; prepare?: () => Promise<void>; conf: object; call: CniCall }[] = [
    { what: "with prevResult", conf: { ...conf, prevResult: result }, call: { pod, ...LO } },
    { what: "again, without prevResult", conf, call: { pod, ...LO } },
    {
      what: "after the netns is deleted",
      prepare: () => lab.deletePod(pod),
      conf,
      call: { pod, ...LO },
    },
    { what: "with an empty CNI_NETNS", conf, call: { pod, ...LO, netns: "" } },
  ];
  for (const { what, prepare, conf, call } of steps) {
    await prepare?.();
    assertOk(await lab.cni("DEL", conf as Record<string, unknown>, call), `DEL ${what}`);
  }
  await assertNoLeak(lab.host, before);
});

kernelTest("loopback: CHECK passes while lo is up and fails once it is down", async (lab, v) => {
  const before = await snapshot(lab.host);
  const conf = loConf(lab, v);
  const pod = await lab.addPod();
  const result = assertOk(await lab.cni("ADD", conf, { pod, ...LO }), "ADD");
  const withPrev = { ...conf, prevResult: result };
  assertOk(await lab.cni("CHECK", withPrev, { pod, ...LO }), "CHECK after ADD");
  await ipIn(pod.name, "link", "set", "lo", "down");
  assertCniError(await lab.cni("CHECK", withPrev, { pod, ...LO }), v, "CHECK with lo down");
  assertOk(await lab.cni("DEL", withPrev, { pod, ...LO }), "DEL");
  await assertNoLeak(lab.host, before);
});
