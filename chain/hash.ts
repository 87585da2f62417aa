/**
 * A short, stable name for a longer one (state file names, nftables chain
 * names, comments that must fit nft's limit). FNV-1a over UTF-8, 64 bits as
 * 16 hex digits: synchronous, and stable across versions because names on
 * disk and in the kernel depend on it. Not for anything secret.
 */
export function shortHash(text: string): string {
  return fnv64(new TextEncoder().encode(text));
}

/** 64-bit FNV-1a of some bytes, as 16 hex digits (shortHash() of a text's UTF-8). */
export function fnv64(bytes: Uint8Array): string {
  // 64-bit arithmetic in two 32-bit halves: BigInt steps cost most of a millisecond per name
  // in a fresh process. h * prime = h * 0x1b3 + h << 40 (mod 2^64).
  let hi = 0xcbf29ce4, lo = 0x84222325;
  for (const byte of bytes) {
    lo ^= byte;
    const low = (lo >>> 0) * 0x1b3; // < 2^41: exact
    const carry = Math.floor(low / 0x100000000);
    hi = (Math.imul(hi, 0x1b3) + carry + Math.imul(lo, 0x100)) >>> 0;
    lo = low >>> 0;
  }
  return hi.toString(16).padStart(8, "0") + lo.toString(16).padStart(8, "0");
}

/**
 * A cheaper 32-bit FNV-1a over UTF-16 code units, as 8 hex digits, for telling one version of a
 * text from another on the hot path (shortHash's BigInt steps cost most of a millisecond for a
 * couple of kilobytes there).
 */
export function quickHash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, "0");
}

/** 8 random hex digits for names that only need to differ (veth, temporary files); not secret. */
export function randomHex32(): string {
  return Math.floor(Math.random() * 0x100000000).toString(16).padStart(8, "0");
}
