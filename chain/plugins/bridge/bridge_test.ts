/**
 * The bridge plugin in the kernel: pods in throwaway network namespaces,
 * plugin run as a runtime runs it (see test/netns.ts), checked
 * against the reference plugin's documented behaviour. Run with
 * CNICHAIN_TEST_PLUGINS=reference to check the tests themselves against
 * Debian's reference plugins.
 */
import assert from "node:assert/strict";
import { ruleStamp } from "../../nft_state.ts";
import { MASQUERADE } from "../../masquerade.ts";
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
  nftRuleset,
  ping,
  pingWithin,
  type Pod,
  type Result,
  routes,
  run,
  snapshot,
  sysctl,
  withLab,
} from "../../../test/netns.ts";

/** The bridge's name when the config gives none. */
const BRIDGE = "cni0";

/** The bridge stays on DEL: other attachments may share it (the reference never deletes it). */
const KEEP_BRIDGE: Ignore = {
  devices: { [BRIDGE]: "the bridge itself is kept on DEL, as the reference plugin does" },
};

/** What ipMasq's rules may leave besides: see IPTABLES_NFT_BUILTINS. */
const KEEP_BRIDGE_AND_IPTABLES: Ignore = {
  ...KEEP_BRIDGE,
  ...(MODE === "reference" ? { nftShared: IPTABLES_NFT_BUILTINS } : {}),
};

/**
 * The reference plugin runs `iptables` for ipMasq and finds it on PATH (real
 * runtimes pass their own environment on); cnichain writes nftables itself
 * and must work with no PATH at all, so it never gets one.
 */
