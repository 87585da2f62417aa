/**
 * Runs a chain of plugins the way libcni runs a conflist: ADD in order with
 * prevResult threaded through, DEL in reverse and best effort, CHECK in order,
 * GC on every step past errors, STATUS until the first failure. A failed ADD
 * is rolled back: the failing step and every step before it get DEL, in
 * reverse, before the error is returned.
 */
import { CniError, ErrorCode, toCniError } from "./spec/errors.ts";
import type { CniEnv } from "./spec/env.ts";
import { type ConfigObject, type Conflist, formatProblem, isObject } from "./spec/config.ts";
import { encodeResult } from "./spec/result.ts";
import type { AttachmentRef, Result, Verb } from "./spec/types.ts";
import { atLeast } from "./spec/version.ts";
import { invoke } from "./invoke.ts";
import { findPlugin } from "./exec.ts";
import type { InvokeContext } from "./plugin.ts";

export interface ChainRun {
  conflist: Conflist;
  env: CniEnv;
  /** Capability arguments from the caller (portMappings, ips, ...). */
  capabilityArgs: ConfigObject;
  /** `args` to hand to every step (what the runtime put in cnichain's own entry). */
  args?: ConfigObject;
  /** ADD: the result to start from. DEL/CHECK: the final ADD result. */
  prevResult?: Result;
  /** GC: the attachments to keep. */
  validAttachments?: AttachmentRef[];
  context: InvokeContext;
}

/** The runtimeConfig a step gets: its declared capabilities that the caller gave args for. */
export function runtimeConfigFor(entry: ConfigObject, capabilityArgs: ConfigObject): ConfigObject {
  const caps = entry.capabilities;
  const out: ConfigObject = {};
  if (typeof caps !== "object" || caps === null) return out;
  for (const [name, enabled] of Object.entries(caps)) {
    if (enabled === true && capabilityArgs[name] !== undefined) out[name] = capabilityArgs[name];
  }
  return out;
}

/** The stdin one step gets for `verb`, built as a runtime builds it. */
export function stepConfig(
  entry: ConfigObject,
  verb: Verb,
  run: Omit<ChainRun, "context" | "env">,
  prevResult: Result | undefined,
): ConfigObject {
  const { conflist } = run;
  const conf: ConfigObject = { ...entry, cniVersion: conflist.cniVersion, name: conflist.name };
  if (run.args && Object.keys(run.args).length) {
    const own = typeof entry.args === "object" && entry.args !== null ? entry.args : {};
    conf.args = { ...own, ...run.args };
  }
  if (verb === "ADD" || verb === "DEL" || verb === "CHECK") {
    const runtimeConfig = runtimeConfigFor(entry, run.capabilityArgs);
    if (Object.keys(runtimeConfig).length) conf.runtimeConfig = runtimeConfig;
    // libcni hands prevResult to DEL only from 0.4.0 on; ADD gets it from the second step.
    const withPrev = verb === "ADD" || atLeast(conflist.cniVersion, "0.4.0");
    if (prevResult && withPrev) conf.prevResult = encodeResult(prevResult, conflist.cniVersion);
  }
  if (verb === "GC") {
    delete conf["cni.dev/attachments"];
    conf["cni.dev/valid-attachments"] = (run.validAttachments ?? []).map((a) => ({ ...a }));
  }
  return conf;
}

function stepName(run: ChainRun, index: number): string {
  return `${run.context.stepPrefix}${index + 1}`;
}

function typeOf(entry: ConfigObject): string {
  return entry.type as string;
}

/** Several step errors as one: the first's code, every message listed. */
export function combineErrors(
  errors: { step: string; type: string; error: CniError }[],
  verb: Verb,
): CniError {
  if (errors.length === 1) {
    const { step, type, error } = errors[0];
    return new CniError(
      error.code,
      `${verb} step ${step} (${type}): ${error.message}`,
      error.details,
    );
  }
  const lines = errors.map(({ step, type, error }) =>
    `step ${step} (${type}): [${error.code}] ${error.message}`
  );
  return new CniError(
    errors[0].error.code,
    `${verb} failed in ${errors.length} steps: ${lines.join("; ")}`,
  );
}

/**
 * Every external executable the chain will run, found before anything runs, so that a missing
 * one changes nothing: external steps, and the IPAM plugins built-in steps hand their `ipam` to.
 */
async function findExternals(run: ChainRun): Promise<void> {
  const find = async (type: string, path: string) => {
    try {
      await findPlugin(type, run.env.path);
    } catch (err) {
      const e = toCniError(err);
      throw new CniError(e.code, `invalid network config: ${path}: ${e.message}`);
    }
  };
  for (const [i, entry] of run.conflist.plugins.entries()) {
    if (!run.context.registry.has(typeOf(entry))) {
      await find(typeOf(entry), `plugins[${i}].type`);
      continue;
    }
    const ipamType = isObject(entry.ipam) ? entry.ipam.type : undefined;
    if (typeof ipamType === "string" && !run.context.registry.has(ipamType)) {
      await find(ipamType, `plugins[${i}].ipam.type`);
    }
  }
}

/**
 * Every built-in step's own checks on the stdin it will get, before anything runs: what the
 * chain hands over (args, runtimeConfig) is known only here, and a step refusing it after
 * earlier steps ran would leave their store files behind (rollback releases, it does not erase).
 */
