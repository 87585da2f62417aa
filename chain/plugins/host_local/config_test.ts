import assert from "node:assert/strict";
import { CniError } from "../../spec/errors.ts";
import { type ConfigObject, parseNetConf } from "../../spec/config.ts";
import { parseEnv } from "../../spec/env.ts";
import { formatIp } from "../../ip.ts";
import { assignRequests, ipamProblems, parseHostLocal, requestedIps } from "./config.ts";
import { rangeText } from "./range.ts";
import { envFor } from "../../../test/host_local.ts";

function conf(ipam: unknown, extra: ConfigObject = {}): ConfigObject {
  return { cniVersion: "1.0.0", name: "net", type: "bridge", ipam, ...extra };
}

function fails(raw: ConfigObject, code: number, message: string): void {
  assert.throws(() => parseHostLocal(parseNetConf(raw)), (err: unknown) => {
    assert.ok(err instanceof CniError, String(err));
    assert.equal(err.message, message);
    assert.equal(err.code, code);
    return true;
  });
}

Deno.test("parseHostLocal() fills in the reference plugin's defaults", async (t) => {
  await t.step("an IPv4 range: gateway .1, from .1 to the address before broadcast", () => {
    const cfg = parseHostLocal(
      parseNetConf(conf({ type: "host-local", ranges: [[{ subnet: "10.1.0.0/24" }]] })),
    );
    assert.equal(cfg.dir, "/var/lib/cni/networks/net");
    const r = cfg.sets[0].ranges[0];
    assert.deepEqual([rangeText(r), formatIp(r.gateway)], ["10.1.0.1-10.1.0.254", "10.1.0.1"]);
  });
  await t.step("an IPv6 range ends at its last address", () => {
    const cfg = parseHostLocal(parseNetConf(conf({ ranges: [[{ subnet: "fd00::/120" }]] })));
    assert.equal(rangeText(cfg.sets[0].ranges[0]), "fd00::1-fd00::ff");
  });
  await t.step("the ipRanges capability comes first, then the legacy subnet, then ranges", () => {
    const cfg = parseHostLocal(parseNetConf(conf(
      { subnet: "10.2.0.0/24", rangeStart: "10.2.0.10", ranges: [[{ subnet: "fd00::/64" }]] },
      { runtimeConfig: { ipRanges: [[{ subnet: "10.3.0.0/24" }]] } },
    )));
    assert.deepEqual(cfg.sets.map((s) => s.label), [
      "runtimeConfig.ipRanges[0]",
      "ipam.subnet",
      "ipam.ranges[0]",
    ]);
    assert.equal(rangeText(cfg.sets[1].ranges[0]), "10.2.0.10-10.2.0.254");
  });
  await t.step("dataDir is cleaned as filepath.Join would clean it", () => {
    const cfg = parseHostLocal(
      parseNetConf(conf({ dataDir: "/tmp//ipam/./x/", subnet: "10.1.0.0/24" })),
    );
    assert.equal(cfg.dir, "/tmp/ipam/x/net");
  });
  await t.step("routes are kept with their addresses written canonically", () => {
    const cfg = parseHostLocal(parseNetConf(conf({
      subnet: "10.1.0.0/24",
      routes: [{ dst: "0.0.0.0/0" }, { dst: "FD00:0::5/64", gw: "fd00:0::1", mtu: 1400 }],
    })));
    assert.deepEqual(cfg.routes, [{ dst: "0.0.0.0/0" }, {
      dst: "fd00::5/64",
      gw: "fd00::1",
      mtu: 1400,
    }]);
  });
});