const MASQ_ENV: Record<string, string> = MODE === "reference"
  ? { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" }
  : {};

function bridgeConf(
  lab: Lab,
  version: string,
  extra: Record<string, unknown> = {},
  ranges: unknown[][] = [[{ subnet: "10.22.0.0/24" }]],
): Record<string, unknown> {
  return lab.netconf(version, {
    type: "bridge",
    isGateway: true,
    isDefaultGateway: true,
    ipam: lab.hostLocal(ranges),
    ...extra,
  });
}

interface Prefix {
  addr: string;
  len: number;
}

/** Checks the result's shape and that the kernel holds what it says, for one pod. */
async function assertAttached(lab: Lab, result: Result, podPath: string, version: string) {
  assert.equal(result.cniVersion, version);
  const ifs = result.interfaces ?? [];
  assert.equal(ifs.length, 3, `interfaces [bridge, host veth, container]: ${JSON.stringify(ifs)}`);
  const [br, hostVeth, cont] = ifs;
  assert.equal(br.name, BRIDGE);
  assert.equal(br.sandbox ?? "", "", "the bridge is not in a sandbox");
  assert.match(hostVeth.name, HOST_VETH);
  assert.equal(hostVeth.sandbox ?? "", "", "the host veth is not in a sandbox");
  assert.equal(cont.name, "eth0");
  assert.equal(cont.sandbox, podPath);
  for (const ip of result.ips ?? []) assert.equal(ip.interface, 2, "ips point at the container");

  const pod = podPath.slice(podPath.lastIndexOf("/") + 1);
  const brLink = await link(lab.host, BRIDGE);
  assert.equal(brLink?.linkinfo?.info_kind, "bridge");
  assert.equal(brLink?.address, br.mac, "bridge MAC as in the result");
  const hostLink = await link(lab.host, hostVeth.name);
  assert.ok(hostLink, `host veth ${hostVeth.name} exists in the host netns`);
  assert.equal(hostLink.linkinfo?.info_kind, "veth");
  assert.equal(hostLink.master, BRIDGE, "the host veth is attached to the bridge");
  assert.ok(hostLink.flags.includes("UP"), "the host veth is up");
  assert.equal(hostLink.address, hostVeth.mac, "host veth MAC as in the result");
  const contLink = await link(pod, "eth0");
  assert.ok(contLink, "eth0 exists in the pod");
  assert.equal(contLink.linkinfo?.info_kind, "veth");
  assert.ok(contLink.flags.includes("UP"), "eth0 is up");
  assert.equal(contLink.address, cont.mac, "container MAC as in the result");
  assert.equal(hostLink.link_index, contLink.ifindex, "the host veth's peer is the pod's eth0");
  assert.equal(await sysctl(pod, "net/ipv4/conf/eth0/arp_notify"), "1");
  if (MODE === "cnichain") {
    // A port carries frames only: no IPv6 of its own, so no link-local address, DAD or MLD.
    assert.equal(await sysctl(lab.host, `net/ipv6/conf/${hostVeth.name}/disable_ipv6`), "1");
    assert.deepEqual(await addresses(lab.host, hostVeth.name), [], "the port has no address");
  }
  assert.equal(await sysctl(lab.host, "net/ipv4/ip_forward"), "1", "isGateway enables forwarding");

  const podAddrs = await addresses(pod, "eth0");
  const brAddrs = await addresses(lab.host, BRIDGE);
  const podRoutes = await routes(pod);
  for (const ip of result.ips ?? []) {
    const [addr, len] = ip.address.split("/");
    assert.ok(
      podAddrs.some((a) => a.local === addr && a.prefixlen === Number(len)),
      `${ip.address} on the pod's eth0: ${JSON.stringify(podAddrs)}`,
    );
    assert.ok(ip.gateway, `a gateway for ${ip.address}`);
    assert.ok(
      brAddrs.some((a) => a.local === ip.gateway && a.prefixlen === Number(len)),
      `gateway ${ip.gateway}/${len} on the bridge: ${JSON.stringify(brAddrs)}`,
    );
    const family = addr.includes(":") ? "inet6" : "inet";
    const dflt = family === "inet" ? "0.0.0.0/0" : "::/0";
    assert.ok(
      result.routes?.some((r) => r.dst === dflt && r.gw === ip.gateway),
      `isDefaultGateway puts ${dflt} via ${ip.gateway} in the result`,
    );
    assert.ok(
      podRoutes.some((r) =>
        r.family === family && r.dst === "default" && r.gateway === ip.gateway && r.dev === "eth0"
      ),
      `default route via ${ip.gateway} in the pod: ${JSON.stringify(podRoutes)}`,
    );
  }
}

kernelTest("bridge: two pods on one bridge reach each other and the gateway", async (lab, v) => {
  const before = await snapshot(lab.host);
  const conf = bridgeConf(lab, v);
  const pods = [await lab.addPod(), await lab.addPod()];
  const results: Result[] = [];
  for (const pod of pods) {
    const result = assertOk(await lab.cni("ADD", conf, { pod }), "ADD") as unknown as Result;
    await assertAttached(lab, result, pod.path, v);
    assert.equal(result.ips?.length, 1);
    assert.equal(result.ips?.[0].gateway, "10.22.0.1");
    assert.match(result.ips?.[0].address ?? "", /^10\.22\.0\.\d+\/24$/);
    results.push(result);
  }
  const [a, b] = results.map((r) => bare(r.ips![0].address));
  assert.notEqual(a, b, "each pod gets its own address");
  assert.notEqual(results[0].interfaces![1].name, results[1].interfaces![1].name);
  assert.deepEqual(await lab.allocations(), [a, b].sort(), "host-local holds both addresses");
  assert.ok(await ping(pods[0].name, "10.22.0.1"), "pod1 pings the gateway");
  assert.ok(await ping(pods[1].name, "10.22.0.1"), "pod2 pings the gateway");
  assert.ok(await ping(pods[0].name, b), "pod1 pings pod2");
  assert.ok(await ping(pods[1].name, a), "pod2 pings pod1");

  for (const [i, pod] of pods.entries()) {
    assertOk(await lab.cni("DEL", { ...conf, prevResult: results[i] }, { pod }), "DEL");
    assert.equal(await link(pod.name, "eth0"), undefined, "DEL removes the pod's eth0");
  }
  assert.deepEqual(await lab.allocations(), [], "DEL releases both addresses");
  await assertNoLeak(lab.host, before, KEEP_BRIDGE);
});

kernelTest(
  "bridge: a dual-stack pod gets both addresses and pings both gateways",
  async (lab, v) => {
    const before = await snapshot(lab.host);
    const conf = bridgeConf(lab, v, {}, [[{ subnet: "10.22.0.0/24" }], [{ subnet: "fd22::/64" }]]);
    const pod = await lab.addPod();
    const result = assertOk(await lab.cni("ADD", conf, { pod }), "ADD") as unknown as Result;
    await assertAttached(lab, result, pod.path, v);
    const other = await lab.addPod();
    const otherResult = assertOk(
      await lab.cni("ADD", conf, { pod: other }),
      "ADD",
    ) as unknown as Result;
    assert.deepEqual(result.ips?.map((ip) => [ip.address, ip.gateway]), [
      ["10.22.0.2/24", "10.22.0.1"],
      ["fd22::2/64", "fd22::1"],
    ]);
    // The plugins turn DAD off on the container interface, so its address is usable at once.
    const podV6 = (await addresses(pod.name, "eth0")).find((a) => a.local === "fd22::2");
    assert.equal(podV6?.tentative, false, "the pod's IPv6 address is not left tentative");
    const gwV6 = (await addresses(lab.host, BRIDGE)).find((a) => a.local === "fd22::1");
    let v6Within = 0;
    if (MODE === "cnichain") {
      assert.equal(gwV6?.tentative, false, "the bridge's IPv6 gateway is not left tentative");
    } else {
      // The reference leaves DAD on for the bridge's gateway address: tentative for about a second.
      v6Within = 3000;
    }
    assert.ok(await ping(pod.name, "10.22.0.1"), "the pod pings the IPv4 gateway");
    assert.ok(await pingWithin(pod.name, "fd22::1", v6Within), "the pod pings the IPv6 gateway");
    // Across the bridge, whose ports have no IPv6 of their own (cnichain).
    assert.ok(await pingWithin(pod.name, "fd22::3", 3000), "the pod pings the other over IPv6");

    assertOk(await lab.cni("DEL", { ...conf, prevResult: otherResult }, { pod: other }), "DEL");
    assertOk(await lab.cni("DEL", { ...conf, prevResult: result }, { pod }), "DEL");
    assert.deepEqual(await lab.allocations(), [], "DEL releases both addresses");
    await assertNoLeak(lab.host, before, KEEP_BRIDGE);
  },
);

kernelTest("bridge: DEL twice succeeds, the second time without prevResult", async (lab, v) => {
  const before = await snapshot(lab.host);
  const conf = bridgeConf(lab, v);
  const pod = await lab.addPod();
  const result = assertOk(await lab.cni("ADD", conf, { pod }), "ADD") as unknown as Result;
  const hostVeth = result.interfaces![1].name;
  assertOk(await lab.cni("DEL", { ...conf, prevResult: result }, { pod }), "first DEL");
  assert.equal(await link(pod.name, "eth0"), undefined, "DEL removes the pod's eth0");
  assert.equal(await link(lab.host, hostVeth), undefined, "DEL removes the host veth");
  // libcni forgets its cached result after a DEL, so a repeated DEL comes without one.
  assertOk(await lab.cni("DEL", conf, { pod }), "second DEL");
  assert.deepEqual(await lab.allocations(), [], "the address is released");
  await assertNoLeak(lab.host, before, KEEP_BRIDGE);
});

kernelTest(
  "bridge: DEL after the pod netns is gone succeeds, releases the address and the veth",
  async (lab, v) => {
    const before = await snapshot(lab.host);
    // cnichain must also remove masquerade rules without the netns (the reference leaks
    // them, plugins#810), so it runs with ipMasq; the reference runs without.
    const masq = MODE === "cnichain";
    const conf = bridgeConf(lab, v, { ipMasq: masq });
    const pod = await lab.addPod();
    const result = assertOk(await lab.cni("ADD", conf, { pod }), "ADD") as unknown as Result;
    const hostVeth = result.interfaces![1].name;
    const address = bare(result.ips![0].address);
    if (masq) assert.notDeepEqual(await masqueradeRules(lab.host, address), []);
    await lab.deletePod(pod);
    assertOk(await lab.cni("DEL", { ...conf, prevResult: result }, { pod }), "DEL without netns");
    assert.deepEqual(await lab.allocations(), [], "DEL releases the address");
    if (masq) {
      assert.deepEqual(await masqueradeRules(lab.host, address), [], "no masquerade rule left");
    }
    // Deleting the netns destroyed the pair, asynchronously: assertNoLeak polls for it.
    await assertNoLeak(lab.host, before, KEEP_BRIDGE);
    assert.equal(await link(lab.host, hostVeth), undefined, "the host veth is gone");
    assertOk(await lab.cni("DEL", conf, { pod }), "DEL again without netns");
  },
);

kernelTest(
  "bridge, fresh node: a bad request makes nothing, a failed ADD keeps the bridge, many ADDs at once",
  async (lab, v) => {
    // An address asked for outside the range fails before anything is made (the reference
    // makes the bridge and the veth first).
    const asked = { ...bridgeConf(lab, v), args: { cni: { ips: ["10.99.0.5"] } } };
    const early = await lab.addPod();
    const refused = assertCniError(await lab.cni("ADD", asked, { pod: early }), v, "ADD");
    assert.match(refused.msg, /10\.99\.0\.5/, "the error names the address asked for");
    if (MODE === "cnichain") {
      assert.equal(await link(lab.host, BRIDGE), undefined, "no bridge made");
    }

    // A network whose only address is taken: its ADD makes the bridge, then fails in IPAM.
    await Deno.mkdir(`${lab.dataDir}/full`, { recursive: true });
    await Deno.writeTextFile(`${lab.dataDir}/full/10.23.0.2`, "someone\r\neth0");
    const full = lab.netconf(v, {
      type: "bridge",
      isGateway: true,
      ipam: lab.hostLocal([[{ subnet: "10.23.0.0/30" }]]),
    }, "full");
    const first = await lab.addPod();
    const { msg } = assertCniError(await lab.cni("ADD", full, { pod: first }), v, "ADD");
    assert.match(msg, /10\.23\.0\./, "the error names the full range");
    if (MODE === "cnichain") {
      // The reference leaves the veth of an ADD that failed in IPAM; cnichain rolls it back.
      assert.equal(await link(first.name, "eth0"), undefined, "the failed ADD's eth0 is gone");
    }
    assert.ok(await link(lab.host, BRIDGE), "the bridge stays for the ADDs that share it");

    // Many pods of a fresh node at once: each reads the bridge without its gateway address
    // and puts it there; the ones that lose that race must still succeed.
    await run(["/usr/sbin/ip", "-n", lab.host, "link", "delete", BRIDGE], "remove the bridge");
    const conf = bridgeConf(lab, v);
    const pods: Pod[] = [];
    for (let i = 0; i < 12; i++) pods.push(await lab.addPod());
    const results = await Promise.all(pods.map((pod) => lab.cni("ADD", conf, { pod })));
    const addrs = results.map((r) =>
      bare((assertOk(r, "ADD") as unknown as Result).ips![0].address)
    );
    assert.equal(new Set(addrs).size, pods.length, `distinct addresses: ${addrs}`);
    for (const pod of [pods[0], pods[pods.length - 1]]) {
      assert.ok(await ping(pod.name, "10.22.0.1"), `${pod.name} pings the gateway`);
    }
  },
);

kernelTest(
  "bridge + portmap with /proc/sys read-only: ADD works, the sysctls go over netlink",
  async (lab, v) => {
    const chain = lab.netconf(v, {
      type: "cnichain",
      capabilities: { portMappings: true },
      runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }] },
      plugins: [
        { type: "bridge", ipam: lab.hostLocal([[{ subnet: "10.22.0.0/24" }]]) },
        { type: "portmap", capabilities: { portMappings: true } },
      ],
    });
    const pod = await lab.addPod();
    const out = await lab.cni("ADD", chain, { pod, readOnlyProcSys: true });
    const result = assertOk(out, "ADD") as unknown as Result;
    const port = result.interfaces![1].name;
    // route_localnet for 127.0.0.1:hostPort, over netlink; the port's IPv6 stays on (harmless).
    assert.equal(await sysctl(lab.host, `net/ipv4/conf/${BRIDGE}/route_localnet`), "1");
    assert.equal(await sysctl(lab.host, `net/ipv6/conf/${port}/disable_ipv6`), "0");
    assertOk(
      await lab.cni("DEL", { ...chain, prevResult: result }, { pod, readOnlyProcSys: true }),
      "DEL",
    );
    assert.equal(await link(lab.host, port), undefined, "DEL removes the host veth");
  },
  { only: "cnichain" },
);

