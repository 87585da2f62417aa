import assert from "node:assert/strict";
import { CniError } from "../../spec/errors.ts";
import type { ConfigObject } from "../../spec/config.ts";
import type { JsonObject } from "../../spec/types.ts";
import { memorySystem } from "../../system_record.ts";
import { call, type CallOptions, REFERENCE_DIR, runPlugin } from "../../../test/host_local.ts";
import { staticPlugin as plugin, staticProblems } from "./mod.ts";

function conf(ipam: ConfigObject, extra: ConfigObject = {}): ConfigObject {
  return {
    cniVersion: "1.0.0",
    name: "net",
    type: "bridge",
    ipam: { type: "static", ...ipam },
    ...extra,
  };
}

const FULL = {
  addresses: [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }, { address: "FD00:0::5/64" }],
  routes: [{ dst: "0.0.0.0/0" }, { dst: "fd01::/64", gw: "fd00::1" }],
  dns: {
    nameservers: ["10.10.0.53"],
    domain: "example",
    search: ["example"],
    options: ["ndots:2"],
  },
};

/** Cases run both here and, in the next test, against the reference plugin. */
const CASES: { name: string; config: ConfigObject; opts?: CallOptions; want: JsonObject }[] = [
  {
    name: "addresses, routes and dns from the config",
    config: conf(FULL),
    want: {
      cniVersion: "1.0.0",
      ips: [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }, { address: "fd00::5/64" }],
      routes: FULL.routes,
      dns: FULL.dns,
    },
  },
  {
    name: "CNI_ARGS IP adds addresses and GATEWAY goes to those of them whose subnet holds it",
    config: conf({ addresses: [{ address: "10.20.0.9/16" }] }),
    opts: { args: "IgnoreUnknown=1;IP=10.20.0.5/16,fd01::3/64;GATEWAY=10.20.0.1" },
    want: {
      cniVersion: "1.0.0",
      ips: [
        { address: "10.20.0.9/16" },
        { address: "10.20.0.5/16", gateway: "10.20.0.1" },
        { address: "fd01::3/64" },
      ],
    },
  },
  {
    name: "args.cni.ips replaces the configured addresses",
    config: conf(FULL, { args: { cni: { ips: ["10.40.0.5/24"] } } }),
    want: {
      cniVersion: "1.0.0",
      ips: [{ address: "10.40.0.5/24" }],
      routes: FULL.routes,
      dns: FULL.dns,
    },
  },
  {
    name: "runtimeConfig.ips replaces them too, and wins over args.cni.ips",
    config: conf(FULL, {
      args: { cni: { ips: ["10.40.0.5/24"] } },
      runtimeConfig: { ips: ["10.30.0.5/24"] },
    }),
    want: {
      cniVersion: "1.0.0",
      ips: [{ address: "10.30.0.5/24" }],
      routes: FULL.routes,
      dns: FULL.dns,
    },
  },
  {
    name: "no addresses at all is an empty result",
    config: conf({}),
    want: { cniVersion: "1.0.0" },
  },
  {
    name: "spec 0.4.0 results carry the IP version",
    config: conf({ addresses: FULL.addresses }, { cniVersion: "0.4.0" }),
    want: {
      cniVersion: "0.4.0",
      ips: [{ version: "4", address: "10.10.0.5/24", gateway: "10.10.0.1" }, {
        version: "6",
        address: "fd00::5/64",
      }],
    },
  },
];

Deno.test("static ADD gives the configured and requested addresses", async (t) => {
  for (const c of CASES) {
    await t.step(c.name, async () => {
      const system = memorySystem();
      assert.deepEqual(await call(plugin, system, "ADD", c.config, c.opts), c.want);
      assert.deepEqual(system.effects, [], "static changes nothing");
    });
  }
});

Deno.test({
  name: "static ADD matches the reference static plugin",
  ignore: !(await Deno.stat(`${REFERENCE_DIR}/static`).then(() => true, () => false)),
  fn: async (t) => {
    for (const c of CASES) {
      await t.step(c.name, async () => {
        const run = await runPlugin(`${REFERENCE_DIR}/static`, "ADD", c.config, c.opts);
        assert.equal(run.code, 0, JSON.stringify(run.out));
        // Debian's 1.1.1 build prints an empty dns object; the spec lets it be left out.
        if (JSON.stringify(run.out?.dns) === "{}") delete run.out!.dns;
        assert.deepEqual(await call(plugin, memorySystem(), "ADD", c.config, c.opts), run.out);
      });
    }
  },
});

async function rejects(
  promise: Promise<unknown>,
  code: number,
  message: string | RegExp,
): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof CniError, String(err));
    assert.equal(err.code, code, err.message);
    if (typeof message === "string") assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

