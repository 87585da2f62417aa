/**
 * Load: rounds of mixed ADD and DEL operations on one network from many
 * concurrent processes (never two at once on one pod: the spec forbids it
 * and locking.ts tests it). Every operation must succeed or fail with a
 * clear CNI error (never a crash, never code 999), and after each round the
 * lab must hold exactly the pods whose last successful operation was an ADD:
 * their IPAM files, veths, nftables elements and state files, and nothing
 * of the others.
 */
import { withLab } from "../netns.ts";
import {
  ChainNet,
  chooseSeed,
  cniCode,
  describeRun,
  type Figures,
  figures,
  type Outcome,
  type PodSlot,
  rng,
  tally,
} from "./faults_harness.ts";

export interface LoadSizes {
  /** Operations per round. */
  ops: number;
  /** Plugin processes running at once. */
  procs: number;
  rounds?: number;
  /** Pods the operations are spread over. */
  pods?: number;
  seed?: number;
}

/** What the load run adds to the common figures. */
export interface LoadFigures extends Figures {
  /** Operations by verb and how they ended (`ADD ok`, `ADD code 100`, ...). */
  byOutcome: Record<string, number>;
  /** Wall time of the rounds' operations, ms. */
  ms: number;
}

/** Runs the load scenario; throws on a crash, an unclear failure or a state that is off. */
export async function runLoad(sizes: LoadSizes): Promise<LoadFigures> {
  const seed = chooseSeed("load", sizes.seed);
  const r = rng(seed);
  const fig: LoadFigures = { ...figures(), byOutcome: {}, ms: 0 };
  return await tally(fig, () =>
    withLab(async (lab) => {
      const net = new ChainNet(lab, { subnet: "10.93.0.0/24" });
      const slots = await net.addSlots(sizes.pods ?? 40);
      await net.warmUp(slots[0]);
      fig.operations += 4;
      const live = new Set<PodSlot>();
      const liveList = () => [...live].sort((a, b) => a.index - b.index);
      const count = (key: string) => fig.byOutcome[key] = (fig.byOutcome[key] ?? 0) + 1;

      for (let round = 0; round < (sizes.rounds ?? 1); round++) {
        const order = Array.from({ length: sizes.ops }, () => r.pick(slots));
        const busy = new Set<PodSlot>();
        const failures: string[] = [];
        let waiting: (() => void)[] = [];
        const freed = () => new Promise<void>((done) => waiting.push(done));
        const wake = () => {
          const all = waiting;
          waiting = [];
          for (const done of all) done();
        };
        const began = performance.now();
        const worker = async () => {
          while (order.length) {
            // The first pending operation whose pod is not busy: per pod, operations stay in order.
            const i = order.findIndex((s) => !busy.has(s));
            if (i < 0) {
              await freed();
              continue;
            }
            const [slot] = order.splice(i, 1);
            busy.add(slot);
            const wasLive = live.has(slot);
            // Mostly the operation that changes something; now and then a repeat the spec allows.
            const verb = wasLive
              ? (r.next() < 0.85 ? "DEL" : "ADD")
              : (r.next() < 0.8 ? "ADD" : "DEL");
            const out: Outcome = await net.start(verb, slot).done;
            fig.operations++;
            fig.cases++;
            const what = `round ${round} (seed=${seed}): ${verb} of ${
              wasLive ? "live" : "absent"
            } ${slot.id}`;
            const code = out.code === 0 ? 0 : cniCode(out);
            count(`${verb} ${code === 0 ? "ok" : `code ${code ?? "none"}`}`);
            if (code === undefined) failures.push(`${describeRun(what, out)}: no CNI error`);
            else if (code === 999) failures.push(`${describeRun(what, out)}: internal error`);
            else if (verb === "DEL" && code !== 0) failures.push(describeRun(what, out));
            else if (verb === "ADD" && wasLive && code !== 100) {
              failures.push(`${describeRun(what, out)}: an ADD of a live attachment is code 100`);
            } else if (verb === "ADD" && !wasLive && code !== 0) {
              failures.push(describeRun(what, out));
            }
            if (verb === "DEL" && code === 0) live.delete(slot);
            if (verb === "ADD" && code === 0) live.add(slot);
            busy.delete(slot);
            wake();
          }
        };
        await Promise.all(Array.from({ length: sizes.procs }, worker));
        fig.ms += performance.now() - began;
        if (failures.length) {
          throw new Error(`${failures.length} operations failed:\n  ${failures.join("\n  ")}`);
        }
        await net.assertState(liveList(), `after round ${round} (seed=${seed})`, fig);
      }
      const left = live.size;
      for (const slot of liveList()) {
        const out = await net.del(slot);
        fig.operations++;
        if (out.code !== 0) throw new Error(describeRun(`final DEL of ${slot.id}`, out));
      }
      await net.assertState([], "after every pod was deleted", fig);
      fig.notes.push(
        `load: ${fig.cases} operations from ${sizes.procs} processes in ${
          (fig.ms / 1000).toFixed(1)
        } s (${
          Object.entries(fig.byOutcome).map(([k, v]) => `${k} ${v}`).join(", ")
        }), ${left} pods left attached and checked; seed=${seed}`,
      );
    }));
}
