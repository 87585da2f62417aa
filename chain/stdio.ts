/** Whole writes to the process's stdout and stderr (a pipe may take a write in parts). */

const encoder = new TextEncoder();

function writeAll(file: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = encoder.encode(text.endsWith("\n") ? text : `${text}\n`);
  let done = 0;
  while (done < bytes.length) done += file.writeSync(bytes.subarray(done));
}

export const writeStdout = (text: string): void => writeAll(Deno.stdout, text);

export const writeStderr = (text: string): void => {
  try {
    writeAll(Deno.stderr, text);
  } catch {
    // Nobody is listening on stderr; the result on stdout is what matters.
  }
};
