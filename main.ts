/**
 * cnichain's entry: plugin mode when CNI_COMMAND is set or the program was
 * invoked under a built-in plugin's name, command-line mode otherwise.
 */
import { dispatch } from "./chain/dispatcher.ts";
import { EXEC_TIMEOUT_MS } from "./chain/exec.ts";
import { CLI_TRAILER, readGzipTrailer } from "./chain/trailer.ts";
import { builtinRegistry, multiCallNames } from "./chain/registry.ts";
import { realSystem } from "./chain/system.ts";
import { traceObserver } from "./chain/observe.ts";
import { writeStderr, writeStdout } from "./chain/stdio.ts";
import { processEnv } from "./chain/spec/env.ts";

/**
 * tools/bundle.ts replaces this with "trailer": the command line (chain/cli.ts and what it
 * needs) is then bundled apart and travels gzipped at the end of the program, compiled only when
 * a person runs a command. Plugin runs, the ones runtimes wait for, load 130 KB of code instead
 * of 180: Deno pays for every byte of a program's code cache at each start (VERSION 15.1 -> 14.7
 * ms, median of 60 interleaved).
 */
const CLI: string = "__CNICHAIN_CLI__";

type CliModule = typeof import("./chain/cli.ts");

async function commandLine(): Promise<CliModule> {
  if (CLI === "trailer") {
    const code = await readGzipTrailer(CLI_TRAILER);
    if (code === undefined) throw new Error(`${Deno.mainModule} carries no command line`);
    // An async function that returns the module's exports (tools/bundle.ts): evaluated, not
    // imported, so that Deno keeps no code cache entry for it (a module would need a blob: URL,
    // new on every run, and each run would leave 650 KB more in Deno's cache directory).
    const load = (0, eval)(code) as () => Promise<CliModule>;
    return await load();
  }
  // In a variable, so that the bundler leaves the command line out of the plugin's code.
  const module = "./chain/cli.ts";
  return await import(module);
}

/** The name the program was run by, symlinks unresolved (`/opt/cni/bin/bridge` -> "bridge"). */
function invokedName(): string {
  // String work, not `new URL()`: Deno's URL parser costs 0.2 ms on its first use in a process.
  const url = Deno.mainModule;
  return decodeURIComponent(url.slice(url.lastIndexOf("/") + 1)).replace(/\.(ts|js)$/, "");
}

/** A variable's value, "" when it is set but not UTF-8 (dispatch() reports those, code 4). */
function setOrBlank(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return "";
  }
}

async function main(): Promise<number> {
  const registry = builtinRegistry();
  const name = invokedName();
  const invokedAs = multiCallNames(registry).includes(name) ? name : undefined;
  if (setOrBlank("CNI_COMMAND") !== undefined || invokedAs) {
    const trace = setOrBlank("CNICHAIN_TRACE") === "1";
    // The step lines wait for the total: writing them as they come would charge the trace's own
    // stderr writes (0.1 ms and more) to the in-process time it reports.
    const traceLines: string[] = [];
    const began = performance.now();
    const code = await dispatch(
      {
        getEnv: processEnv,
        stdin: Deno.stdin,
        stdout: writeStdout,
        stderr: writeStderr,
        invokedAs,
      },
      registry,
      {
        system: realSystem(),
        observer: trace ? traceObserver((line) => traceLines.push(line)) : {},
        execTimeoutMs: EXEC_TIMEOUT_MS,
        baseEnv: Deno.env.toObject(),
      },
    );
    if (trace) {
      const now = performance.now();
      traceLines.push(
        `cnichain trace: ${setOrBlank("CNI_COMMAND") ?? ""} total ${
          (now - began).toFixed(2)
        } ms in-process (${now.toFixed(2)} ms since the runtime started)`,
      );
      writeStderr(traceLines.join("\n"));
    }
    return code;
  }
  const { runCli } = await commandLine();
  return await runCli(Deno.args, {
    stdout: writeStdout,
    stderr: writeStderr,
    getEnv: (n) => Deno.env.get(n),
    env: () => Deno.env.toObject(),
  });
}

// Ending by returning, not by Deno.exit(), is what lets Deno store its V8 code cache for this
// program (it is written as the process winds down), so later runs skip compiling it. Nothing may
// stay open past main() (every timer is cleared, every child awaited); a timer here to force the
// exit would cost more than it saves: Deno's timers load its Node compatibility layer.
Deno.exitCode = await main();
