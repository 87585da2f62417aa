/**
 * The ptp plugin in the kernel: pods in throwaway network namespaces, plugin
 * run as a runtime runs it (see test/netns.ts), checked against the
 * reference plugin's documented behaviour. Run with
 * CNICHAIN_TEST_PLUGINS=reference to check the tests themselves against
 * Debian's reference plugins.
 */
import assert from "node:assert/strict";
import {
  addresses,
  assertCniError,
  assertNoLeak,
  assertOk,
  bare,
  canObserveMasquerade,
  HOST_VETH,
  type Ignore,
  ipIn,
  IPTABLES_NFT_BUILTINS,
  kernelTest,
  type Lab,
  link,
  masqueradeRules,
  MODE,
  ping,
  type Result,
  routes,
  snapshot,
  sysctl,
} from "../../../test/netns.ts";

const GATEWAY = "10.23.0.1";

/** What ipMasq's rules may leave behind in reference mode: see IPTABLES_NFT_BUILTINS. */
const IPTABLES_LEFTOVERS: Ignore = MODE === "reference" ? { nftShared: IPTABLES_NFT_BUILTINS } : {};

/**
 * The reference plugin runs `iptables` for ipMasq and finds it on PATH (real
 * runtimes pass their own environment on); cnichain writes nftables itself
 * and must work with no PATH at all, so it never gets one.
 */
