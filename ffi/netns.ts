/**
 * Network namespaces. `setns` moves only the calling thread, and Deno runs
 * JavaScript on one thread, so every switch is a synchronous window: enter,
 * do synchronous work (open a socket, write a sysctl), switch straight back.
 * Nothing may `await` inside. If switching back fails the process cannot
 * know where it is, so it stops rather than act in the wrong namespace.
 */
import * as libc from "./libc.ts";

/** Opens a network namespace file (e.g. /var/run/netns/x); the fd must be closed. */
export function openNetns(path: string): number {
  return libc.open(path, libc.O_RDONLY | libc.O_CLOEXEC);
}

/** Runs `fn` (synchronous) inside the namespace at `path`, then returns to the current one. */
export function inNetns<T>(path: string, fn: () => T): T {
  const home = libc.open("/proc/thread-self/ns/net", libc.O_RDONLY | libc.O_CLOEXEC);
  let target: number;
  try {
    target = openNetns(path);
  } catch (err) {
    libc.close(home);
    throw err;
  }
  try {
    try {
      libc.setns(target, `setns ${JSON.stringify(path)}`);
    } catch (err) {
      if (err instanceof libc.OsError && err.code === "EINVAL") {
        throw new libc.OsError(`setns ${JSON.stringify(path)}: not a network namespace`, err.errno);
      }
      throw err;
    }
    try {
      const out = fn();
      if (out instanceof Promise) throw new Error("inNetns() needs a synchronous function");
      return out;
    } finally {
      try {
        libc.setns(home, "setns back to the original namespace");
      } catch (err) {
        const msg = JSON.stringify({
          cniVersion: "1.1.0",
          code: 999,
          msg: `cnichain: ${err}; stopping`,
        });
        console.log(msg);
        Deno.exit(1);
      }
    }
  } finally {
    libc.close(target);
    libc.close(home);
  }
}
