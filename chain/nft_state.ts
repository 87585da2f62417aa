/**
 * What the nftables users (masquerade, portmap) share: cnichain's one table,
 * the lock that serialises every read-modify-write of it, the comment that
 * ties an element to its attachment, and reading elements back from nft's
 * JSON listing.
 */
import { listSwept, type System } from "./system.ts";
import type { NftElements } from "./kernel.ts";
import { type SetType, setTypes } from "../ffi/nft_netlink.ts";
import { quickHash, shortHash } from "./hash.ts";

export const TABLE = "cnichain";

/** The network part of a comment: the name when it is short, else a hash of it. */
export function networkTag(network: string): string {
  return network.length <= 40 ? network : `#${shortHash(network)}`;
}

/** nft keeps at most 128 bytes of comment. */
const MAX_COMMENT = 120;

/**
 * The comment on an attachment's elements: `<network> <containerID> <ifname>`,
 * readable in `nft list ruleset` and in error messages; when that is too long
 * for nft, the network tag and a hash of the attachment.
 */
export function attachmentTag(network: string, containerId: string, ifname: string): string {
  const tag = networkTag(network);
  const plain = `${tag} ${containerId} ${ifname}`;
  return plain.length <= MAX_COMMENT
    ? plain
    : `${tag} #${shortHash(`${network}\0${containerId}\0${ifname}`)}`;
}

/** The lock file guarding cnichain's nftables table, in the state directory. */
export function lockFile(stateDir: string): string {
  return `${stateDir}/nftables.lock`;
}

/** Runs `fn` holding the nftables lock. */
export async function locked<T>(
  system: System,
  stateDir: string,
  fn: () => Promise<T> | T,
): Promise<T> {
  await system.files.mkdir(stateDir, 0o700);
  return await system.files.withLock(lockFile(stateDir), async () => await fn());
}

/** An element from nft's JSON listing, back in the syntax `add/delete element` takes. */
export function elementText(val: unknown): string {
  if (typeof val === "string" || typeof val === "number") return String(val);
  const v = val as Record<string, unknown>;
  if (v.concat) return (v.concat as unknown[]).map(elementText).join(" . ");
  if (v.prefix) {
    const p = v.prefix as { addr: string; len: number };
    return `${p.addr}/${p.len}`;
  }
  if (v.range) return (v.range as unknown[]).map(elementText).join("-");
  return JSON.stringify(val);
}

export interface Element {
  /** The key as nft syntax. */
  key: string;
  /** A map element's value as nft syntax. */
  value?: string;
  comment?: string;
}

export interface TableListing {
  /** Set and map names, each with its elements. */
  sets: Map<string, Element[]>;
  /** Which of `sets` are maps. */
  maps: Set<string>;
  chains: string[];
}

/** cnichain's table as it is now; empty when it does not exist. */
export function readTable(system: System): TableListing {
  const sets = new Map<string, Element[]>();
  const maps = new Set<string>();
  const chains: string[] = [];
  for (const item of system.kernel.nftList(`list table inet ${TABLE}`)) {
    const obj = item as Record<string, { name: string; elem?: unknown[] }>;
    if (obj.chain) chains.push(obj.chain.name);
    const set = obj.set ?? obj.map;
    if (!set) continue;
    if (obj.map) maps.add(set.name);
    sets.set(
      set.name,
      (set.elem ?? []).map((e) => {
        // A map element is [key, value]; a set element is the key alone.
        const [key, value] = Array.isArray(e) ? e : [e, undefined];
        const inner = (key as { elem?: { val: unknown; comment?: string } }).elem;
        return {
          key: elementText(inner ? inner.val : key),
          ...(value !== undefined ? { value: elementText(value) } : {}),
          ...(inner?.comment !== undefined ? { comment: inner.comment } : {}),
        };
      }),
    );
  }
  return { sets, maps, chains };
}

