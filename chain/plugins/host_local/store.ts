/**
 * The reference host-local store, byte for byte, so that a node can switch
 * between the reference plugin and cnichain and keep every allocation: in
 * `<dataDir>/<network>/`, one file per address named by the address holding
 * `<containerID>\r\n<ifname>`, `last_reserved_ip.<N>` holding the last address
 * range set N handed out, and `flock` on the file `lock` around every change.
 * Allocation files are linked into place complete (never half-written), so a
 * process killed at any point leaves only whole allocations and, at worst, a
 * temporary file that the next holder of the lock removes.
 */
import { isTempName, type StateFiles } from "../../system.ts";
import { formatIp, type Ip, parseIp } from "../../ip.ts";

export const LOCK_FILE = "lock";
export const LAST_RESERVED_PREFIX = "last_reserved_ip.";

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

/** What an allocation file holds (no trailing newline, as the reference writes it). */
export function ownerText(id: string, ifname: string): string {
  return `${id}\r\n${ifname}`;
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

  /** False when the directory is missing or empty: nothing was ever allocated here. */
  async exists(): Promise<boolean> {
    return (await this.files.list(this.dir)).length > 0;
  }

  /** Runs `fn` holding the store's lock, the same flock the reference plugin takes. */
  async locked<T>(fn: () => Promise<T>): Promise<T> {
    await this.files.mkdir(this.dir, 0o755);
    return await this.files.withLock(`${this.dir}/${LOCK_FILE}`, fn);
  }

  /**
   * Every allocation in the store. Call it holding the lock: a temporary file
   * seen then belongs to a writer that was killed, so it is removed.
   */
  async scan(): Promise<Allocation[]> {
    const allocations: Allocation[] = [];
    for (const name of await this.files.list(this.dir)) {
      if (isTempName(name)) {
        await this.files.remove(`${this.dir}/${name}`);
        continue;
      }
      const ip = parseIp(name);
      if (!ip) continue; // lock, last_reserved_ip.N, anything else that is not an address
      const bytes = await this.files.read(`${this.dir}/${name}`);
      if (bytes === undefined) continue;
      allocations.push({ name, ip, owner: parseOwner(decoder.decode(bytes)) });
    }
    return allocations;
  }

  /** Takes `ip` for the attachment; false when it is already taken. */
  reserve(ip: Ip, id: string, ifname: string): Promise<boolean> {
    return this.files.createExclusive(`${this.dir}/${formatIp(ip)}`, ownerText(id, ifname), 0o600);
  }

  release(allocation: Allocation): Promise<boolean> {
    return this.files.remove(`${this.dir}/${allocation.name}`);
  }

  /** Range set `n`'s cursor; undefined when missing or unreadable (round-robin restarts). */
  async lastReserved(n: number): Promise<Ip | undefined> {
    const bytes = await this.files.read(`${this.dir}/${LAST_RESERVED_PREFIX}${n}`);
    return bytes === undefined ? undefined : parseIp(decoder.decode(bytes).trim());
  }

  setLastReserved(n: number, ip: Ip): Promise<void> {
    return this.files.writeAtomic(`${this.dir}/${LAST_RESERVED_PREFIX}${n}`, formatIp(ip), 0o600);
  }
}
