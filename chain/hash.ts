/**
 * A short, stable name for a longer one (state file names, nftables chain
 * names, comments that must fit nft's limit). FNV-1a over UTF-8, 64 bits as
 * 16 hex digits: synchronous, and stable across versions because names on
 * disk and in the kernel depend on it. Not for anything secret.
 */
export function shortHash(text: string): string {
  let h = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(text)) {
    h ^= BigInt(byte);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h.toString(16).padStart(16, "0");
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
