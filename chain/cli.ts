/**
 * Command-line mode: run any conflist like `cnitool` (add, del, check, gc,
 * status), with `--dry-run` printing the plan instead of changing anything;
 * `validate` reports every problem in a conflist; `version`.
 */
import { CniError, ErrorCode, quote, toCniError } from "./spec/errors.ts";
import { parseEnv } from "./spec/env.ts";
import { decodeObject, MAX_STDIN_BYTES, readBoundedSync } from "./spec/input.ts";
import {
  checkConflist,
  type ConfigObject,
  type Conflist,
  formatProblem,
  isObject,
  parseConflist,
} from "./spec/config.ts";
import { encodeResult } from "./spec/result.ts";
import type { AttachmentRef, JsonObject, Verb } from "./spec/types.ts";
import { SUPPORTED_VERSIONS } from "./spec/version.ts";
import { addChain, type ChainRun, checkChain, delChain, gcChain, statusChain } from "./runner.ts";
import { realSystem, type System } from "./system.ts";
import { recordingSystem } from "./system_record.ts";
import { builtinRegistry, entryCheck } from "./registry.ts";
import { fanOut, type Observer, traceObserver } from "./observe.ts";
import { Plan } from "./plan.ts";
import { validAttachments } from "./invoke.ts";
import { EXEC_TIMEOUT_MS } from "./exec.ts";
import { runPolicyCli } from "./policy_cli.ts";
import {
  cachedAttachments,
  DEFAULT_CACHE_DIR,
  loadResult,
  removeResult,
  saveResult,
} from "./libcni_cache.ts";

export const VERSION = "0.1.0";
export const DEFAULT_CNI_PATH = "/opt/cni/bin";

const USAGE = `cnichain ${VERSION}: a CNI meta-plugin that runs a whole chain in one process

Plugin mode: with CNI_COMMAND set, cnichain is a CNI plugin (config on stdin).
Invoked as ${"`bridge`"}, ${"`host-local`"}, ... it acts as that single built-in plugin.

Command line:
  cnichain add|del|check|gc|status CONFLIST [options]   run a conflist like cnitool
  cnichain validate CONFLIST [--json]                     report every problem in a conflist
  cnichain policy explain|sync ... --config CONFLIST      why a flow is allowed or denied; re-apply policies
  cnichain install [options]                              install the program and a conflist on this node
  cnichain version                                        program and spec versions
  cnichain COMMAND --help                                 help for one command`;

const RUN_HELP = `cnichain add|del|check|gc|status CONFLIST [options]

Runs every plugin of CONFLIST (a .conflist, or a single-plugin .conf) as a
runtime would: built-in types in-process, others exec'd from the CNI path.
ADD caches the final result in libcni's format; DEL and CHECK use it.

Options:
  --netns PATH           the container's network namespace (ADD, CHECK; optional for DEL)
  --container-id ID      the container id (ADD, DEL, CHECK)
  --ifname NAME          the interface name in the container (default eth0)
  --cap-args JSON        capability arguments, e.g. '{"portMappings":[...]}'
  --cni-args ARGS        CNI_ARGS to pass (K=V;K2=V2)
  --cni-path DIRS        where external plugins are found (default $CNI_PATH or ${DEFAULT_CNI_PATH})
  --cache-dir DIR        libcni's cache directory (default ${DEFAULT_CACHE_DIR})
  --valid-attachments JSON  GC: the attachments to keep (default: those in the cache)
  --dry-run              print each step's stdin, changes and result; change nothing
  --json                 print the result (or the plan) as JSON only
  --trace                print each step's wall time to stderr`;

const VALIDATE_HELP = `cnichain validate CONFLIST [--json]

Checks a conflist and prints every problem with its JSON path. Exit 0 when it
is valid, 1 when it is not.`;

export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  getEnv(name: string): string | undefined;
  env(): Record<string, string>;
}

function readConfigFile(path: string): { bytes: Uint8Array; value: ConfigObject } {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch (err) {
    throw new CniError(
      ErrorCode.Io,
      `open ${quote(path)}: ${err instanceof Error ? err.message : err}`,
    );
  }
  let bytes: Uint8Array;
  try {
    bytes = readBoundedSync(file, MAX_STDIN_BYTES);
  } catch (err) {
    throw toCniError(err, `read ${quote(path)}`);
  } finally {
    file.close();
  }
  return { bytes, value: decodeObject(bytes, path) };
}

