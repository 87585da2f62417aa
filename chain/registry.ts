/** The built-in plugin types, run in-process by the chain and by their multi-call names. */
import type { EntryCheck } from "./spec/config.ts";
import type { Plugin, Registry } from "./plugin.ts";
import { CHAIN_TYPE, chainPlugin } from "./plugins/cnichain/mod.ts";

/** Checks an entry with its built-in plugin's own validation, if it has one. */
export function entryCheck(registry: Registry): EntryCheck {
  return (entry, path, version) =>
    registry.get(entry.type as string)?.validate?.(entry, path, version) ?? [];
}

export function builtinRegistry(): Registry {
  const registry = new Map<string, Plugin>();
  const check = entryCheck(registry);
  registry.set(CHAIN_TYPE, chainPlugin(check));
  return registry;
}

/** The names under which the program acts as a single plugin (multi-call). */
export function multiCallNames(registry: Registry): string[] {
  return [...registry.keys()].filter((name) => name !== CHAIN_TYPE);
}
