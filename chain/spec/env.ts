/**
 * The CNI environment (SPEC.md "Parameters"): which variables each verb needs
 * and how container ids, interface names and CNI_ARGS are validated. Missing
 * or bad variables are code 4, naming them.
 */
import { CniError, ErrorCode, quote } from "./errors.ts";
import { type Verb, VERBS } from "./types.ts";

export interface CniEnv {
  command: Verb;
  containerId: string;
  netns: string;
  ifname: string;
  /** CNI_ARGS as given (`K=V;K2=V2`). */
  args: string;
  /** CNI_ARGS parsed into pairs, in order. */
  argPairs: [string, string][];
  /** CNI_PATH split on `:`, empty entries dropped. */
  path: string[];
}

const REQUIRED: Record<Verb, string[]> = {
  ADD: ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
  CHECK: ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
  DEL: ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
  GC: ["CNI_PATH"],
  STATUS: ["CNI_PATH"],
  VERSION: [],
};

/** The spec's container id (and network name) character set. */
export const ID_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$/;

/** Why an interface name is unusable, or undefined when it is fine (Linux IFNAMSIZ rules). */
export function interfaceNameProblem(name: string): string | undefined {
  if (name === "") return "is empty";
  if (new TextEncoder().encode(name).length > 15) return "is longer than 15 bytes";
  if (name === "." || name === "..") return "may not be . or ..";
  if (/[\/:\s]/.test(name)) return "may not contain /, : or whitespace";
  return undefined;
}

export function parseCniArgs(text: string): [string, string][] {
  if (text === "") return [];
  return text.split(";").filter((p) => p !== "").map((pair) => {
    const eq = pair.indexOf("=");
    if (eq <= 0) {
      throw new CniError(
        ErrorCode.InvalidEnv,
        `CNI_ARGS: ${quote(pair)} is not of the form KEY=VALUE`,
      );
    }
    return [pair.slice(0, eq), pair.slice(eq + 1)];
  });
}

/**
 * Deno.env.get for the CNI boundary. Deno throws InvalidData for a value that
 * is not UTF-8: that is the caller's bad variable (code 4, named), not an
 * internal error.
 */
export function processEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch (err) {
    if (err instanceof Deno.errors.InvalidData) {
      throw new CniError(ErrorCode.InvalidEnv, `${name}: is not valid UTF-8`);
    }
    throw err;
  }
}

/** Reads and validates the CNI variables from `get` (Deno.env.get, or a test's map). */
export function parseEnv(getRaw: (name: string) => string | undefined): CniEnv {
  // A process cannot receive a lone UTF-16 surrogate (processEnv refuses bytes that are not
  // UTF-8), but an in-process caller can pass one; refused the same way, so that names written
  // to disk as UTF-8 read back equal to what the run held in memory.
  const get = (name: string) => {
    const value = getRaw(name);
    if (value !== undefined && !value.isWellFormed()) {
      throw new CniError(ErrorCode.InvalidEnv, `${name}: is not valid UTF-8`);
    }
    return value;
  };
  const command = get("CNI_COMMAND");
  if (command === undefined || command === "") {
    throw new CniError(
      ErrorCode.InvalidEnv,
      "required environment variable CNI_COMMAND is missing",
    );
  }
  if (!(VERBS as readonly string[]).includes(command)) {
    throw new CniError(
      ErrorCode.InvalidEnv,
      `CNI_COMMAND: unknown command ${quote(command)}, expected one of ${VERBS.join(", ")}`,
    );
  }
  const verb = command as Verb;
  const missing = REQUIRED[verb].filter((name) => !get(name));
  if (missing.length) {
    throw new CniError(
      ErrorCode.InvalidEnv,
      `required environment variable${missing.length > 1 ? "s" : ""} ${
        missing.join(", ")
      } missing for ${verb}`,
    );
  }
  const env: CniEnv = {
    command: verb,
    containerId: get("CNI_CONTAINERID") ?? "",
    netns: get("CNI_NETNS") ?? "",
    ifname: get("CNI_IFNAME") ?? "",
    args: get("CNI_ARGS") ?? "",
    argPairs: [],
    path: (get("CNI_PATH") ?? "").split(":").filter((p) => p !== ""),
  };
  if (env.containerId !== "" && !ID_PATTERN.test(env.containerId)) {
    throw new CniError(
      ErrorCode.InvalidEnv,
      `CNI_CONTAINERID: ${
        quote(env.containerId)
      } has characters outside [a-zA-Z0-9_.-] or does not start with a letter or digit`,
    );
  }
  if (env.ifname !== "") {
    const problem = interfaceNameProblem(env.ifname);
    if (problem) {
      throw new CniError(ErrorCode.InvalidEnv, `CNI_IFNAME: ${quote(env.ifname)} ${problem}`);
    }
  }
  env.argPairs = parseCniArgs(env.args);
  return env;
}