/** A single-plugin .conf becomes a one-step conflist, as libcni's ConfListFromConf does. */
function asConflist(value: ConfigObject): ConfigObject {
  if (value.plugins !== undefined || value.type === undefined) return value;
  const { cniVersion, name, ...plugin } = value;
  return { cniVersion, name, plugins: [plugin] };
}

export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const command = argv[0];
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    io.stdout(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command === "version" || command === "--version") {
    io.stdout(
      `cnichain ${VERSION}\nCNI spec versions: ${
        SUPPORTED_VERSIONS.join(", ")
      }\nbuilt-in plugins: ${[...builtinRegistry().keys()].join(", ")}`,
    );
    return 0;
  }
  if (command === "validate") return await validate(argv.slice(1), io);
  if (command === "policy") return await runPolicyCli(argv.slice(1), io);
  if (command === "install") {
    return await (await import("./install.ts")).runInstall(argv.slice(1), io);
  }
  const verbs: Record<string, Verb> = {
    add: "ADD",
    del: "DEL",
    check: "CHECK",
    gc: "GC",
    status: "STATUS",
  };
  if (!verbs[command]) {
    io.stderr(`cnichain: unknown command ${quote(command)}\n\n${USAGE}`);
    return 2;
  }
  return await runVerb(verbs[command], argv.slice(1), io);
}

async function validate(args: string[], io: CliIo): Promise<number> {
  let parsed;
  try {
    const { parseArgs } = await import("node:util");
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: { json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
    });
  } catch (err) {
    io.stderr(`cnichain validate: ${err instanceof Error ? err.message : err}\n\n${VALIDATE_HELP}`);
    return 2;
  }
  if (parsed.values.help) {
    io.stdout(VALIDATE_HELP);
    return 0;
  }
  const [path] = parsed.positionals;
  if (!path || parsed.positionals.length > 1) {
    io.stderr(VALIDATE_HELP);
    return 2;
  }
  let problems;
  try {
    const { value } = readConfigFile(path);
    problems = checkConflist(asConflist(value), entryCheck(builtinRegistry())).problems;
  } catch (err) {
    const e = toCniError(err);
    problems = [{ path: "$", message: e.message }];
  }
  if (parsed.values.json) {
    io.stdout(JSON.stringify({ valid: problems.length === 0, problems }, null, 2));
  } else if (problems.length === 0) io.stdout(`${path}: valid`);
  else {io.stdout(
      `${path}: ${problems.length} problem${problems.length > 1 ? "s" : ""}\n${
        problems.map((p) => `  ${formatProblem(p)}`).join("\n")
      }`,
    );}
  return problems.length ? 1 : 0;
}

function parseJsonFlag(name: string, text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new CniError(
      ErrorCode.Decode,
      `--${name}: not valid JSON: ${err instanceof Error ? err.message : err}`,
    );
  }
}