kernelTest(
  "bridge: a second ADD of the same ifname fails and leaves the first attachment working",
  async (lab, v) => {
    const before = await snapshot(lab.host);
    const conf = bridgeConf(lab, v);
    const pod = await lab.addPod();
    const result = assertOk(await lab.cni("ADD", conf, { pod }), "ADD") as unknown as Result;
    const address = bare(result.ips![0].address);
    const again = await lab.cni("ADD", conf, { pod });
    assertCniError(again, v, "second ADD of eth0");
    assert.ok(
      (await addresses(pod.name, "eth0")).some((a) => a.local === address),
      "the first address is still on eth0",
    );
    assert.ok(
      await link(lab.host, result.interfaces![1].name),
      "the first host veth is still there",
    );
    assert.ok(await ping(pod.name, "10.22.0.1"), "the first attachment still pings the gateway");
    assert.deepEqual(await lab.allocations(), [address], "host-local still holds the address");
    assertOk(await lab.cni("DEL", { ...conf, prevResult: result }, { pod }), "DEL");
    await assertNoLeak(lab.host, before, KEEP_BRIDGE);
  },
);

kernelTest(
  "bridge: ipMasq adds a masquerade rule for the pod and DEL removes it",
  async (lab, v) => {
    if (!(await canObserveMasquerade())) {
      console.warn("skipping the ipMasq check: the reference plugin needs iptables, not installed");
      return;
    }
    const before = await snapshot(lab.host);
    const conf = bridgeConf(lab, v, { ipMasq: true });
    const pod = await lab.addPod();
    const add = await lab.cni("ADD", conf, { pod, env: MASQ_ENV });
    const result = assertOk(add, "ADD") as unknown as Result;
    const address = bare(result.ips![0].address);
    const rules = await masqueradeRules(lab.host, address);
    assert.ok(rules?.length, `a masquerade rule mentions ${address}`);
    assertOk(await lab.cni("DEL", { ...conf, prevResult: result }, { pod, env: MASQ_ENV }), "DEL");
    assert.deepEqual(await masqueradeRules(lab.host, address), [], `no rule mentions ${address}`);
    await assertNoLeak(lab.host, before, KEEP_BRIDGE_AND_IPTABLES);
  },
);

