/**
 * Locking: operations racing on the SAME attachment (ADD+ADD, ADD+DEL,
 * DEL+DEL) and a GC racing an ADD, started a random moment apart. After each
 * race the outcome must be one of the legal serialisations (the same two
 * operations run one after the other, in either order) and the state must be
 * whole: each allocation file owned by one existing attachment, every state
 * file parsing, no element or chain of an attachment that does not exist.
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

export interface LockingSizes {
  /** Races run (each scenario in turn). */
  rounds: number;
  seed?: number;
}

export type Race = "ADD+ADD" | "ADD+DEL" | "DEL+DEL" | "GC+ADD";
export const RACES: readonly Race[] = ["ADD+ADD", "ADD+DEL", "DEL+DEL", "GC+ADD"];

/** What the locking run adds to the common figures: how often each race ended which way. */
export interface LockingFigures extends Figures {
  outcomes: Record<string, number>;
}

/** Runs the races; throws on the first illegal outcome or damaged state. */
export async function runLocking(sizes: LockingSizes): Promise<LockingFigures> {
  const seed = chooseSeed("locking", sizes.seed);
  const r = rng(seed);
  const fig: LockingFigures = { ...figures(), outcomes: {} };
  return await tally(fig, () =>
    withLab(async (lab) => {
      const net = new ChainNet(lab, { subnet: "10.92.0.0/24" });
      // The raced slot, a bystander that stays attached, and a stale one for GC to collect.
      const [slot, bystander, stale] = await net.addSlots(3);
      const timing = await net.warmUp(slot);
      fig.operations += 4;
      const ok = (out: Outcome, what: string) => {
        fig.operations++;
        if (out.code !== 0) throw new Error(describeRun(what, out));
      };
      ok(await net.add(bystander), "ADD of the bystander");
      const live = new Set<PodSlot>([bystander]);
      const liveList = () => [...live].sort((a, b) => a.index - b.index);

      for (let round = 0; round < sizes.rounds; round++) {
        fig.cases++;
        const race = RACES[round % RACES.length];
        const what = `round ${round} (seed=${seed}): ${race}`;
        // Set up what the race starts from: DEL+DEL races on an attachment that exists.
        if (race === "DEL+DEL") {
          ok(await net.add(slot), `${what}: ADD before the race`);
          live.add(slot);
        }
        if (race === "GC+ADD") {
          // A stale attachment whose pod went away behind cnichain's back, for GC to collect.
          await lab.addPod(stale.pod.name.slice(lab.prefix.length + 1)).catch(() => {});
          ok(await net.add(stale), `${what}: ADD of the stale pod`);
          await lab.deletePod(stale.pod);
        }
        // Mostly well inside one run's time, so that the two overlap; which starts first is random.
        const gap = r.next() * r.next() * timing.addMs;
        const [first, second] = r.next() < 0.5 ? race.split("+") : race.split("+").reverse();
        const start = (verb: string) =>
          verb === "GC" ? net.startGc([...liveList(), slot]) : net.start(verb as "ADD", slot);
        const a = start(first);
        await new Promise((done) => setTimeout(done, gap));
        const b = start(second);
        const [oa, ob] = await Promise.all([a.done, b.done]);
        fig.operations += 2;
        const runs = `${describeRun(first, oa)}\n  ${describeRun(second, ob)}`;
        for (const out of [oa, ob]) {
          if (out.code !== 0 && cniCode(out) === undefined) {
            throw new Error(`${what}: a run failed without a CNI error:\n  ${runs}`);
          }
          if (cniCode(out) === 999) throw new Error(`${what}: internal error:\n  ${runs}`);
        }
        // The legal ends, each with the state it leaves.
        let expectLive: boolean[];
        let outcome: string;
        if (race === "ADD+ADD") {
          const won = [oa, ob].filter((o) => o.code === 0).length;
          const lost = [oa, ob].find((o) => o.code !== 0);
          if (won !== 1 || cniCode(lost!) !== 100) {
            throw new Error(`${what}: one ADD must win, the other get code 100:\n  ${runs}`);
          }
          outcome = oa.code === 0 ? "first won" : "second won";
          expectLive = [true];
        } else {
          if (oa.code !== 0 || ob.code !== 0) {
            throw new Error(`${what}: both must succeed:\n  ${runs}`);
          }
          if (race === "ADD+DEL") {
            outcome = "?";
            expectLive = [false, true]; // ADD then DEL, or DEL then ADD
          } else if (race === "DEL+DEL") {
            outcome = "both ok";
            expectLive = [false];
          } else {
            outcome = "both ok";
            expectLive = [true];
          }
        }
        live.delete(stale);
        let problems: string[] = [];
        let matched: boolean | undefined;
        for (const expect of expectLive) {
          const want = expect ? [...liveList(), slot] : liveList().filter((s) => s !== slot);
          problems = await net.settledAudit(
            [...new Set(want)],
            {},
            expectLive.length > 1 ? 500 : 2000,
          );
          if (problems.length === 0) {
            matched = expect;
            break;
          }
        }
        if (matched === undefined) {
          fig.leaks += problems.length;
          throw new Error(
            `${what}: the state matches no serialisation:\n  ${problems.join("\n  ")}\n  ${runs}`,
          );
        }
        if (race === "ADD+DEL") outcome = matched ? "DEL first" : "ADD first";
        fig.outcomes[`${race} ${outcome}`] = (fig.outcomes[`${race} ${outcome}`] ?? 0) + 1;
        // Back to the start: the raced slot detached.
        ok(await net.del(slot), `${what}: DEL after the race`);
        live.delete(slot);
        await net.assertState(liveList(), `${what}: after the DEL`, fig);
      }
      ok(await net.del(bystander), "DEL of the bystander");
      ok(await net.gc([]), "final GC");
      await net.assertState([], "at the end", fig);
      fig.notes.push(
        `locking: ${fig.cases} races: ${
          Object.entries(fig.outcomes).map(([k, v]) => `${k} ${v}`).join(", ")
        }; seed=${seed}`,
      );
    }));
}
