/**
 * "Reboot" in CI size: pod netns deleted behind cnichain's back, GC with no
 * valid attachment cleans everything, later DELs succeed (reboot.ts).
 */
import assert from "node:assert/strict";
import { IS_ROOT, MODE } from "../netns.ts";
import { runReboot } from "./reboot.ts";

Deno.test({
  name:
    "after the pod netns vanish, GC with no valid attachment cleans everything; DEL still succeeds",
  ignore: !IS_ROOT || MODE !== "cnichain",
  fn: async () => {
    const fig = await runReboot({ pods: 12 });
    console.log(fig.notes.join("\n"));
    assert.equal(fig.leaks, 0);
  },
});
