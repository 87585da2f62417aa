/**
 * The `cnichain` plugin type: a whole chain inside one conflist entry. It runs
 * its nested `plugins` in-process, starting from the prevResult it was given,
 * keeps the final result in its state directory (for a DEL or CHECK that comes
 * without one), and logs each step when asked to.
 */
import { CniError, ErrorCode, invalidConfig, quote } from "../../spec/errors.ts";
import {
  checkConflist,
  type ConfigObject,
  type Conflist,
  type EntryCheck,
  formatProblem,
  isObject,
  pathProblem,
  type Problem,
} from "../../spec/config.ts";
import { encodeResult, parseResult } from "../../spec/result.ts";
import type { Result, Verb } from "../../spec/types.ts";
import {
  addSteps,
  type ChainRun,
  checkAdd,
  checkChain,
  delChain,
  gcChain,
  statusChain,
} from "../../runner.ts";
import type { CheckContext, GcInvocation, Invocation, Plugin } from "../../plugin.ts";
import { FileLog, LOG_LEVELS, type LogLevel } from "../../log.ts";
import { isTempName, removeWithTemps, tempWriterRunning } from "../../system.ts";
import { fanOut } from "../../observe.ts";
import { shortHash } from "../../hash.ts";
import { resultFileName } from "../../libcni_cache.ts";

export const DEFAULT_STATE_DIR = "/var/lib/cni/cnichain";
export const CHAIN_TYPE = "cnichain";

/**
 * Attachments share this many lock files (by a hash of the attachment), so that the files stay
 * few however many attachments come and go, and a DEL leaves none behind.
 */
const ATTACHMENT_LOCKS = 64;

interface ChainConfig {
  chain: Conflist;
  stateDir: string;
  logFile?: string;
  logLevel: LogLevel;
}

/** Every problem in a cnichain entry, nested steps included, with JSON paths under `prefix`. */
export function chainProblems(
  entry: ConfigObject,
  prefix: string,
  version: string,
  check: EntryCheck,
  verb?: Verb,
  context?: CheckContext,
): Problem[] {
  const problems: Problem[] = [];
  const nested = { cniVersion: version, name: entry.name ?? "x", plugins: entry.plugins };
  const { problems: listProblems } = checkConflist(nested, (e, path, v) => {
    if (e.type === CHAIN_TYPE) {
      return [{
        path: `${path}.type`,
        message: "a cnichain chain cannot contain another cnichain",
      }];
    }
    return check(e, path, v, verb, context);
  }, prefix);
  for (const p of listProblems) problems.push(p); // push(...) overflows on a huge list
  for (const key of ["stateDir", "logFile"] as const) {
    if (entry[key] === undefined) continue;
    const problem = pathProblem(entry[key]);
    if (problem) problems.push({ path: `${prefix}${key}`, message: problem, value: entry[key] });
  }
  if (entry.logLevel !== undefined && !LOG_LEVELS.includes(entry.logLevel as LogLevel)) {
    problems.push({
      path: `${prefix}logLevel`,
      message: `must be one of ${LOG_LEVELS.join(", ")}`,
      value: entry.logLevel,
    });
  }
  return problems;
}

