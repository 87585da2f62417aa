/**
 * Load in CI size: 200 mixed ADDs and DELs from 16 processes at once on one
 * network; each ends well or with a clear CNI code, and the lab holds
 * exactly the pods left attached (load.ts).
 */
import assert from "node:assert/strict";
import { IS_ROOT, MODE } from "../netns.ts";
import { runLoad } from "./load.ts";

Deno.test({
  name: "200 ADDs and DELs from 16 processes at once leave exactly the attached pods' state",
  ignore: !IS_ROOT || MODE !== "cnichain",
  fn: async () => {
    const fig = await runLoad({ ops: 200, procs: 16, pods: 40 });
    console.log(fig.notes.join("\n"));
    assert.equal(fig.leaks, 0);
  },
});
