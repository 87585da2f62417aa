/**
 * The `host-local` IPAM plugin: one address from each range set, kept in the
 * reference plugin's on-disk store so that nodes can switch between the two.
 * ADD takes the requested address or the next free one round-robin, all
 * range sets under one lock, and gives back what it took if any set fails.
 * DEL releases the attachment's addresses and is repeatable. CHECK confirms
 * the attachment still holds them. GC releases every address whose
 * attachment the runtime no longer lists.
 */
import { CniError, ErrorCode, quote } from "../../spec/errors.ts";
import type { Dns, IpConfig, Result } from "../../spec/types.ts";
import type { GcInvocation, Invocation, Plugin } from "../../plugin.ts";
import { formatIp, type Ip, parseCidr, sameIp, unmapV4 } from "../../ip.ts";
import {
  assignRequests,
  type HostLocalConfig,
  ipamProblems,
  parseHostLocal,
  requestedIps,
} from "./config.ts";
import {
  type AddressRange,
  addressWithPrefix,
  candidates,
  rangeFor,
  type RangeSet,
  setText,
  usableCountOfSet,
} from "./range.ts";
import { AddressStore, type Allocation } from "./store.ts";
import { parseResolvConf } from "./resolv.ts";

export const HOST_LOCAL_TYPE = "host-local";

function storeOf(inv: Invocation, cfg: HostLocalConfig): AddressStore {
  return new AddressStore(inv.system.files, cfg.dir);
}

function inSets(sets: RangeSet[], a: Allocation): boolean {
  return sets.some((s) => rangeFor(s, a.ip));
}

async function readDns(inv: Invocation, path: string): Promise<Dns | undefined> {
  const bytes = await inv.system.files.read(path);
  if (bytes === undefined) {
    throw new CniError(ErrorCode.Io, `ipam.resolvConf: cannot read ${quote(path)}: no such file`);
  }
  const dns = parseResolvConf(new TextDecoder().decode(bytes));
  return Object.keys(dns).length ? dns : undefined;
}

type Taken = { ip: Ip; range: AddressRange };

/** A full range, a taken address, a failed CHECK: not the config's fault, so code 999 as in the reference. */
function failure(message: string): CniError {
  return new CniError(ErrorCode.Internal, message);
}

/** How many taken addresses in a row are tried one by one before the whole store is read. */
const TRIES_BEFORE_SCAN = 32;

/**
 * The next free address of set `n`, round-robin, reserved for the attachment. Without `taken`
 * (the store was not read whole) addresses are tried one by one, as the reference tries them;
 * a run of taken ones (a full range) has the store read after all.
 */
async function takeNext(
  store: AddressStore,
  set: RangeSet,
  n: number,
  taken: Set<string> | undefined,
  id: string,
  ifname: string,
): Promise<Taken> {
  let tried = 0;
  for (const candidate of candidates(set, await store.lastReserved(n))) {
    const name = formatIp(candidate.ip);
    if (!taken && ++tried > TRIES_BEFORE_SCAN) {
      taken = new Set((await store.scan()).map((a) => a.name));
    }
    if (taken ? taken.has(name) : await store.isTaken(candidate.ip)) continue;
    // Under the lock nothing else allocates, but a file the check missed only costs a retry.
    if (await store.reserve(candidate.ip, id, ifname)) return candidate;
    taken?.add(name);
  }
  const count = usableCountOfSet(set);
  const addresses = `${count} usable address${count === 1n ? "" : "es"}`;
  throw failure(`range set ${set.label} (${setText(set)}) is full: ${addresses}, all allocated`);
}

/** Takes one address from every range set; on any failure gives back what it took. */
async function allocate(inv: Invocation, cfg: HostLocalConfig): Promise<IpConfig[]> {
  const { containerId: id, ifname } = inv.env;
  const wanted = assignRequests(cfg.sets, requestedIps(inv.conf, inv.env));
  const store = storeOf(inv, cfg);
  return await store.locked(async () => {
    const { mine: held, owner, taken } = await store.holdings(id, ifname);
    for (const mine of held) {
      const set = cfg.sets.find((s) => rangeFor(s, mine.ip));
      if (!set) continue;
      const who = `container ${quote(id)} interface ${quote(ifname)}`;
      throw failure(
        `${who} already has ${mine.name} from range set ${set.label}; one per set is allowed`,
      );
    }
    const created: Allocation[] = [];
    const ips: IpConfig[] = [];
    try {
      for (const [n, set] of cfg.sets.entries()) {
        const request = wanted[n];
        let got: Taken;
        if (!request) {
          got = await takeNext(store, set, n, taken, id, ifname);
        } else if (
          !taken?.has(formatIp(request.ip)) && (await store.reserve(request.ip, id, ifname))
        ) {
          got = { ip: request.ip, range: rangeFor(set, request.ip)! };
        } else {
          const what = `requested address ${formatIp(request.ip)} (${request.field})`;
          throw failure(`${what} is already allocated in range set ${set.label}`);
        }
        created.push({ name: formatIp(got.ip), ip: got.ip, owner: { id, ifname } });
        // Written per set as the reference plugin does, so both leave the same cursor.
        await store.setLastReserved(n, got.ip);
        ips.push({
          address: addressWithPrefix(got.range, got.ip),
          gateway: formatIp(got.range.gateway),
        });
      }
    } catch (err) {
      for (const a of created) await store.release(a).catch(() => {});
      if (created.length || taken) await store.commit();
      throw err;
    }
    // The attachment's index: what it already held outside these sets, and what it took now.
    const kept = owner.ifname === undefined ? [] : held.map((a) => a.name);
    await store.commit({ id, ifname }, [...kept, ...created.map((a) => a.name)]);
    return ips;
  });
}

