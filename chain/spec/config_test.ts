import assert from "node:assert/strict";
import {
  checkConflist,
  MAX_CHAIN_STEPS,
  parseConflist,
  parseNetConf,
  pathProblem,
} from "./config.ts";
import { CniError } from "./errors.ts";
import { SUPPORTED_VERSIONS } from "./version.ts";

Deno.test("checkConflist() reports every problem with its JSON path", async (t) => {
  await t.step("a valid conflist parses with its version and steps", () => {
    const { conflist, problems } = checkConflist({
      cniVersion: "1.0.0",
      cniVersions: ["1.1.0"],
      name: "net",
      disableCheck: "true",
      plugins: [{ type: "a" }, { type: "b", capabilities: { portMappings: true } }],
      extra: { kept: true },
    });
    assert.deepEqual(problems, []);
    assert.equal(conflist?.cniVersion, "1.1.0");
    assert.equal(conflist?.disableCheck, true);
    assert.deepEqual(conflist?.raw.extra, { kept: true });
  });
  await t.step("all problems at once, each with its path", () => {
    const { conflist, problems } = checkConflist({
      cniVersion: "1.0.0",
      name: "bad name",
      disableGC: "maybe",
      plugins: [{ type: "../../bin/sh" }, "x", { capabilities: { a: "yes" } }],
    });
    assert.equal(conflist, undefined);
    assert.deepEqual(problems.map((p) => p.path), [
      "name",
      "disableGC",
      "plugins[0].type",
      "plugins[1]",
      "plugins[2].type",
      "plugins[2].capabilities",
    ]);
  });
  await t.step("an unsupported version is code 1 from parseConflist()", () => {
    assert.throws(
      () => parseConflist({ cniVersion: "2.0.0", name: "n", plugins: [{ type: "a" }] }),
      (e: unknown) => {
        assert.ok(e instanceof CniError);
        assert.equal(e.code, 1);
        assert.match(e.details, /"2\.0\.0" is not supported/);
        return true;
      },
    );
  });
  await t.step(`more than ${MAX_CHAIN_STEPS} steps is code 7`, () => {
    const plugins = Array.from({ length: MAX_CHAIN_STEPS + 1 }, () => ({ type: "a" }));
    assert.throws(
      () => parseConflist({ cniVersion: "1.0.0", name: "n", plugins }),
      (e: unknown) => {
        assert.ok(e instanceof CniError);
        assert.equal(e.code, 7);
        assert.match(e.message, /plugins: has 65 steps, more than the limit of 64/);
        return true;
      },
    );
    assert.ok(parseConflist({ cniVersion: "1.0.0", name: "n", plugins: plugins.slice(1) }));
  });
  await t.step("no plugins is code 7", () => {
    assert.throws(
      () => parseConflist({ cniVersion: "1.0.0", name: "n", plugins: [] }),
      /plugins: must be a non-empty list/,
    );
  });
});

Deno.test("parseNetConf() checks the common fields of a plugin's stdin", async (t) => {
  for (const v of SUPPORTED_VERSIONS) {
    await t.step(`reads cniVersion ${v} and its prevResult`, () => {
      const prevResult = v < "0.3.0"
        ? { ip4: { ip: "10.0.0.2/24" } }
        : { ips: [{ version: "4", address: "10.0.0.2/24" }] };
      const conf = parseNetConf({ cniVersion: v, name: "n", type: "x", prevResult });
      assert.equal(conf.cniVersion, v);
      assert.equal(conf.prevResult?.ips?.[0].address, "10.0.0.2/24");
    });
  }
  const bad: [string, Record<string, unknown>, number, RegExp][] = [
    ["an unknown version", { cniVersion: "0.5.0", type: "x" }, 1, /incompatible CNI versions/],
    ["a version that is not a string", { cniVersion: 1, type: "x" }, 1, /incompatible/],
    [
      "a name with a slash",
      { cniVersion: "1.0.0", name: "../etc", type: "x" },
      7,
      /name: must match .* \(got "\.\.\/etc"\)/,
    ],
    ["no type", { cniVersion: "1.0.0", name: "n" }, 7, /type: is required/],
    [
      "a runtimeConfig that is a list",
      { cniVersion: "1.0.0", type: "x", runtimeConfig: [] },
      7,
      /runtimeConfig: must be an object/,
    ],
  ];
  for (const [what, raw, code, message] of bad) {
    await t.step(`rejects ${what} (code ${code})`, () => {
      assert.throws(() => parseNetConf(raw), (e: unknown) => {
        assert.ok(e instanceof CniError);
        assert.equal(e.code, code);
        assert.match(e.message + e.details, message);
        return true;
      });
    });
  }
  await t.step(
    "an absent cniVersion is 0.1.0",
    () => assert.equal(parseNetConf({ type: "x" }).cniVersion, "0.1.0"),
  );
});

Deno.test("pathProblem() keeps config paths absolute and inside their tree", () => {
  assert.equal(pathProblem("/var/lib/cni"), undefined);
  assert.match(pathProblem("var/lib")!, /absolute/);
  assert.match(pathProblem("/var/lib/../../etc")!, /\.\. segments/);
  assert.match(pathProblem("/a\0b")!, /NUL/);
  assert.match(pathProblem(3)!, /non-empty string/);
});
