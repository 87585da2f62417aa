/**
 * The program at the CNI boundary, run as runtimes run it: the bundled
 * dist/cnichain exec'd with only the CNI variables in its environment and the
 * config on stdin. Every error case checks the code, the message and that
 * nothing was written.
 */
import assert from "node:assert/strict";
import { BUNDLE, FakePlugins, listTree, runPlugin, runProgram } from "./test/helpers.ts";
import { DatabaseSync } from "node:sqlite";
import { SUPPORTED_VERSIONS } from "./chain/spec/version.ts";

function chainConfig(
  version: string,
  stateDir: string,
  plugins: unknown[] = [{ type: "a" }, { type: "b" }],
) {
  return { cniVersion: version, name: "net1", type: "cnichain", stateDir, plugins };
}

/** The state dir's files but the attachment lock files (a fixed few, kept: not per attachment). */
async function stateFiles(dir: string): Promise<string[]> {
  return (await listTree(dir)).filter((f) => !/^locks(\/attachment\.\d+\.lock)?$/.test(f));
}

/** A fresh state dir and fake plugin dir; both removed after `fn`, even when it fails. */
async function withDirs(fn: (stateDir: string, fakes: FakePlugins) => Promise<void>) {
  const stateDir = await Deno.makeTempDir({ prefix: "cnichain-state-" });
  const fakes = await FakePlugins.create(["a", "b"]);
  try {
    await fn(stateDir, fakes);
  } finally {
    await Deno.remove(stateDir, { recursive: true });
    await fakes.cleanup();
  }
}

Deno.test("VERSION answers with an empty environment for every spec version", async (t) => {
  for (const version of SUPPORTED_VERSIONS) {
    await t.step(version, async () => {
      const out = await runProgram(BUNDLE, {
        env: { CNI_COMMAND: "VERSION" },
        stdin: JSON.stringify({ cniVersion: version }),
      });
      assert.equal(out.code, 0, out.stderr);
      assert.deepEqual(out.json, {
        cniVersion: version,
        supportedVersions: [...SUPPORTED_VERSIONS],
      });
    });
  }
  await t.step("with nothing on stdin it answers as 1.1.0", async () => {
    const out = await runProgram(BUNDLE, { env: { CNI_COMMAND: "VERSION" } });
    assert.equal(out.code, 0);
    assert.equal(out.json?.cniVersion, "1.1.0");
  });
  await t.step("from a directory holding someone else's deno.json", async () => {
    const cwd = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(
        `${cwd}/deno.json`,
        '{"imports": {"x": "jsr:@nope/x"}, "lock": true}',
      );
      const out = await runProgram(BUNDLE, { env: { CNI_COMMAND: "VERSION" }, stdin: "{}", cwd });
      assert.equal(out.code, 0, out.stderr);
      assert.deepEqual(await listTree(cwd), ["deno.json"], "no lock file or cache written there");
    } finally {
      await Deno.remove(cwd, { recursive: true });
    }
  });
  await t.step({
    name: "on a node's first run: no network at all and an empty Deno cache",
    // A fresh network namespace (root only) has nothing but a downed lo: any download would fail.
    ignore: Deno.uid() !== 0,
    fn: async () => {
      const denoDir = await Deno.makeTempDir({ prefix: "cnichain-denodir-" });
      try {
        const out = await runProgram("/usr/bin/unshare", {
          args: ["--net", BUNDLE],
          env: { CNI_COMMAND: "VERSION", DENO_DIR: denoDir },
          stdin: '{"cniVersion":"1.0.0"}',
        });
        assert.equal(out.code, 0, out.stderr);
        assert.equal(out.json?.cniVersion, "1.0.0");
      } finally {
        await Deno.remove(denoDir, { recursive: true });
      }
    },
  });
});