async function add(inv: Invocation): Promise<Result> {
  const cfg = parseHostLocal(inv.conf);
  const dns = cfg.resolvConf ? await readDns(inv, cfg.resolvConf) : undefined;
  const ips = await allocate(inv, cfg);
  const result: Result = { cniVersion: inv.conf.cniVersion, ips };
  if (cfg.routes.length) result.routes = cfg.routes;
  if (dns) result.dns = dns;
  return result;
}

async function del(inv: Invocation): Promise<void> {
  const cfg = parseHostLocal(inv.conf);
  const store = storeOf(inv, cfg);
  // Nothing was ever allocated: do not create the directory just to find that out.
  if (!(await store.exists())) return;
  await store.locked(async () => {
    const failures: string[] = [];
    const { containerId: id, ifname } = inv.env;
    const { mine, owner, taken } = await store.holdings(id, ifname);
    for (const a of mine) {
      await store.release(a).catch((err) =>
        failures.push(err instanceof Error ? err.message : String(err))
      );
    }
    // Sealed again after a change (or after a full read rewrote the indexes).
    if (mine.length) await store.commit(owner, []);
    else if (taken) await store.commit();
    if (failures.length) {
      throw new CniError(ErrorCode.Io, `release addresses: ${failures.join("; ")}`);
    }
  });
}

async function check(inv: Invocation): Promise<void> {
  const cfg = parseHostLocal(inv.conf);
  const { containerId: id, ifname } = inv.env;
  const who = `container ${quote(id)} interface ${quote(ifname)}`;
  const store = storeOf(inv, cfg);
  const mine = (await store.exists())
    ? await store.locked(async () => (await store.holdings(id, ifname, true)).mine)
    : [];
  if (mine.length === 0) throw failure(`no address in ${quote(cfg.dir)} is allocated to ${who}`);
  const prev = inv.conf.prevResult;
  if (!prev) return;
  // Only addresses from our ranges are ours to check: other steps may have added their own.
  const prevIps = (prev.ips ?? []).map((c) => unmapV4(parseCidr(c.address)!.ip));
  for (const ip of prevIps) {
    if (cfg.sets.some((s) => rangeFor(s, ip)) && !mine.some((a) => sameIp(a.ip, ip))) {
      throw failure(`prevResult has ${formatIp(ip)}, which the store does not hold for ${who}`);
    }
  }
  for (const a of mine) {
    if (inSets(cfg.sets, a) && !prevIps.some((ip) => sameIp(ip, a.ip))) {
      throw failure(`the store holds ${a.name} for ${who}, but prevResult does not have it`);
    }
  }
}

async function gc(inv: GcInvocation): Promise<void> {
  const cfg = parseHostLocal(inv.conf);
  const store = storeOf(inv, cfg);
  if (!(await store.exists())) return;
  const keep = new Set(inv.validAttachments.map((a) => `${a.containerID}\0${a.ifname}`));
  const keepIds = new Set(inv.validAttachments.map((a) => a.containerID));
  await store.locked(async () => {
    const failures: string[] = [];
    const left: Allocation[] = [];
    for (const a of await store.scan()) {
      const { owner } = a;
      // A file without an interface name is from an old version: keep it while its container lives.
      const valid = owner !== undefined &&
        (owner.ifname === undefined
          ? keepIds.has(owner.id)
          : keep.has(`${owner.id}\0${owner.ifname}`));
      if (valid) {
        left.push(a);
        continue;
      }
      try {
        await store.release(a);
      } catch (err) {
        failures.push(err instanceof Error ? err.message : String(err));
        left.push(a);
      }
    }
    await store.commitAll(left);
    if (failures.length) {
      throw new CniError(ErrorCode.Io, `release addresses: ${failures.join("; ")}`);
    }
  });
}

export const hostLocalPlugin: Plugin = {
  validate: ipamProblems,
  // The addresses asked for: well formed, each in a range set, one per set. Most ADDs ask for
  // none, and then the config (checked before the chain ran) need not be parsed again.
  preflight: (inv) => {
    const requests = requestedIps(inv.conf, inv.env);
    if (requests.length) assignRequests(parseHostLocal(inv.conf).sets, requests);
  },
  add,
  del,
  check,
  gc,
  // Nothing to probe: an ADD can succeed whenever the config parses.
  status: (inv) => Promise.resolve(inv.conf).then(parseHostLocal).then(() => {}),
};
