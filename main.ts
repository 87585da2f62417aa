/**
 * cnichain's entry: plugin mode when CNI_COMMAND is set or the program was
 * invoked under a built-in plugin's name, command-line mode otherwise.
 */
import { dispatch } from "./chain/dispatcher.ts";
import { EXEC_TIMEOUT_MS } from "./chain/exec.ts";
import { runCli } from "./chain/cli.ts";
import { builtinRegistry, multiCallNames } from "./chain/registry.ts";
import { realSystem } from "./chain/system.ts";
import { traceObserver } from "./chain/observe.ts";
import { writeStderr, writeStdout } from "./chain/stdio.ts";
import { processEnv } from "./chain/spec/env.ts";

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
        observer: trace ? traceObserver(writeStderr) : {},
        execTimeoutMs: EXEC_TIMEOUT_MS,
        baseEnv: Deno.env.toObject(),
      },
    );
    if (trace) {
      const now = performance.now();
      writeStderr(
        `cnichain trace: ${setOrBlank("CNI_COMMAND") ?? ""} total ${
          (now - began).toFixed(2)
        } ms in-process (${now.toFixed(2)} ms since the runtime started)`,
      );
    }
    return code;
  }
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
