/**
 * What the bundled program carries after its code, in comments that end the file
 * (tools/bundle.ts writes them): `/*<name>:<base64>*\/`. A run reads past a comment for about
 * 2.5 microseconds a kilobyte, where the same bytes as code or as a string would be compiled, or
 * kept in the code cache, on every run.
 */

/** The name of the trailer that carries the command line's code (main.ts). */
export const CLI_TRAILER = "cnichain-cli";

/** The program's file: Deno.mainModule without `new URL()` (0.2 ms on its first use). */
function programPath(): string {
  return decodeURIComponent(Deno.mainModule.replace(/^file:\/\//, ""));
}

/** The bytes of the trailer `name`, or undefined when the program carries none. */
export function readTrailer(name: string): Uint8Array<ArrayBuffer> | undefined {
  return findTrailer(Deno.readTextFileSync(programPath()), name);
}

/** The bytes of the trailer `name` in a program's text (see trailerComment). */
export function findTrailer(text: string, name: string): Uint8Array<ArrayBuffer> | undefined {
  const mark = `/*${name}:`;
  const at = text.lastIndexOf(mark);
  if (at < 0) return undefined;
  const start = at + mark.length;
  const base64 = text.slice(start, text.indexOf("*/", start));
  // Uint8Array.fromBase64 decodes in a fraction of a millisecond; atob and a per-character
  // copy took 15-20 ms for the policy engine.
  const fromBase64 =
    (Uint8Array as unknown as { fromBase64?: (s: string) => Uint8Array<ArrayBuffer> }).fromBase64;
  return fromBase64 ? fromBase64(base64) : Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

/** The trailer's text, gunzipped (tools/bundle.ts gzips what is only read now and then). */
export async function readGzipTrailer(name: string): Promise<string | undefined> {
  const bytes = readTrailer(name);
  if (!bytes) return undefined;
  const plain = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return await new Response(plain).text();
}

/** The comment that carries `bytes` as the trailer `name` (for tools/bundle.ts). */
export function trailerComment(name: string, bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return `/*${name}:${btoa(binary)}*/`;
}