Deno.test("a run leaves Deno a code cache of the whole program, so the next run compiles nothing", async () => {
  // Deno writes the cache as the process winds down (not after Deno.exit()), and it holds only
  // the functions compiled by then: all of them with the bundle's --no-lazy.
  const denoDir = await Deno.makeTempDir({ prefix: "cnichain-denodir-" });
  try {
    const out = await runProgram(BUNDLE, {
      env: { CNI_COMMAND: "VERSION", DENO_DIR: denoDir },
      stdin: "{}",
    });
    assert.equal(out.code, 0, out.stderr);
    const db = new DatabaseSync(`${denoDir}/v8_code_cache_v2`, { readOnly: true });
    try {
      const rows = db.prepare("SELECT specifier, length(data) AS bytes FROM codecache").all();
      const own = rows.find((r) => r.specifier === new URL(`file://${BUNDLE}`).href);
      assert.ok(own, `no code cache entry for the program in ${JSON.stringify(rows)}`);
      // A cache of the top level only is some tens of KiB; every function makes it hundreds.
      assert.ok(Number(own.bytes) > 400_000, `the code cache holds ${own.bytes} bytes`);
    } finally {
      db.close();
    }
    // The program runs as the JavaScript it is: no transpiled copy of it in Deno's emit cache.
    const emitted = (await listTree(`${denoDir}/gen`)).filter((f) => f.includes("cnichain"));
    assert.deepEqual(emitted, [], "Deno transpiled the program");
  } finally {
    await Deno.remove(denoDir, { recursive: true });
  }
});

Deno.test("the command line leaves Deno's code cache as it found it after its first run", async () => {
  // The command line travels inside the program (main.ts): loading it must not add an entry to
  // Deno's cache directory on every run, as a module with a fresh blob: URL each time did.
  const denoDir = await Deno.makeTempDir({ prefix: "cnichain-denodir-" });
  const entries = () => {
    const db = new DatabaseSync(`${denoDir}/v8_code_cache_v2`, { readOnly: true });
    try {
      return db.prepare("SELECT specifier FROM codecache").all().map((r) => String(r.specifier))
        .sort();
    } finally {
      db.close();
    }
  };
  try {
    const runs: string[][] = [];
    for (let i = 0; i < 3; i++) {
      const out = await runProgram(BUNDLE, { args: ["version"], env: { DENO_DIR: denoDir } });
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, /^cnichain \d/);
      runs.push(entries());
    }
    assert.deepEqual(runs[2], runs[0], "the cache grew after the first run");
  } finally {
    await Deno.remove(denoDir, { recursive: true });
  }
});