/** `delete element` lines for the elements of `sets` whose comment `doomed()` picks. */
export function deleteLines(
  listing: TableListing,
  names: string[],
  doomed: (comment: string) => boolean,
): string[] {
  const lines: string[] = [];
  for (const name of names) {
    const gone = (listing.sets.get(name) ?? []).filter((e) =>
      e.comment !== undefined && doomed(e.comment)
    );
    if (gone.length) {
      lines.push(`delete element inet ${TABLE} ${name} { ${gone.map((e) => e.key).join(", ")} }`);
    }
  }
  return lines;
}

/**
 * Lines that remove a feature's chains and sets when none of its sets holds
 * an element any more, and the whole table when nothing else is in it, so the
 * last DEL leaves nftables as cnichain found it.
 */
export function retireLines(
  listing: TableListing,
  feature: { chains: string[]; sets: string[] },
  doomed: (comment: string) => boolean,
): string[] {
  const present = feature.sets.filter((s) => listing.sets.has(s));
  if (!present.length) return [];
  const left = present.reduce(
    (n, s) =>
      n +
      listing.sets.get(s)!.filter((e) => !(e.comment !== undefined && doomed(e.comment))).length,
    0,
  );
  if (left > 0) return [];
  const others = [...listing.sets.keys()].some((s) => !feature.sets.includes(s)) ||
    listing.chains.some((c) => !feature.chains.includes(c));
  if (!others) return [`delete table inet ${TABLE}`];
  // Rules first (they refer to the sets and jump between chains), then chains, then sets.
  const chains = feature.chains.filter((c) => listing.chains.includes(c));
  return [
    ...chains.map((c) => `flush chain inet ${TABLE} ${c}`),
    ...chains.map((c) => `delete chain inet ${TABLE} ${c}`),
    ...present.map((s) => `delete ${listing.maps.has(s) ? "map" : "set"} inet ${TABLE} ${s}`),
  ];
}

/** A user of the table: its chains and sets, and the batch that (re)creates them. */
export interface Feature {
  /** Names its registry folder, `<stateDir>/nft/<name>/`. */
  name: string;
  /** In deletion order: chains that jump to others first. */
  chains: string[];
  sets: string[];
  /** Commands that create the table, sets and chains and rewrite the rules; safe to repeat. */
  skeleton(): string[];
}

/** What an ADD needs to know of a feature's skeleton, worked out from its text. */
export interface FeatureFacts {
  /** The comment on each of the feature's rules: which feature, which version of its skeleton. */
  stamp: string;
  /** How many rules the skeleton puts in each of its chains. */
  rules: Record<string, number>;
  /** The types of its sets and maps, by name. */
  types: Record<string, SetType>;
}

/** tools/bundle.ts replaces this with the features' facts (JSON), worked out when it builds. */
const BUILT_FACTS: string = "__CNICHAIN_FEATURE_FACTS__";
const facts = new Map<string, FeatureFacts>(
  BUILT_FACTS.startsWith("__") ? [] : Object.entries(JSON.parse(BUILT_FACTS)),
);
const typeMaps = new Map<string, Map<string, SetType>>();

/**
 * The facts of a feature's skeleton. The bundle has them from its build (tools/bundle.ts), so a
 * plugin run neither writes out nor hashes nor parses a skeleton unless it must rewrite it;
 * otherwise they are worked out once a process.
 */
export function featureFacts(feature: Feature): FeatureFacts {
  let known = facts.get(feature.name);
  if (known === undefined) {
    const skeleton = feature.skeleton();
    const rules: Record<string, number> = Object.fromEntries(feature.chains.map((c) => [c, 0]));
    for (const line of skeleton) {
      const chain = /^add rule inet \S+ (\S+) /.exec(line)?.[1];
      if (chain !== undefined) rules[chain] = (rules[chain] ?? 0) + 1;
    }
    known = {
      stamp: `cnichain ${feature.name} ${quickHash(skeleton.join("\n"))}`,
      rules,
      types: Object.fromEntries(setTypes(skeleton)),
    };
    facts.set(feature.name, known);
  }
  return known;
}

