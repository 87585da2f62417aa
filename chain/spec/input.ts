/**
 * Bounded input: how much stdin cnichain reads and how deep its JSON may nest.
 * The limits are documented in the README; going past one is code 6 (decode),
 * and nothing past the limit is read, so a huge stdin cannot exhaust memory.
 */
import { CniError, ErrorCode } from "./errors.ts";

export const MAX_STDIN_BYTES = 8 * 1024 * 1024;
export const MAX_JSON_DEPTH = 64;

function concat(chunks: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/** Reads a stream to its end, failing as soon as it passes `limit` bytes. */
export async function readBounded(
  stream: ReadableStream<Uint8Array>,
  limit = MAX_STDIN_BYTES,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = stream.getReader();
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > limit) {
        throw new CniError(
          ErrorCode.Decode,
          `stdin is larger than the ${limit / 1024 / 1024} MiB limit`,
        );
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  return concat(chunks, size);
}

/** Something read synchronously, like Deno.stdin or an open file. */
export interface SyncReader {
  readSync(p: Uint8Array): number | null;
}

/**
 * readBounded() for a synchronous reader. Plugin mode reads stdin this way:
 * the web streams behind `Deno.stdin.readable` take milliseconds to load.
 */
export function readBoundedSync(reader: SyncReader, limit = MAX_STDIN_BYTES): Uint8Array {
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (true) {
    const chunk = new Uint8Array(64 * 1024);
    const n = reader.readSync(chunk);
    if (n === null || n === 0) break;
    size += n;
    if (size > limit) {
      throw new CniError(
        ErrorCode.Decode,
        `stdin is larger than the ${limit / 1024 / 1024} MiB limit`,
      );
    }
    chunks.push(chunk.subarray(0, n));
  }
  return concat(chunks, size);
}

/** The deepest nesting of objects and arrays in a JSON text (strings skipped). */
export function jsonDepth(text: string): number {
  let depth = 0, deepest = 0, inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > deepest) deepest = depth;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return deepest;
}

/**
 * True when `text` has at most `limit` opening brackets, so it cannot nest deeper than that.
 * indexOf is native: a usual config (a few dozen brackets) is cleared without jsonDepth()'s
 * walk over every character, which costs a young process about 0.4 µs a character.
 */
function atMostOpenings(text: string, limit: number): boolean {
  let n = 0;
  for (const bracket of ["{", "["]) {
    for (let i = text.indexOf(bracket); i >= 0; i = text.indexOf(bracket, i + 1)) {
      if (++n > limit) return false;
    }
  }
  return true;
}

/**
 * Decodes bytes as UTF-8 JSON with the depth limit. `what` names the input in
 * messages ("stdin", a file path).
 */
export function decodeJson(bytes: Uint8Array, what = "stdin"): unknown {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new CniError(ErrorCode.Decode, `${what} is not valid UTF-8`);
  }
  if (text.trim() === "") {
    throw new CniError(ErrorCode.Decode, `${what} is empty: expected a JSON object`);
  }
  const depth = atMostOpenings(text, MAX_JSON_DEPTH) ? 0 : jsonDepth(text);
  if (depth > MAX_JSON_DEPTH) {
    throw new CniError(
      ErrorCode.Decode,
      `${what} nests JSON deeper than the limit of ${MAX_JSON_DEPTH} levels`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new CniError(
      ErrorCode.Decode,
      `${what} is not valid JSON: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}

/** decodeJson() that also requires the top level to be an object. */
export function decodeObject(bytes: Uint8Array, what = "stdin"): Record<string, unknown> {
  const value = decodeJson(bytes, what);
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new CniError(ErrorCode.Decode, `${what} must hold a JSON object, not ${describe(value)}`);
  }
  return value as Record<string, unknown>;
}

function describe(value: unknown): string {
  return Array.isArray(value) ? "an array" : value === null ? "null" : `a ${typeof value}`;
}
