/**
 * Network configurations: the common fields every plugin reads from stdin
 * (`parseNetConf`) and the conflist a runtime loads (`checkConflist`), which
 * reports every problem with its JSON path rather than stopping at the first.
 */
import type { CheckContext } from "../plugin.ts";
import { CniError, ErrorCode, invalidConfig, quote } from "./errors.ts";
import { ID_PATTERN } from "./env.ts";
import { parseResult } from "./result.ts";
import type { Result, Verb } from "./types.ts";
import { DEFAULT_VERSION, isSupported, pickVersion, SUPPORTED_VERSIONS } from "./version.ts";

/** More steps than this in one chain is code 7 (a bound, documented in the README). */
export const MAX_CHAIN_STEPS = 64;

/** Plugin types name files in CNI_PATH, so they may not contain `/` or start with `.`. */
export const TYPE_PATTERN = ID_PATTERN;

export type ConfigObject = Record<string, unknown>;

export const isObject = (v: unknown): v is ConfigObject =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** The fields of a plugin's stdin that every plugin shares, checked. */
export interface NetConf {
  /** The whole object as given, for plugin-specific fields. */
  raw: ConfigObject;
  cniVersion: string;
  name: string;
  type: string;
  prevResult?: Result;
  runtimeConfig: ConfigObject;
  args: ConfigObject;
}

export function unsupportedVersion(version: unknown, where = "cniVersion"): CniError {
  return new CniError(
    ErrorCode.IncompatibleVersion,
    "incompatible CNI versions",
    `${where} ${quote(version)} is not supported; supported versions: ${
      SUPPORTED_VERSIONS.join(", ")
    }`,
  );
}

/** The version a plugin's stdin asks for: "" or absent is 0.1.0; anything unsupported is code 1. */
export function configVersion(raw: ConfigObject): string {
  const v = raw.cniVersion;
  if (v === undefined || v === "") return DEFAULT_VERSION;
  if (typeof v !== "string" || !isSupported(v)) throw unsupportedVersion(v);
  return v;
}

/**
 * The longest network name: it names store directories and, with the container id and ifname,
 * cache files, which a file system caps at 255 bytes (past that, ENAMETOOLONG mid-ADD).
 */
export const MAX_NAME_LENGTH = 128;

/** Checks the common fields of one plugin's stdin (SPEC.md "Network configuration"). */
export function parseNetConf(raw: ConfigObject): NetConf {
  const cniVersion = configVersion(raw);
  const { name, type } = raw;
  if (name !== undefined && (typeof name !== "string" || !ID_PATTERN.test(name))) {
    throw invalidConfig("name", "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*", name);
  }
  if (typeof name === "string" && name.length > MAX_NAME_LENGTH) {
    throw invalidConfig("name", `is longer than ${MAX_NAME_LENGTH} characters`, name);
  }
  if (typeof type !== "string" || type === "") {
    throw invalidConfig("type", "is required and must be a string", type);
  }
  for (const key of ["runtimeConfig", "args"] as const) {
    if (raw[key] !== undefined && !isObject(raw[key])) {
      throw invalidConfig(key, "must be an object", raw[key]);
    }
  }
  // Checked here, before any step changes anything, though only IPAM and policy read it.
  const cniArgs = (raw.args as ConfigObject | undefined)?.cni;
  if (cniArgs !== undefined && cniArgs !== null && !isObject(cniArgs)) {
    throw invalidConfig("args.cni", "must be an object", cniArgs);
  }
  const conf: NetConf = {
    raw,
    cniVersion,
    name: name ?? "",
    type,
    runtimeConfig: (raw.runtimeConfig as ConfigObject | undefined) ?? {},
    args: (raw.args as ConfigObject | undefined) ?? {},
  };
  if (raw.prevResult !== undefined && raw.prevResult !== null) {
    conf.prevResult = parseResult(raw.prevResult, cniVersion);
  }
  return conf;
}

/** One problem found in a config: where (a JSON path), what, and the value found. */
export interface Problem {
  path: string;
  message: string;
  value?: unknown;
}

export function formatProblem(p: Problem): string {
  return `${p.path}: ${p.message}${p.value === undefined ? "" : ` (got ${quote(p.value)})`}`;
}

/** A checked conflist: what the runner needs. Unknown fields stay in `raw`. */
export interface Conflist {
  raw: ConfigObject;
  name: string;
  cniVersion: string;
  plugins: ConfigObject[];
  disableCheck: boolean;
  disableGC: boolean;
}

/** Extra checks a caller adds per plugin entry (built-in plugins' own config checks). */
export type EntryCheck = (
  entry: ConfigObject,
  path: string,
  version: string,
  verb?: Verb,
  context?: CheckContext,
) => Problem[];

function flag(raw: ConfigObject, key: string, path: string, problems: Problem[]): boolean {
  const v = raw[key];
  if (v === undefined) return false;
  if (v === true || v === "true") return true;
  if (v === false || v === "false") return false;
  problems.push({ path: `${path}${key}`, message: "must be a boolean", value: v });
  return false;
}

