/**
 * The suite's engine: a check is one normative point of the CNI spec, run once
 * per spec version it applies to; a run collects one outcome per (check,
 * version) and prints them as a table.
 */

/** Every released spec version, oldest first (SPEC.md "Released versions"). */
export const SPEC_VERSIONS = [
  "0.1.0",
  "0.2.0",
  "0.3.0",
  "0.3.1",
  "0.4.0",
  "1.0.0",
  "1.1.0",
] as const;

/** The versions from `first` on (to `last`, when given). */
export function versionsFrom(first: string, last?: string): string[] {
  const i = SPEC_VERSIONS.indexOf(first as typeof SPEC_VERSIONS[number]);
  const j = last ? SPEC_VERSIONS.indexOf(last as typeof SPEC_VERSIONS[number]) : -1;
  return SPEC_VERSIONS.slice(i, j < 0 ? undefined : j + 1);
}

export const ALL = versionsFrom("0.1.0");
/** prevResult and `interfaces`/`ips` results exist from 0.3.0 (chaining). */
export const FROM_030 = versionsFrom("0.3.0");
/** CHECK exists from 0.4.0. */
export const FROM_040 = versionsFrom("0.4.0");
/** GC and STATUS exist from 1.1.0. */
export const FROM_110 = versionsFrom("1.1.0");
export const BELOW_040 = versionsFrom("0.1.0", "0.3.1");
export const BELOW_110 = versionsFrom("0.1.0", "1.0.0");

/**
 * A spec feature a check depends on; a reference release that lacks a
 * feature has it listed as a known gap (see `gaps.ts`).
 */
export type Feature =
  | "gc"
  | "status"
  | "version-echo"
  | "error-cniversion"
  | "dns-omitted";

export interface Check {
  /** Stable id, `area.point`. */
  id: string;
  /** The spec section(s) it enforces, as SPEC.md names them. */
  section: string;
  /** One line: what must hold. */
  title: string;
  versions: readonly string[];
  /** Upstream tests this check mirrors (`file: test name`). */
  upstream?: string[];
  features?: Feature[];
  /** Throws {@linkcode Failure} (or any error) when the point does not hold; {@linkcode NotApplicable} to skip. */
  run(version: string): Promise<void>;
}

export class Failure extends Error {}
/** The target cannot be asked this (e.g. it has no chain runner). */
export class NotApplicable extends Error {}

export function expect(ok: unknown, message: string): asserts ok {
  if (!ok) throw new Failure(message);
}

export function expectEqual(actual: unknown, wanted: unknown, what: string): void {
  const a = JSON.stringify(sortKeys(actual));
  const w = JSON.stringify(sortKeys(wanted));
  if (a !== w) throw new Failure(`${what}: got ${a}, want ${w}`);
}

/** `value` with every object's keys in order, for comparisons that ignore key order. */
export function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).sort(([a], [b]) => a < b ? -1 : 1)
        .map(([k, v]) => [k, sortKeys(v)]),
    );
  }
  return value;
}

/**
 * `gap`: a reference release's known gap; `xfail`: a known cnichain deviation
 * still to fix (gaps.ts says which and why); neither fails the run.
 */
export type Status = "pass" | "fail" | "gap" | "xfail" | "n/a";

export interface Outcome {
  part: string;
  target: string;
  check: Check;
  version: string;
  status: Status;
  detail: string;
  ms: number;
}

/** Runs `checks` for every version each applies to, `parallel` at a time. */
export async function runChecks(
  part: string,
  target: string,
  checks: Check[],
  opts: {
    parallel: number;
    gap?: (c: Check, version: string) => string | undefined;
    xfail?: (c: Check, version: string) => string | undefined;
  },
): Promise<Outcome[]> {
  const jobs = checks.flatMap((check) => check.versions.map((version) => ({ check, version })));
  const out: Outcome[] = new Array(jobs.length);
  let next = 0;
  async function worker() {
    while (next < jobs.length) {
      const i = next++;
      const { check, version } = jobs[i];
      const start = performance.now();
      let status: Status = "pass";
      let detail = "";
      try {
        await check.run(version);
      } catch (err) {
        if (err instanceof NotApplicable) {
          status = "n/a";
          detail = err.message;
        } else {
          detail = err instanceof Error ? err.message : String(err);
          if (!(err instanceof Failure) && err instanceof Error && err.stack) {
            detail = err.stack.split("\n").slice(0, 3).join(" | ");
          }
          const gap = opts.gap?.(check, version);
          const xfail = opts.xfail?.(check, version);
          status = gap ? "gap" : xfail ? "xfail" : "fail";
          if (gap) detail = `known gap (${gap}): ${detail}`;
          if (xfail) detail = `known cnichain deviation (${xfail}): ${detail}`;
        }
      }
      out[i] = {
        part,
        target,
        check,
        version,
        status,
        detail: detail.replaceAll("\n", " "),
        ms: performance.now() - start,
      };
    }
  }
  await Promise.all(Array.from({ length: opts.parallel }, worker));
  return out;
}

