/**
 * Configs and result readers shared by the parts of the suite. Every config
 * names the world's own network, bridge, subnet and dataDir, so runs never
 * share state; `stateDir` is cnichain's and the reference plugins ignore it
 * (unknown fields are passed through, SPEC.md section 1).
 */
import type { RunOutput } from "../test/helpers.ts";
import { expect, Failure } from "./harness.ts";
import type { World } from "./lab.ts";

export type Json = Record<string, unknown>;

export function ipam(w: World, extra: Json = {}): Json {
  return {
    type: "host-local",
    dataDir: w.dataDir,
    ranges: [[{ subnet: `${w.v4}.0/24` }]],
    ...extra,
  };
}

export function dualStackIpam(w: World): Json {
  return ipam(w, {
    ranges: [[{ subnet: `${w.v4}.0/24` }], [{ subnet: `${w.v6}:/64` }]],
  });
}

export function hostLocal(w: World, version: string, ipamConf: Json = ipam(w)): Json {
  return { cniVersion: version, name: w.net, type: "host-local", ipam: ipamConf };
}

export function bridge(w: World, version: string, extra: Json = {}): Json {
  return {
    cniVersion: version,
    name: w.net,
    type: "bridge",
    bridge: w.bridge,
    isGateway: true,
    stateDir: w.stateDir,
    ipam: ipam(w),
    ...extra,
  };
}

export function ptp(w: World, version: string, extra: Json = {}): Json {
  return {
    cniVersion: version,
    name: w.net,
    type: "ptp",
    stateDir: w.stateDir,
    ipam: ipam(w),
    ...extra,
  };
}

export function portmap(
  w: World,
  version: string,
  prevResult: unknown,
  mappings: Json[] = [],
): Json {
  const conf: Json = {
    cniVersion: version,
    name: w.net,
    type: "portmap",
    stateDir: w.stateDir,
    runtimeConfig: { portMappings: mappings },
  };
  if (prevResult !== undefined) conf.prevResult = prevResult;
  return conf;
}

/** The JSON of a successful run, or a Failure naming what went wrong. */
export function ok(out: RunOutput, what: string): Json {
  if (out.code !== 0) {
    throw new Failure(
      `${what}: exit ${out.code}: ${out.stdout.trim() || out.stderr.trim().slice(0, 300)}`,
    );
  }
  if (out.stdout.trim() === "") return {};
  expect(out.json && typeof out.json === "object", `${what}: stdout is not a JSON object`);
  return out.json!;
}

/** The error JSON of a failed run, checked for the spec's shape. */
export function err(out: RunOutput, what: string): Json {
  expect(out.code !== 0, `${what}: exit 0 (want an error): ${out.stdout.trim().slice(0, 200)}`);
  expect(
    out.json && typeof out.json === "object",
    `${what}: exit ${out.code} without error JSON on stdout: ${out.stdout.trim().slice(0, 200)}`,
  );
  const j = out.json!;
  expect(Number.isInteger(j.code), `${what}: error JSON without an integer code: ${out.stdout}`);
  expect(typeof j.msg === "string", `${what}: error JSON without a msg string: ${out.stdout}`);
  return j;
}

export function expectCode(out: RunOutput, code: number, what: string): Json {
  const j = err(out, what);
  expect(j.code === code, `${what}: code ${j.code} (want ${code}): ${j.msg}`);
  return j;
}

/** The addresses (CIDR) of a result in any version's shape. */
export function addressesOf(result: Json): string[] {
  if (Array.isArray(result.ips)) return (result.ips as Json[]).map((ip) => String(ip.address));
  const out: string[] = [];
  for (const k of ["ip4", "ip6"]) {
    const ip = result[k] as Json | undefined;
    if (ip?.ip) out.push(String(ip.ip));
  }
  return out;
}

export function isLegacy(version: string): boolean {
  return version === "0.1.0" || version === "0.2.0";
}

/** The index of the interface named `ifname` with `sandbox` set to `netns`, or -1. */
export function sandboxIndex(result: Json, ifname: string, netns: string): number {
  const list = (result.interfaces as Json[] | undefined) ?? [];
  return list.findIndex((i) => i.name === ifname && i.sandbox === netns);
}
