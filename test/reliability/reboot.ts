/**
 * "Reboot": pods attached, then every pod netns deleted behind cnichain's
 * back (as a node reboot loses them), then GC with an empty list of valid
 * attachments, as a runtime sends it on start-up. GC alone must clean
 * everything: links, addresses, IPAM files, nftables elements and chains,
 * state files; a DEL of each pod afterwards (netns gone, or none given) still
 * succeeds and finds nothing left to do.
 */
import { withLab } from "../netns.ts";
import {
  ChainNet,
  chooseSeed,
  describeRun,
  type Figures,
  figures,
  type Outcome,
  type PodSlot,
  rng,
  tally,
} from "./faults_harness.ts";

export interface RebootSizes {
  /** Pods attached before the "reboot". */
  pods: number;
  /** ADDs run at once while attaching them. */
  concurrency?: number;
  seed?: number;
}

/** Runs `fn` over `items`, `width` at a time. */
export async function pool<T>(
  items: readonly T[],
  width: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

/** Runs the reboot scenario; throws when GC leaves anything or a later DEL fails. */
export async function runReboot(sizes: RebootSizes): Promise<Figures> {
  const seed = chooseSeed("reboot", sizes.seed);
  const r = rng(seed);
  const fig = figures();
  return await tally(fig, () =>
    withLab(async (lab) => {
      const net = new ChainNet(lab, { subnet: "10.91.0.0/24" });
      const slots = await net.addSlots(sizes.pods);
      await net.warmUp(slots[0]);
      fig.operations += 4;
      const ok = (out: Outcome, what: string) => {
        fig.operations++;
        if (out.code !== 0) throw new Error(`${describeRun(what, out)} (seed=${seed})`);
      };
      await pool(slots, sizes.concurrency ?? 4, async (s) => ok(await net.add(s), `ADD ${s.id}`));
      fig.cases += slots.length;
      await net.assertState(slots, "after every ADD", fig);

      // The reboot: every pod netns is gone, cnichain was told nothing.
      for (const s of slots) await lab.deletePod(s.pod);
      const held = (await lab.allocations("rel")).length;
      if (held !== slots.length) {
        throw new Error(`${held} allocations before GC, not ${slots.length}`);
      }
      ok(await net.gc([]), "GC with no valid attachment");
      await net.assertState([], "after the GC", fig);

      // The runtime's DELs come later still, for pods whose netns is gone or not named.
      const dels: PodSlot[] = [...slots];
      for (let i = dels.length - 1; i > 0; i--) {
        const j = r.int(i + 1);
        [dels[i], dels[j]] = [dels[j], dels[i]];
      }
      for (const s of dels) {
        const netns = r.next() < 0.5 ? "" : s.pod.path;
        ok(await net.del(s, { netns }), `DEL ${s.id} after the GC (CNI_NETNS "${netns}")`);
      }
      await net.assertState([], "after the DELs", fig);
      fig.notes.push(
        `reboot: ${slots.length} pods lost with their netns, one GC cleaned ${held} allocations ` +
          `and everything else, ${dels.length} DELs after it succeeded; seed=${seed}`,
      );
    }));
}
