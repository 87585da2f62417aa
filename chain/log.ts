/**
 * The plugin-mode log (`logFile`, `logLevel` in the cnichain config): one JSON
 * line per step and one per run, appended. Never stdout: that is the result.
 */
import type { Observer } from "./observe.ts";

export type LogLevel = "error" | "info" | "debug";
export const LOG_LEVELS: readonly LogLevel[] = ["error", "info", "debug"];

export interface RunFields {
  verb: string;
  network: string;
  containerId: string;
  ifname: string;
}

export class FileLog {
  constructor(readonly path: string, readonly level: LogLevel, readonly run: RunFields) {}

  #write(level: LogLevel, fields: Record<string, unknown>): void {
    if (LOG_LEVELS.indexOf(level) > LOG_LEVELS.indexOf(this.level)) return;
    const line = JSON.stringify({ time: new Date().toISOString(), level, ...this.run, ...fields });
    try {
      Deno.writeTextFileSync(this.path, `${line}\n`, { append: true, create: true, mode: 0o600 });
    } catch (err) {
      // A log that cannot be written must not fail the operation it describes.
      console.error(`cnichain: cannot write log file ${JSON.stringify(this.path)}: ${err}`);
    }
  }

  /** The per-step lines. */
  observer(): Observer {
    return {
      stepEnd: (e) => {
        const outcome = e.error ? "error" : e.skipped ? "not run" : "ok";
        this.#write(e.error ? "error" : "info", {
          step: e.step,
          type: e.type,
          how: e.how,
          outcome,
          ms: Math.round(e.ms * 100) / 100,
          ...(e.error ? { error: e.error } : {}),
          ...(this.level === "debug" ? { stdin: e.stdin } : {}),
        });
      },
      warning: (text) => this.#write("info", { warning: text }),
    };
  }

  /** The line that closes a run. */
  finish(ms: number, error?: { code: number; msg: string }): void {
    this.#write(error ? "error" : "info", {
      outcome: error ? "error" : "ok",
      ms: Math.round(ms * 100) / 100,
      ...(error ? { error } : {}),
    });
  }
}
