import assert from "node:assert/strict";
import { atLeast, compareVersions, isSupported, parseSemver, pickVersion } from "./version.ts";

Deno.test("version helpers compare and pick spec versions", async (t) => {
  await t.step("parseSemver() accepts only major.minor.patch", () => {
    assert.deepEqual(parseSemver("1.10.0"), [1, 10, 0]);
    for (const bad of ["1.0", "01.0.0", "1.0.0-rc1", "", "a.b.c"]) {
      assert.equal(parseSemver(bad), undefined, bad);
    }
  });
  await t.step("compareVersions() orders numerically, not as text", () => {
    assert.ok(compareVersions("0.10.0", "0.4.0") > 0);
    assert.ok(compareVersions("0.3.1", "0.4.0") < 0);
    assert.ok(atLeast("1.1.0", "0.4.0"));
    assert.ok(!atLeast("0.3.1", "0.4.0"));
  });
  await t.step("isSupported() knows the seven versions", () => {
    assert.ok(isSupported("0.3.1"));
    assert.ok(!isSupported("1.2.0"));
    assert.ok(!isSupported("0.3.2"));
  });
  await t.step("pickVersion() takes the highest supported of cniVersion and cniVersions", () => {
    assert.equal(pickVersion("1.0.0", ["1.1.0", "2.0.0"]), "1.1.0");
    assert.equal(pickVersion("0.4.0", undefined), "0.4.0");
    assert.equal(pickVersion(undefined, ["0.3.1", "9.0.0"]), "0.3.1");
    assert.equal(pickVersion(undefined, undefined), "0.1.0");
    assert.equal(pickVersion("", undefined), "0.1.0");
    assert.equal(pickVersion("9.9.9", ["8.0.0"]), undefined);
  });
});
