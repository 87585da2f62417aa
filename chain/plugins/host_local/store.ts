/**
 * The reference host-local store, byte for byte, so that a node can switch
 * between the reference plugin and cnichain and keep every allocation: in
 * `<dataDir>/<network>/`, one file per address named by the address holding
 * `<containerID>\r\n<ifname>`, `last_reserved_ip.<N>` holding the last address
 * range set N handed out, and `flock` on the file `lock` around every change.
 * Allocation files are linked into place complete (never half-written), so a
 * process killed at any point leaves only whole allocations and, at worst, a
 * temporary file that the next holder of the lock removes.
 *
 * One addition: beside each allocation file cnichain keeps a hard link to it
 * named `.owner.<hash of its content>.<address>`, so that ADD and DEL find an
 * attachment's addresses from the directory listing instead of reading every
 * file (the reference reads them all, and a cold JavaScript process pays ~10 µs
 * a file: 5 ms an ADD with 500 pods on the node). The links cost the reference
 * nothing: it skips names that are not addresses and, releasing by content,
 * removes a link together with its file. A file without a link (written by the
 * reference, by an older cnichain, or left by a crash between the two names)
 * is simply read, as before.
 */
import { entryExists, isTempName, type StateFiles } from "../../system.ts";
import { formatIp, type Ip, parseIp } from "../../ip.ts";
import { shortHash } from "../../hash.ts";

export const LOCK_FILE = "lock";
export const LAST_RESERVED_PREFIX = "last_reserved_ip.";
export const OWNER_LINK_PREFIX = ".owner.";

/** Who holds an address. `ifname` is missing in files written by old reference versions. */
export interface Owner {
  id: string;
  ifname?: string;
}

export interface Allocation {
  /** The file name: the address as the reference plugin writes it. */
  name: string;
  ip: Ip;
  /** Undefined when the file says nothing readable (a reference plugin killed mid-write). */
  owner?: Owner;
}

/** What scan() finds. */
export interface Scan {
  /** The name of every allocation file (its address, as written), read or not. */
  taken: Set<string>;
  /** The allocations read: all of them, or those that could be the wanted attachment's. */
  allocations: Allocation[];
}

const DOT = 0x2e;
/** Where the 16 hex digits of the hash end in an owner link's name. */
const LINK_HASH_END = OWNER_LINK_PREFIX.length + 16;

/** What an allocation file holds (no trailing newline, as the reference writes it). */
export function ownerText(id: string, ifname: string): string {
  return `${id}\r\n${ifname}`;
}

/** The hash an attachment's owner links carry: of what its allocation files hold. */
export function ownerHash(id: string, ifname: string): string {
  return shortHash(ownerText(id, ifname));
}

/** The name of the owner link of `address` for the holder with hash `hash`. */
export function ownerLinkName(address: string, hash: string): string {
  return `${OWNER_LINK_PREFIX}${hash}.${address}`;
}

export function parseOwner(text: string): Owner | undefined {
  const trimmed = text.trim();
  if (trimmed === "") return undefined;
  const cut = trimmed.indexOf("\r\n");
  if (cut < 0) return { id: trimmed };
  return { id: trimmed.slice(0, cut), ifname: trimmed.slice(cut + 2) };
}

/**
 * The allocations of one attachment. Like the reference plugin, files that
 * name only the container id count when none names the interface too.
 */
export function ownedBy(allocations: Allocation[], id: string, ifname: string): Allocation[] {
  const exact = allocations.filter((a) => a.owner?.id === id && a.owner.ifname === ifname);
  if (exact.length) return exact;
  return allocations.filter((a) => a.owner?.id === id && a.owner.ifname === undefined);
}

const decoder = new TextDecoder();

export class AddressStore {
  constructor(readonly files: StateFiles, readonly dir: string) {}

  /**
   * False when the directory is missing: nothing was ever allocated here. Asked of its parent
   * (a few networks), not by listing the store itself (hundreds of files).
   */
  async exists(): Promise<boolean> {
    return await entryExists(this.files, this.dir);
  }

  /** Runs `fn` holding the store's lock, the same flock the reference plugin takes. */
  async locked<T>(fn: () => Promise<T>): Promise<T> {
    await this.files.mkdir(this.dir, 0o755);
    return await this.files.withLock(`${this.dir}/${LOCK_FILE}`, fn);
  }

