/**
 * Tiny TCP and UDP servers and a client, for kernel tests that check traffic
 * between network namespaces (port mappings) without any extra package. The
 * same file is the program run inside a namespace and the module the tests
 * import to run it there:
 *
 *   deno run -A net_probe.ts serve TOKEN TARGET...       prints "ready" once all listen
 *   deno run -A net_probe.ts probe TIMEOUT_MS TARGET...  one JSON line per target
 *   deno run -A net_probe.ts flood ADDRESS PORT COUNT     a UDP datagram to each of COUNT ports
 *
 * A TARGET is `tcp:ADDRESS:PORT` or `udp:ADDRESS:PORT` (an IPv6 address in
 * brackets: `tcp:[fd00::2]:80`); a probe's UDP target may name the source
 * port to send from, `udp:10.0.0.1:8080@40000`, so that it continues a flow
 * the kernel already tracks. A server answers every TCP connection, and
 * every UDP datagram, with `TOKEN PROTO from PEER` (PEER: the address the
 * server saw the traffic come from) and closes TCP connections afterwards.
 * The probe tries all its targets at once and reports, per target, the reply
 * or why there was none (`refused`, `timeout`, or the error's text).
 *
 * {@linkcode serve} and {@linkcode probe} run these inside a netns with
 * `ip netns exec`; {@linkcode Server.close} ends a server, so call it in a
 * `finally`.
 */

const IP = "/usr/sbin/ip";
const SELF = new URL(import.meta.url).pathname;
/** How long a server may take to print "ready" before it is taken as failed. */
const READY_TIMEOUT_MS = 10_000;

export type Protocol = "tcp" | "udp";

/** A protocol, address and port, parsed from `tcp:10.0.0.2:80` or `udp:[fd00::2]:80`. */
export interface Target {
  proto: Protocol;
  address: string;
  port: number;
  /** UDP probes only: the local port to send from (default: any). */
  sourcePort?: number;
}

/** The text form of a target, as the CLI takes it. */
export function target(
  proto: Protocol,
  address: string,
  port: number,
  sourcePort?: number,
): string {
  const host = address.includes(":") ? `[${address}]` : address;
  return `${proto}:${host}:${port}${sourcePort ? `@${sourcePort}` : ""}`;
}

export function parseTarget(text: string): Target {
  const m = /^(tcp|udp):(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d+)(?:@(\d+))?$/.exec(text);
  if (!m) throw new Error(`target ${JSON.stringify(text)}: expected tcp|udp:ADDRESS:PORT[@SPORT]`);
  const bad = (p: number) => !(p >= 1 && p <= 65535);
  const port = Number(m[4]);
  const sourcePort = m[5] === undefined ? undefined : Number(m[5]);
  if (bad(port) || (sourcePort !== undefined && bad(sourcePort))) {
    throw new Error(`target ${JSON.stringify(text)}: bad port`);
  }
  if (sourcePort !== undefined && m[1] !== "udp") {
    throw new Error(`target ${JSON.stringify(text)}: a source port is for UDP only`);
  }
  return {
    proto: m[1] as Protocol,
    address: m[2] ?? m[3],
    port,
    ...(sourcePort !== undefined ? { sourcePort } : {}),
  };
}

/** What one probe of one target saw. */
export interface ProbeResult {
  target: string;
  ok: boolean;
  /** The server's answer, when there was one. */
  reply?: string;
  /** Why there was no answer: `refused`, `timeout`, or an error's text. */
  error?: string;
}

// ---------------------------------------------------------------- used by tests

/** A server running inside a netns; `close()` ends it (safe to call twice). */
export interface Server {
  /** What the server printed to stderr so far (for a failure message). */
  stderr(): string;
  close(): Promise<void>;
}

function denoArgs(): string[] {
  return ["run", "--allow-all", "--unstable-net", "--no-config", "--no-lock", "--quiet", SELF];
}

/**
 * Starts a server in `netns` answering on every target with `token`, and
 * waits until it listens on all of them.
 */
export async function serve(netns: string, token: string, targets: string[]): Promise<Server> {
  const child = new Deno.Command(IP, {
    args: ["netns", "exec", netns, Deno.execPath(), ...denoArgs(), "serve", token, ...targets],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let errText = "";
  const errDone = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) errText += decoder.decode(chunk, { stream: true });
  })();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let closed = false;
  const server: Server = {
    stderr: () => errText,
    async close() {
      if (closed) return;
      closed = true;
      try {
        child.kill("SIGKILL");
      } catch {
        // It has already exited.
      }
      await reader.cancel().catch(() => {});
      await child.status;
      await errDone;
    },
  };
  let out = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), READY_TIMEOUT_MS);
  });
  try {
    while (!out.includes("ready\n")) {
      const next = await Promise.race([reader.read(), timeout]);
      if (next === "timeout") {
        throw new Error(`server in ${netns} not ready after ${READY_TIMEOUT_MS} ms`);
      }
      if (next.done) {
        await child.status;
        await errDone;
        throw new Error(`server in ${netns} exited before listening: ${errText.trim()}`);
      }
      out += next.value;
    }
  } catch (err) {
    await server.close();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return server;
}