Deno.test("static refuses bad input naming the field and value", async (t) => {
  const p = "invalid network config: ";
  const cases: [string, ConfigObject, CallOptions, number, string][] = [
    ["no ipam", { cniVersion: "1.0.0", name: "n", type: "x" }, {}, 7, `${p}ipam: is required`],
    [
      "an address without prefix",
      conf({ addresses: [{ address: "10.10.0.5" }] }),
      {},
      7,
      `${p}ipam.addresses[0].address: is not an address with prefix length (such as 10.1.0.0/24) (got "10.10.0.5")`,
    ],
    [
      "a bad gateway",
      conf({ addresses: [{ address: "10.10.0.5/24", gateway: "10.10.0" }] }),
      {},
      7,
      `${p}ipam.addresses[0].gateway: is not an IP address (got "10.10.0")`,
    ],
    [
      "a gateway of the other family",
      conf({ addresses: [{ address: "10.10.0.5/24", gateway: "fd00::1" }] }),
      {},
      7,
      `${p}ipam.addresses[0].gateway: is not of the same IP version as the address (got "fd00::1")`,
    ],
    [
      "a bad route",
      conf({ routes: [{ dst: "default" }] }),
      {},
      7,
      `${p}ipam.routes[0].dst: is not an address with prefix length (such as 10.1.0.0/24) (got "default")`,
    ],
    [
      "bad dns",
      conf({ dns: { nameservers: "10.0.0.53" } }),
      {},
      7,
      `${p}ipam.dns.nameservers: must be a list (got "10.0.0.53")`,
    ],
    [
      "a bad runtimeConfig.ips entry",
      conf({}, { runtimeConfig: { ips: ["10.0.0.1"] } }),
      {},
      7,
      `${p}runtimeConfig.ips[0]: is not an address with prefix length (got "10.0.0.1")`,
    ],
    [
      "a bad CNI_ARGS IP",
      conf({}),
      { args: "IP=10.0.0.1/24,x" },
      4,
      `CNI_ARGS IP: is not a list of addresses with prefix length (got "10.0.0.1/24,x")`,
    ],
    [
      "a bad CNI_ARGS GATEWAY",
      conf({}),
      { args: "IP=10.0.0.1/24;GATEWAY=10.0.0" },
      4,
      `CNI_ARGS GATEWAY: is not a list of IP addresses (got "10.0.0")`,
    ],
    [
      "two IPv4 addresses at 0.2.0",
      conf({ addresses: [{ address: "10.0.0.1/24" }, { address: "10.0.0.2/24" }] }, {
        cniVersion: "0.2.0",
      }),
      {},
      7,
      `${p}ipam.addresses: has more than one IPv4 address, which needs cniVersion 0.3.0 or later (got "0.2.0")`,
    ],
  ];
  for (const [name, config, opts, code, message] of cases) {
    await t.step(
      name,
      () => rejects(call(plugin, memorySystem(), "ADD", config, opts), code, message),
    );
  }
  await t.step("validate() lists every problem with its path", () => {
    const problems = staticProblems({
      type: "static",
      ipam: { addresses: [{ address: "x" }, {}], routes: [{}] },
    }, "plugins[2]");
    assert.deepEqual(problems.map((q) => q.path), [
      "plugins[2].ipam.addresses[0].address",
      "plugins[2].ipam.addresses[1].address",
      "plugins[2].ipam.routes[0].dst",
    ]);
  });
});

Deno.test("static CHECK compares prevResult with the config; DEL and GC do nothing", async (t) => {
  const system = memorySystem();
  const result = await call(plugin, system, "ADD", conf(FULL));
  await t.step(
    "the result of ADD passes",
    async () => void await call(plugin, system, "CHECK", conf(FULL, { prevResult: result })),
  );
  await t.step(
    "no prevResult fails",
    () =>
      rejects(
        call(plugin, system, "CHECK", conf(FULL)),
        7,
        "invalid network config: prevResult: is required for CHECK",
      ),
  );
  await t.step("a missing address fails", async () => {
    const prev = { cniVersion: "1.0.0", ips: [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }] };
    await rejects(
      call(plugin, system, "CHECK", conf(FULL, { prevResult: prev })),
      999,
      'address fd00::5/64 is not in prevResult for interface "eth0"',
    );
  });
  await t.step("another gateway fails", async () => {
    const prev = {
      cniVersion: "1.0.0",
      ips: [{ address: "10.10.0.5/24", gateway: "10.10.0.2" }, { address: "fd00::5/64" }],
    };
    await rejects(
      call(plugin, system, "CHECK", conf(FULL, { prevResult: prev })),
      999,
      "address 10.10.0.5/24 has gateway 10.10.0.2 in prevResult, not 10.10.0.1",
    );
  });
  await t.step("DEL, even with a bad config, and GC succeed without effects", async () => {
    await call(plugin, system, "DEL", conf({ addresses: "nonsense" }));
    await call(plugin, system, "GC", conf(FULL, { cniVersion: "1.1.0" }));
    assert.deepEqual(system.effects, []);
  });
});