  /**
   * The store's allocations. Call it holding the lock: a temporary file seen
   * then belongs to a writer that was killed, so it is removed.
   *
   * Without `wanted` every allocation file is read. With it, only the files
   * that could be that attachment's: those without an owner link, and those
   * with its link (read to make sure). The rest count in `taken` alone. Links
   * whose file is gone or holds another owner are stale and go; files found
   * without a link get one, so the store soon needs no reads at all.
   */
  async scan(wanted?: { id: string; ifname: string }): Promise<Scan> {
    const names = await this.files.list(this.dir);
    // Per name only string slicing and Map lookups: with 500 pods on a node this loop runs over
    // a thousand names in a process too young to have compiled it.
    const linkHashes = new Map<string, string[]>(); // address -> hashes of its owner links
    for (const name of names) {
      if (!name.startsWith(OWNER_LINK_PREFIX) || name[LINK_HASH_END] !== ".") continue;
      const address = name.slice(LINK_HASH_END + 1);
      const hash = name.slice(OWNER_LINK_PREFIX.length, LINK_HASH_END);
      const hashes = linkHashes.get(address);
      if (hashes) hashes.push(hash);
      else linkHashes.set(address, [hash]);
    }
    const wantedHash = wanted && ownerHash(wanted.id, wanted.ifname);
    const taken = new Set<string>();
    const allocations: Allocation[] = [];
    for (const name of names) {
      if (name.charCodeAt(0) === DOT) {
        if (!name.startsWith(OWNER_LINK_PREFIX) && isTempName(name)) {
          await this.files.remove(`${this.dir}/${name}`);
        }
        continue;
      }
      if (name === LOCK_FILE || name.startsWith(LAST_RESERVED_PREFIX)) continue;
      const hashes = linkHashes.get(name);
      if (wantedHash && hashes && !hashes.includes(wantedHash)) {
        taken.add(name); // another attachment's, by its link
        continue;
      }
      const ip = parseIp(name);
      if (!ip) continue; // anything else that is not an address
      taken.add(name);
      const bytes = await this.files.read(`${this.dir}/${name}`);
      if (bytes === undefined) continue;
      const owner = parseOwner(decoder.decode(bytes));
      allocations.push({ name, ip, owner });
      if (owner?.ifname === undefined) continue; // unreadable, or the old format: no link
      const right = ownerHash(owner.id, owner.ifname);
      for (const hash of hashes ?? []) {
        if (hash !== right) await this.files.remove(`${this.dir}/${ownerLinkName(name, hash)}`);
      }
      if (!hashes?.includes(right)) await this.#link(name, ownerLinkName(name, right));
    }
    // Links whose file is gone (removed by hand, or by a release killed between the two names).
    for (const [address, hashes] of linkHashes) {
      if (taken.has(address)) continue;
      for (const hash of hashes) {
        await this.files.remove(`${this.dir}/${ownerLinkName(address, hash)}`);
      }
    }
    return { taken, allocations };
  }

  /** An owner link for `address`; a file system without hard links just goes without. */
  async #link(address: string, link: string): Promise<void> {
    try {
      await this.files.link(`${this.dir}/${address}`, `${this.dir}/${link}`);
    } catch {
      // The file is still read on every scan: slower, never wrong.
    }
  }

  /** Takes `ip` for the attachment, with its owner link; false when it is already taken. */
  async reserve(ip: Ip, id: string, ifname: string): Promise<boolean> {
    const address = formatIp(ip);
    const path = `${this.dir}/${address}`;
    if (!(await this.files.createExclusive(path, ownerText(id, ifname), 0o600))) return false;
    await this.#link(address, ownerLinkName(address, ownerHash(id, ifname)));
    return true;
  }

  /**
   * Gives an address back: the owner link first, so that a process killed in
   * between leaves a file without a link (which is read) and never a link
   * without its file.
   */
  async release(allocation: Allocation): Promise<boolean> {
    const { owner } = allocation;
    if (owner?.ifname !== undefined) {
      const link = ownerLinkName(allocation.name, ownerHash(owner.id, owner.ifname));
      await this.files.remove(`${this.dir}/${link}`);
    }
    return await this.files.remove(`${this.dir}/${allocation.name}`);
  }

  /** Range set `n`'s cursor; undefined when missing or unreadable (round-robin restarts). */
  async lastReserved(n: number): Promise<Ip | undefined> {
    const bytes = await this.files.read(`${this.dir}/${LAST_RESERVED_PREFIX}${n}`);
    return bytes === undefined ? undefined : parseIp(decoder.decode(bytes).trim());
  }

  /**
   * Written in place, as the reference writes it: a cursor torn by a crash reads as no address
   * or as another one, and either only moves where the next search starts.
   */
  setLastReserved(n: number, ip: Ip): Promise<void> {
    return this.files.overwrite(`${this.dir}/${LAST_RESERVED_PREFIX}${n}`, formatIp(ip), 0o600);
  }
}
