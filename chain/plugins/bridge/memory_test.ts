/**
 * The bridge plugin against the in-memory kernel: what it asks the kernel to
 * do, and that a failure part-way undoes all of it. (The real kernel is in
 * bridge_test.ts.)
 */
import assert from "node:assert/strict";
import { memorySystem } from "../../system_record.ts";
import { runBuiltin } from "../../invoke.ts";
import { builtinRegistry } from "../../registry.ts";
import { parseEnv } from "../../spec/env.ts";
import { CniError } from "../../spec/errors.ts";
import type { ConfigObject } from "../../spec/config.ts";

const registry = builtinRegistry();

/** A memory System with the pod's netns known, and a runner for bridge verbs as that pod. */
function setup(system = memorySystem(), pod = "pod", id = "c1") {
  system.kernel.known.add(`/var/run/netns/${pod}`);
  const context = {
    system,
    registry,
    observer: {},
    execTimeoutMs: 1000,
    stepPrefix: "",
    baseEnv: {},
  };
  const vars = (verb: string): Record<string, string> => ({
    CNI_COMMAND: verb,
    CNI_CONTAINERID: id,
    CNI_NETNS: `/var/run/netns/${pod}`,
    CNI_IFNAME: "eth0",
    CNI_PATH: "/x",
  });
  const run = (verb: string, config: ConfigObject) =>
    runBuiltin(
      registry.get("bridge")!,
      verb as "ADD",
      parseEnv((n) => vars(verb)[n]),
      config,
      context,
    );
  return { system, run };
}

const config = (extra: ConfigObject = {}): ConfigObject => ({
  cniVersion: "1.1.0",
  name: "mem",
  type: "bridge",
  isDefaultGateway: true,
  stateDir: "/state",
  ipam: { type: "host-local", dataDir: "/ipam", ranges: [[{ subnet: "10.9.0.0/24" }]] },
  ...extra,
});

Deno.test("bridge ADD builds bridge, veth, address and default route", async () => {
  const { system, run } = setup();
  const result = await run("ADD", config());
  assert.deepEqual(result?.ips, [{ interface: 2, address: "10.9.0.2/24", gateway: "10.9.0.1" }]);
  assert.deepEqual(result?.routes, [{ dst: "0.0.0.0/0", gw: "10.9.0.1" }]);
  const interfaces = result?.interfaces as { name: string; sandbox?: string }[];
  assert.equal(interfaces[0].name, "cni0");
  assert.match(interfaces[1].name, /^veth[0-9a-f]{8}$/);
  assert.deepEqual(interfaces[2], {
    ...interfaces[2],
    name: "eth0",
    sandbox: "/var/run/netns/pod",
  });
  const ops = system.effects.map((e) => `${e.op} ${e.target}`);
  for (
    const expected of [
      "create bridge cni0",
      "add address 10.9.0.2/24 in /var/run/netns/pod",
      "add route 0.0.0.0/0 in /var/run/netns/pod",
      "add address 10.9.0.1/24",
      "set sysctl net/ipv4/ip_forward",
    ]
  ) assert.ok(ops.includes(expected), `${expected} in ${ops.join("\n")}`);
  const pod = system.kernel.netns("/var/run/netns/pod");
  assert.ok(pod.link("eth0"));
});

Deno.test("bridge ADD that fails in IPAM leaves no link behind", async () => {
  const { system, run } = setup();
  // A full /30: the network, gateway and broadcast leave one address, taken by the first pod.
  const small = config({
    ipam: { type: "host-local", dataDir: "/ipam", ranges: [[{ subnet: "10.9.0.0/30" }]] },
  });
  await run("ADD", small);
  const before = system.kernel.host().links().map((l) => l.name).sort();
  const second = setup(system, "pod2", "c2").run;
  await assert.rejects(() => second("ADD", small), (e: unknown) => e instanceof CniError);
  assert.deepEqual(
    system.kernel.host().links().map((l) => l.name).sort(),
    before,
    "the second veth was removed",
  );
  assert.equal(system.kernel.netns("/var/run/netns/pod2").link("eth0"), undefined);
});

Deno.test("bridge config problems are named before anything happens", async (t) => {
  const cases: [string, ConfigObject, number, RegExp][] = [
    [
      "hairpin with promisc",
      { hairpinMode: true, promiscMode: true },
      7,
      /promiscMode: cannot be set together with hairpinMode/,
    ],
    ["an mtu out of range", { mtu: 10 }, 7, /mtu: must be an integer from 68 to 65535 \(got 10\)/],
    [
      "a bridge name too long",
      { bridge: "a-very-long-bridge-name" },
      7,
      /bridge: is longer than 15 bytes/,
    ],
    ["a vlan out of range", { vlan: 5000 }, 7, /vlan: must be an integer from 1 to 4094/],
    ["ipMasq as a string", { ipMasq: "yes" }, 7, /ipMasq: must be true or false/],
    [
      "a gateway on a VLAN",
      { vlan: 10, isGateway: true },
      2,
      /vlan: a gateway on a VLAN bridge is not supported/,
    ],
  ];
  for (const [what, extra, code, message] of cases) {
    await t.step(what, async () => {
      const { system, run } = setup();
      await assert.rejects(() => run("ADD", config(extra)), (e: unknown) => {
        assert.ok(e instanceof CniError);
        assert.equal(e.code, code);
        assert.match(e.message, message);
        return true;
      });
      assert.deepEqual(system.effects, []);
    });
  }
  await t.step("ADD twice with one ifname is code 100 and changes nothing", async () => {
    const { system, run } = setup();
    await run("ADD", config());
    const count = system.effects.length;
    await assert.rejects(
      () => run("ADD", config()),
      (e: unknown) => e instanceof CniError && e.code === 100,
    );
    assert.equal(system.effects.length, count);
  });
});
