/**
 * Locking in CI size: ADD+ADD, ADD+DEL, DEL+DEL on one attachment and GC
 * racing ADD end in a legal serialisation with whole state (locking.ts).
 */
import assert from "node:assert/strict";
import { IS_ROOT, MODE } from "../netns.ts";
import { runLocking } from "./locking.ts";

Deno.test({
  name: "racing operations on one attachment end as one of their serialisations, state whole",
  ignore: !IS_ROOT || MODE !== "cnichain",
  fn: async () => {
    const fig = await runLocking({ rounds: 16 });
    console.log(fig.notes.join("\n"));
    assert.equal(fig.leaks, 0);
  },
});
