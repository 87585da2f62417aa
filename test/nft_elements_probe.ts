/**
 * Run by chain/nft_elements_test.ts inside a test's host netns (`ip netns exec`): makes the
 * masquerade and portmap skeletons with libnftables, then adds, looks up and deletes elements
 * of every set through the netlink fast path (Kernel.nftElements), and prints what libnftables
 * reads back after each step, as JSON on stdout.
 */
import { realSystem } from "../chain/system.ts";
import { readTable, skeletonLines, TABLE } from "../chain/nft_state.ts";
import { MASQUERADE } from "../chain/masquerade.ts";
import { PORTMAP } from "../chain/plugins/portmap/mod.ts";
import { setTypes } from "../ffi/nft_netlink.ts";
import type { ElementChange } from "../chain/kernel.ts";

const elements = JSON.parse(Deno.args[0]) as ElementChange["element"][];
const system = realSystem();
const fast = system.kernel.nftElements!;
const types = setTypes([...MASQUERADE.skeleton(), ...PORTMAP.skeleton()]);
const listing = () => Object.fromEntries(readTable(system).sets);
const out: Record<string, unknown> = {};

out.missingTable = fast.apply(TABLE, types, [{ verb: "add", element: elements[0] }])?.errno;
system.kernel.nft([...skeletonLines(MASQUERADE), ...skeletonLines(PORTMAP)].join("\n"));
out.rules = Object.fromEntries(
  [...MASQUERADE.chains, ...PORTMAP.chains].map((c) => [c, fast.ruleComments(TABLE, c)]),
);
out.added = fast.apply(TABLE, types, elements.map((element) => ({ verb: "add", element })));
out.afterAdd = listing();
out.comments = fast.comments(TABLE, types, elements);
const taken = elements.find((e) => e.set.startsWith("pm_dnat"))!;
out.createTaken = fast.apply(TABLE, types, [
  { verb: "add", element: { ...elements[0], key: elements[0].key.replace(/\d+$/, "250") } },
  { verb: "create", element: taken },
]);
out.afterRefused = listing();
out.deleted = fast.apply(TABLE, types, elements.map((element) => ({ verb: "delete", element })));
out.afterDelete = listing();
out.commentsGone = fast.comments(TABLE, types, elements);
system.kernel.close();
console.log(JSON.stringify(out));