async function runVerb(verb: Verb, args: string[], io: CliIo): Promise<number> {
  let parsed;
  try {
    const { parseArgs } = await import("node:util");
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        netns: { type: "string" },
        "container-id": { type: "string" },
        ifname: { type: "string", default: "eth0" },
        "cap-args": { type: "string" },
        "cni-args": { type: "string", default: "" },
        "cni-path": { type: "string" },
        "cache-dir": { type: "string", default: DEFAULT_CACHE_DIR },
        "valid-attachments": { type: "string" },
        "dry-run": { type: "boolean" },
        json: { type: "boolean" },
        trace: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    io.stderr(`cnichain: ${err instanceof Error ? err.message : err}\n\n${RUN_HELP}`);
    return 2;
  }
  const o = parsed.values;
  if (o.help) {
    io.stdout(RUN_HELP);
    return 0;
  }
  if (parsed.positionals.length !== 1) {
    io.stderr(`cnichain ${verb.toLowerCase()}: expected one CONFLIST argument\n\n${RUN_HELP}`);
    return 2;
  }
  const dryRun = o["dry-run"] === true;
  const system: System = dryRun ? recordingSystem(realSystem()) : realSystem();
  const plan = new Plan(system);
  try {
    const { bytes, value } = readConfigFile(parsed.positionals[0]);
    const registry = builtinRegistry();
    const conflist: Conflist = parseConflist(asConflist(value), entryCheck(registry));
    const cniPath = o["cni-path"] ?? io.getEnv("CNI_PATH") ?? DEFAULT_CNI_PATH;
    // The same checks a plugin applies to its environment, with the flag names a person typed.
    const vars: Record<string, string | undefined> = {
      CNI_COMMAND: verb,
      CNI_CONTAINERID: o["container-id"],
      CNI_NETNS: o.netns,
      CNI_IFNAME: o.ifname,
      CNI_ARGS: o["cni-args"],
      CNI_PATH: cniPath,
    };
    let env;
    try {
      env = parseEnv((name) => vars[name]);
    } catch (err) {
      const flags: Record<string, string> = {
        CNI_CONTAINERID: "--container-id",
        CNI_NETNS: "--netns",
        CNI_IFNAME: "--ifname",
        CNI_ARGS: "--cni-args",
        CNI_PATH: "--cni-path",
      };
      const e = toCniError(err);
      throw new CniError(e.code, e.message.replace(/CNI_[A-Z]+/g, (m) => flags[m] ?? m));
    }
    const capArgs = parseJsonFlag("cap-args", o["cap-args"]) ?? {};
    if (!isObject(capArgs)) {
      throw new CniError(ErrorCode.InvalidConfig, "--cap-args: must be a JSON object");
    }
    const observers: Observer[] = [plan.observer()];
    if (o.trace) observers.push(traceObserver(io.stderr));
    const run: ChainRun = {
      conflist,
      env,
      capabilityArgs: capArgs,
      context: {
        system,
        registry,
        observer: fanOut(...observers),
        execTimeoutMs: EXEC_TIMEOUT_MS,
        stepPrefix: "",
        baseEnv: io.env(),
      },
    };
    const cacheDir = o["cache-dir"]!;
    const attachment = { network: conflist.name, containerId: env.containerId, ifname: env.ifname };
    let output: JsonObject | undefined;
    switch (verb) {
      case "ADD": {
        const result = (await addChain(run)) ?? { cniVersion: conflist.cniVersion };
        output = encodeResult(result, conflist.cniVersion);
        await saveResult(system.files, cacheDir, {
          ...attachment,
          netns: env.netns,
          config: bytes,
          cniArgs: env.argPairs,
          capabilityArgs: capArgs as JsonObject,
        }, output);
        break;
      }
      case "DEL":
        run.prevResult = await loadResult(system.files, cacheDir, attachment, conflist.cniVersion);
        await delChain(run);
        await removeResult(system.files, cacheDir, attachment);
        break;
      case "CHECK":
        run.prevResult = await loadResult(system.files, cacheDir, attachment, conflist.cniVersion);
        await checkChain(run);
        break;
      case "GC": {
        const given = parseJsonFlag("valid-attachments", o["valid-attachments"]);
        run.validAttachments = given !== undefined
          ? validAttachments({ "cni.dev/valid-attachments": given as JsonObject[] })
          : (await cachedAttachments(system.files, cacheDir, conflist.name)).map((
            a,
          ): AttachmentRef => ({
            containerID: a.containerId,
            ifname: a.ifname,
          }));
        await gcChain(run);
        break;
      }
      case "STATUS":
        await statusChain(run);
        break;
    }
    if (dryRun) printPlan(io, o.json === true, verb, conflist, plan, output);
    else if (output) io.stdout(JSON.stringify(output, null, o.json ? undefined : 2));
    return 0;
  } catch (err) {
    const e = toCniError(err);
    if (dryRun) printPlan(io, o.json === true, verb, undefined, plan, undefined, e);
    else if (o.json) io.stdout(JSON.stringify(e.toJSON("")));
    if (!o.json) {
      io.stderr(
        `cnichain ${verb.toLowerCase()}: error ${e.code}: ${e.message}${
          e.details ? ` (${e.details})` : ""
        }`,
      );
    }
    return 1;
  }
}

function printPlan(
  io: CliIo,
  json: boolean,
  verb: Verb,
  conflist: Conflist | undefined,
  plan: Plan,
  result: JsonObject | undefined,
  error?: CniError,
): void {
  if (json) {
    io.stdout(JSON.stringify(
      {
        dryRun: true,
        verb,
        network: conflist?.name,
        cniVersion: conflist?.cniVersion,
        ...plan.toJSON(),
        ...(result ? { result } : {}),
        ...(error ? { error: error.toJSON(conflist?.cniVersion ?? "") } : {}),
      },
      null,
      2,
    ));
    return;
  }
  const head = conflist
    ? `cnichain dry run: ${verb} on network ${
      quote(conflist.name)
    } (cniVersion ${conflist.cniVersion}); nothing was changed`
    : `cnichain dry run: ${verb}; nothing was changed`;
  const body = plan.render();
  const tail = result
    ? `\nresult:\n${JSON.stringify(result, null, 2)}`
    : error
    ? `\nfailed: error ${error.code}: ${error.message}`
    : "";
  io.stdout(`${head}\n\n${body || "(no steps ran)"}${tail}`);
}
