/**
 * What a built-in plugin is: one handler per verb over a parsed invocation.
 * Plugins never touch the kernel or disk directly: every side effect goes
 * through `inv.system`, and every other plugin they call (an IPAM delegate)
 * through `inv.delegate`, so dry runs and tests see all of it.
 */
import type { CniEnv } from "./spec/env.ts";
import type { ConfigObject, NetConf, Problem } from "./spec/config.ts";
import type { AttachmentRef, Result, Verb } from "./spec/types.ts";
import type { StateFiles, System } from "./system.ts";
import type { Observer } from "./observe.ts";

export interface Invocation {
  verb: Verb;
  env: CniEnv;
  conf: NetConf;
  system: System;
  /** Runs another plugin (built-in in-process, else exec from CNI_PATH) with the same env. */
  delegate(type: string, verb: Verb, stdin: ConfigObject): Promise<Result | undefined>;
  /** Context for plugins that run chains of their own (cnichain). */
  context: InvokeContext;
}

export interface GcInvocation extends Invocation {
  /** From `cni.dev/valid-attachments` (or the older `cni.dev/attachments`). */
  validAttachments: AttachmentRef[];
}

export interface Plugin {
  /**
   * Problems in this plugin's own fields of one config entry, with JSON paths under `path`.
   * `verb` is the CNI command the entry is about to serve; a plugin may leave out checks of
   * what that command does not read (a DEL must not be refused over a field only ADD uses).
   * Without it, everything is checked. `context`, when the caller has one, lets a check
   * consult answers remembered in the state directory instead of working them out again.
   */
  validate?(
    entry: ConfigObject,
    path: string,
    version: string,
    verb?: Verb,
    context?: CheckContext,
  ): Problem[];
  /**
   * Throws what ADD would refuse in the invocation's own inputs (CNI_ARGS, `args`,
   * `runtimeConfig`), changing nothing. A plugin that delegates to this one after changing the
   * node (bridge: links first, then IPAM) asks first, so that bad input changes nothing.
   */
  preflight?(inv: Invocation): void;
  add(inv: Invocation): Promise<Result>;
  del(inv: Invocation): Promise<void>;
  check(inv: Invocation): Promise<void>;
  gc?(inv: GcInvocation): Promise<void>;
  status?(inv: Invocation): Promise<void>;
}

/** What a check may read besides the entry (see Plugin.validate). */
export interface CheckContext {
  files: StateFiles;
  /** The chain's state directory (a step's own `stateDir` wins over it). */
  stateDir: string;
}

export type Registry = ReadonlyMap<string, Plugin>;

/** What every invocation in one run shares. */
export interface InvokeContext {
  system: System;
  registry: Registry;
  observer: Observer;
  /** Milliseconds an exec'd plugin may run before it is killed. */
  execTimeoutMs: number;
  /** Where in the plan this run sits ("" at the top, "2." inside step 2). */
  stepPrefix: string;
  /** The process environment to pass to exec'd plugins (before the CNI variables). */
  baseEnv: Record<string, string>;
  /** The state directory of the chain running this step, for built-ins' shared state. */
  stateDir?: string;
}