/**
 * Checks a conflist and returns it with every problem found. `prefix` is the
 * JSON path of the list itself ("" at the top, "plugins[0]." for a nested chain).
 */
export function checkConflist(
  raw: unknown,
  check: EntryCheck = () => [],
  prefix = "",
): { conflist?: Conflist; problems: Problem[] } {
  const problems: Problem[] = [];
  if (!isObject(raw)) {
    return { problems: [{ path: prefix || "$", message: "must be a JSON object", value: raw }] };
  }
  if (raw.cniVersion !== undefined && typeof raw.cniVersion !== "string") {
    problems.push({
      path: `${prefix}cniVersion`,
      message: "must be a string",
      value: raw.cniVersion,
    });
  }
  if (
    raw.cniVersions !== undefined &&
    (!Array.isArray(raw.cniVersions) || raw.cniVersions.some((v) => typeof v !== "string"))
  ) {
    problems.push({
      path: `${prefix}cniVersions`,
      message: "must be a list of strings",
      value: raw.cniVersions,
    });
  }
  const version = pickVersion(raw.cniVersion, raw.cniVersions);
  if (!version) {
    problems.push({
      path: `${prefix}cniVersion`,
      message: `no supported version among cniVersion and cniVersions (supported: ${
        SUPPORTED_VERSIONS.join(", ")
      })`,
      value: raw.cniVersion,
    });
  }
  if (prefix === "" || raw.name !== undefined) {
    if (typeof raw.name !== "string" || !ID_PATTERN.test(raw.name)) {
      problems.push({
        path: `${prefix}name`,
        message: raw.name === undefined ? "is required" : "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*",
        value: raw.name,
      });
    }
  }
  const disableCheck = flag(raw, "disableCheck", prefix, problems);
  const disableGC = flag(raw, "disableGC", prefix, problems);
  flag(raw, "loadOnlyInlinedPlugins", prefix, problems);
  const plugins = raw.plugins;
  if (!Array.isArray(plugins) || plugins.length === 0) {
    problems.push({
      path: `${prefix}plugins`,
      message: "must be a non-empty list of plugin configs",
      value: plugins,
    });
  } else if (plugins.length > MAX_CHAIN_STEPS) {
    problems.push({
      path: `${prefix}plugins`,
      message: `has ${plugins.length} steps, more than the limit of ${MAX_CHAIN_STEPS}`,
    });
  } else {
    plugins.forEach((entry, i) => {
      const path = `${prefix}plugins[${i}]`;
      if (!isObject(entry)) {
        problems.push({ path, message: "must be an object", value: entry });
        return;
      }
      if (typeof entry.type !== "string" || !TYPE_PATTERN.test(entry.type)) {
        problems.push({
          path: `${path}.type`,
          message: entry.type === undefined
            ? "is required"
            : "must be a plugin name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)",
          value: entry.type,
        });
      }
      const caps = entry.capabilities;
      if (
        caps !== undefined &&
        (!isObject(caps) || Object.values(caps).some((v) => typeof v !== "boolean"))
      ) {
        problems.push({
          path: `${path}.capabilities`,
          message: "must be an object of booleans",
          value: caps,
        });
      }
      if (
        entry.cniVersion !== undefined && entry.cniVersion !== raw.cniVersion &&
        typeof entry.cniVersion === "string" && !isSupported(entry.cniVersion)
      ) {
        problems.push({
          path: `${path}.cniVersion`,
          message: "is not a supported version",
          value: entry.cniVersion,
        });
      }
      // A loop, not push(...list): a list of a million problems would overflow the stack.
      if (version) { for (const p of check(entry, path, version)) problems.push(p); }
    });
  }
  if (problems.length || !version) return { problems };
  return {
    conflist: {
      raw,
      name: raw.name as string,
      cniVersion: version,
      plugins: plugins as ConfigObject[],
      disableCheck,
      disableGC,
    },
    problems,
  };
}

/** checkConflist() for callers that stop at problems: the first one as a CniError. */
export function parseConflist(raw: unknown, check?: EntryCheck, prefix = ""): Conflist {
  const { conflist, problems } = checkConflist(raw, check, prefix);
  if (conflist) return conflist;
  const first = problems[0];
  if (first.path.endsWith("cniVersion") && first.message.startsWith("no supported version")) {
    throw unsupportedVersion(first.value, first.path);
  }
  const more = problems.length > 1
    ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? "s" : ""})`
    : "";
  throw new CniError(
    ErrorCode.InvalidConfig,
    `invalid network config: ${formatProblem(first)}${more}`,
  );
}

/**
 * Why a path from a config cannot be used, or undefined when it can: it must
 * be absolute, without `..` segments or NUL, so that no config can point
 * cnichain's writes outside the directory its operator meant.
 */
export function pathProblem(value: unknown): string | undefined {
  if (typeof value !== "string" || value === "") return "must be a non-empty string";
  if (!value.startsWith("/")) return "must be an absolute path";
  if (value.includes("\0")) return "may not contain NUL";
  if (value.split("/").includes("..")) return "may not contain .. segments";
  if (value.length > 4096) return "is longer than 4096 characters";
  return undefined;
}
