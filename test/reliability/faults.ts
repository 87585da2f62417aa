/**
 * Fault injection: ADD and DEL of pods on the full chain, each killed
 * (SIGKILL to the whole process group) after a random delay spread over one
 * such operation's duration, then the runtime's recovery: DEL again (and
 * sometimes a GC with the attachments that are valid first). After every
 * round nothing may be left of an attachment that does not exist (link,
 * address, route, nftables element or chain, IPAM file, result, policy or
 * element record), and every live attachment must be whole.
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

export interface FaultSizes {
  /** Operations started and killed (or not, when the kill comes too late). */
  rounds: number;
  /** Keep going past `rounds` until this many kills landed (at most 3 x `rounds` in all). */
  minCrashes?: number;
  /** Pods the operations are spread over. */
  pods?: number;
  /** Audit the whole lab after every `auditEvery`-th round (always at the end). */
  auditEvery?: number;
  seed?: number;
}

/** What the fault run adds to the common figures. */
export interface FaultFigures extends Figures {
  /** Kills that left part of the operation's changes made (neither none nor all of them). */
  midOperation: number;
  /** Operations that completed before their kill came. */
  missed: number;
}

/** Runs the fault-injection scenario; throws on the first leak or failed recovery. */
export async function runFaults(sizes: FaultSizes): Promise<FaultFigures> {
  const seed = chooseSeed("faults", sizes.seed);
  const r = rng(seed);
  const fig: FaultFigures = { ...figures(), midOperation: 0, missed: 0 };
  return await tally(fig, () =>
    withLab(async (lab) => {
      const net = new ChainNet(lab, { subnet: "10.90.0.0/24" });
      const slots = await net.addSlots(sizes.pods ?? 6);
      const timing = await net.warmUp(slots[0]);
      fig.operations += 4;
      // Learnt from completed runs: the machine is shared, so durations drift.
      const ms = { ADD: timing.addMs, DEL: timing.delMs };
      const live = new Set<PodSlot>();
      const liveList = () => [...live].sort((a, b) => a.index - b.index);
      const must = (out: Outcome, what: string) => {
        fig.operations++;
        if (out.code !== 0) throw new Error(describeRun(what, out));
      };

      const more = (round: number) =>
        round < sizes.rounds || fig.crashes < (sizes.minCrashes ?? 0) && round < 3 * sizes.rounds;
      for (let round = 0; more(round); round++) {
        fig.cases++;
        const slot = r.pick(slots);
        const verb = live.has(slot) ? "DEL" : "ADD";
        const what = `round ${round} (seed=${seed}): ${verb} ${slot.id}`;
        // Most kills aimed at the work (about the second half of a run: the first is Deno's
        // start-up), the others anywhere from the start to a little past the usual end.
        const spread = r.next() < 0.7 ? 0.5 + 0.55 * r.next() : 1.15 * r.next();
        const delay = ms[verb] * spread;
        const run = net.start(verb, slot);
        const timer = setTimeout(run.kill, delay);
        const out = await run.done;
        clearTimeout(timer);
        fig.operations++;
        if (!out.killed || out.signal !== "SIGKILL") {
          if (out.code !== 0) throw new Error(describeRun(`${what}, not killed`, out));
          fig.missed++;
          ms[verb] = 0.8 * ms[verb] + 0.2 * out.ms;
          if (verb === "ADD") live.add(slot);
          else live.delete(slot);
        } else {
          fig.crashes++;
          live.delete(slot);
          // Whether the kill landed among the changes: the lab holds neither none nor all of them.
          const none = (await net.audit(liveList())).length === 0;
          if (!none && (await net.audit([...liveList(), slot])).length > 0) fig.midOperation++;
          if (r.next() < 0.25) {
            // A runtime that lost track of the attachment: GC first, then the DEL it retries.
            must(await net.gc(liveList()), `${what}: GC after the kill`);
            await net.assertState(liveList(), `${what}: after the kill and a GC`, fig, {
              linked: [slot],
            });
          }
          must(await net.del(slot), `${what}: DEL after the kill`);
        }
        if (r.next() < 0.15) must(await net.gc(liveList()), `${what}: GC`);
        if ((round + 1) % (sizes.auditEvery ?? 1) === 0 || !more(round + 1)) {
          await net.assertState(liveList(), `${what}: after recovery`, fig);
        }
      }
      // The end: every pod goes, as a runtime shuts down, and nothing at all is left.
      for (const slot of liveList()) must(await net.del(slot), `final DEL of ${slot.id}`);
      must(await net.gc([]), "final GC");
      await net.assertState([], "after every pod was deleted", fig);
      fig.notes.push(
        `faults: ${fig.crashes} kills (${fig.midOperation} mid-operation: part of the changes made), ` +
          `${fig.missed} operations completed before the kill; ADD ~${ms.ADD.toFixed(0)} ms, ` +
          `DEL ~${ms.DEL.toFixed(0)} ms; seed=${seed}`,
      );
    }));
}