const MASQ_ENV: Record<string, string> = MODE === "reference"
  ? { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" }
  : {};

function ptpConf(lab: Lab, version: string, extra: Record<string, unknown> = {}) {
  return lab.netconf(version, {
    type: "ptp",
    ipam: lab.hostLocal([[{ subnet: "10.23.0.0/24" }]], { routes: [{ dst: "0.0.0.0/0" }] }),
    ...extra,
  });
}

/** Checks the result's shape and that both ends hold what ptp promises, for one pod. */
async function assertAttached(lab: Lab, result: Result, podPath: string, version: string) {
  assert.equal(result.cniVersion, version);
  const ifs = result.interfaces ?? [];
  assert.equal(ifs.length, 2, `interfaces [host veth, container]: ${JSON.stringify(ifs)}`);
  const [hostVeth, cont] = ifs;
  assert.match(hostVeth.name, HOST_VETH);
  assert.equal(hostVeth.sandbox ?? "", "", "the host veth is not in a sandbox");
  assert.equal(cont.name, "eth0");
  assert.equal(cont.sandbox, podPath);
  assert.equal(result.ips?.length, 1);
  const [ip] = result.ips!;
  assert.equal(ip.interface, 1, "the ip points at the container");
  assert.equal(ip.gateway, GATEWAY);
  assert.match(ip.address, /^10\.23\.0\.\d+\/24$/);
  const address = bare(ip.address);
  assert.deepEqual(result.routes, [{ dst: "0.0.0.0/0" }], "the IPAM routes, as given");

  const pod = podPath.slice(podPath.lastIndexOf("/") + 1);
  const hostLink = await link(lab.host, hostVeth.name);
  assert.ok(hostLink, `host veth ${hostVeth.name} exists in the host netns`);
  assert.equal(hostLink.linkinfo?.info_kind, "veth");
  assert.ok(hostLink.flags.includes("UP"), "the host veth is up");
  assert.equal(hostLink.address, hostVeth.mac, "host veth MAC as in the result");
  const contLink = await link(pod, "eth0");
  assert.ok(contLink, "eth0 exists in the pod");
  assert.equal(contLink.address, cont.mac, "container MAC as in the result");
  assert.equal(hostLink.link_index, contLink.ifindex, "the host veth's peer is the pod's eth0");
  assert.equal(await sysctl(lab.host, "net/ipv4/ip_forward"), "1", "ptp enables forwarding");

  const hostAddrs = await addresses(lab.host, hostVeth.name);
  if (MODE === "cnichain") {
    // An IPv4 pod's routed veth needs no IPv6 at the host end: no link-local address, no routes.
    assert.equal(await sysctl(lab.host, `net/ipv6/conf/${hostVeth.name}/disable_ipv6`), "1");
    assert.ok(
      hostAddrs.every((a) => a.family === "inet"),
      `IPv4 only: ${JSON.stringify(hostAddrs)}`,
    );
  }
  assert.ok(
    hostAddrs.some((a) => a.local === GATEWAY && a.prefixlen === 32),
    `the host veth holds the gateway as /32: ${JSON.stringify(hostAddrs)}`,
  );
  const hostRoutes = await routes(lab.host);
  assert.ok(
    hostRoutes.some((r) => r.dst === address && r.dev === hostVeth.name && !r.gateway),
    `a host route to ${address} over ${hostVeth.name}: ${JSON.stringify(hostRoutes)}`,
  );
  assert.ok(
    (await addresses(pod, "eth0")).some((a) => a.local === address && a.prefixlen === 24),
    `${ip.address} on the pod's eth0`,
  );
  const podRoutes = (await routes(pod)).filter((r) => r.family === "inet" && !r.table);
  const has = (dst: string, gateway?: string) =>
    podRoutes.some((r) => r.dst === dst && r.dev === "eth0" && r.gateway === gateway);
  assert.ok(has(GATEWAY), `a link route to the gateway in the pod: ${JSON.stringify(podRoutes)}`);
  assert.ok(has("10.23.0.0/24", GATEWAY), `the subnet via the gateway in the pod`);
  assert.ok(has("default", GATEWAY), `the IPAM default route via the gateway in the pod`);
  assert.ok(
    !podRoutes.some((r) => r.dst === "10.23.0.0/24" && !r.gateway),
    "no on-link subnet route: everything goes through the gateway",
  );
}

kernelTest("ptp: pods ping their gateway and, routed by the host, each other", async (lab, v) => {
  const before = await snapshot(lab.host);
  const conf = ptpConf(lab, v);
  const pods = [await lab.addPod(), await lab.addPod()];
  const results: Result[] = [];
  for (const pod of pods) {
    const result = assertOk(await lab.cni("ADD", conf, { pod }), "ADD") as unknown as Result;
    await assertAttached(lab, result, pod.path, v);
    results.push(result);
  }
  const [a, b] = results.map((r) => bare(r.ips![0].address));
  assert.notEqual(a, b, "each pod gets its own address");
  assert.deepEqual(await lab.allocations(), [a, b].sort(), "host-local holds both addresses");
  assert.ok(await ping(pods[0].name, GATEWAY), "pod1 pings the gateway");
  assert.ok(await ping(pods[1].name, GATEWAY), "pod2 pings the gateway");
  assert.ok(await ping(pods[0].name, b), "pod1 pings pod2 through the host");

  for (const [i, pod] of pods.entries()) {
    assertOk(await lab.cni("DEL", { ...conf, prevResult: results[i] }, { pod }), "DEL");
    assert.equal(await link(pod.name, "eth0"), undefined, "DEL removes the pod's eth0");
  }
  assert.deepEqual(await lab.allocations(), [], "DEL releases both addresses");
  await assertNoLeak(lab.host, before);
});

kernelTest("ptp: DEL twice succeeds, the second time without prevResult", async (lab, v) => {
  const before = await snapshot(lab.host);
  const conf = ptpConf(lab, v);
  const pod = await lab.addPod();
  const result = assertOk(await lab.cni("ADD", conf, { pod }), "ADD") as unknown as Result;
  assertOk(await lab.cni("DEL", { ...conf, prevResult: result }, { pod }), "first DEL");
  assert.equal(await link(pod.name, "eth0"), undefined, "DEL removes the pod's eth0");
  assert.equal(await link(lab.host, result.interfaces![0].name), undefined, "and the host veth");
  // libcni forgets its cached result after a DEL, so a repeated DEL comes without one.
  assertOk(await lab.cni("DEL", conf, { pod }), "second DEL");
  assert.deepEqual(await lab.allocations(), [], "the address is released");
  await assertNoLeak(lab.host, before);
});

kernelTest(
  "ptp: DEL after the pod netns is gone succeeds, releases the address and the veth",
  async (lab, v) => {
    const before = await snapshot(lab.host);
    // cnichain must also remove masquerade rules without the netns (the reference leaks
    // them, plugins#810), so it runs with ipMasq; the reference runs without.
    const masq = MODE === "cnichain";
    const conf = ptpConf(lab, v, { ipMasq: masq });
    const pod = await lab.addPod();
    const result = assertOk(await lab.cni("ADD", conf, { pod }), "ADD") as unknown as Result;
    const hostVeth = result.interfaces![0].name;
    const address = bare(result.ips![0].address);
    if (masq) assert.notDeepEqual(await masqueradeRules(lab.host, address), []);
    await lab.deletePod(pod);
    assertOk(await lab.cni("DEL", { ...conf, prevResult: result }, { pod }), "DEL without netns");
    assert.deepEqual(await lab.allocations(), [], "DEL releases the address");
    if (masq) {
      assert.deepEqual(await masqueradeRules(lab.host, address), [], "no masquerade rule left");
    }
    // Deleting the netns destroyed the pair (and the host route), asynchronously:
    // assertNoLeak polls for it.
    await assertNoLeak(lab.host, before);
    assert.equal(await link(lab.host, hostVeth), undefined, "the host veth is gone");
    assertOk(await lab.cni("DEL", conf, { pod }), "DEL again without netns");
  },
);

kernelTest(
  "ptp: a second ADD of the same ifname fails and leaves the first attachment working",
  async (lab, v) => {
    const before = await snapshot(lab.host);
    const conf = ptpConf(lab, v);
    const pod = await lab.addPod();
    const result = assertOk(await lab.cni("ADD", conf, { pod }), "ADD") as unknown as Result;
    const address = bare(result.ips![0].address);
    assertCniError(await lab.cni("ADD", conf, { pod }), v, "second ADD of eth0");
    assert.ok(
      (await addresses(pod.name, "eth0")).some((a) => a.local === address),
      "the first address is still on eth0",
    );
    assert.ok(
      await link(lab.host, result.interfaces![0].name),
      "the first host veth is still there",
    );
    assert.ok(await ping(pod.name, GATEWAY), "the first attachment still pings the gateway");
    assert.deepEqual(await lab.allocations(), [address], "host-local still holds the address");
    assertOk(await lab.cni("DEL", { ...conf, prevResult: result }, { pod }), "DEL");
    await assertNoLeak(lab.host, before);
  },
);

kernelTest("ptp: ipMasq adds a masquerade rule for the pod and DEL removes it", async (lab, v) => {
  if (!(await canObserveMasquerade())) {
    console.warn("skipping the ipMasq check: the reference plugin needs iptables, not installed");
    return;
  }
  const before = await snapshot(lab.host);
  const conf = ptpConf(lab, v, { ipMasq: true });
  const pod = await lab.addPod();
  const add = await lab.cni("ADD", conf, { pod, env: MASQ_ENV });
  const result = assertOk(add, "ADD") as unknown as Result;
  const address = bare(result.ips![0].address);
  const rules = await masqueradeRules(lab.host, address);
  assert.ok(rules?.length, `a masquerade rule mentions ${address}`);
  assertOk(await lab.cni("DEL", { ...conf, prevResult: result }, { pod, env: MASQ_ENV }), "DEL");
  assert.deepEqual(await masqueradeRules(lab.host, address), [], `no rule mentions ${address}`);
  await assertNoLeak(lab.host, before, IPTABLES_LEFTOVERS);
});

kernelTest(
  "ptp: CHECK passes after ADD and fails once the pod's address is removed",
  async (lab, v) => {
    const before = await snapshot(lab.host);
    const conf = ptpConf(lab, v);
    const pod = await lab.addPod();
    const result = assertOk(await lab.cni("ADD", conf, { pod }), "ADD") as unknown as Result;
    const withPrev = { ...conf, prevResult: result };
    assertOk(await lab.cni("CHECK", withPrev, { pod }), "CHECK after ADD");
    await ipIn(pod.name, "addr", "del", result.ips![0].address, "dev", "eth0");
    assertCniError(await lab.cni("CHECK", withPrev, { pod }), v, "CHECK without the address");
    assertOk(await lab.cni("DEL", withPrev, { pod }), "DEL");
    await assertNoLeak(lab.host, before);
  },
);
