/** The built-in plugin types, run in-process by the chain and by their multi-call names. */
import type { EntryCheck } from "./spec/config.ts";
import type { Plugin, Registry } from "./plugin.ts";
import { CHAIN_TYPE, chainPlugin } from "./plugins/cnichain/mod.ts";
import { HOST_LOCAL_TYPE, hostLocalPlugin } from "./plugins/host_local/mod.ts";
import { STATIC_TYPE, staticPlugin } from "./plugins/static/mod.ts";
import { BRIDGE_TYPE, bridgePlugin } from "./plugins/bridge/mod.ts";
import { PTP_TYPE, ptpPlugin } from "./plugins/ptp/mod.ts";
import { LOOPBACK_TYPE, loopbackPlugin } from "./plugins/loopback/mod.ts";
import { PORTMAP_TYPE, portmapPlugin } from "./plugins/portmap/mod.ts";
import { POLICY_TYPE, policyPlugin } from "./plugins/policy/mod.ts";
import { isObject } from "./spec/config.ts";

/**
 * Checks an entry with its built-in plugin's own validation, and its `ipam`
 * with the built-in IPAM plugin's (which reads the same entry), if any.
 */
export function entryCheck(registry: Registry): EntryCheck {
  return (entry, path, version, verb, context) => {
    const own =
      registry.get(entry.type as string)?.validate?.(entry, path, version, verb, context) ??
        [];
    const ipamType = isObject(entry.ipam) ? entry.ipam.type : undefined;
    const ipam = typeof ipamType === "string" && ipamType !== entry.type
      ? registry.get(ipamType)
      : undefined;
    return [...own, ...(ipam?.validate?.(entry, path, version, verb, context) ?? [])];
  };
}

export function builtinRegistry(): Registry {
  const registry = new Map<string, Plugin>();
  const check = entryCheck(registry);
  registry.set(CHAIN_TYPE, chainPlugin(check));
  registry.set(HOST_LOCAL_TYPE, hostLocalPlugin);
  registry.set(STATIC_TYPE, staticPlugin);
  registry.set(BRIDGE_TYPE, bridgePlugin);
  registry.set(PTP_TYPE, ptpPlugin);
  registry.set(LOOPBACK_TYPE, loopbackPlugin);
  registry.set(PORTMAP_TYPE, portmapPlugin);
  registry.set(POLICY_TYPE, policyPlugin);
  return registry;
}

/** The names under which the program acts as a single plugin (multi-call). */
export function multiCallNames(registry: Registry): string[] {
  return [...registry.keys()].filter((name) => name !== CHAIN_TYPE);
}
