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