Deno.test("parseHostLocal() rejects bad input with code 7 naming the field and value", async (t) => {
  const p = "invalid network config: ";
  const cases: [string, ConfigObject, string][] = [
    ["no ipam object", conf(undefined), `${p}ipam: is required`],
    [
      "no ranges at all",
      conf({ type: "host-local" }),
      `${p}ipam.ranges: no address ranges given (use ipam.ranges, ipam.subnet or the ipRanges capability)`,
    ],
    [
      "no network name",
      { cniVersion: "1.0.0", type: "x", ipam: { subnet: "10.1.0.0/24" } },
      `${p}name: is required: it names the address store's directory`,
    ],
    [
      "an IPv4 /31",
      conf({ ranges: [[{ subnet: "10.1.0.0/31" }]] }),
      `${p}ipam.ranges[0][0].subnet: is too small to allocate from (the prefix must be /30 or shorter) (got "10.1.0.0/31")`,
    ],
    [
      "an IPv4 /32",
      conf({ subnet: "10.1.0.1/32" }),
      `${p}ipam.subnet: is too small to allocate from (the prefix must be /30 or shorter) (got "10.1.0.1/32")`,
    ],
    [
      "an IPv6 /127",
      conf({ ranges: [[{ subnet: "fd00::/127" }]] }),
      `${p}ipam.ranges[0][0].subnet: is too small to allocate from (the prefix must be /126 or shorter) (got "fd00::/127")`,
    ],
    [
      "an IPv6 /128",
      conf({ ranges: [[{ subnet: "fd00::1/128" }]] }),
      `${p}ipam.ranges[0][0].subnet: is too small to allocate from (the prefix must be /126 or shorter) (got "fd00::1/128")`,
    ],
    [
      "host bits in the subnet",
      conf({ ranges: [[{ subnet: "10.1.0.5/24" }]] }),
      `${p}ipam.ranges[0][0].subnet: has host bits set (the network is 10.1.0.0/24) (got "10.1.0.5/24")`,
    ],
    [
      "an unparsable subnet",
      conf({ ranges: [[{ subnet: "10.1.0/24" }]] }),
      `${p}ipam.ranges[0][0].subnet: is not an address with prefix length (such as 10.1.0.0/24) (got "10.1.0/24")`,
    ],
    [
      "a range without subnet",
      conf({ ranges: [[{ rangeStart: "10.1.0.5" }]] }),
      `${p}ipam.ranges[0][0].subnet: is required`,
    ],
    [
      "rangeStart outside the subnet",
      conf({ ranges: [[{ subnet: "10.1.0.0/24", rangeStart: "10.2.0.1" }]] }),
      `${p}ipam.ranges[0][0].rangeStart: is not in the subnet 10.1.0.0/24 (got "10.2.0.1")`,
    ],
    [
      "rangeEnd outside the subnet",
      conf({ ranges: [[{ subnet: "10.1.0.0/24", rangeEnd: "10.1.1.1" }]] }),
      `${p}ipam.ranges[0][0].rangeEnd: is not in the subnet 10.1.0.0/24 (got "10.1.1.1")`,
    ],
    [
      "rangeEnd before rangeStart",
      conf({ ranges: [[{ subnet: "10.1.0.0/24", rangeStart: "10.1.0.9", rangeEnd: "10.1.0.8" }]] }),
      `${p}ipam.ranges[0][0].rangeEnd: is before rangeStart 10.1.0.9 (got "10.1.0.8")`,
    ],
    [
      "an unparsable rangeStart",
      conf({ ranges: [[{ subnet: "10.1.0.0/24", rangeStart: "10.1.0.x" }]] }),
      `${p}ipam.ranges[0][0].rangeStart: is not an IP address (got "10.1.0.x")`,
    ],
    [
      "an unparsable gateway",
      conf({ subnet: "10.1.0.0/24", gateway: 17 }),
      `${p}ipam.gateway: is not an IP address (got 17)`,
    ],
    [
      "a gateway of the other family",
      conf({ ranges: [[{ subnet: "10.1.0.0/24", gateway: "fd00::1" }]] }),
      `${p}ipam.ranges[0][0].gateway: is an IPv6 address but the subnet 10.1.0.0/24 is IPv4 (got "fd00::1")`,
    ],
    [
      "rangeStart without subnet",
      conf({ rangeStart: "10.1.0.5", ranges: [[{ subnet: "10.1.0.0/24" }]] }),
      `${p}ipam.rangeStart: needs ipam.subnet (got "10.1.0.5")`,
    ],
    [
      "overlapping range sets",
      conf({ ranges: [[{ subnet: "10.1.0.0/24" }], [{ subnet: "10.1.0.0/25" }]] }),
      `${p}ipam.ranges[1]: overlaps range set ipam.ranges[0] (10.1.0.1-10.1.0.254) (got "10.1.0.1-10.1.0.126")`,
    ],
    [
      "the legacy subnet overlapping ranges",
      conf({ subnet: "10.1.0.0/16", ranges: [[{ subnet: "10.1.2.0/24" }]] }),
      `${p}ipam.ranges[0]: overlaps range set ipam.subnet (10.1.0.1-10.1.255.254) (got "10.1.2.1-10.1.2.254")`,
    ],
    [
      "overlapping ranges in one set",
      conf({
        ranges: [[{ subnet: "10.1.0.0/24", rangeEnd: "10.1.0.100" }, {
          subnet: "10.1.0.0/24",
          rangeStart: "10.1.0.100",
        }]],
      }),
      `${p}ipam.ranges[0][1]: overlaps ipam.ranges[0][0] (10.1.0.1-10.1.0.100) (got "10.1.0.100-10.1.0.254")`,
    ],
    [
      "mixed families in one set",
      conf({ ranges: [[{ subnet: "10.1.0.0/24" }, { subnet: "fd00::/64" }]] }),
      `${p}ipam.ranges[0][1].subnet: is IPv6 but ipam.ranges[0][0] is IPv4 (got "fd00::/64")`,
    ],
    [
      "an empty range set",
      conf({ ranges: [[]] }),
      `${p}ipam.ranges[0]: must be a non-empty list of ranges (got [])`,
    ],
    [
      "ranges not a list",
      conf({ ranges: { subnet: "10.1.0.0/24" } }),
      `${p}ipam.ranges: must be a list (got {"subnet":"10.1.0.0/24"})`,
    ],
    [
      "a relative dataDir",
      conf({ subnet: "10.1.0.0/24", dataDir: "var/lib" }),
      `${p}ipam.dataDir: must be an absolute path (got "var/lib")`,
    ],
    [
      "a dataDir climbing out",
      conf({ subnet: "10.1.0.0/24", dataDir: "/var/lib/cni/../../etc" }),
      `${p}ipam.dataDir: may not contain .. segments (got "/var/lib/cni/../../etc")`,
    ],
    [
      "a relative resolvConf",
      conf({ subnet: "10.1.0.0/24", resolvConf: "resolv.conf" }),
      `${p}ipam.resolvConf: must be an absolute path (got "resolv.conf")`,
    ],
    [
      "a route without dst",
      conf({ subnet: "10.1.0.0/24", routes: [{ gw: "10.1.0.1" }] }),
      `${p}ipam.routes[0].dst: is required`,
    ],
    [
      "a route gateway of the other family",
      conf({ subnet: "10.1.0.0/24", routes: [{ dst: "0.0.0.0/0", gw: "fd00::1" }] }),
      `${p}ipam.routes[0].gw: is not of the same IP version as dst (got "fd00::1")`,
    ],
    [
      "a range with nothing to hand out",
      conf({ ranges: [[{ subnet: "10.1.0.0/24", rangeStart: "10.1.0.1", rangeEnd: "10.1.0.1" }]] }),
      `${p}ipam.ranges[0][0]: has no address to hand out besides its gateway, network and broadcast addresses (got "10.1.0.1-10.1.0.1")`,
    ],
    [
      "a bad ipRanges capability",
      conf({ subnet: "10.1.0.0/24" }, { runtimeConfig: { ipRanges: [[{ subnet: "x" }]] } }),
      `${p}runtimeConfig.ipRanges[0][0].subnet: is not an address with prefix length (such as 10.1.0.0/24) (got "x")`,
    ],
    [
      "two IPv4 sets at 0.2.0",
      conf({ ranges: [[{ subnet: "10.1.0.0/24" }], [{ subnet: "10.2.0.0/24" }]] }, {
        cniVersion: "0.2.0",
      }),
      `${p}ipam.ranges[1]: is a second IPv4 range set, which needs cniVersion 0.3.0 or later (got "0.2.0")`,
    ],
  ];
  for (const [name, raw, message] of cases) await t.step(name, () => fails(raw, 7, message));
  await t.step("a network name with a slash is refused before host-local sees it", () => {
    assert.throws(
      () => parseNetConf(conf({ subnet: "10.1.0.0/24" }, { name: "../etc" })),
      /name: must match/,
    );
  });
});