function checkSteps(run: ChainRun): void {
  const context = run.context.stateDir
    ? { files: run.context.system.files, stateDir: run.context.stateDir }
    : undefined;
  for (const [i, entry] of run.conflist.plugins.entries()) {
    const plugin = run.context.registry.get(typeOf(entry));
    const stdin = stepConfig(entry, "ADD", run, undefined);
    const version = run.conflist.cniVersion;
    const problems = plugin?.validate?.(stdin, `plugins[${i}]`, version, "ADD", context) ?? [];
    if (problems.length) {
      throw new CniError(
        ErrorCode.InvalidConfig,
        `invalid network config: ${formatProblem(problems[0])}`,
      );
    }
  }
}

/** ADD in order; on failure DEL the steps done (and the failing one) in reverse. */
export async function addChain(run: ChainRun): Promise<Result | undefined> {
  await checkAdd(run);
  return await addSteps(run);
}

/** What ADD checks before any step runs: external steps installed, built-in steps' configs. */
export async function checkAdd(run: ChainRun): Promise<void> {
  await findExternals(run);
  checkSteps(run);
}

/** {@linkcode addChain} after {@linkcode checkAdd} passed. */
export async function addSteps(run: ChainRun): Promise<Result | undefined> {
  let result = run.prevResult;
  const { plugins } = run.conflist;
  for (let i = 0; i < plugins.length; i++) {
    const stdin = stepConfig(plugins[i], "ADD", run, result);
    try {
      result =
        (await invoke(typeOf(plugins[i]), "ADD", run.env, stdin, run.context, stepName(run, i))) ??
          result;
    } catch (err) {
      const failure = toCniError(err);
      // A step that refused because the attachment already exists changed nothing, and its DEL
      // would tear down the existing attachment: roll back only the steps before it.
      const last = failure.code === ErrorCode.AlreadyExists ? i - 1 : i;
      const undo = last >= 0 ? await delSteps(run, last, result) : [];
      const rollback = undo.length
        ? `; rolling back also failed: ${
          undo.map((u) => `step ${u.step} (${u.type}): ${u.error.message}`).join("; ")
        }`
        : "";
      throw new CniError(
        failure.code,
        `ADD step ${stepName(run, i)} (${typeOf(plugins[i])}): ${failure.message}${rollback}`,
        failure.details,
      );
    }
  }
  return result;
}

/** DEL of steps `last`..0 in reverse, every one attempted; returns the failures. */
async function delSteps(run: ChainRun, last: number, prevResult: Result | undefined) {
  const errors: { step: string; type: string; error: CniError }[] = [];
  for (let i = last; i >= 0; i--) {
    const entry = run.conflist.plugins[i];
    try {
      await invoke(
        typeOf(entry),
        "DEL",
        run.env,
        stepConfig(entry, "DEL", run, prevResult),
        run.context,
        stepName(run, i),
      );
    } catch (err) {
      errors.push({ step: stepName(run, i), type: typeOf(entry), error: toCniError(err) });
    }
  }
  return errors;
}

/** DEL in reverse order, best effort: every step runs, all failures reported together. */
export async function delChain(run: ChainRun): Promise<void> {
  const errors = await delSteps(run, run.conflist.plugins.length - 1, run.prevResult);
  if (errors.length) throw combineErrors(errors, "DEL");
}

/** CHECK in order with the final ADD result; the first failure ends it. */
export async function checkChain(run: ChainRun): Promise<void> {
  if (run.conflist.disableCheck) return;
  if (!run.prevResult) {
    throw new CniError(
      ErrorCode.InvalidConfig,
      "invalid network config: prevResult: CHECK needs the result of the ADD",
    );
  }
  for (const [i, entry] of run.conflist.plugins.entries()) {
    const stdin = stepConfig(entry, "CHECK", run, run.prevResult);
    try {
      await invoke(typeOf(entry), "CHECK", run.env, stdin, run.context, stepName(run, i));
    } catch (err) {
      throw combineErrors(
        [{ step: stepName(run, i), type: typeOf(entry), error: toCniError(err) }],
        "CHECK",
      );
    }
  }
}

/** GC on every step, going on past failures and reporting all of them. */
export async function gcChain(run: ChainRun): Promise<void> {
  if (run.conflist.disableGC) return;
  const errors: { step: string; type: string; error: CniError }[] = [];
  for (const [i, entry] of run.conflist.plugins.entries()) {
    try {
      await invoke(
        typeOf(entry),
        "GC",
        run.env,
        stepConfig(entry, "GC", run, undefined),
        run.context,
        stepName(run, i),
      );
    } catch (err) {
      errors.push({ step: stepName(run, i), type: typeOf(entry), error: toCniError(err) });
    }
  }
  if (errors.length) throw combineErrors(errors, "GC");
}

/** STATUS of every step; the first that is not ready answers for the chain. */
export async function statusChain(run: ChainRun): Promise<void> {
  try {
    await findExternals(run);
  } catch (err) {
    // A plugin that is not installed cannot serve ADD: "not available" in STATUS's terms.
    throw new CniError(ErrorCode.NotAvailable, toCniError(err).message);
  }
  for (const [i, entry] of run.conflist.plugins.entries()) {
    try {
      await invoke(
        typeOf(entry),
        "STATUS",
        run.env,
        stepConfig(entry, "STATUS", run, undefined),
        run.context,
        stepName(run, i),
      );
    } catch (err) {
      throw combineErrors(
        [{ step: stepName(run, i), type: typeOf(entry), error: toCniError(err) }],
        "STATUS",
      );
    }
  }
}