Deno.test("plugin mode errors: right code, clear message, nothing written, no step run", async (t) => {
  await withDirs(async (stateDir, fakes) => {
    const good = chainConfig("1.1.0", stateDir);
    const vars = { CNI_PATH: fakes.dir };
    const cases: [string, string, unknown, Record<string, string>, number, RegExp][] = [
      ["missing CNI_NETNS on ADD", "ADD", good, { CNI_NETNS: "" }, 4, /CNI_NETNS missing for ADD/],
      [
        "missing CNI_CONTAINERID on DEL",
        "DEL",
        good,
        { CNI_CONTAINERID: "" },
        4,
        /CNI_CONTAINERID missing for DEL/,
      ],
      ["missing CNI_PATH on GC", "GC", good, { CNI_PATH: "" }, 4, /CNI_PATH missing for GC/],
      ["an unknown command", "FROB", good, {}, 4, /unknown command "FROB"/],
      [
        "a container id with a slash",
        "ADD",
        good,
        { CNI_CONTAINERID: "../x" },
        4,
        /CNI_CONTAINERID: "\.\.\/x"/,
      ],
      [
        "an ifname over 15 bytes",
        "ADD",
        good,
        { CNI_IFNAME: "eth0123456789abc" },
        4,
        /CNI_IFNAME: .* longer than 15 bytes/,
      ],
      ["truncated JSON", "ADD", '{"cniVersion": "1.0.0", "name"', {}, 6, /stdin is not valid JSON/],
      [
        "non-UTF-8 bytes",
        "ADD",
        new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]),
        {},
        6,
        /stdin is not valid UTF-8/,
      ],
      ["empty stdin", "ADD", "", {}, 6, /stdin is empty/],
      ["an array on stdin", "ADD", "[]", {}, 6, /must hold a JSON object, not an array/],
      [
        "JSON nested 65 deep",
        "ADD",
        `{"a":${"[".repeat(64)}${"]".repeat(64)}}`,
        {},
        6,
        /deeper than the limit of 64/,
      ],
      [
        "an unsupported version",
        "ADD",
        { ...good, cniVersion: "3.0.0" },
        {},
        1,
        /incompatible CNI versions/,
      ],
      [
        "CHECK at 0.3.1",
        "CHECK",
        { ...good, cniVersion: "0.3.1" },
        {},
        1,
        /incompatible CNI versions/,
      ],
      ["GC at 1.0.0", "GC", { ...good, cniVersion: "1.0.0" }, {}, 1, /incompatible CNI versions/],
      [
        "STATUS at 0.4.0",
        "STATUS",
        { ...good, cniVersion: "0.4.0" },
        {},
        1,
        /incompatible CNI versions/,
      ],
      [
        "a network name with a slash",
        "ADD",
        { ...good, name: "a/b" },
        {},
        7,
        /name: must match .*\(got "a\/b"\)/,
      ],
      [
        "a nested step without type",
        "ADD",
        chainConfig("1.0.0", stateDir, [{ type: "a" }, {}]),
        {},
        7,
        /plugins\[1\]\.type: is required/,
      ],
      [
        "a nested step whose type is a path",
        "ADD",
        chainConfig("1.0.0", stateDir, [{ type: "../../bin/sh" }]),
        {},
        7,
        /plugins\[0\]\.type: must be a plugin name/,
      ],
      [
        "a cnichain inside a cnichain",
        "ADD",
        chainConfig("1.0.0", stateDir, [{ type: "cnichain", plugins: [{ type: "a" }] }]),
        {},
        7,
        /plugins\[0\]\.type: a cnichain chain cannot contain another cnichain/,
      ],
      [
        "65 nested steps",
        "ADD",
        chainConfig("1.0.0", stateDir, Array.from({ length: 65 }, () => ({ type: "a" }))),
        {},
        7,
        /plugins: has 65 steps, more than the limit of 64/,
      ],
      [
        "a relative stateDir",
        "ADD",
        { ...good, stateDir: "state" },
        {},
        7,
        /stateDir: must be an absolute path \(got "state"\)/,
      ],
      [
        "a logFile with ..",
        "ADD",
        { ...good, logFile: `${stateDir}/../../etc/x` },
        {},
        7,
        /logFile: may not contain \.\. segments/,
      ],
      [
        "a logLevel that does not exist",
        "ADD",
        { ...good, logLevel: "loud" },
        {},
        7,
        /logLevel: must be one of error, info, debug/,
      ],
      [
        "a type that is not built in",
        "ADD",
        { ...good, type: "nope" },
        {},
        7,
        /type: "nope" is not a cnichain built-in/,
      ],
      [
        "a step not in CNI_PATH",
        "ADD",
        chainConfig("1.0.0", stateDir, [{ type: "a" }, { type: "zzz" }]),
        {},
        7,
        /plugins\[1\]\.type: failed to find plugin "zzz"/,
      ],
      [
        "a malformed prevResult",
        "ADD",
        { ...good, prevResult: { ips: [{ address: "nope" }] } },
        {},
        7,
        /prevResult\.ips\[0\]\.address: is not an address/,
      ],
    ];
    for (const [what, verb, config, extra, code, message] of cases) {
      await t.step(what, async () => {
        const out = await runPlugin(verb, config, { ...vars, ...extra });
        assert.equal(out.code, 1, out.stdout);
        assert.equal(out.json?.code, code, out.stdout);
        assert.match(String(out.json?.msg) + String(out.json?.details ?? ""), message);
        assert.equal(typeof out.json?.cniVersion, "string");
        assert.doesNotMatch(out.stdout + out.stderr, /\n\s+at /, "no stack trace");
        assert.deepEqual(await listTree(stateDir), [], "nothing written");
        assert.deepEqual(await fakes.calls(), [], "no step ran");
      });
    }
  });
});