Deno.test("ipamProblems() reports every problem of a conflist entry with its path", async (t) => {
  await t.step("several problems at once", () => {
    const problems = ipamProblems(
      {
        type: "host-local",
        ipam: {
          ranges: [[{ subnet: "10.1.0.0/31" }], [{ subnet: "fd00::/64", rangeStart: "fd01::1" }]],
          dataDir: "x",
        },
      },
      "plugins[1]",
      "1.0.0",
    );
    assert.deepEqual(problems.map((p) => p.path), [
      "plugins[1].ipam.ranges[0][0].subnet",
      "plugins[1].ipam.ranges[1][0].rangeStart",
      "plugins[1].ipam.dataDir",
    ]);
  });
  await t.step("no ranges is fine when the entry takes the ipRanges capability", () => {
    assert.deepEqual(
      ipamProblems(
        { type: "host-local", capabilities: { ipRanges: true }, ipam: {} },
        "plugins[0]",
        "1.0.0",
      ),
      [],
    );
    assert.equal(ipamProblems({ type: "host-local", ipam: {} }, "plugins[0]", "1.0.0").length, 1);
  });
});

Deno.test("requested addresses come from CNI_ARGS, args.cni.ips and runtimeConfig.ips", async (t) => {
  const raw = conf(
    {
      ranges: [[{ subnet: "10.1.0.0/24" }], [{ subnet: "fd00::/64" }], [{ subnet: "10.2.0.0/24" }]],
    },
    { args: { cni: { ips: ["fd00::9"] } }, runtimeConfig: { ips: ["10.2.0.7/24", "10.1.0.5"] } },
  );
  const env = (args: string) => parseEnv((n) => envFor("ADD", { args })[n]);
  await t.step("in the reference plugin's order, each to the set that holds it", () => {
    const netConf = parseNetConf(raw);
    const requests = requestedIps(netConf, env("IgnoreUnknown=1;IP=10.1.0.5;K8S_POD_NAME=x"));
    assert.deepEqual(requests.map((r) => r.field), [
      "CNI_ARGS IP",
      "args.cni.ips[0]",
      "runtimeConfig.ips[0]",
    ]);
    const bySet = assignRequests(parseHostLocal(netConf).sets, requests);
    assert.deepEqual(bySet.map((r) => r && formatIp(r.ip)), ["10.1.0.5", "fd00::9", "10.2.0.7"]);
  });
  const cases: [string, ConfigObject, string, number, string][] = [
    [
      "an unparsable CNI_ARGS IP",
      raw,
      "IP=10.1.0.x",
      4,
      `CNI_ARGS IP: is not an IP address (got "10.1.0.x")`,
    ],
    [
      "an unparsable args.cni.ips entry",
      { ...raw, args: { cni: { ips: ["nope"] } } },
      "",
      7,
      `invalid network config: args.cni.ips[0]: is not an IP address (got "nope")`,
    ],
    [
      "an address in no range set",
      { ...raw, runtimeConfig: { ips: ["192.168.0.1"] } },
      "",
      7,
      `invalid network config: runtimeConfig.ips[0]: is not in any range set: ipam.ranges[0] (10.1.0.1-10.1.0.254), ipam.ranges[1] (fd00::1-fd00::ffff:ffff:ffff:ffff), ipam.ranges[2] (10.2.0.1-10.2.0.254) (got "192.168.0.1")`,
    ],
    [
      "the gateway",
      { ...raw, runtimeConfig: { ips: ["10.1.0.1"] } },
      "",
      7,
      `invalid network config: runtimeConfig.ips[0]: is the gateway of range 10.1.0.1-10.1.0.254, which is never handed out (got "10.1.0.1")`,
    ],
    [
      "two addresses for one set",
      { ...raw, args: {} },
      "IP=10.1.0.7",
      7,
      `invalid network config: runtimeConfig.ips[1]: is in range set ipam.ranges[0], which already gives the requested 10.1.0.7 (one address per range set) (got "10.1.0.5")`,
    ],
  ];
  for (const [name, config, args, code, message] of cases) {
    await t.step(name, () => {
      assert.throws(() => {
        const netConf = parseNetConf(config);
        assignRequests(parseHostLocal(netConf).sets, requestedIps(netConf, env(args)));
      }, (err: unknown) => err instanceof CniError && err.code === code && err.message === message);
    });
  }
});
