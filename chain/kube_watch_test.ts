/**
 * List and watch against the fake API server (test/fake_kube.ts, plain http
 * on loopback): pages, events in order, 410 Gone (as an ERROR event and as a
 * status) leading to a relist, a dropped connection to a resumed watch.
 */
import assert from "node:assert/strict";
import { KubeClient, kubeconfigFile } from "./kube.ts";
import {
  type KubeObject,
  listAll,
  objectKey,
  reflect,
  type WatchEvent,
  watchOnce,
} from "./kube_watch.ts";
import { FakeKube, networkPolicy } from "../test/fake_kube.ts";

async function withFake(fn: (fake: FakeKube, client: KubeClient) => Promise<void>): Promise<void> {
  const fake = new FakeKube();
  const dir = await Deno.makeTempDir({ prefix: "cnichain-watch-" });
  await Deno.writeTextFile(`${dir}/kc.json`, fake.kubeconfig());
  const client = new KubeClient(kubeconfigFile(`${dir}/kc.json`), { timeoutMs: 2000 });
  try {
    await fn(fake, client);
  } finally {
    client.close();
    await fake.close();
    await Deno.remove(dir, { recursive: true });
  }
}

async function until(what: string, ok: () => boolean, withinMs = 5000): Promise<void> {
  const end = Date.now() + withinMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`not within ${withinMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const POLICIES = "/apis/networking.k8s.io/v1/networkpolicies";
const spec = { podSelector: {}, policyTypes: ["Ingress"] };

/** A reflector on the fake's policies, recording what it was told. */
function start(client: KubeClient) {
  const stop = new AbortController();
  const log: string[] = [];
  const known = new Map<string, KubeObject>();
  const done = reflect(client, POLICIES, "networkpolicies", {
    replace: (items) => {
      known.clear();
      for (const o of items) known.set(objectKey(o), o);
      log.push(`replace ${[...known.keys()].join(",")}`);
    },
    event: (e: WatchEvent) => {
      if (e.type === "DELETED") known.delete(objectKey(e.object));
      else known.set(objectKey(e.object), e.object);
      log.push(`${e.type} ${objectKey(e.object)}`);
    },
    error: (err) => log.push(`error ${err.name}`),
  }, { signal: stop.signal, backoffMs: 50 });
  return { stop, log, known, done };
}

Deno.test("listAll: follows continue tokens and returns the list's resourceVersion", async () => {
  await withFake(async (fake, client) => {
    for (const n of ["a", "b", "c", "d", "e"]) {
      fake.put("networkpolicies", networkPolicy("ns", n, spec));
    }
    const list = await listAll(client, POLICIES, "networkpolicies", 2);
    assert.deepEqual(list.items.map(objectKey), ["ns/a", "ns/b", "ns/c", "ns/d", "ns/e"]);
    assert.equal(list.resourceVersion, fake.resourceVersion);
    assert.equal(fake.requests.filter((r) => r.startsWith(`GET ${POLICIES}?limit`)).length, 3);
  });
});

Deno.test("reflect: list then watch; events in order from the list's version", async () => {
  await withFake(async (fake, client) => {
    fake.put("networkpolicies", networkPolicy("ns", "a", spec));
    const r = start(client);
    try {
      await until("listed", () => r.log.includes("replace ns/a"));
      await until("watching", () => fake.watchCount() === 1);
      fake.put("networkpolicies", networkPolicy("ns", "b", spec));
      fake.update("networkpolicies", "ns/a", (o) => (o.spec = { podSelector: {} }));
      fake.remove("networkpolicies", "ns/b");
      await until("three events", () => r.log.length === 4);
      assert.deepEqual(r.log, ["replace ns/a", "ADDED ns/b", "MODIFIED ns/a", "DELETED ns/b"]);
      const watch = fake.requests.find((q) => q.includes("watch=1"))!;
      assert.match(watch, /resourceVersion=101\b/);
      assert.match(watch, /allowWatchBookmarks=true/);
    } finally {
      r.stop.abort();
      await r.done;
    }
  });
});

Deno.test("reflect: a dropped connection resumes the watch from the last version seen", async () => {
  await withFake(async (fake, client) => {
    const r = start(client);
    try {
      await until("watching", () => fake.watchCount() === 1);
      fake.put("networkpolicies", networkPolicy("ns", "a", spec));
      await until("event", () => r.known.has("ns/a"));
      const seen = fake.resourceVersion;
      assert.equal(fake.dropWatches(), 1);
      // Changes while disconnected arrive after the reconnect, none twice, no relist.
      fake.put("networkpolicies", networkPolicy("ns", "b", spec));
      await until("reconnected", () => r.known.has("ns/b"));
      const watches = fake.requests.filter((q) => q.includes("watch=1"));
      assert.equal(watches.length, 2);
      assert.match(watches[1], new RegExp(`resourceVersion=${seen}\\b`));
      assert.deepEqual(r.log.filter((l) => !l.startsWith("error")), [
        "replace ",
        "ADDED ns/a",
        "ADDED ns/b",
      ]);
      assert.equal(fake.requests.filter((q) => q.includes("limit=")).length, 1, "no relist");
    } finally {
      r.stop.abort();
      await r.done;
    }
  });
});

Deno.test("reflect: 410 Gone (an ERROR event, or the watch's status) makes it list again", async (t) => {
  for (const goneAs of ["event", "status"] as const) {
    await t.step(`as ${goneAs}`, async () => {
      await withFake(async (fake, client) => {
        fake.goneAs = goneAs;
        fake.put("networkpolicies", networkPolicy("ns", "a", spec));
        const r = start(client);
        try {
          await until("watching", () => fake.watchCount() === 1);
          fake.expire();
          fake.put("networkpolicies", networkPolicy("ns", "b", spec));
          fake.remove("networkpolicies", "ns/a");
          await until("relisted", () => r.log.includes("replace ns/b"));
          assert.ok(r.log.includes("error GoneError"), r.log.join("\n"));
          if (goneAs === "status") {
            assert.ok(fake.requests.some((q) => q.includes("watch=1") && q.includes("=101&")));
          }
          assert.deepEqual([...r.known.keys()], ["ns/b"]);
          assert.equal(fake.requests.filter((q) => q.includes("limit=")).length, 2);
          await until("watching again", () => fake.watchCount() === 1);
          fake.put("networkpolicies", networkPolicy("ns", "c", spec));
          await until("event after relist", () => r.known.has("ns/c"));
        } finally {
          r.stop.abort();
          await r.done;
        }
      });
    });
  }
});

Deno.test("reflect: 410 Gone straight after every list backs off instead of hammering the server", async () => {
  await withFake(async (fake, client) => {
    fake.alwaysGone = true;
    const r = start(client); // first retry after 50 ms, doubling
    try {
      await new Promise((resolve) => setTimeout(resolve, 1000));
    } finally {
      r.stop.abort();
      await r.done;
    }
    const lists = fake.requests.filter((q) => q.includes("limit=")).length;
    // 50 + 100 + 200 + 400 ms of pauses fit in a second: about five lists, not hundreds.
    assert.ok(lists >= 2 && lists <= 8, `${lists} lists in a second`);
  });
});

Deno.test("reflect: an API server that is down is retried with backoff, not a hang", async () => {
  await withFake(async (fake, client) => {
    await fake.close();
    const r = start(client);
    try {
      await until("two failures", () => r.log.filter((l) => l.startsWith("error")).length >= 2);
    } finally {
      r.stop.abort();
      await r.done;
    }
  });
});

/** A server whose every answer is `body`, streamed; the client to it. */
async function withStream(
  body: () => ReadableStream<Uint8Array>,
  fn: (client: KubeClient) => Promise<void>,
): Promise<void> {
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () => new Response(body(), { headers: { "content-type": "application/json" } }),
  );
  const client = new KubeClient(
    { server: `http://127.0.0.1:${server.addr.port}`, source: "test" },
    {
      timeoutMs: 5000,
    },
  );
  try {
    await fn(client);
  } finally {
    client.close();
    await server.shutdown();
  }
}

/** `mib` MiB of one JSON string that never ends (no newline, no closing quote). */
const endless = (head: string, mib: number) => () => {
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (sent === 0) c.enqueue(new TextEncoder().encode(head));
      if (sent++ >= mib) return c.close();
      c.enqueue(new Uint8Array(1 << 20).fill(97));
    },
  });
};

Deno.test("hostile answers: a huge object or a watch line without end is refused, not buffered", async () => {
  await withStream(endless('{"kind":"Pod","metadata":{"name":"', 40), async (client) => {
    await assert.rejects(
      () => client.get("/api/v1/namespaces/a/pods/p", "pods"),
      /GET .*\/pods\/p: reading the answer: larger than 16777216 bytes/,
    );
  });
  await withStream(
    endless('{"type":"ADDED","object":{"metadata":{"name":"', 40),
    async (client) => {
      await assert.rejects(
        () => watchOnce(client, POLICIES, "networkpolicies", "1", () => {}),
        /watch .*: an event is larger than 16777216 bytes/,
      );
    },
  );
});