/** The comment on each of a feature's rules (see rulesCurrent). */
export function ruleStamp(feature: Feature): string {
  return featureFacts(feature).stamp;
}

/** The feature's skeleton with every rule stamped (see rulesCurrent). */
export function skeletonLines(feature: Feature): string[] {
  const stamp = ruleStamp(feature);
  return feature.skeleton().map((l) => l.startsWith("add rule ") ? `${l} comment "${stamp}"` : l);
}

/**
 * Whether each of the feature's chains holds exactly the rules this version of cnichain writes,
 * so that an ADD may add its elements alone. Otherwise (the table deleted or flushed, rules an
 * older cnichain wrote) the ADD rewrites the skeleton with libnftables first.
 */
function rulesCurrent(fast: NftElements, feature: Feature): boolean {
  const { stamp, rules } = featureFacts(feature);
  return feature.chains.every((chain) => {
    const have = fast.ruleComments(TABLE, chain);
    return have.length === rules[chain] && have.every((c) => c === stamp);
  });
}

/**
 * The feature's skeleton for a batch of other changes: nothing when its rules stand as this
 * version writes them, else the stamped skeleton. Rewriting rules that stand would delete them,
 * and a deletion makes the process that closes its nftables socket wait out an RCU grace period
 * (7-9 ms at exit here).
 */
export function skeletonIfStale(system: System, feature: Feature): string[] {
  const fast = system.kernel.nftElements;
  return fast && rulesCurrent(fast, feature) ? [] : skeletonLines(feature);
}

function typesOf(feature: Feature): Map<string, SetType> {
  let types = typeMaps.get(feature.name);
  if (!types) {
    typeMaps.set(feature.name, types = new Map(Object.entries(featureFacts(feature).types)));
  }
  return types;
}

/**
 * The most elements the fast path changes or looks up at once: each is a message of its own and
 * gets an ACK of its own, and a few thousand of those would overflow the socket's buffers.
 * Attachments with more (hundreds of host ports) go through libnftables, which pages its batches.
 */
export const FAST_LIMIT = 64;

const EEXIST = 17;
const ENOENT = 2;

export interface PlannedElement {
  set: string;
  key: string;
  /** For maps: the value the key maps to. */
  value?: string;
  /** The key may belong to one attachment only (a host port). */
  exclusive?: boolean;
}

function registryFile(stateDir: string, feature: Feature, tag: string): string {
  return `${stateDir}/nft/${feature.name}/${shortHash(tag)}`;
}

interface Registration {
  tag: string;
  elements: { set: string; key: string }[];
}

function elementLine(verb: string, e: PlannedElement, tag: string): string {
  return `${verb} element inet ${TABLE} ${e.set} { ${e.key} comment "${tag}"${
    e.value ? ` : ${e.value}` : ""
  } }`;
}

/** The comment of an existing element, or undefined when there is no such element. */
export function ownerOf(system: System, e: { set: string; key: string }): string | undefined {
  const text = system.kernel.nftGet(`get element inet ${TABLE} ${e.set} { ${e.key} }`);
  if (text === undefined) return undefined;
  return /comment "([^"]*)"/.exec(text)?.[1] ?? "";
}

/**
 * ownerOf() for several elements. Each libnftables run costs about half a millisecond, so they
 * are asked in one run; when one of them is gone that run fails as a whole, and each is asked
 * on its own.
 */
export function ownersOf(
  system: System,
  elements: { set: string; key: string }[],
): (string | undefined)[] {
  if (elements.length > 1) {
    const text = system.kernel.nftGet(
      elements.map((e) => `get element inet ${TABLE} ${e.set} { ${e.key} }`).join("\n"),
    );
    // One "table ... { ... }" block per command, in order, each holding the one element.
    const blocks = text?.split(/^(?=table )/m).filter((b) => b.trim()) ?? [];
    if (blocks.length === elements.length) {
      return blocks.map((b) => /comment "([^"]*)"/.exec(b)?.[1] ?? "");
    }
  }
  return elements.map((e) => ownerOf(system, e));
}

