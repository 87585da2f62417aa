/**
 * How ffi/ declares C results: as a struct of the one value, never as the bare
 * value.
 *
 * Why: at dlopen Deno compiles a fast-call trampoline (machine code, through
 * Cranelift) for every symbol whose signature has no struct in it, about
 * 0.2 ms each, 1 ms for the first. A plugin run makes a few dozen calls, far
 * too few for the fast path to pay that back, and it pays it on every ADD and
 * DEL. A struct in the signature makes Deno skip the trampoline and call
 * through libffi.
 *
 * Why the C function does not notice: on x86-64 (System V) and arm64
 * (AAPCS64) a struct holding one integer or pointer is returned, and passed,
 * in the same register as the bare value. Both are little-endian on Linux.
 */

export const INT = { struct: ["i32"] } as const;
export const SSIZE = { struct: ["isize"] } as const;
export const POINTER = { struct: ["pointer"] } as const;

/** The value of an INT result. */
export function int(result: Uint8Array): number {
  return new DataView(result.buffer, result.byteOffset, 4).getInt32(0, true);
}

/** The value of an SSIZE result. */
export function ssize(result: Uint8Array): number {
  return Number(new DataView(result.buffer, result.byteOffset, 8).getBigInt64(0, true));
}

/** The value of a POINTER result (null for NULL). */
export function pointer(result: Uint8Array): Deno.PointerValue {
  return Deno.UnsafePointer.create(
    new DataView(result.buffer, result.byteOffset, 8).getBigUint64(0, true),
  );
}
