/**
 * The reference host-local store, byte for byte, so that a node can switch
 * between the reference plugin and cnichain and keep every allocation: in
 * `<dataDir>/<network>/`, one file per address named by the address holding
 * `<containerID>\r\n<ifname>`, `last_reserved_ip.<N>` holding the last address
 * range set N handed out, and `flock` on the file `lock` around every change.
 * Allocation files are linked into place complete (never half-written), so a
 * process killed at any point leaves only whole allocations and, at worst, a
 * temporary file that the next full read of the store removes.
 *
 * Two additions, in the directory `.cnichain/` of the store, so that ADD and
 * DEL need not read every pod's file (the reference reads them all, and a
 * young JavaScript process pays about 4 µs a name just to list them: 4 ms an
 * ADD with 500 pods on the node):
 *
 * - an index per attachment, `.cnichain/<hash of its owner>`, naming the
 *   addresses it holds;
 * - a seal, `.cnichain/seal`, holding the store directory's modification time
 *   as cnichain left it: a time at a random nanosecond that no later change
 *   of the directory's entries (by cnichain or by the reference) can give
 *   again.
 *
 * They are kept out of the store's own directory because every name there
 * makes each lookup in it slower on a file system without hashed directories
 * (a create with 1,000 names beside it took 0.2 ms here instead of 15 µs).
 *
 * While the directory's time equals the seal, the indexes describe the store
 * exactly; otherwise (the reference wrote or released an address, a process
 * was killed mid-change, the file system keeps no nanoseconds) every file is
 * read, as the reference does, and the indexes are written anew. Every change
 * cnichain makes touches the directory's entries first, so a change cut short
 * always leaves the store unsealed. The reference reads the two kinds of file
 * and finds no owner in them.
 */
import { entryExists, isTempName, type StateFiles } from "../../system.ts";
import { formatIp, type Ip, parseIp } from "../../ip.ts";
import { shortHash } from "../../hash.ts";

export const LOCK_FILE = "lock";
export const LAST_RESERVED_PREFIX = "last_reserved_ip.";
/** cnichain's own files, in a directory of the store: the indexes (by owner hash) and the seal. */
export const OWN_DIR = ".cnichain";
export const SEAL_FILE = `${OWN_DIR}/seal`;

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

/** An attachment's addresses, as holdings() finds them. */
export interface Holdings {
  /** Its allocations: those naming it, else (an old reference's files) those naming its container. */
  mine: Allocation[];
  /** The owner their files name: whose index commit() rewrites. */
  owner: Owner;
  /** Every allocation file's name when the whole store was read; else addresses are tried. */
  taken?: Set<string>;
}

/** What an allocation file holds (no trailing newline, as the reference writes it). */
export function ownerText(owner: Owner): string {
  return owner.ifname === undefined ? owner.id : `${owner.id}\r\n${owner.ifname}`;
}