/** The cnichain plugin; `check` validates its nested entries with the built-ins' own checks. */
export function chainPlugin(check: EntryCheck): Plugin {
  function parse(inv: Invocation): ChainConfig {
    const { raw, cniVersion, name } = inv.conf;
    const stateDir = typeof raw.stateDir === "string" && !pathProblem(raw.stateDir)
      ? raw.stateDir
      : DEFAULT_STATE_DIR;
    const problems = chainProblems(raw, "", cniVersion, check, inv.verb, {
      files: inv.system.files,
      stateDir,
    });
    if (problems.length) {
      const more = problems.length > 1 ? ` (and ${problems.length - 1} more)` : "";
      throw new CniError(
        ErrorCode.InvalidConfig,
        `invalid network config: ${formatProblem(problems[0])}${more}`,
      );
    }
    if (name === "") throw invalidConfig("name", "is required");
    return {
      chain: {
        raw,
        name,
        cniVersion,
        plugins: raw.plugins as ConfigObject[],
        disableCheck: false,
        disableGC: false,
      },
      stateDir: (raw.stateDir as string | undefined) ?? DEFAULT_STATE_DIR,
      logFile: raw.logFile as string | undefined,
      logLevel: (raw.logLevel as LogLevel | undefined) ?? "info",
    };
  }

  function cachePath(cfg: ChainConfig, containerId: string, ifname: string): string {
    return `${cfg.stateDir}/results/${resultFileName(cfg.chain.name, containerId, ifname)}`;
  }

  async function readCache(inv: Invocation, cfg: ChainConfig): Promise<Result | undefined> {
    const bytes = await inv.system.files.read(cachePath(cfg, inv.env.containerId, inv.env.ifname));
    if (!bytes) return undefined;
    try {
      const saved = JSON.parse(new TextDecoder().decode(bytes));
      return parseResult(saved.result, "1.1.0", "cached result");
    } catch {
      return undefined; // A damaged cache only costs DEL its prevResult; DEL works without one.
    }
  }

  /**
   * Runs `fn` holding the lock of the invocation's attachment. The spec tells runtimes never to
   * run two operations on one attachment at once, but one that does (a DEL retried while a slow
   * ADD still runs) must get one after the other, not the steps of both interleaved.
   */
  async function serialised<T>(inv: Invocation, cfg: ChainConfig, fn: () => Promise<T>) {
    if (inv.system.kind !== "real") return await fn(); // it changes nothing, so it needs no lock
    const attachment = `${cfg.chain.name}\0${inv.env.containerId}\0${inv.env.ifname}`;
    const stripe = parseInt(shortHash(attachment).slice(-8), 16) % ATTACHMENT_LOCKS;
    await inv.system.files.mkdir(`${cfg.stateDir}/locks`, 0o700);
    return await inv.system.files.withLock(`${cfg.stateDir}/locks/attachment.${stripe}.lock`, fn);
  }

  /**
   * {@linkcode withRun} for a verb on one attachment (ADD, DEL, CHECK): `check` first, then
   * `body` under the attachment's lock, so that a refused call writes nothing, not even the lock.
   */
  function withAttachment<T>(
    inv: Invocation,
    check: ((run: ChainRun) => Promise<void>) | undefined,
    body: (cfg: ChainConfig, run: ChainRun) => Promise<T>,
  ): Promise<T> {
    return withRun(inv, async (cfg, run) => {
      await check?.(run);
      return await serialised(inv, cfg, () => body(cfg, run));
    });
  }

  /** Runs `body` with the nested chain, logging to the configured file. */
  async function withRun<T>(
    inv: Invocation,
    body: (cfg: ChainConfig, run: ChainRun) => Promise<T>,
  ): Promise<T> {
    const cfg = parse(inv);
    if (cfg.logFile && inv.system.kind !== "real") {
      // The log is written directly (a failed write must not fail the step), so a dry run only announces it.
      inv.system.effects.push({ op: "append log lines to", target: cfg.logFile });
    }
    const log = cfg.logFile && inv.system.kind === "real"
      ? new FileLog(cfg.logFile, cfg.logLevel, {
        verb: inv.verb,
        network: cfg.chain.name,
        containerId: inv.env.containerId,
        ifname: inv.env.ifname,
      })
      : undefined;
    const run: ChainRun = {
      conflist: cfg.chain,
      env: inv.env,
      capabilityArgs: inv.conf.runtimeConfig,
      args: Object.keys(inv.conf.args).length ? inv.conf.args : undefined,
      prevResult: inv.conf.prevResult,
      context: {
        ...inv.context,
        stateDir: cfg.stateDir,
        ...(log ? { observer: fanOut(inv.context.observer, log.observer()) } : {}),
      },
    };
    const began = performance.now();
    try {
      const out = await body(cfg, run);
      log?.finish(performance.now() - began);
      return out;
    } catch (err) {
      const e = err instanceof CniError ? err : new CniError(ErrorCode.Internal, String(err));
      log?.finish(performance.now() - began, { code: e.code, msg: e.message });
      throw err;
    }
  }

  return {
    validate: (entry, path, version, verb, context) =>
      chainProblems(entry, `${path}.`, version, check, verb, context),

    add: (inv) =>
      withAttachment(inv, checkAdd, async (cfg, run) => {
        // The runtime must DEL before it ADDs the same attachment again; refusing here keeps the
        // steps from tearing down the attachment that exists while they roll back.
        const cached = cachePath(cfg, inv.env.containerId, inv.env.ifname);
        if ((await inv.system.files.read(cached)) !== undefined) {
          throw new CniError(
            ErrorCode.AlreadyExists,
            `attachment ${
              quote(`${cfg.chain.name}/${inv.env.containerId}/${inv.env.ifname}`)
            } already exists: DEL it first`,
          );
        }
        const result = (await addSteps(run)) ?? { cniVersion: cfg.chain.cniVersion };
        const cache = {
          kind: "cnichainResultV1",
          networkName: cfg.chain.name,
          containerId: inv.env.containerId,
          ifName: inv.env.ifname,
          netns: inv.env.netns,
          result: encodeResult(result, "1.1.0"),
        };
        try {
          await inv.system.files.mkdir(`${cfg.stateDir}/results`, 0o700);
          await inv.system.files.writeAtomic(
            cachePath(cfg, inv.env.containerId, inv.env.ifname),
            JSON.stringify(cache),
            0o600,
          );
        } catch (err) {
          // The attachment exists but could not be recorded: undo it rather than leave it unknown.
          await delChain({ ...run, prevResult: result }).catch(() => {});
          throw new CniError(
            ErrorCode.Io,
            `save the result in ${quote(cfg.stateDir)}: ${
              err instanceof Error ? err.message : err
            }`,
          );
        }
        return result;
      }),

    del: (inv) =>
      withAttachment(inv, undefined, async (cfg, run) => {
        run.prevResult ??= await readCache(inv, cfg);
        await delChain(run);
        // With the temporary copy an ADD killed while saving it left behind.
        await removeWithTemps(
          inv.system.files,
          cachePath(cfg, inv.env.containerId, inv.env.ifname),
        );
      }),

    check: (inv) =>
      withAttachment(inv, undefined, async (cfg, run) => {
        run.prevResult ??= await readCache(inv, cfg);
        await checkChain(run);
      }),

    gc: (inv: GcInvocation) =>
      withRun(inv, async (cfg, run) => {
        run.validAttachments = inv.validAttachments;
        let failure: unknown;
        try {
          await gcChain(run);
        } catch (err) {
          failure = err;
        }
        // Forget cached results of attachments the runtime no longer knows.
        const keep = new Set(
          inv.validAttachments.map((a) => resultFileName(cfg.chain.name, a.containerID, a.ifname)),
        );
        const dir = `${cfg.stateDir}/results`;
        for (const file of await inv.system.files.list(dir)) {
          // GC takes no attachment's lock, so a temporary copy may be one an ADD is saving right
          // now: only a gone writer's copy is left over (a killed ADD's, whole or half-written).
          const temp = isTempName(file);
          const name = temp ? file.slice(1, file.lastIndexOf(".tmp-")) : file;
          if (keep.has(name) || !name.startsWith(`${cfg.chain.name}-`)) continue;
          if (temp && tempWriterRunning(file)) continue;
          const bytes = await inv.system.files.read(`${dir}/${file}`);
          let saved: unknown;
          try {
            saved = bytes ? JSON.parse(new TextDecoder().decode(bytes)) : undefined;
          } catch {
            saved = undefined;
          }
          const network = isObject(saved) ? saved.networkName : undefined;
          // Another network's whose name starts like ours; a half-written copy names none.
          if (network === undefined ? !temp : network !== cfg.chain.name) continue;
          await inv.system.files.remove(`${dir}/${file}`);
        }
        if (failure) throw failure;
      }),

    status: (inv) => withRun(inv, (_cfg, run) => statusChain(run)),
  };
}