kernelTest(
  "bridge: ipMasqExclude blocks inside each other and around the pod's subnet: ADD excludes their union",
  async (lab, v) => {
    const before = await snapshot(lab.host);
    const conf = bridgeConf(lab, v, {
      ipMasq: true,
      // 10.0.0.0/8 holds the pod's subnet (10.22.0.0/24) and 10.22.0.128/25; 192.168.0.0/16
      // holds 192.168.5.0/24. nftables refuses overlapping interval elements ("File exists").
      ipMasqExclude: ["10.22.0.128/25", "10.0.0.0/8", "192.168.5.0/24", "192.168.0.0/16"],
    });
    const pod = await lab.addPod();
    const result = assertOk(await lab.cni("ADD", conf, { pod }), "ADD") as unknown as Result;
    const address = bare(result.ips![0].address);
    const excluded = (await nftRuleset(lab.host)).flatMap((o) => {
      const set = o.set as { name?: string; elem?: unknown[] } | undefined;
      if (set?.name !== "nomasq4") return [];
      return (set.elem ?? []).map((e) => {
        const [ip, block] = (e as { elem: { val: { concat: [string, { prefix: Prefix }] } } })
          .elem.val.concat;
        return `${ip} . ${block.prefix.addr}/${block.prefix.len}`;
      });
    });
    assert.deepEqual(excluded.sort(), [`${address} . 10.0.0.0/8`, `${address} . 192.168.0.0/16`]);
    assertOk(await lab.cni("DEL", { ...conf, prevResult: result }, { pod }), "DEL");
    await assertNoLeak(lab.host, before, KEEP_BRIDGE_AND_IPTABLES);
  },
  { only: "cnichain" },
);