/** One row per check: its outcome at every version (`.` not applicable to that version). */
export function table(outcomes: Outcome[]): string {
  const rows: string[][] = [[
    "part",
    "check",
    "spec section",
    ...SPEC_VERSIONS,
    "result",
  ]];
  const byCheck = new Map<string, Outcome[]>();
  for (const o of outcomes) {
    const key = `${o.part}\0${o.target}\0${o.check.id}`;
    byCheck.set(key, [...(byCheck.get(key) ?? []), o]);
  }
  const mark: Record<Status, string> = {
    pass: "ok",
    fail: "FAIL",
    gap: "gap",
    xfail: "xfail",
    "n/a": "n/a",
  };
  for (const list of byCheck.values()) {
    const c = list[0].check;
    const cells = SPEC_VERSIONS.map((v) => {
      const o = list.find((x) => x.version === v);
      return o ? mark[o.status] : ".";
    });
    const worst = list.some((o) => o.status === "fail")
      ? "FAIL"
      : list.some((o) => o.status === "xfail")
      ? "xfail"
      : list.some((o) => o.status === "gap")
      ? "gap"
      : list.every((o) => o.status === "n/a")
      ? "n/a"
      : "pass";
    rows.push([list[0].part, c.id, c.section, ...cells, worst]);
  }
  return markdown(rows);
}

export function markdown(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  return [
    line(rows[0]),
    `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`,
    ...rows.slice(1)
      .map(line),
  ].join("\n");
}

export interface Tally {
  checks: number;
  runs: number;
  pass: number;
  fail: number;
  gap: number;
  xfail: number;
  na: number;
}

export function tally(outcomes: Outcome[]): Tally {
  return {
    checks: new Set(outcomes.map((o) => `${o.part}/${o.check.id}`)).size,
    runs: outcomes.length,
    pass: outcomes.filter((o) => o.status === "pass").length,
    fail: outcomes.filter((o) => o.status === "fail").length,
    gap: outcomes.filter((o) => o.status === "gap").length,
    xfail: outcomes.filter((o) => o.status === "xfail").length,
    na: outcomes.filter((o) => o.status === "n/a").length,
  };
}

/** Runs of consecutive spec versions: "0.3.0-1.0.0", "0.1.0-0.4.0, 1.1.0", "1.1.0". */
function span(versions: string[]): string {
  const runs: string[][] = [];
  let last = -2;
  SPEC_VERSIONS.forEach((v, i) => {
    if (!versions.includes(v)) return;
    if (i === last + 1) runs[runs.length - 1].push(v);
    else runs.push([v]);
    last = i;
  });
  if (runs.length === 0) return "-";
  return runs.map((r) => r.length === 1 ? r[0] : `${r[0]}-${r[r.length - 1]}`).join(" ");
}

/** One cell: how `list` (one check, one target, all its versions) came out. */
function cell(list: Outcome[]): string {
  if (list.length === 0) return "";
  const bad = (s: Status) => list.filter((o) => o.status === s).map((o) => o.version);
  if (bad("fail").length) return `FAIL ${span(bad("fail"))}`;
  const parts: string[] = [];
  const passed = bad("pass");
  if (passed.length) parts.push(`ok ${span(passed)}`);
  if (bad("xfail").length) parts.push(`xfail ${span(bad("xfail"))}`);
  if (bad("gap").length) parts.push(`gap ${span(bad("gap"))}`);
  if (parts.length === 0) parts.push("n/a");
  return parts.join(", ");
}

/**
 * One row per check: its spec section, the versions it runs at, and the
 * outcome per target column (`columns` maps a column title to a test on the
 * outcome's part).
 */
export function summary(
  outcomes: Outcome[],
  columns: [string, (part: string) => boolean][],
): string {
  const ids: string[] = [];
  for (const o of outcomes) if (!ids.includes(o.check.id)) ids.push(o.check.id);
  const rows = [["check", "spec section", "versions", ...columns.map(([t]) => t)]];
  for (const id of ids) {
    const mine = outcomes.filter((o) => o.check.id === id);
    rows.push([
      id,
      mine[0].check.section,
      span([...new Set(mine.map((o) => o.version))]),
      ...columns.map(([, test]) => cell(mine.filter((o) => test(o.part)))),
    ]);
  }
  return markdown(rows);
}
