/**
 * The CNI protocol boundary: environment and stdin in, result or error JSON on
 * stdout and an exit code out. It is the only place an error becomes the
 * spec's `{cniVersion, code, msg, details}`; logs go to stderr.
 */
import { CniError, ErrorCode, quote, toCniError } from "./spec/errors.ts";
import { parseEnv } from "./spec/env.ts";
import { decodeObject, readBoundedSync, type SyncReader } from "./spec/input.ts";
import { LATEST_VERSION, parseSemver, SUPPORTED_VERSIONS } from "./spec/version.ts";
import { runBuiltin } from "./invoke.ts";
import type { InvokeContext, Registry } from "./plugin.ts";
import { CHAIN_TYPE } from "./plugins/cnichain/mod.ts";

export interface BoundaryIo {
  getEnv(name: string): string | undefined;
  stdin: SyncReader;
  stdout(text: string): void;
  stderr(text: string): void;
  /** Set when the program was invoked under a built-in plugin's name (multi-call). */
  invokedAs?: string;
}

/** The cniVersion to put in an error, taken from the config when it can be seen. */
function versionForError(config: Record<string, unknown> | undefined): string {
  const v = config?.cniVersion;
  return typeof v === "string" && parseSemver(v) ? v : LATEST_VERSION;
}

/** Handles one CNI invocation; returns the exit code. */
export async function dispatch(
  io: BoundaryIo,
  registry: Registry,
  context: Omit<InvokeContext, "registry" | "stepPrefix">,
): Promise<number> {
  let config: Record<string, unknown> | undefined;
  try {
    const env = parseEnv(io.getEnv);
    const bytes = readBoundedSync(io.stdin);
    if (env.command === "VERSION") {
      config = bytes.length ? decodeObject(bytes) : {};
      const asked = config.cniVersion;
      const cniVersion = typeof asked === "string" && parseSemver(asked) ? asked : LATEST_VERSION;
      io.stdout(JSON.stringify({ cniVersion, supportedVersions: SUPPORTED_VERSIONS }));
      return 0;
    }
    config = decodeObject(bytes);
    const type = io.invokedAs ?? (typeof config.type === "string" ? config.type : CHAIN_TYPE);
    const plugin = registry.get(type);
    if (!plugin) {
      throw new CniError(
        ErrorCode.InvalidConfig,
        `invalid network config: type: ${
          quote(config.type)
        } is not a cnichain built-in (built-ins: ${[...registry.keys()].join(", ")})`,
      );
    }
    // Invoked by name, the program is that plugin whatever `type` says: IPAM
    // plugins are handed their parent's whole config, type and all.
    const result = await runBuiltin(plugin, env.command, env, config, {
      ...context,
      registry,
      stepPrefix: "",
    });
    if (result) io.stdout(JSON.stringify(result));
    return 0;
  } catch (err) {
    const error = toCniError(err);
    if (!(err instanceof CniError)) {
      // An internal error: the stack helps a bug report, but only when asked for.
      let trace = "";
      try {
        if (io.getEnv("CNICHAIN_TRACE") === "1" && err instanceof Error) trace = `\n${err.stack}`;
      } catch {
        // A variable that cannot be read (not UTF-8) cannot ask for the stack.
      }
      io.stderr(`cnichain: internal error: ${error.message}${trace}`);
    }
    io.stdout(JSON.stringify(error.toJSON(versionForError(config))));
    return 1;
  }
}
