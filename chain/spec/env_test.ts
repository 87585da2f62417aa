import assert from "node:assert/strict";
import { interfaceNameProblem, parseCniArgs, parseEnv } from "./env.ts";
import { CniError } from "./errors.ts";

const full: Record<string, string> = {
  CNI_CONTAINERID: "abc",
  CNI_NETNS: "/var/run/netns/x",
  CNI_IFNAME: "eth0",
  CNI_PATH: "/opt/cni/bin",
};

function code4(vars: Record<string, string>, message: RegExp) {
  assert.throws(() => parseEnv((n) => vars[n]), (e: unknown) => {
    assert.ok(e instanceof CniError);
    assert.equal(e.code, 4);
    assert.match(e.message, message);
    return true;
  });
}

Deno.test("parseEnv() requires each verb's variables (code 4, named)", async (t) => {
  const required: Record<string, string[]> = {
    ADD: ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
    CHECK: ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
    DEL: ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
    GC: ["CNI_PATH"],
    STATUS: ["CNI_PATH"],
    VERSION: [],
  };
  for (const [verb, names] of Object.entries(required)) {
    await t.step(`${verb} with everything set parses`, () => {
      const env = parseEnv((n) => ({ ...full, CNI_COMMAND: verb })[n]);
      assert.equal(env.command, verb);
    });
    for (const name of names) {
      await t.step(`${verb} without ${name} is code 4 naming it`, () => {
        const vars: Record<string, string> = { ...full, CNI_COMMAND: verb };
        delete vars[name];
        code4(vars, new RegExp(`${name} missing for ${verb}`));
      });
    }
  }
  await t.step("DEL without CNI_NETNS is fine", () => {
    const env = parseEnv((n) => ({ ...full, CNI_COMMAND: "DEL", CNI_NETNS: "" })[n]);
    assert.equal(env.netns, "");
  });
  await t.step("no CNI_COMMAND is code 4", () => code4({ ...full }, /CNI_COMMAND is missing/));
  await t.step(
    "an unknown CNI_COMMAND is code 4 naming it",
    () => code4({ ...full, CNI_COMMAND: "UPDATE" }, /unknown command "UPDATE"/),
  );
});

Deno.test("parseEnv() validates the container id, ifname and CNI_ARGS", async (t) => {
  const badIds = ["-abc", ".x", "a b", "a/b", "a;rm -rf", "ä"];
  for (const id of badIds) {
    await t.step(`container id ${JSON.stringify(id)} is code 4`, () => {
      code4(
        { ...full, CNI_COMMAND: "ADD", CNI_CONTAINERID: id },
        /CNI_CONTAINERID: .* has characters outside/,
      );
    });
  }
  const badNames: [string, RegExp][] = [
    ["a-very-long-name0", /longer than 15 bytes/],
    [".", /may not be \. or \.\./],
    ["..", /may not be \. or \.\./],
    ["eth/0", /may not contain/],
    ["eth:0", /may not contain/],
    ["eth 0", /may not contain/],
    // A lone surrogate: a process never gets one (the OS hands over bytes), an in-process
    // caller can, and it would be written to disk as U+FFFD and never read back equal.
    ["eth\ud800", /CNI_IFNAME: is not valid UTF-8/],
  ];
  for (const [name, message] of badNames) {
    await t.step(`ifname ${JSON.stringify(name)} is code 4`, () => {
      code4({ ...full, CNI_COMMAND: "ADD", CNI_IFNAME: name }, message);
    });
  }
  await t.step(
    "a 15-byte ifname is fine",
    () => assert.equal(interfaceNameProblem("abcdefghijklmno"), undefined),
  );
  await t.step("CNI_ARGS pairs are split on ; and the first =", () => {
    assert.deepEqual(parseCniArgs("IgnoreUnknown=1;IP=10.0.0.5;K=a=b"), [["IgnoreUnknown", "1"], [
      "IP",
      "10.0.0.5",
    ], ["K", "a=b"]]);
  });
  await t.step(
    "a CNI_ARGS pair without = is code 4",
    () => code4({ ...full, CNI_COMMAND: "ADD", CNI_ARGS: "novalue" }, /CNI_ARGS: "novalue"/),
  );
});