Deno.test("plugin mode reads no more than 8 MiB of stdin", async (t) => {
  await t.step("9 MiB of valid-looking JSON is code 6", async () => {
    const big = `{"cniVersion":"1.0.0","name":"n","type":"cnichain","pad":"${
      "x".repeat(9 * 1024 * 1024)
    }"}`;
    const out = await runPlugin("ADD", big);
    assert.equal(out.json?.code, 6);
    assert.match(String(out.json?.msg), /larger than the 8 MiB limit/);
  });
  await t.step(
    "an endless stdin is cut off: the program exits after reading about 8 MiB",
    async () => {
      const child = new Deno.Command(BUNDLE, {
        env: {
          CNI_COMMAND: "ADD",
          CNI_CONTAINERID: "c",
          CNI_NETNS: "/x",
          CNI_IFNAME: "eth0",
          CNI_PATH: "/x",
        },
        clearEnv: true,
        stdin: "piped",
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const writer = child.stdin.getWriter();
      const chunk = new Uint8Array(1024 * 1024).fill(0x20);
      let written = 0;
      // Up to 1 GiB; the writes start failing as soon as the program stops reading and exits.
      try {
        while (written < 1024 * 1024 * 1024) {
          await writer.write(chunk);
          written += chunk.length;
        }
      } catch {
        // EPIPE: the program is gone.
      }
      await writer.close().catch(() => {});
      const out = await child.output();
      const json = JSON.parse(new TextDecoder().decode(out.stdout));
      assert.equal(json.code, 6);
      assert.ok(written < 64 * 1024 * 1024, `wrote ${written} bytes before the program gave up`);
    },
  );
});

Deno.test("plugin mode runs the nested chain and keeps its result for DEL", async (t) => {
  for (const version of ["0.4.0", "1.0.0", "1.1.0"]) {
    await t.step(version, async () => {
      await withDirs(async (stateDir, fakes) => {
        const vars = { CNI_PATH: fakes.dir, CNI_CONTAINERID: "pod1", CNI_IFNAME: "eth0" };
        const config = {
          ...chainConfig(version, stateDir, [{ type: "a" }, {
            type: "b",
            capabilities: { portMappings: true },
          }]),
          capabilities: { portMappings: true },
          runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 8080, protocol: "tcp" }] },
          args: { cni: { labels: [{ key: "app", value: "web" }] } },
        };
        const add = await runPlugin("ADD", config, vars);
        assert.equal(add.code, 0, add.stdout + add.stderr);
        assert.deepEqual(add.json, {
          cniVersion: version,
          interfaces: [{ name: "a" }, { name: "b" }],
        });
        const [callA, callB] = await fakes.calls();
        assert.deepEqual(callA.stdin.args, config.args, "outer args reach every step");
        assert.deepEqual(callB.stdin.args, config.args);
        assert.equal(callA.stdin.runtimeConfig, undefined, "a declared no capability");
        assert.deepEqual(callB.stdin.runtimeConfig, config.runtimeConfig);
        const cache = `${stateDir}/results/net1-pod1-eth0`;
        assert.equal((await Deno.stat(cache)).mode! & 0o777, 0o600);
        assert.equal(JSON.parse(await Deno.readTextFile(cache)).result.interfaces.length, 2);

        await fakes.resetCalls();
        const del = await runPlugin("DEL", config, vars); // no prevResult: the cache provides it
        assert.equal(del.code, 0, del.stdout);
        assert.equal(del.stdout, "");
        const dels = await fakes.calls();
        assert.deepEqual(dels.map((c) => c.type), ["b", "a"]);
        for (const c of dels) {
          assert.deepEqual((c.stdin.prevResult as { interfaces: unknown[] }).interfaces.length, 2);
        }
        assert.deepEqual(await stateFiles(stateDir), ["results"], "the cached result is gone");

        const again = await runPlugin("DEL", config, vars);
        assert.equal(again.code, 0, "DEL is repeatable");
      });
    });
  }
  await t.step("a second ADD of an existing attachment is code 100 and runs no step", async () => {
    await withDirs(async (stateDir, fakes) => {
      const config = chainConfig("1.1.0", stateDir);
      assert.equal((await runPlugin("ADD", config, { CNI_PATH: fakes.dir })).code, 0);
      await fakes.resetCalls();
      const again = await runPlugin("ADD", config, { CNI_PATH: fakes.dir });
      assert.equal(again.json?.code, 100);
      assert.match(
        String(again.json?.msg),
        /attachment "net1\/ctr1\/eth0" already exists: DEL it first/,
      );
      assert.deepEqual(await fakes.calls(), [], "no step ran, so none tore the attachment down");
      assert.deepEqual(await stateFiles(stateDir), ["results", "results/net1-ctr1-eth0"]);
    });
  });
  await t.step(
    "a container ID too long for a file name: the result is kept under a hash",
    async () => {
      await withDirs(async (stateDir, fakes) => {
        const config = chainConfig("1.1.0", stateDir);
        const vars = { CNI_PATH: fakes.dir, CNI_CONTAINERID: "x".repeat(5000), CNI_IFNAME: "eth0" };
        const add = await runPlugin("ADD", config, vars);
        assert.equal(add.code, 0, add.stdout + add.stderr);
        const files = await stateFiles(stateDir);
        assert.equal(files.length, 2, `one cached result in ${files}`);
        assert.match(files[1], /^results\/net1-#[0-9a-f]{16}$/);
        const check = await runPlugin("CHECK", config, vars); // finds its prevResult in the cache
        assert.equal(check.code, 0, check.stdout + check.stderr);
        const again = await runPlugin("ADD", config, vars);
        assert.equal(again.json?.code, 100, "the attachment is known: a second ADD is refused");
        const del = await runPlugin("DEL", config, vars);
        assert.equal(del.code, 0, del.stdout + del.stderr);
        assert.deepEqual(await stateFiles(stateDir), ["results"], "the cached result is gone");
      });
    },
  );
  await t.step("an outer prevResult is where the nested chain starts", async () => {
    await withDirs(async (stateDir, fakes) => {
      const prevResult = { cniVersion: "1.0.0", interfaces: [{ name: "outer" }] };
      const out = await runPlugin("ADD", { ...chainConfig("1.0.0", stateDir), prevResult }, {
        CNI_PATH: fakes.dir,
      });
      assert.deepEqual(out.json?.interfaces, [{ name: "outer" }, { name: "a" }, { name: "b" }]);
    });
  });
  await t.step("GC forgets the cached results of attachments that are not valid", async () => {
    await withDirs(async (stateDir, fakes) => {
      const config = chainConfig("1.1.0", stateDir);
      for (const id of ["keep", "drop"]) {
        assert.equal(
          (await runPlugin("ADD", config, { CNI_PATH: fakes.dir, CNI_CONTAINERID: id })).code,
          0,
        );
      }
      await fakes.resetCalls();
      const gc = await runPlugin("GC", {
        ...config,
        "cni.dev/valid-attachments": [{ containerID: "keep", ifname: "eth0" }],
      }, {
        CNI_PATH: fakes.dir,
      });
      assert.equal(gc.code, 0, gc.stdout);
      assert.equal(gc.stdout, "");
      assert.deepEqual(await stateFiles(stateDir), ["results", "results/net1-keep-eth0"]);
      const calls = await fakes.calls();
      assert.deepEqual(calls.map((c) => `${c.verb} ${c.type}`), ["GC a", "GC b"]);
      assert.deepEqual(calls[0].stdin["cni.dev/valid-attachments"], [{
        containerID: "keep",
        ifname: "eth0",
      }]);
    });
  });
  await t.step("the older cni.dev/attachments key is accepted", async () => {
    await withDirs(async (stateDir, fakes) => {
      const gc = await runPlugin("GC", {
        ...chainConfig("1.1.0", stateDir),
        "cni.dev/attachments": [{ containerID: "x", ifname: "eth0" }],
      }, {
        CNI_PATH: fakes.dir,
      });
      assert.equal(gc.code, 0, gc.stdout);
      assert.deepEqual((await fakes.calls())[0].stdin["cni.dev/valid-attachments"], [{
        containerID: "x",
        ifname: "eth0",
      }]);
    });
  });
  await t.step(
    "STATUS succeeds when every step is ready and fails with the step's code when not",
    async () => {
      await withDirs(async (stateDir, fakes) => {
        assert.equal(
          (await runPlugin("STATUS", chainConfig("1.1.0", stateDir), { CNI_PATH: fakes.dir })).code,
          0,
        );
        await fakes.control("b", { STATUS: { error: { code: 51, msg: "no addresses left" } } });
        const out = await runPlugin("STATUS", chainConfig("1.1.0", stateDir), {
          CNI_PATH: fakes.dir,
        });
        assert.equal(out.json?.code, 51);
        assert.match(String(out.json?.msg), /STATUS step 2 \(b\): no addresses left/);
      });
    },
  );
});

