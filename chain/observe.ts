/**
 * What a run reports about its steps: the trace on stderr, the log file, and
 * the dry-run plan all listen to the same events.
 */
import type { Effect } from "./system.ts";
import type { JsonObject, Verb } from "./spec/types.ts";

export interface StepStart {
  /** "2" for the second step, "2.1" for the first step of a chain inside it. */
  step: string;
  type: string;
  verb: Verb;
  /** "built-in" runs in-process; "exec" runs `execPath` as a runtime would. */
  how: "built-in" | "exec";
  execPath?: string;
  stdin: JsonObject;
}

export interface StepEnd extends StepStart {
  ms: number;
  /** The changes recorded during the step (dry run), nested steps' included. */
  effects: Effect[];
  /** ADD's result as the step returned it, encoded for its version. */
  result?: JsonObject;
  /** Set in a dry run for an exec'd step that was not run. */
  skipped?: boolean;
  error?: { code: number; msg: string; details?: string };
}

export interface Observer {
  stepStart?(event: StepStart): void;
  stepEnd?(event: StepEnd): void;
  /** Something a step went on past that an operator should hear of (the log file keeps it). */
  warning?(text: string): void;
}

/** Calls every observer given, so trace, log and plan can listen together. */
export function fanOut(...observers: Observer[]): Observer {
  return {
    stepStart: (e) => observers.forEach((o) => o.stepStart?.(e)),
    stepEnd: (e) => observers.forEach((o) => o.stepEnd?.(e)),
    warning: (text) => observers.forEach((o) => o.warning?.(text)),
  };
}

/** Step timings on stderr: `--trace` and CNICHAIN_TRACE=1. */
export function traceObserver(write: (line: string) => void): Observer {
  return {
    stepEnd(e) {
      const outcome = e.error ? `error ${e.error.code}` : e.skipped ? "not run" : "ok";
      write(
        `cnichain trace: ${e.verb} step ${e.step} ${e.type} (${e.how}) ${
          e.ms.toFixed(2)
        } ms ${outcome}`,
      );
    },
  };
}
