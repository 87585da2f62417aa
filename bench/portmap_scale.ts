/**
 * Portmap at scale: installs N pods' worth of host-port mappings (2 ports each)
 * through the bundled program, one process per pod as a runtime would run it,
 * inside a throwaway host netns, and reports the per-pod ADD time for the first
 * and the last 100 pods. cnichain's mappings are nftables map elements, so the
 * last hundred should cost what the first did.
 *
 *   deno run -A bench/portmap_scale.ts [--pods 1000] [--json out.json]
 *
 * Not a pass/fail test: it prints figures. Needs root (it makes a netns).
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: { pods: { type: "string", default: "1000" }, json: { type: "string" } },
});
const pods = Number(values.pods);
const root = new URL("..", import.meta.url).pathname;
const bundle = `${root}dist/cnichain`;
const ip = "/usr/sbin/ip";
const ns = `cnb${crypto.getRandomValues(new Uint32Array(1))[0].toString(16).slice(0, 6)}`;
const work = await Deno.makeTempDir({ prefix: "cnichain-bench-" });

async function sh(cmd: string[], stdin?: string, env: Record<string, string> = {}) {
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    env,
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  if (stdin) await w.write(new TextEncoder().encode(stdin));
  await w.close();
  return await child.output();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
}

await sh([ip, "netns", "add", ns]);
try {
  await sh([ip, "netns", "exec", ns, ip, "link", "set", "lo", "up"]);
  // Run by its multi-call name, as a runtime finds the reference portmap.
  await Deno.symlink(bundle, `${work}/portmap`);
  const wall: number[] = [];
  const inProcess: number[] = [];
  for (let i = 0; i < pods; i++) {
    const podIp = `10.${100 + Math.floor(i / 65536)}.${Math.floor(i / 256) % 256}.${i % 256}`;
    const config = {
      cniVersion: "1.0.0",
      name: "bench",
      type: "portmap",
      stateDir: `${work}/state`,
      runtimeConfig: {
        portMappings: [
          { hostPort: 10000 + i, containerPort: 80, protocol: "tcp" },
          { hostPort: 10000 + i, containerPort: 53, protocol: "udp" },
        ],
      },
      prevResult: {
        cniVersion: "1.0.0",
        interfaces: [{ name: "eth0", sandbox: `/var/run/netns/pod${i}` }],
        ips: [{ address: `${podIp}/8`, interface: 0 }],
      },
    };
    const began = performance.now();
    const out = await sh([ip, "netns", "exec", ns, `${work}/portmap`], JSON.stringify(config), {
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: `pod${i}`,
      CNI_NETNS: `/var/run/netns/pod${i}`,
      CNI_IFNAME: "eth0",
      CNI_PATH: "/nonexistent",
      CNICHAIN_TRACE: "1",
    });
    wall.push(performance.now() - began);
    const m = /total ([\d.]+) ms in-process/.exec(new TextDecoder().decode(out.stderr));
    if (!out.success) throw new Error(`pod ${i}: ${new TextDecoder().decode(out.stdout)}`);
    if (m) inProcess.push(Number(m[1]));
  }
  const tenth = Math.min(100, Math.floor(pods / 10));
  const report = {
    pods,
    mappingsPerPod: 2,
    firstWallMs: median(wall.slice(0, tenth)),
    lastWallMs: median(wall.slice(-tenth)),
    firstInProcessMs: median(inProcess.slice(0, tenth)),
    lastInProcessMs: median(inProcess.slice(-tenth)),
  };
  const growth = (report.lastInProcessMs / report.firstInProcessMs - 1) * 100;
  console.log(`portmap scale: ${pods} pods x 2 mappings`);
  console.log(
    `  first ${tenth}: median ${report.firstWallMs.toFixed(1)} ms wall, ${
      report.firstInProcessMs.toFixed(2)
    } ms in-process`,
  );
  console.log(
    `  last  ${tenth}: median ${report.lastWallMs.toFixed(1)} ms wall, ${
      report.lastInProcessMs.toFixed(2)
    } ms in-process`,
  );
  console.log(`  growth of the in-process median: ${growth.toFixed(1)} % (goal: within 20 %)`);
  if (values.json) {
    await Deno.writeTextFile(
      values.json,
      JSON.stringify({ ...report, growthPercent: growth }, null, 2),
    );
  }
} finally {
  await sh([ip, "netns", "del", ns]);
  await Deno.remove(work, { recursive: true });
}
