/**
 * Calling one plugin, the same way whoever asks: the dispatcher (one plugin on
 * the CNI boundary), the chain runner (each step), a plugin delegating to IPAM.
 * Built-in types run in-process through the same config parsing and result
 * encoding a separate process would see; other types are exec'd from CNI_PATH
 * (in a dry run, shown as the exec they would get instead).
 */
import { CniError, ErrorCode, quote, toCniError } from "./spec/errors.ts";
import type { CniEnv } from "./spec/env.ts";
import { type ConfigObject, isObject, parseNetConf } from "./spec/config.ts";
import { encodeResult, parseResult } from "./spec/result.ts";
import type { AttachmentRef, JsonObject, Result, Verb } from "./spec/types.ts";
import { atLeast } from "./spec/version.ts";
import { execPlugin, findPlugin, pluginEnv } from "./exec.ts";
import type { GcInvocation, Invocation, InvokeContext, Plugin } from "./plugin.ts";
import type { StepStart } from "./observe.ts";

/** The verbs each spec version knows: CHECK from 0.4.0, GC and STATUS from 1.1.0. */
export function requireVerbVersion(verb: Verb, version: string): void {
  const minimum = verb === "CHECK"
    ? "0.4.0"
    : verb === "GC" || verb === "STATUS"
    ? "1.1.0"
    : undefined;
  if (minimum && !atLeast(version, minimum)) {
    throw new CniError(
      ErrorCode.IncompatibleVersion,
      "incompatible CNI versions",
      `${verb} needs cniVersion ${minimum} or later; the config has ${quote(version)}`,
    );
  }
}

/** GC's list of attachments to keep, from either key libcni has used. */
export function validAttachments(raw: ConfigObject): AttachmentRef[] {
  const key = raw["cni.dev/valid-attachments"] !== undefined
    ? "cni.dev/valid-attachments"
    : "cni.dev/attachments";
  const list = raw[key];
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) {
    throw new CniError(ErrorCode.InvalidConfig, `invalid network config: ${key}: must be a list`);
  }
  return list.map((item, i) => {
    if (
      !isObject(item) || typeof item.containerID !== "string" || typeof item.ifname !== "string"
    ) {
      throw new CniError(
        ErrorCode.InvalidConfig,
        `invalid network config: ${key}[${i}]: must be {"containerID": string, "ifname": string} (got ${
          quote(item)
        })`,
      );
    }
    return { containerID: item.containerID, ifname: item.ifname };
  });
}

/** Runs a built-in plugin's handler for `verb` on an already-decoded stdin. */
export async function runBuiltin(
  plugin: Plugin,
  verb: Verb,
  env: CniEnv,
  stdin: ConfigObject,
  context: InvokeContext,
): Promise<JsonObject | undefined> {
  const conf = parseNetConf(stdin);
  requireVerbVersion(verb, conf.cniVersion);
  const inv: Invocation = {
    verb,
    env,
    conf,
    system: context.system,
    context,
    delegate: (type, v, config) =>
      invoke(type, v, env, config, context, `${context.stepPrefix}${type}`),
  };
  switch (verb) {
    case "ADD":
      return encodeResult(await plugin.add(inv), conf.cniVersion);
    case "DEL":
      await plugin.del(inv);
      return undefined;
    case "CHECK":
      await plugin.check(inv);
      return undefined;
    case "GC": {
      const gc: GcInvocation = { ...inv, validAttachments: validAttachments(stdin) };
      await plugin.gc?.(gc);
      return undefined;
    }
    case "STATUS":
      await plugin.status?.(inv);
      return undefined;
    case "VERSION":
      throw new CniError(ErrorCode.Internal, "VERSION is answered by the dispatcher");
  }
}

/**
 * Runs plugin `type` for `verb` and, for ADD, returns its result parsed into the
 * 1.x shape (undefined for other verbs, and for an exec'd step in a dry run).
 * Reports the step to the context's observer as `step`.
 */
export async function invoke(
  type: string,
  verb: Verb,
  env: CniEnv,
  stdin: ConfigObject,
  context: InvokeContext,
  step = "",
): Promise<Result | undefined> {
  const builtin = context.registry.get(type);
  const start: StepStart = {
    step,
    type,
    verb,
    how: builtin ? "built-in" : "exec",
    stdin: stdin as JsonObject,
  };
  const effectsBefore = context.system.effects.length;
  const began = performance.now();
  context.observer.stepStart?.(start);
  const version = typeof stdin.cniVersion === "string" && stdin.cniVersion !== ""
    ? stdin.cniVersion
    : "0.1.0";
  let encoded: unknown;
  let skipped = false;
  try {
    if (builtin) {
      encoded = await runBuiltin(builtin, verb, env, stdin, {
        ...context,
        stepPrefix: step ? `${step}.` : "",
      });
    } else {
      const file = await findPlugin(type, env.path);
      start.execPath = file;
      if (context.system.kind === "dry-run") {
        // Not run: an external plugin's effects cannot be recorded, only announced.
        skipped = true;
        context.system.effects.push({
          op: "exec",
          target: file,
          detail:
            `CNI_COMMAND=${verb} CNI_CONTAINERID=${env.containerId} CNI_NETNS=${env.netns} CNI_IFNAME=${env.ifname}`,
        });
      } else {
        const stdinBytes = new TextEncoder().encode(JSON.stringify(stdin));
        encoded = await execPlugin(
          file,
          pluginEnv(verb, env, context.baseEnv),
          stdinBytes,
          context.execTimeoutMs,
        );
      }
    }
    const result = verb === "ADD" && encoded !== undefined
      ? parseResult(encoded, version, `result of ${type}`)
      : undefined;
    if (verb === "ADD" && !skipped && result === undefined) {
      throw new CniError(ErrorCode.Decode, `plugin ${quote(type)} printed no result for ADD`);
    }
    context.observer.stepEnd?.({
      ...start,
      ms: performance.now() - began,
      effects: context.system.effects.slice(effectsBefore),
      result: result ? encodeResult(result, version) : undefined,
      skipped,
    });
    return result;
  } catch (err) {
    const error = toCniError(err, builtin ? undefined : `plugin ${quote(type)}`);
    context.observer.stepEnd?.({
      ...start,
      ms: performance.now() - began,
      effects: context.system.effects.slice(effectsBefore),
      error: { code: error.code, msg: error.message, details: error.details || undefined },
    });
    throw error;
  }
}