/** The name of an owner's index file, from the store's directory. */
export function indexName(owner: Owner): string {
  return `${OWN_DIR}/${shortHash(ownerText(owner))}`;
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

/** What an index file holds: the owner (to tell hash clashes apart) and its addresses. */
interface Index {
  owner: string;
  addresses: string[];
}

const decoder = new TextDecoder();
const sameOwner = (a: Owner | undefined, b: Owner) => a?.id === b.id && a.ifname === b.ifname;

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

  #path(name: string): string {
    return `${this.dir}/${name}`;
  }

  /** Whether the indexes describe the store (its time is the one cnichain sealed it with). */
  async #sealed(): Promise<boolean> {
    const token = await this.files.dirToken(this.dir);
    const seal = await this.files.read(this.#path(SEAL_FILE));
    return token !== undefined && seal !== undefined && decoder.decode(seal) === token;
  }

  /**
   * Every allocation, every file read. Call it holding the lock: a temporary
   * file seen then belongs to a writer that was killed, so it is removed.
   */
  async scan(): Promise<Allocation[]> {
    const allocations: Allocation[] = [];
    for (const name of await this.files.list(this.dir)) {
      if (name.charCodeAt(0) === 0x2e) { // "."
        if (isTempName(name)) await this.files.remove(this.#path(name));
        continue;
      }
      if (name === LOCK_FILE || name.startsWith(LAST_RESERVED_PREFIX)) continue;
      const ip = parseIp(name);
      if (!ip) continue; // anything else that is not an address
      const bytes = await this.files.read(this.#path(name));
      if (bytes === undefined) continue;
      allocations.push({ name, ip, owner: parseOwner(decoder.decode(bytes)) });
    }
    return allocations;
  }

  /**
   * An attachment's allocations, holding the lock: from its index when the
   * store is sealed, else from a full scan(), after which (unless
   * `readOnly`) every index is written anew for commit() to seal.
   */
  async holdings(id: string, ifname: string, readOnly = false): Promise<Holdings> {
    if (await this.#sealed()) {
      const exact = await this.#indexed({ id, ifname });
      const legacy = exact?.length ? [] : await this.#indexed({ id });
      if (exact?.length) return { mine: exact, owner: { id, ifname } };
      if (legacy?.length) return { mine: legacy, owner: { id } };
      if (exact && legacy) return { mine: [], owner: { id, ifname } };
      // An index that does not hold (a hash clash, a file changed by hand): read everything.
    }
    const all = await this.scan();
    if (!readOnly) await this.#rewriteIndexes(all);
    const mine = ownedBy(all, id, ifname);
    return {
      mine,
      owner: mine[0]?.owner ?? { id, ifname },
      taken: new Set(all.map((a) => a.name)),
    };
  }

  /** The allocations an owner's index names, each file checked; undefined when they disagree. */
  async #indexed(owner: Owner): Promise<Allocation[] | undefined> {
    const bytes = await this.files.read(this.#path(indexName(owner)));
    if (bytes === undefined) return [];
    let index: Index;
    try {
      index = JSON.parse(decoder.decode(bytes));
    } catch {
      return undefined;
    }
    if (index.owner !== ownerText(owner)) return undefined; // another owner's, by a hash clash
    const mine: Allocation[] = [];
    for (const name of index.addresses) {
      const ip = parseIp(name);
      const file = await this.files.read(this.#path(name));
      if (!ip || file === undefined || !sameOwner(parseOwner(decoder.decode(file)), owner)) {
        return undefined;
      }
      mine.push({ name, ip, owner });
    }
    return mine;
  }

  /** Every owner's index as `allocations` say, stale ones removed. The store is unsealed. */
  async #rewriteIndexes(allocations: Allocation[]): Promise<void> {
    await this.#unseal();
    const wanted = new Map<string, { owner: Owner; addresses: string[] }>();
    for (const a of allocations) {
      if (!a.owner) continue;
      const name = indexName(a.owner);
      const entry = wanted.get(name) ?? { owner: a.owner, addresses: [] };
      entry.addresses.push(a.name);
      wanted.set(name, entry);
    }
    for (const name of await this.files.list(this.#path(OWN_DIR))) {
      const index = `${OWN_DIR}/${name}`;
      if (index !== SEAL_FILE && !wanted.has(index)) await this.files.remove(this.#path(index));
    }
    for (const { owner, addresses } of wanted.values()) await this.#writeIndex(owner, addresses);
  }

  async #writeIndex(owner: Owner, addresses: string[]): Promise<void> {
    const path = this.#path(indexName(owner));
    if (!addresses.length) {
      await this.files.remove(path);
      return;
    }
    await this.files.mkdir(this.#path(OWN_DIR), 0o755);
    const index: Index = { owner: ownerText(owner), addresses: [...addresses].sort() };
    const text = JSON.stringify(index);
    const now = await this.files.read(path);
    if (now === undefined || decoder.decode(now) !== text) await this.files.overwrite(path, text);
  }

  /** Before indexes are rewritten: the seal no longer holds, so a cut-short rewrite is never trusted. */
  async #unseal(): Promise<void> {
    const path = this.#path(SEAL_FILE);
    const seal = await this.files.read(path);
    if (seal !== undefined && seal.length) await this.files.overwrite(path, "");
  }

  /**
   * After an address was taken or given back (a change of the directory's entries, so the store
   * is unsealed): `owner`'s index names `addresses`, and the store is sealed again.
   */
  async commit(owner?: Owner, addresses: string[] = []): Promise<void> {
    if (owner) await this.#writeIndex(owner, addresses);
    const path = this.#path(SEAL_FILE);
    // Made before the mark: making the directory for it changes the store's entries.
    if ((await this.files.read(path)) === undefined) {
      await this.files.mkdir(this.#path(OWN_DIR), 0o755);
      await this.files.overwrite(path, "");
    }
    const token = await this.files.markDir(this.dir);
    if (token !== undefined) await this.files.overwrite(path, token);
  }

  /** GC's commit: every index written from what is left, then sealed. */
  async commitAll(allocations: Allocation[]): Promise<void> {
    await this.#rewriteIndexes(allocations);
    await this.commit();
  }

  /** Whether an address is taken (its file exists): for trying addresses without a full scan. */
  async isTaken(ip: Ip): Promise<boolean> {
    return (await this.files.read(this.#path(formatIp(ip)))) !== undefined;
  }

  /** Takes `ip` for the attachment; false when it is already taken. */
  reserve(ip: Ip, id: string, ifname: string): Promise<boolean> {
    return this.files.createExclusive(this.#path(formatIp(ip)), ownerText({ id, ifname }), 0o600);
  }

  release(allocation: Allocation): Promise<boolean> {
    return this.files.remove(this.#path(allocation.name));
  }

  /** Range set `n`'s cursor; undefined when missing or unreadable (round-robin restarts). */
  async lastReserved(n: number): Promise<Ip | undefined> {
    const bytes = await this.files.read(this.#path(`${LAST_RESERVED_PREFIX}${n}`));
    return bytes === undefined ? undefined : parseIp(decoder.decode(bytes).trim());
  }

  /**
   * Written in place, as the reference writes it: a cursor torn by a crash reads as no address
   * or as another one, and either only moves where the next search starts.
   */
  setLastReserved(n: number, ip: Ip): Promise<void> {
    return this.files.overwrite(this.#path(`${LAST_RESERVED_PREFIX}${n}`), formatIp(ip), 0o600);
  }
}
