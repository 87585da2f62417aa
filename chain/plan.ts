/**
 * The `--dry-run` plan: which step gets which stdin, the changes it would make
 * (nested steps in place) and the result it would return, as text for a person
 * or as JSON.
 */
import type { Effect, System } from "./system.ts";
import type { Observer, StepEnd, StepStart } from "./observe.ts";
import type { JsonObject } from "./spec/types.ts";

interface Node {
  start?: StepStart;
  end?: StepEnd;
  from: number;
  to: number;
  children: Node[];
}

export class Plan {
  readonly root: Node = { from: 0, to: Infinity, children: [] };
  readonly #open: Node[] = [this.root];

  constructor(readonly system: System) {}

  observer(): Observer {
    return {
      stepStart: (start) => {
        const node: Node = { start, from: this.system.effects.length, to: Infinity, children: [] };
        this.#open.at(-1)!.children.push(node);
        this.#open.push(node);
      },
      stepEnd: (end) => {
        const node = this.#open.pop()!;
        node.end = end;
        node.to = this.system.effects.length;
      },
    };
  }

  /** The effects of a node that none of its children made, each with its position. */
  #own(node: Node): { at: number; effect: Effect }[] {
    const to = Math.min(node.to, this.system.effects.length);
    const out: { at: number; effect: Effect }[] = [];
    for (let at = node.from; at < to; at++) {
      if (!node.children.some((c) => at >= c.from && at < c.to)) {
        out.push({ at, effect: this.system.effects[at] });
      }
    }
    return out;
  }

  toJSON(): JsonObject {
    const walk = (node: Node): JsonObject => {
      const e = node.end ?? node.start!;
      const out: JsonObject = {
        step: e.step,
        type: e.type,
        verb: e.verb,
        how: e.how,
        stdin: e.stdin,
      };
      if (e.execPath) out.execPath = e.execPath;
      out.effects = this.#own(node).map(({ effect }) => ({ ...effect }) as JsonObject);
      if (node.children.length) out.steps = node.children.map(walk);
      if (node.end?.skipped) out.notRun = true;
      if (node.end?.result) out.result = node.end.result;
      if (node.end?.error) out.error = node.end.error as JsonObject;
      return out;
    };
    return {
      steps: this.root.children.map(walk),
      effects: this.#own(this.root).map(({ effect }) => ({ ...effect }) as JsonObject),
    };
  }

  /** The plan as indented text. */
  render(): string {
    const lines: string[] = [];
    const effectLine = (e: Effect, pad: string) => {
      const head = `${pad}would ${e.op}${e.target ? ` ${e.target}` : ""}`;
      if (!e.detail) return head;
      // Multi-line details (an nftables batch) go under the line, indented.
      if (e.detail.includes("\n")) {
        return `${head}:\n${e.detail.split("\n").map((l) => `${pad}    ${l}`).join("\n")}`;
      }
      return `${head}: ${e.detail}`;
    };
    const walk = (node: Node, pad: string) => {
      const e = node.end ?? node.start!;
      const how = e.how === "exec" ? `exec ${e.execPath ?? "(not found)"}` : "built-in";
      lines.push(
        `${pad}step ${e.step}: ${e.type} ${e.verb} (${how}${
          node.end?.skipped ? ", not run in a dry run" : ""
        })`,
      );
      lines.push(`${pad}  stdin: ${JSON.stringify(e.stdin)}`);
      this.#interleave(
        node,
        (effect) => lines.push(effectLine(effect, `${pad}  `)),
        (child) => walk(child, `${pad}  `),
      );
      if (node.end?.result) lines.push(`${pad}  result: ${JSON.stringify(node.end.result)}`);
      if (node.end?.skipped && e.verb === "ADD") {
        lines.push(`${pad}  result: not known (prevResult passed on unchanged)`);
      }
      if (node.end?.error) {
        lines.push(`${pad}  error ${node.end.error.code}: ${node.end.error.msg}`);
      }
    };
    this.#interleave(
      this.root,
      (effect) => lines.push(effectLine(effect, "")),
      (child) => walk(child, ""),
    );
    return lines.join("\n");
  }

  /** Visits a node's own effects and its children in the order they happened. */
  #interleave(node: Node, onEffect: (e: Effect) => void, onChild: (n: Node) => void): void {
    const own = this.#own(node);
    let i = 0;
    for (const child of node.children) {
      while (i < own.length && own[i].at < child.from) onEffect(own[i++].effect);
      onChild(child);
    }
    while (i < own.length) onEffect(own[i++].effect);
  }
}
