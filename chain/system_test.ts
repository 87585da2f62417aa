import assert from "node:assert/strict";
import { RealFiles, realSystem } from "./system.ts";
import { memorySystem, recordingSystem } from "./system_record.ts";
import { listTree } from "../test/helpers.ts";

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "cnichain-files-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("RealFiles writes state files whole, with the mode asked for", async (t) => {
  const files = new RealFiles();
  await t.step(
    "createExclusive() takes a free name once and leaves no temporary file",
    () =>
      withDir(async (dir) => {
        assert.equal(await files.createExclusive(`${dir}/10.0.0.2`, "c1\r\neth0", 0o644), true);
        assert.equal(await files.createExclusive(`${dir}/10.0.0.2`, "c2\r\neth0"), false);
        assert.equal(await Deno.readTextFile(`${dir}/10.0.0.2`), "c1\r\neth0");
        assert.equal((await Deno.stat(`${dir}/10.0.0.2`)).mode! & 0o777, 0o644);
        assert.deepEqual(await listTree(dir), ["10.0.0.2"]);
      }),
  );
  await t.step(
    "writeAtomic() replaces a file and list() sorts names",
    () =>
      withDir(async (dir) => {
        await files.writeAtomic(`${dir}/b`, "one");
        await files.writeAtomic(`${dir}/b`, "two");
        await files.writeAtomic(`${dir}/a`, "x");
        assert.equal(new TextDecoder().decode(await files.read(`${dir}/b`)), "two");
        assert.equal((await Deno.stat(`${dir}/b`)).mode! & 0o777, 0o600);
        assert.deepEqual(await files.list(dir), ["a", "b"]);
        assert.deepEqual(await files.list(`${dir}/missing`), []);
        assert.equal(await files.read(`${dir}/missing`), undefined);
      }),
  );
  await t.step(
    "overwrite() writes in place: a shorter value leaves nothing of the longer one",
    () =>
      withDir(async (dir) => {
        await files.overwrite(`${dir}/last_reserved_ip.0`, "10.99.0.100", 0o600);
        const inode = (await Deno.stat(`${dir}/last_reserved_ip.0`)).ino;
        await files.overwrite(`${dir}/last_reserved_ip.0`, "10.99.0.9");
        assert.equal(await Deno.readTextFile(`${dir}/last_reserved_ip.0`), "10.99.0.9");
        assert.equal((await Deno.stat(`${dir}/last_reserved_ip.0`)).ino, inode, "the same file");
        assert.equal((await Deno.stat(`${dir}/last_reserved_ip.0`)).mode! & 0o777, 0o600);
        assert.deepEqual(await listTree(dir), ["last_reserved_ip.0"]);
      }),
  );
  await t.step(
    "markDir() sets a token dirToken() reads back; adding or removing a name changes it",
    () =>
      withDir(async (dir) => {
        const token = await files.markDir(dir);
        assert.ok(token, "ext4 and tmpfs keep nanoseconds");
        assert.equal(await files.dirToken(dir), token);
        await files.overwrite(`${dir}/f`, "x");
        const created = await files.dirToken(dir);
        assert.notEqual(created, token, "a new name");
        assert.equal(await files.markDir(dir), await files.dirToken(dir));
        const marked = await files.dirToken(dir);
        await files.overwrite(`${dir}/f`, "yy");
        assert.equal(await files.dirToken(dir), marked, "new content in place is no new name");
        await files.remove(`${dir}/f`);
        assert.notEqual(await files.dirToken(dir), marked, "a name removed");
        assert.equal(await files.dirToken(`${dir}/missing`), undefined);
      }),
  );
  await t.step("remove() says whether there was something to remove", () =>
    withDir(async (dir) => {
      await files.writeAtomic(`${dir}/f`, "x");
      assert.equal(await files.remove(`${dir}/f`), true);
      assert.equal(await files.remove(`${dir}/f`), false);
    }));
  await t.step("a write into a missing directory names the path", () =>
    withDir(async (dir) => {
      await assert.rejects(
        () => files.writeAtomic(`${dir}/no/such/f`, "x"),
        /write ".*\/no\/such\/f": /,
      );
    }));
  await t.step(
    "withLock() is a flock that another process has to wait for",
    () =>
      withDir(async (dir) => {
        const lock = `${dir}/lock`;
        const order: string[] = [];
        await files.withLock(lock, async () => {
          const other = new Deno.Command("flock", { args: ["-x", lock, "-c", "true"] }).spawn();
          const raced = await Promise.race([
            other.status.then(() => "other finished"),
            new Promise((r) => setTimeout(() => r("still waiting"), 300)),
          ]);
          order.push(String(raced));
          order.push("released");
          // The lock is released when we return; the other process then gets it.
          other.status.then(() => order.push("other got it"));
          void other;
        });
        await new Promise((r) => setTimeout(r, 300));
        assert.deepEqual(order, ["still waiting", "released", "other got it"]);
      }),
  );
});

Deno.test("the recording System reads real state and records writes instead of making them", () =>
  withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/existing`, "real");
    const system = recordingSystem(realSystem());
    const { files } = system;
    assert.equal(new TextDecoder().decode(await files.read(`${dir}/existing`)), "real");
    assert.equal(await files.createExclusive(`${dir}/existing`, "x"), false, "sees the real file");
    await files.mkdir(`${dir}/sub`);
    assert.equal(await files.createExclusive(`${dir}/sub/new`, "planned"), true);
    assert.equal(
      await files.createExclusive(`${dir}/sub/new`, "again"),
      false,
      "sees its own planned write",
    );
    assert.deepEqual(await files.list(`${dir}/sub`), ["new"]);
    assert.equal(await files.remove(`${dir}/existing`), true);
    assert.equal(await files.read(`${dir}/existing`), undefined, "sees its own planned removal");
    assert.deepEqual(system.effects.map((e) => `${e.op} ${e.target.slice(dir.length)}`), [
      "create directory /sub",
      "create file /sub/new",
      "remove file /existing",
    ]);
    assert.deepEqual(await listTree(dir), ["existing"], "the real directory is untouched");
  }));

Deno.test("the memory System starts empty and serialises lock holders", async () => {
  const system = memorySystem();
  const order: number[] = [];
  await Promise.all([1, 2, 3].map((n) =>
    system.files.withLock("/l", async () => {
      order.push(n);
      await new Promise((r) => setTimeout(r, 5));
      order.push(-n);
    })
  ));
  assert.deepEqual(order, [1, -1, 2, -2, 3, -3]);
  assert.equal(await system.files.read("/etc/hostname"), undefined);
});