/** Runs this file's program with `args` inside `netns`; its stdout, or an error naming `command`. */
async function runInNetns(netns: string, command: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(IP, {
    args: ["netns", "exec", netns, Deno.execPath(), ...denoArgs(), command, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (out.code !== 0) {
    throw new Error(
      `${command} from ${netns} exited ${out.code}: ${text}${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return text;
}

/** Tries every target from inside `netns` at once, each within `timeoutMs`. */
export async function probe(
  netns: string,
  targets: string[],
  timeoutMs = 1000,
): Promise<ProbeResult[]> {
  const text = await runInNetns(netns, "probe", [String(timeoutMs), ...targets]);
  return text.split("\n").filter(Boolean).map((line) => JSON.parse(line) as ProbeResult);
}

/** One target probed from `netns`. */
export async function probeOne(
  netns: string,
  spec: string,
  timeoutMs = 1000,
): Promise<ProbeResult> {
  return (await probe(netns, [spec], timeoutMs))[0];
}

/**
 * Sends one UDP datagram from `netns` to each of `count` ports from `firstPort` on `address`,
 * so that the namespace tracks that many more connections (a busy node, for conntrack).
 */
export async function flood(
  netns: string,
  address: string,
  firstPort: number,
  count: number,
): Promise<void> {
  await runInNetns(netns, "flood", [address, String(firstPort), String(count)]);
}

// ---------------------------------------------------------------- the program

function peer(addr: Deno.Addr): string {
  return "hostname" in addr ? addr.hostname : String(addr);
}

function errorName(err: unknown): string {
  if (err instanceof Deno.errors.ConnectionRefused) return "refused";
  if (err instanceof Deno.errors.TimedOut) return "timeout";
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

function serveTcp(token: string, t: Target): () => Promise<void> {
  const listener = Deno.listen({ transport: "tcp", hostname: t.address, port: t.port });
  return async () => {
    for await (const conn of listener) {
      (async () => {
        try {
          await conn.write(
            new TextEncoder().encode(`${token} tcp from ${peer(conn.remoteAddr)}\n`),
          );
        } catch {
          // The client went away: nothing to answer.
        } finally {
          conn.close();
        }
      })();
    }
  };
}

function serveUdp(token: string, t: Target): () => Promise<void> {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: t.address, port: t.port });
  return async () => {
    for await (const [, from] of socket) {
      await socket.send(new TextEncoder().encode(`${token} udp from ${peer(from)}`), from)
        .catch(() => {});
    }
  };
}

async function runServe(token: string, targets: Target[]): Promise<void> {
  const loops: (() => Promise<void>)[] = [];
  for (const t of targets) {
    loops.push(t.proto === "tcp" ? serveTcp(token, t) : serveUdp(token, t));
  }
  console.log("ready");
  await Promise.all(loops.map((loop) => loop()));
}

async function probeTcp(t: Target, deadline: Promise<never>): Promise<string> {
  const conn = await Promise.race([
    Deno.connect({ transport: "tcp", hostname: t.address, port: t.port }),
    deadline,
  ]);
  try {
    const text = await Promise.race([new Response(conn.readable).text(), deadline]);
    return text.trim();
  } catch (err) {
    conn.close();
    throw err;
  }
}

async function probeUdp(t: Target, deadline: Promise<never>): Promise<string> {
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: t.address.includes(":") ? "::" : "0.0.0.0",
    port: t.sourcePort ?? 0,
  });
  try {
    await socket.send(new TextEncoder().encode("probe"), {
      transport: "udp",
      hostname: t.address,
      port: t.port,
    });
    const [data] = await Promise.race([socket.receive(), deadline]);
    return new TextDecoder().decode(data).trim();
  } finally {
    socket.close();
  }
}

async function runProbe(timeoutMs: number, specs: string[]): Promise<void> {
  const timers: ReturnType<typeof setTimeout>[] = [];
  const results = await Promise.all(specs.map(async (spec): Promise<ProbeResult> => {
    const deadline = new Promise<never>((_, reject) => {
      timers.push(setTimeout(() => reject(new Deno.errors.TimedOut()), timeoutMs));
    });
    deadline.catch(() => {});
    try {
      const t = parseTarget(spec);
      const reply = await (t.proto === "tcp" ? probeTcp(t, deadline) : probeUdp(t, deadline));
      return { target: spec, ok: true, reply };
    } catch (err) {
      return { target: spec, ok: false, error: errorName(err) };
    }
  }));
  for (const r of results) console.log(JSON.stringify(r));
  for (const t of timers) clearTimeout(t);
  // A connect still pending after its deadline would keep the program alive.
  Deno.exit(0);
}

async function runFlood(address: string, firstPort: number, count: number): Promise<void> {
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: address.includes(":") ? "::" : "0.0.0.0",
    port: 0,
  });
  const byte = new Uint8Array(1);
  for (let port = firstPort; port < firstPort + count; port++) {
    await socket.send(byte, { transport: "udp", hostname: address, port }).catch(() => {});
  }
  socket.close();
}

if (import.meta.main) {
  const [command, first, ...rest] = Deno.args;
  if (command === "serve" && first && rest.length) {
    await runServe(first, rest.map(parseTarget));
  } else if (command === "probe" && Number(first) > 0 && rest.length) {
    await runProbe(Number(first), rest);
  } else if (command === "flood" && first && rest.length === 2) {
    await runFlood(first, Number(rest[0]), Number(rest[1]));
  } else {
    console.error(
      "usage: net_probe.ts serve TOKEN TARGET... | probe TIMEOUT_MS TARGET... | " +
        "flood ADDRESS PORT COUNT",
    );
    Deno.exit(2);
  }
}
