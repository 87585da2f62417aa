/**
 * resolv.conf as host-local's `resolvConf` reads it: `nameserver` lines in
 * order, the last `domain`, and `search` and `options` words accumulated.
 * Comments (`#`, `;`), blank lines and keywords without a value are skipped.
 */
import type { Dns } from "../../spec/types.ts";

export function parseResolvConf(text: string): Dns {
  const dns: Dns = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const [key, ...words] = line.split(/\s+/);
    if (words.length === 0) continue;
    switch (key) {
      case "nameserver":
        (dns.nameservers ??= []).push(words[0]);
        break;
      case "domain":
        dns.domain = words[0];
        break;
      case "search":
        (dns.search ??= []).push(...words);
        break;
      case "options":
        (dns.options ??= []).push(...words);
        break;
    }
  }
  return dns;
}