/**
 * Adds an attachment's elements in one atomic batch with the feature's
 * skeleton, and records which they are, so that DEL removes exactly those
 * without listing the table: both cost the same at the ten-thousandth pod
 * as at the first. An exclusive key held by another attachment is refused
 * through `taken`, and nothing changes.
 */
export async function installElements(
  system: System,
  stateDir: string,
  feature: Feature,
  tag: string,
  elements: PlannedElement[],
  taken: (element: PlannedElement, owner: string) => Error,
): Promise<void> {
  const file = registryFile(stateDir, feature, tag);
  await locked(system, stateDir, async () => {
    if (!addFast(system, feature, tag, elements)) {
      addWithSkeleton(system, feature, tag, elements, taken);
    }
    const registration: Registration = {
      tag,
      elements: elements.map(({ set, key }) => ({ set, key })),
    };
    await system.files.mkdir(`${stateDir}/nft/${feature.name}`, 0o700);
    await system.files.writeAtomic(file, JSON.stringify(registration), 0o600);
  });
}

/**
 * The common case, without libnftables: the skeleton stands as written, and the elements go in
 * with one netlink batch. False when the slow path must run: no fast path (dry run, tests'
 * memory kernel), rules missing or stale, a set missing, or a key taken.
 */
function addFast(
  system: System,
  feature: Feature,
  tag: string,
  elements: PlannedElement[],
): boolean {
  const fast = system.kernel.nftElements;
  if (!fast || elements.length > FAST_LIMIT || !rulesCurrent(fast, feature)) return false;
  const refused = fast.apply(
    TABLE,
    typesOf(feature),
    elements.map((e) => ({
      verb: e.exclusive ? "create" : "add",
      element: { set: e.set, key: e.key, value: e.value, comment: tag },
    })),
  );
  if (!refused) return true;
  if (refused.errno === EEXIST || refused.errno === ENOENT) return false;
  const { set, key } = refused.change.element;
  throw new Error(
    `nftables: add element ${set} { ${key} }: ${refused.message || `errno ${refused.errno}`}`,
  );
}

/** Writes the skeleton and the elements with libnftables, settling a taken key by its owner. */
function addWithSkeleton(
  system: System,
  feature: Feature,
  tag: string,
  elements: PlannedElement[],
  taken: (element: PlannedElement, owner: string) => Error,
): void {
  const skeleton = skeletonLines(feature);
  const create = elements.map((e) => elementLine(e.exclusive ? "create" : "add", e, tag));
  try {
    system.kernel.nft([...skeleton, ...create].join("\n"));
  } catch (err) {
    if (!/File exists/.test(String(err))) throw err;
    // Whose are they? Another attachment's: refuse. Our own (an ADD repeated after a crash): replace.
    const ours: PlannedElement[] = [];
    for (const e of elements.filter((e) => e.exclusive)) {
      const owner = ownerOf(system, e);
      if (owner === undefined) continue;
      if (owner !== tag) throw taken(e, owner);
      ours.push(e);
    }
    const replace = ours.map((e) => `delete element inet ${TABLE} ${e.set} { ${e.key} }`);
    system.kernel.nft(
      [...skeleton, ...replace, ...elements.map((e) => elementLine("add", e, tag))].join("\n"),
    );
  }
}

/** When no attachment of the feature is registered any more, removes its chains and sets (and the table if empty). */
async function retireIfUnused(system: System, stateDir: string, feature: Feature): Promise<void> {
  // Under the lock, so a temporary record seen here is a killed writer's: it must not keep the table.
  if ((await listSwept(system.files, `${stateDir}/nft/${feature.name}`)).length) return;
  const lines = retireLines(readTable(system), feature, () => false);
  if (lines.length) system.kernel.nft(lines.join("\n"));
}

/**
 * Removes an attachment's elements: those its record lists and that still
 * carry its comment (after an nftables flush another pod may own the same
 * key now), else, without a record, every element whose comment is the
 * attachment's (found by listing the table). Nothing there is success.
 */