kernelTest(
  "bridge: an ADD puts back masquerade rules flushed by hand or left by an older cnichain",
  async (lab, v) => {
    const before = await snapshot(lab.host);
    const conf = bridgeConf(lab, v, { ipMasq: true });
    const nft = (command: string) =>
      run(["/usr/sbin/ip", "netns", "exec", lab.host, "/usr/sbin/nft", command], command);
    const masqRules = async () =>
      (await nftRuleset(lab.host)).filter((o) =>
        (o.rule as { chain?: string } | undefined)?.chain === "masq"
      ).length;
    const results: [Pod, Result][] = [];
    const addOne = async () => {
      const pod = await lab.addPod();
      results.push([
        pod,
        assertOk(await lab.cni("ADD", conf, { pod }), "ADD") as unknown as Result,
      ]);
    };
    await addOne();
    const rules = await masqRules();
    assert.ok(rules > 0, "ADD wrote masquerade rules");
    // Stamped with the bundle's stamp, worked out when it was built: the one the source gives.
    const stamps = (await nftRuleset(lab.host)).flatMap((o) => {
      const rule = o.rule as { chain?: string; comment?: string } | undefined;
      return rule?.chain === "masq" ? [rule.comment] : [];
    });
    assert.deepEqual([...new Set(stamps)], [ruleStamp(MASQUERADE)]);
    // Rules that stand as this version writes them (the bundle knows how many, from its build)
    // are left be: the next ADD adds its elements alone.
    const handles = async () =>
      (await nftRuleset(lab.host)).flatMap((o) => {
        const rule = o.rule as { handle?: number } | undefined;
        return rule ? [rule.handle] : [];
      });
    const standing = await handles();
    await addOne();
    assert.deepEqual(await handles(), standing, "the next ADD rewrote rules that stood");
    // The sets and their elements stay: only the rules are gone, so adding elements is not enough.
    await nft("flush chain inet cnichain masq");
    await addOne();
    assert.equal(await masqRules(), rules, "the next ADD rewrote them");
    // An older cnichain's rules: right chain, no stamp of this version's skeleton.
    await nft("flush chain inet cnichain masq");
    await nft("add rule inet cnichain masq ip saddr @masq4 masquerade");
    await addOne();
    assert.equal(await masqRules(), rules, "the next ADD replaced them");
    for (const [pod, result] of results) {
      const address = bare(result.ips![0].address);
      assert.ok((await masqueradeRules(lab.host, address))?.length, `${address} is masqueraded`);
      assertOk(await lab.cni("DEL", { ...conf, prevResult: result }, { pod }), "DEL");
    }
    await assertNoLeak(lab.host, before, KEEP_BRIDGE_AND_IPTABLES);
  },
  { only: "cnichain" },
);

