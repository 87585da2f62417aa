/** Command-line mode, run through the bundled program as a person would. */
import assert from "node:assert/strict";
import { BUNDLE, FakePlugins, listTree, runProgram } from "../test/helpers.ts";

async function withWorkspace(fn: (dir: string, fakes: FakePlugins) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "cnichain-cli-" });
  const fakes = await FakePlugins.create(["a", "b"]);
  try {
    await fn(dir, fakes);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await fakes.cleanup();
  }
}

const cli = (args: string[]) => runProgram(BUNDLE, { args, env: {} });

async function writeConflist(dir: string, value: unknown): Promise<string> {
  const path = `${dir}/net.conflist`;
  await Deno.writeTextFile(path, JSON.stringify(value));
  return path;
}

Deno.test("cnichain add --dry-run prints the plan and changes nothing", async () => {
  await withWorkspace(async (dir, fakes) => {
    const conflist = await writeConflist(dir, {
      cniVersion: "1.1.0",
      name: "demo",
      plugins: [
        {
          type: "cnichain",
          stateDir: `${dir}/state`,
          logFile: `${dir}/log`,
          capabilities: { portMappings: true },
          plugins: [{ type: "a" }, { type: "b", capabilities: { portMappings: true } }],
        },
        { type: "b" },
      ],
    });
    const args = [
      "add",
      conflist,
      "--dry-run",
      "--netns",
      "/var/run/netns/x",
      "--container-id",
      "c1",
      "--cni-path",
      fakes.dir,
      "--cache-dir",
      `${dir}/cache`,
      "--cap-args",
      '{"portMappings":[{"hostPort":80,"containerPort":8080}]}',
    ];
    const text = await cli(args);
    assert.equal(text.code, 0, text.stderr);
    assert.match(
      text.stdout,
      /^cnichain dry run: ADD on network "demo" \(cniVersion 1\.1\.0\); nothing was changed/,
    );
    assert.match(text.stdout, /step 1: cnichain ADD \(built-in\)/);
    assert.match(
      text.stdout,
      new RegExp(`  step 1\\.1: a ADD \\(exec ${fakes.dir}/a, not run in a dry run\\)`),
    );
    assert.match(
      text.stdout,
      / {2}step 1\.2: b ADD .*\n {4}stdin: .*"runtimeConfig":\{"portMappings":\[\{"hostPort":80,"containerPort":8080\}\]\}/,
    );
    assert.match(text.stdout, new RegExp(`would write file ${dir}/state/results/demo-c1-eth0`));
    assert.match(text.stdout, new RegExp(`would append log lines to ${dir}/log`));
    assert.match(text.stdout, new RegExp(`step 2: b ADD \\(exec ${fakes.dir}/b`));
    assert.match(text.stdout, new RegExp(`would write file ${dir}/cache/results/demo-c1-eth0`));
    assert.match(text.stdout, /result:\n\{\n {2}"cniVersion": "1\.1\.0"\n\}/);

    const json = await cli([...args, "--json"]);
    const plan = JSON.parse(json.stdout);
    assert.equal(plan.dryRun, true);
    assert.deepEqual(plan.steps.map((s: { type: string }) => s.type), ["cnichain", "b"]);
    assert.deepEqual(
      plan.steps[0].steps.map((s: { step: string; notRun: boolean }) => [s.step, s.notRun]),
      [["1.1", true], ["1.2", true]],
    );
    assert.deepEqual(plan.effects.map((e: { op: string }) => e.op), [
      "create directory",
      "write file",
    ]);

    assert.deepEqual(await listTree(dir), ["net.conflist"], "nothing written");
    assert.deepEqual(await fakes.calls(), [], "no plugin ran");
  });
});