export async function removeElements(
  system: System,
  stateDir: string,
  feature: Feature,
  tag: string,
): Promise<void> {
  const file = registryFile(stateDir, feature, tag);
  // No record and nothing of this attachment's in the table: nothing to undo, and no reason
  // to create the state directory and its lock (a rolled-back ADD leaves no trace), unless the
  // feature's sets stand empty: a DEL killed before it retired them left that to this one.
  if ((await system.files.read(file)) === undefined) {
    const listing = readTable(system);
    if (
      deleteLines(listing, feature.sets, (c) => c === tag).length === 0 &&
      retireLines(listing, feature, () => false).length === 0
    ) return;
  }
  await locked(system, stateDir, async () => {
    const bytes = await system.files.read(file);
    let lines: string[] | undefined;
    if (bytes) {
      let reg: Registration | undefined;
      try {
        reg = JSON.parse(new TextDecoder().decode(bytes)) as Registration;
        if (!reg.elements.every((e) => typesOf(feature).has(e.set))) reg = undefined;
      } catch {
        reg = undefined; // a damaged record (or an older cnichain's): go by the comments instead
      }
      if (reg) {
        // An older cnichain recorded a host port listed twice in the mappings twice; deleting an
        // element twice would fail the whole batch.
        const seen = new Set<string>();
        reg.elements = reg.elements.filter((e) => {
          const id = `${e.set} ${e.key}`;
          if (seen.has(id)) return false;
          seen.add(id);
          return true;
        });
        const fast = reg.elements.length <= FAST_LIMIT ? system.kernel.nftElements : undefined;
        const owners = fast
          ? fast.comments(TABLE, typesOf(feature), reg.elements)
          : ownersOf(system, reg.elements);
        const ours = reg.elements.filter((_, i) => owners[i] === tag);
        if (fast) {
          const refused = ours.length
            ? fast.apply(
              TABLE,
              typesOf(feature),
              ours.map((element) => ({ verb: "delete", element })),
            )
            : undefined;
          if (refused) {
            const { set, key } = refused.change.element;
            throw new Error(
              `nftables: delete element ${set} { ${key} }: ${
                refused.message || `errno ${refused.errno}`
              }`,
            );
          }
          lines = [];
        } else lines = ours.map((e) => `delete element inet ${TABLE} ${e.set} { ${e.key} }`);
      }
    }
    lines ??= deleteLines(readTable(system), feature.sets, (c) => c === tag);
    if (lines.length) system.kernel.nft(lines.join("\n"));
    await system.files.remove(file);
    await retireIfUnused(system, stateDir, feature);
  });
}

/** Removes the elements (and records) of `network`'s attachments whose tag is not in `keep`. */
export async function collectElements(
  system: System,
  stateDir: string,
  feature: Feature,
  network: string,
  keep: Set<string>,
): Promise<void> {
  const prefix = `${networkTag(network)} `;
  const doomed = (c: string) => c.startsWith(prefix) && !keep.has(c);
  // No record and nothing of the network's in the table: nothing to collect, and no reason to
  // create the state directory and its lock (a GC refused for another reason leaves no trace).
  if ((await system.files.list(`${stateDir}/nft/${feature.name}`)).length === 0) {
    const listing = readTable(system);
    if (
      deleteLines(listing, feature.sets, doomed).length === 0 &&
      retireLines(listing, feature, () => false).length === 0
    ) return;
  }
  await locked(system, stateDir, async () => {
    const lines = deleteLines(readTable(system), feature.sets, doomed);
    if (lines.length) system.kernel.nft(lines.join("\n"));
    const dir = `${stateDir}/nft/${feature.name}`;
    for (const name of await system.files.list(dir)) {
      try {
        const reg = JSON.parse(
          new TextDecoder().decode((await system.files.read(`${dir}/${name}`))!),
        ) as Registration;
        if (doomed(reg.tag)) await system.files.remove(`${dir}/${name}`);
      } catch {
        await system.files.remove(`${dir}/${name}`);
      }
    }
    await retireIfUnused(system, stateDir, feature);
  });
}
