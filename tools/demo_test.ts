/**
 * Both demos interrupted in the middle (Ctrl-C sends SIGINT): each removes what it made (its
 * namespaces and its temp dir) before it exits.
 */
import assert from "node:assert/strict";
import { ROOT } from "../test/helpers.ts";
import { IS_ROOT, netnsNames } from "../test/netns.ts";

/** Runs `script` until its output matches `when`, sends SIGINT, returns its code and output. */
async function interrupted(script: string, when: RegExp): Promise<{ code: number; out: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${ROOT}${script}`],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  let sent = false;
  const read = async (stream: ReadableStream<Uint8Array>) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      out += text;
      if (!sent && when.test(out)) {
        sent = true;
        child.kill("SIGINT");
      }
    }
  };
  const [status] = await Promise.all([child.status, read(child.stdout), read(child.stderr)]);
  assert.ok(sent, `${script} ended before ${when}:\n${out}`);
  return { code: status.code, out };
}

async function assertGone(prefix: string, dir: string, out: string): Promise<void> {
  const left = (await netnsNames()).filter((n) => n.startsWith(`${prefix}-`));
  assert.deepEqual(left, [], `netns left behind:\n${out}`);
  await assert.rejects(Deno.stat(dir), Deno.errors.NotFound, `${dir} left behind:\n${out}`);
}

Deno.test({
  name: "deno task demo: SIGINT in the middle removes the namespaces and the temp dir",
  ignore: !IS_ROOT,
  async fn() {
    const { code, out } = await interrupted("tools/demo.ts", /Traffic \(real packets/);
    assert.equal(code, 130, out);
    const m = /removed the demo's (cnt[0-9a-f]+)-\* namespaces and (\S+)/.exec(out);
    assert.ok(m, out);
    await assertGone(m[1], m[2], out);
  },
});

Deno.test({
  name: "deno task cluster-demo: SIGINT while pods are attached removes the whole world",
  ignore: !IS_ROOT,
  async fn() {
    const { out } = await interrupted("deploy/cluster/demo.ts", /ADD \(dist\/cnichain[^\n]*\n.*\n/);
    const m = /removed everything \((ccl[0-9a-f]+)-\* netns, (\/\S+)\)/.exec(out);
    assert.ok(m, out);
    await assertGone(m[1], m[2], out);
  },
});