Deno.test("cnichain add/check/del run a conflist and keep libcni's cache", async () => {
  await withWorkspace(async (dir, fakes) => {
    const conflist = await writeConflist(dir, {
      cniVersion: "1.0.0",
      name: "net",
      plugins: [{ type: "a" }, { type: "b" }],
    });
    const common = [
      "--container-id",
      "c9",
      "--ifname",
      "net1",
      "--cni-path",
      fakes.dir,
      "--cache-dir",
      dir,
      "--cni-args",
      "K8S_POD_NAME=web",
    ];
    const add = await cli(["add", conflist, "--netns", "/var/run/netns/p", ...common]);
    assert.equal(add.code, 0, add.stderr);
    assert.deepEqual(JSON.parse(add.stdout), {
      cniVersion: "1.0.0",
      interfaces: [{ name: "a" }, { name: "b" }],
    });
    const cacheFile = `${dir}/results/net-c9-net1`;
    const cache = JSON.parse(await Deno.readTextFile(cacheFile));
    assert.equal(cache.kind, "cniCacheV1");
    assert.equal(cache.containerId, "c9");
    assert.equal(cache.ifName, "net1");
    assert.equal(cache.networkName, "net");
    assert.deepEqual(cache.cniArgs, [["K8S_POD_NAME", "web"]]);
    assert.equal(atob(cache.config), await Deno.readTextFile(conflist));
    assert.equal((await Deno.stat(cacheFile)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(`${dir}/results`)).mode! & 0o777, 0o700);
    assert.equal((await fakes.calls())[0].env.CNI_ARGS, "K8S_POD_NAME=web");

    await fakes.resetCalls();
    const check = await cli(["check", conflist, "--netns", "/var/run/netns/p", ...common]);
    assert.equal(check.code, 0, check.stderr);
    for (const c of await fakes.calls()) assert.deepEqual(c.stdin.prevResult, cache.result);

    await fakes.resetCalls();
    const del = await cli(["del", conflist, ...common]);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual((await fakes.calls()).map((c) => [c.verb, c.type, c.env.CNI_NETNS]), [[
      "DEL",
      "b",
      "",
    ], ["DEL", "a", ""]]);
    await assert.rejects(() => Deno.stat(cacheFile), Deno.errors.NotFound);
  });
});

Deno.test("cnichain validate lists every problem with its path", async () => {
  await withWorkspace(async (dir) => {
    const bad = await writeConflist(dir, {
      cniVersion: "1.0.0",
      name: "bad name",
      plugins: [
        { type: "cnichain", stateDir: "rel", plugins: [{ type: "x/y" }, { capabilities: 3 }] },
        { type: "ok" },
        5,
      ],
    });
    const out = await cli(["validate", bad]);
    assert.equal(out.code, 1);
    for (
      const path of [
        "name",
        "plugins[0].plugins[0].type",
        "plugins[0].plugins[1].type",
        "plugins[0].plugins[1].capabilities",
        "plugins[0].stateDir",
        "plugins[2]",
      ]
    ) {
      assert.ok(out.stdout.includes(`  ${path}: `), `${path} in:\n${out.stdout}`);
    }
    assert.match(out.stdout, /6 problems/);
    const json = JSON.parse((await cli(["validate", bad, "--json"])).stdout);
    assert.equal(json.valid, false);
    assert.equal(json.problems.length, 6);

    const good = await writeConflist(dir, {
      cniVersion: "1.1.0",
      name: "ok",
      plugins: [{ type: "cnichain", plugins: [{ type: "a" }] }],
    });
    const ok = await cli(["validate", good]);
    assert.equal(ok.code, 0);
    assert.match(ok.stdout, /valid/);
  });
});

Deno.test("cnichain command-line errors name the flag or file", async (t) => {
  await withWorkspace(async (dir, fakes) => {
    const conflist = await writeConflist(dir, {
      cniVersion: "1.0.0",
      name: "net",
      plugins: [{ type: "a" }],
    });
    const cases: [string, string[], RegExp][] = [
      ["no container id", ["add", conflist, "--netns", "/x"], /error 4: .*--container-id missing/],
      [
        "a bad ifname",
        ["add", conflist, "--netns", "/x", "--container-id", "c", "--ifname", "a/b"],
        /error 4: --ifname: "a\/b"/,
      ],
      [
        "a missing conflist",
        ["add", `${dir}/nope`, "--netns", "/x", "--container-id", "c"],
        /error 5: open ".*nope"/,
      ],
      ["bad --cap-args", [
        "add",
        conflist,
        "--netns",
        "/x",
        "--container-id",
        "c",
        "--cap-args",
        "{",
      ], /error 6: --cap-args: not valid JSON/],
    ];
    for (const [what, args, message] of cases) {
      await t.step(what, async () => {
        const out = await cli([...args, "--cni-path", fakes.dir, "--cache-dir", `${dir}/cache`]);
        assert.equal(out.code, 1);
        assert.match(out.stderr, message);
        assert.deepEqual(await fakes.calls(), []);
        assert.deepEqual(await listTree(dir), ["net.conflist"]);
      });
    }
    await t.step("an unknown command shows the usage", async () => {
      const out = await cli(["frob"]);
      assert.equal(out.code, 2);
      assert.match(out.stderr, /unknown command "frob"/);
    });
    await t.step("--help works for each command", async () => {
      for (const cmd of ["add", "del", "check", "gc", "status", "validate"]) {
        const out = await cli([cmd, "--help"]);
        assert.equal(out.code, 0);
        assert.match(
          out.stdout,
          new RegExp(`cnichain ${cmd === "validate" ? "validate" : "add\\|del"}`),
        );
      }
    });
  });
});