kernelTest(
  "bridge: CHECK passes after ADD and fails once the pod's address is removed",
  async (lab, v) => {
    const before = await snapshot(lab.host);
    const conf = bridgeConf(lab, v);
    const pod = await lab.addPod();
    const result = assertOk(await lab.cni("ADD", conf, { pod }), "ADD") as unknown as Result;
    const withPrev = { ...conf, prevResult: result };
    assertOk(await lab.cni("CHECK", withPrev, { pod }), "CHECK after ADD");
    await ipIn(pod.name, "addr", "del", result.ips![0].address, "dev", "eth0");
    assertCniError(await lab.cni("CHECK", withPrev, { pod }), v, "CHECK without the address");
    assertOk(await lab.cni("DEL", withPrev, { pod }), "DEL");
    await assertNoLeak(lab.host, before, KEEP_BRIDGE);
  },
);

/** A result with what differs between two equal runs (MACs, veth and netns names) masked. */
function normalised(result: Result): Result {
  return {
    ...result,
    interfaces: result.interfaces?.map((i, n) => ({
      ...i,
      ...(i.mac ? { mac: "<mac>" } : {}),
      ...(i.sandbox ? { sandbox: "<netns>" } : {}),
      ...(n === 1 ? { name: "<veth>" } : {}),
    })),
  };
}

kernelTest(
  "cnichain entry running bridge and host-local returns what bridge alone returns",
  async (lab, v) => {
    const plugin = {
      type: "bridge",
      isGateway: true,
      isDefaultGateway: true,
      ipam: lab.hostLocal([[{ subnet: "10.22.0.0/24" }]]),
    };
    const before = await snapshot(lab.host);
    const chain = lab.netconf(v, { type: "cnichain", plugins: [plugin] });
    const pod = await lab.addPod();
    const chained = assertOk(
      await lab.cni("ADD", chain, { pod }),
      "chain ADD",
    ) as unknown as Result;
    await assertAttached(lab, chained, pod.path, v);
    assert.ok(await ping(pod.name, "10.22.0.1"), "the pod pings the gateway");

    const direct = await withLab(async (other) => {
      const conf = other.netconf(v, {
        ...plugin,
        ipam: other.hostLocal([[{ subnet: "10.22.0.0/24" }]]),
      });
      const otherPod = await other.addPod();
      const out = assertOk(await other.cni("ADD", conf, { pod: otherPod }), "bridge ADD");
      assertOk(await other.cni("DEL", { ...conf, prevResult: out }, { pod: otherPod }), "DEL");
      return out as unknown as Result;
    });
    assert.deepEqual(normalised(chained), normalised(direct));

    // A runtime sends the chain no prevResult here: the chain uses the result it cached.
    assertOk(await lab.cni("DEL", chain, { pod }), "chain DEL");
    assert.equal(await link(pod.name, "eth0"), undefined, "DEL removes the pod's eth0");
    assert.deepEqual(await lab.allocations(), [], "DEL releases the address");
    await assertNoLeak(lab.host, before, KEEP_BRIDGE);
  },
  { only: "cnichain" },
);
