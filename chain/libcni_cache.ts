/**
 * libcni's result cache, which command-line mode keeps as a runtime would:
 * `<cacheDir>/results/<network>-<containerID>-<ifname>`, JSON of kind
 * `cniCacheV1` (the conflist bytes base64-encoded, the attachment, the
 * capability args and the final result), mode 0600 in a 0700 directory.
 */
import type { StateFiles } from "./system.ts";
import { parseResult } from "./spec/result.ts";
import type { JsonObject, Result } from "./spec/types.ts";
import { isObject } from "./spec/config.ts";
import { shortHash } from "./hash.ts";

export const DEFAULT_CACHE_DIR = "/var/lib/cni";

export interface Attachment {
  network: string;
  containerId: string;
  ifname: string;
}

/** The longest file name Linux takes (NAME_MAX). */
const MAX_FILE_NAME = 255;

/**
 * `<network>-<containerID>-<ifname>`, libcni's name for an attachment's cached result. When that
 * is longer than a file name may be (container IDs have no limit), the ID and ifname give way to
 * a hash of them, so that the file can still be written and found.
 */
export function resultFileName(network: string, containerId: string, ifname: string): string {
  const plain = `${network}-${containerId}-${ifname}`;
  return new TextEncoder().encode(plain).length <= MAX_FILE_NAME
    ? plain
    : `${network}-#${shortHash(`${containerId}\0${ifname}`)}`;
}

export function cacheFile(cacheDir: string, a: Attachment): string {
  return `${cacheDir}/results/${resultFileName(a.network, a.containerId, a.ifname)}`;
}

function base64(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

export async function saveResult(
  files: StateFiles,
  cacheDir: string,
  a: Attachment & {
    netns: string;
    config: Uint8Array;
    cniArgs: [string, string][];
    capabilityArgs: JsonObject;
  },
  result: JsonObject,
): Promise<void> {
  const entry: JsonObject = {
    kind: "cniCacheV1",
    containerId: a.containerId,
    config: base64(a.config),
    ifName: a.ifname,
    networkName: a.network,
    netns: a.netns,
    result,
  };
  if (a.cniArgs.length) entry.cniArgs = a.cniArgs;
  if (Object.keys(a.capabilityArgs).length) entry.capabilityArgs = a.capabilityArgs;
  await files.mkdir(`${cacheDir}/results`, 0o700);
  await files.writeAtomic(cacheFile(cacheDir, a), JSON.stringify(entry), 0o600);
}

/** The cached final result, or undefined when there is none (or it cannot be read). */
export async function loadResult(
  files: StateFiles,
  cacheDir: string,
  a: Attachment,
  version: string,
): Promise<Result | undefined> {
  const bytes = await files.read(cacheFile(cacheDir, a));
  if (!bytes) return undefined;
  try {
    const entry = JSON.parse(new TextDecoder().decode(bytes));
    return isObject(entry) && entry.result
      ? parseResult(entry.result, version, "cached result")
      : undefined;
  } catch {
    return undefined;
  }
}

/** Every attachment of `network` that has a cached result. */
export async function cachedAttachments(
  files: StateFiles,
  cacheDir: string,
  network: string,
): Promise<Attachment[]> {
  const out: Attachment[] = [];
  for (const name of await files.list(`${cacheDir}/results`)) {
    if (!name.startsWith(`${network}-`)) continue;
    try {
      const entry = JSON.parse(
        new TextDecoder().decode((await files.read(`${cacheDir}/results/${name}`))!),
      );
      if (isObject(entry) && entry.networkName === network) {
        out.push({ network, containerId: String(entry.containerId), ifname: String(entry.ifName) });
      }
    } catch {
      // Not a cache entry we can read; GC keeps nothing for it.
    }
  }
  return out;
}

export async function removeResult(
  files: StateFiles,
  cacheDir: string,
  a: Attachment,
): Promise<void> {
  await files.remove(cacheFile(cacheDir, a));
}