Deno.test("plugin mode observability: the log file and CNICHAIN_TRACE", async () => {
  await withDirs(async (stateDir, fakes) => {
    const logFile = `${stateDir}/cnichain.log`;
    const config = { ...chainConfig("1.0.0", stateDir), logFile };
    const out = await runPlugin("ADD", config, { CNI_PATH: fakes.dir, CNICHAIN_TRACE: "1" });
    assert.equal(out.code, 0);
    assert.match(out.stderr, /cnichain trace: ADD step 1 a \(exec\) [\d.]+ ms ok/);
    assert.match(out.stderr, /cnichain trace: ADD step 2 b \(exec\) [\d.]+ ms ok/);
    const lines = (await Deno.readTextFile(logFile)).trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => [l.step, l.type, l.outcome]), [["1", "a", "ok"], [
      "2",
      "b",
      "ok",
    ], [undefined, undefined, "ok"]]);
    for (const l of lines) {
      assert.equal(l.verb, "ADD");
      assert.equal(l.network, "net1");
      assert.equal(l.containerId, "ctr1");
      assert.equal(typeof l.ms, "number");
    }
    await fakes.control("b", { DEL: { error: { code: 5, msg: "gone wrong" } } });
    const del = await runPlugin("DEL", config, { CNI_PATH: fakes.dir });
    assert.equal(del.json?.code, 5);
    const last = (await Deno.readTextFile(logFile)).trim().split("\n").map((l) => JSON.parse(l))
      .slice(-3);
    assert.deepEqual(last.map((l) => [l.step, l.outcome]), [["2", "error"], ["1", "ok"], [
      undefined,
      "error",
    ]]);
    assert.equal(last[0].error.msg, "gone wrong");
  });
});

