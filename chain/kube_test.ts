/** The Kubernetes client's config sources and the pod CIDRs of a Node (no server needed). */
import assert from "node:assert/strict";
import { inClusterConfig, kubeconfigFile, podCidrs } from "./kube.ts";

async function withTemp(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cnichain-kube-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("inClusterConfig: the service account's token and CA, IPv6 hosts bracketed", async () => {
  await withTemp((dir) => {
    Deno.writeTextFileSync(`${dir}/token`, "abc.def\n");
    Deno.writeTextFileSync(`${dir}/ca.crt`, "-----BEGIN CERTIFICATE-----\n");
    const env: Record<string, string> = {
      KUBERNETES_SERVICE_HOST: "fd00:10:96::1",
      KUBERNETES_SERVICE_PORT: "443",
    };
    const cfg = inClusterConfig((n) => env[n], dir);
    assert.equal(cfg.server, "https://[fd00:10:96::1]:443");
    assert.equal(cfg.token, "abc.def");
    assert.equal(cfg.caPem, "-----BEGIN CERTIFICATE-----\n");
    env.KUBERNETES_SERVICE_HOST = "10.96.0.1";
    assert.equal(inClusterConfig((n) => env[n], dir).server, "https://10.96.0.1:443");
    assert.throws(() => inClusterConfig(() => undefined, dir), /not running in a Kubernetes pod/);
    Deno.removeSync(`${dir}/token`);
    assert.throws(
      () => inClusterConfig((n) => env[n], dir),
      new RegExp(`read the service account token "${dir}/token"`),
    );
  });
});

Deno.test("kubeconfigFile: current context, CA and token files relative to the kubeconfig", async () => {
  await withTemp((dir) => {
    Deno.writeTextFileSync(`${dir}/ca.pem`, "CA");
    Deno.writeTextFileSync(`${dir}/tok`, "from-file\n");
    const doc = {
      "current-context": "b",
      clusters: [
        { name: "one", cluster: { server: "https://a.example:6443" } },
        {
          name: "two",
          cluster: { server: "https://b.example:6443/", "certificate-authority": "ca.pem" },
        },
      ],
      contexts: [
        { name: "a", context: { cluster: "one", user: "u1" } },
        { name: "b", context: { cluster: "two", user: "u2" } },
      ],
      users: [
        { name: "u1", user: { token: "t1" } },
        {
          name: "u2",
          user: {
            tokenFile: "tok",
            "client-certificate-data": btoa("CERT"),
            "client-key-data": btoa("KEY"),
          },
        },
      ],
    };
    Deno.writeTextFileSync(`${dir}/kc.json`, JSON.stringify(doc));
    const cfg = kubeconfigFile(`${dir}/kc.json`);
    assert.deepEqual(cfg, {
      server: "https://b.example:6443",
      caPem: "CA",
      token: "from-file",
      clientCert: { cert: "CERT", key: "KEY" },
      source: `${dir}/kc.json`,
    });

    Deno.writeTextFileSync(`${dir}/kc.json`, JSON.stringify({ ...doc, "current-context": "c" }));
    assert.throws(() => kubeconfigFile(`${dir}/kc.json`), /no context named "c"/);
    Deno.writeTextFileSync(`${dir}/kc.yaml`, "apiVersion: v1\nkind: Config\n");
    assert.throws(() => kubeconfigFile(`${dir}/kc.yaml`), /not JSON; only JSON kubeconfigs/);
  });
});

Deno.test("podCidrs: podCIDRs first, else podCIDR, none when unset; bad values refused", () => {
  const node = (spec: unknown) => ({ kind: "Node", metadata: { name: "n" }, spec });
  assert.deepEqual(
    podCidrs(node({ podCIDR: "10.1.0.0/24", podCIDRs: ["10.1.0.0/24", "fd00::/64"] })),
    ["10.1.0.0/24", "fd00::/64"],
  );
  assert.deepEqual(podCidrs(node({ podCIDR: "10.1.0.0/24" })), ["10.1.0.0/24"]);
  assert.deepEqual(podCidrs(node({})), []);
  assert.deepEqual(podCidrs({ kind: "Node" }), []);
  assert.throws(
    () => podCidrs(node({ podCIDRs: ["10.1.0.0/33"] })),
    /node "n": pod CIDR "10.1.0.0\/33"/,
  );
});
