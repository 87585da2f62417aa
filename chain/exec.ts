/**
 * Running a plugin that is not built in, exactly as a runtime would: found by
 * type in CNI_PATH, given the CNI variables and the config on stdin, its
 * stdout read as the result or the error, its stderr passed through.
 */
import { CniError, ErrorCode, quote } from "./spec/errors.ts";
import type { CniEnv } from "./spec/env.ts";
import { decodeJson, MAX_STDIN_BYTES, readBounded } from "./spec/input.ts";
import type { Verb } from "./spec/types.ts";
import { isObject } from "./spec/config.ts";

/** How long an exec'd plugin may run before it is killed. */
export const EXEC_TIMEOUT_MS = 60_000;

/** The first executable file named `type` in the CNI_PATH directories. */
export async function findPlugin(type: string, path: string[]): Promise<string> {
  for (const dir of path) {
    const file = `${dir.replace(/\/+$/, "")}/${type}`;
    try {
      const info = await Deno.stat(file);
      if (info.isFile && info.mode !== null && (info.mode & 0o111) !== 0) return file;
    } catch {
      // Not in this directory; try the next.
    }
  }
  throw new CniError(
    ErrorCode.InvalidConfig,
    `failed to find plugin ${quote(type)} in CNI_PATH ${quote(path.join(":"))}`,
  );
}

/** The variables a plugin is run with, CNI's on top of the base environment. */
export function pluginEnv(
  verb: Verb,
  env: CniEnv,
  base: Record<string, string>,
): Record<string, string> {
  return {
    ...base,
    CNI_COMMAND: verb,
    CNI_CONTAINERID: env.containerId,
    CNI_NETNS: env.netns,
    CNI_IFNAME: env.ifname,
    CNI_ARGS: env.args,
    CNI_PATH: env.path.join(":"),
  };
}

/**
 * Runs `file` with `stdin`; returns its parsed stdout (undefined when it printed
 * nothing, as DEL and GC may). A non-zero exit becomes the CniError the plugin
 * printed, or a code 999 error naming the exit status when it printed none.
 */
export async function execPlugin(
  file: string,
  vars: Record<string, string>,
  stdin: Uint8Array,
  timeoutMs: number,
): Promise<unknown> {
  const child = new Deno.Command(file, {
    env: vars,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }, timeoutMs);
  try {
    const writer = child.stdin.getWriter();
    await writer.write(stdin).catch(() => {}); // a plugin may exit without reading
    await writer.close().catch(() => {});
    let out: Uint8Array;
    try {
      out = await readBounded(child.stdout, MAX_STDIN_BYTES);
    } catch (err) {
      child.kill("SIGKILL");
      throw err;
    }
    const status = await child.status;
    const text = new TextDecoder().decode(out).trim();
    if (status.signal === "SIGKILL" && !status.success) {
      throw new CniError(
        ErrorCode.Internal,
        `plugin ${quote(file)} was killed after the ${timeoutMs} ms timeout`,
      );
    }
    if (!status.success) {
      let printed: unknown;
      try {
        printed = text ? decodeJson(out, `stdout of ${file}`) : undefined;
      } catch {
        printed = undefined;
      }
      if (
        isObject(printed) && typeof printed.code === "number" && typeof printed.msg === "string"
      ) {
        throw new CniError(
          printed.code,
          printed.msg,
          typeof printed.details === "string" ? printed.details : "",
        );
      }
      throw new CniError(
        ErrorCode.Internal,
        `plugin ${quote(file)} failed with exit code ${status.code}`,
        text.slice(0, 1000),
      );
    }
    return text === "" ? undefined : decodeJson(out, `stdout of ${file}`);
  } finally {
    clearTimeout(timer);
  }
}
