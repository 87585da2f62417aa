import assert from "node:assert/strict";
import { encodeResult, parseResult } from "./result.ts";
import { CniError } from "./errors.ts";
import type { Result } from "./types.ts";
import { SUPPORTED_VERSIONS } from "./version.ts";

/** A dual-stack result with everything the 1.x shape can carry. */
const full: Result = {
  cniVersion: "1.1.0",
  interfaces: [
    {
      name: "eth0",
      mac: "00:11:22:33:44:55",
      mtu: 1400,
      sandbox: "/var/run/netns/x",
      socketPath: "/s",
      pciID: "0000:00:01.0",
    },
  ],
  ips: [
    { address: "10.1.2.3/24", gateway: "10.1.2.1", interface: 0 },
    { address: "2001:db8::3/64", gateway: "2001:db8::1", interface: 0 },
    { address: "10.9.9.9/32", interface: 0 },
  ],
  routes: [
    { dst: "0.0.0.0/0", gw: "10.1.2.1" },
    { dst: "::/0", gw: "2001:db8::1" },
    { dst: "192.168.0.0/16", priority: 10, table: 100 },
  ],
  dns: {
    nameservers: ["10.0.0.10"],
    domain: "cluster.local",
    search: ["svc.cluster.local"],
    options: ["ndots:5"],
  },
};

Deno.test("encodeResult() writes each version's encoding", async (t) => {
  await t.step("1.0.0 and 1.1.0 keep the shape and change only cniVersion", () => {
    for (const v of ["1.0.0", "1.1.0"]) {
      const out = encodeResult(full, v);
      assert.equal(out.cniVersion, v);
      assert.deepEqual({ ...out, cniVersion: "1.1.0" }, JSON.parse(JSON.stringify(full)));
    }
  });
  await t.step("0.3.x and 0.4.0 drop mtu, socketPath and pciID and add ip versions", () => {
    for (const v of ["0.3.0", "0.3.1", "0.4.0"]) {
      const out = encodeResult(full, v);
      assert.deepEqual(out.interfaces, [{
        name: "eth0",
        mac: "00:11:22:33:44:55",
        sandbox: "/var/run/netns/x",
      }]);
      assert.deepEqual(out.ips, [
        { version: "4", interface: 0, address: "10.1.2.3/24", gateway: "10.1.2.1" },
        { version: "6", interface: 0, address: "2001:db8::3/64", gateway: "2001:db8::1" },
        { version: "4", interface: 0, address: "10.9.9.9/32" },
      ]);
      assert.equal(out.cniVersion, v);
    }
  });
  await t.step("0.1.0 and 0.2.0 keep the first address of each family with its routes", () => {
    for (const v of ["0.1.0", "0.2.0"]) {
      assert.deepEqual(encodeResult(full, v), {
        cniVersion: v,
        ip4: {
          ip: "10.1.2.3/24",
          gateway: "10.1.2.1",
          routes: [{ dst: "0.0.0.0/0", gw: "10.1.2.1" }, {
            dst: "192.168.0.0/16",
            priority: 10,
            table: 100,
          }],
        },
        ip6: {
          ip: "2001:db8::3/64",
          gateway: "2001:db8::1",
          routes: [{ dst: "::/0", gw: "2001:db8::1" }],
        },
        dns: full.dns as Record<string, string[]>,
      });
    }
  });
  await t.step("0.1.0 and 0.2.0 cannot express a result without addresses (code 1)", () => {
    for (const v of ["0.1.0", "0.2.0"]) {
      assert.throws(
        () => encodeResult({ cniVersion: "1.0.0", interfaces: [{ name: "eth0" }] }, v),
        (e: unknown) => {
          assert.ok(e instanceof CniError);
          assert.equal(e.code, 1);
          assert.match(e.message, /no IP address/);
          return true;
        },
      );
    }
  });
  await t.step("an empty dns is left out in every version", () => {
    for (const v of SUPPORTED_VERSIONS) {
      const out = encodeResult({ cniVersion: v, ips: [{ address: "10.0.0.2/24" }], dns: {} }, v);
      assert.equal("dns" in out, false, v);
    }
  });
});

Deno.test("parseResult() reads every version back into the 1.x shape", async (t) => {
  for (const v of SUPPORTED_VERSIONS) {
    await t.step(`round trip through ${v}`, () => {
      const back = parseResult(encodeResult(full, v), v);
      assert.equal(back.cniVersion, v);
      const expected = encodeResult(full, v);
      assert.deepEqual(encodeResult(back, v), expected);
    });
  }
  await t.step("a result's own cniVersion wins over the config's", () => {
    const r = parseResult({ cniVersion: "0.2.0", ip4: { ip: "10.0.0.2/24" } }, "1.0.0");
    assert.deepEqual(r, { cniVersion: "0.2.0", ips: [{ address: "10.0.0.2/24" }] });
  });
  await t.step("a result without cniVersion takes the config's", () => {
    const r = parseResult({ ips: [{ version: "4", address: "10.0.0.2/24" }] }, "0.4.0");
    assert.equal(r.cniVersion, "0.4.0");
  });
  const bad: [string, unknown, RegExp][] = [
    ["not an object", [], /prevResult: must be an object/],
    [
      "an address without prefix",
      { cniVersion: "1.0.0", ips: [{ address: "10.0.0.2" }] },
      /prevResult\.ips\[0\]\.address: is not an address with prefix length \(got "10\.0\.0\.2"\)/,
    ],
    [
      "a bad gateway",
      { cniVersion: "1.0.0", ips: [{ address: "10.0.0.2/8", gateway: "x" }] },
      /ips\[0\]\.gateway: is not an IP address/,
    ],
    ["an interface index out of range", {
      cniVersion: "1.0.0",
      interfaces: [],
      ips: [{ address: "10.0.0.2/8", interface: 2 }],
    }, /ips\[0\]\.interface: names no interface/],
    [
      "a route without dst",
      { cniVersion: "1.0.0", routes: [{ gw: "10.0.0.1" }] },
      /routes\[0\]\.dst: is required/,
    ],
    [
      "a 0.2.0 ip4 without ip",
      { cniVersion: "0.2.0", ip4: {} },
      /prevResult\.ip4\.ip: is required/,
    ],
    [
      "nameservers that are not strings",
      { cniVersion: "1.0.0", dns: { nameservers: [1] } },
      /dns\.nameservers: must be a list of strings/,
    ],
  ];
  for (const [what, raw, message] of bad) {
    await t.step(`rejects ${what} with code 7 naming the field`, () => {
      assert.throws(() => parseResult(raw, "1.0.0"), (e: unknown) => {
        assert.ok(e instanceof CniError);
        assert.equal(e.code, 7);
        assert.match(e.message, message);
        return true;
      });
    });
  }
  await t.step("rejects an unsupported cniVersion with code 1", () => {
    assert.throws(
      () => parseResult({ cniVersion: "9.9.9" }, "1.0.0"),
      (e: unknown) => e instanceof CniError && e.code === 1,
    );
  });
});