Deno.test("multi-call: the program is the plugin its file is named after (symlink, hard link, copy)", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "cnichain-multicall-" });
  try {
    await Deno.mkdir(`${dir}/sym`);
    await Deno.mkdir(`${dir}/hard`);
    await Deno.mkdir(`${dir}/copy`);
    await Deno.symlink(BUNDLE, `${dir}/sym/static`);
    await Deno.copyFile(BUNDLE, `${dir}/copy/static`);
    await Deno.chmod(`${dir}/copy/static`, 0o755);
    // A hard link needs the same file system; fall back to the temp dir's own copy of the bundle.
    await Deno.copyFile(BUNDLE, `${dir}/bundle`);
    await Deno.chmod(`${dir}/bundle`, 0o755);
    await Deno.link(`${dir}/bundle`, `${dir}/hard/static`);
    const config = {
      cniVersion: "1.0.0",
      name: "mc",
      type: "static",
      ipam: { type: "static", addresses: [{ address: "10.9.8.7/24", gateway: "10.9.8.1" }] },
    };
    for (const how of ["sym", "hard", "copy"]) {
      await t.step(how, async () => {
        const out = await runPlugin("ADD", config, {}, `${dir}/${how}/static`);
        assert.equal(out.code, 0, out.stdout + out.stderr);
        assert.deepEqual(out.json?.ips, [{ address: "10.9.8.7/24", gateway: "10.9.8.1" }]);
      });
    }
    await t.step(
      "under a name that is no plugin's, it stays cnichain (command-line mode)",
      async () => {
        await Deno.symlink(BUNDLE, `${dir}/sym/not-a-plugin`);
        const out = await runProgram(`${dir}/sym/not-a-plugin`, { args: ["version"] });
        assert.equal(out.code, 0);
        assert.match(out.stdout, /^cnichain /);
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
