import assert from "node:assert/strict";
import type { Dns } from "../../spec/types.ts";
import { parseResolvConf } from "./resolv.ts";

Deno.test("parseResolvConf() reads resolv.conf as the reference host-local does", async (t) => {
  const cases: [string, string, Dns][] = [
    ["an empty file", "", {}],
    [
      "comments, blank lines and keywords without a value are skipped",
      "# x\n; y\n\nnameserver\nsearch\n",
      {},
    ],
    ["nameservers in order, first word only", "nameserver 10.0.0.1\nnameserver fd00::53 extra\n", {
      nameservers: ["10.0.0.1", "fd00::53"],
    }],
    [
      "search and options accumulate over lines",
      "search a b\nsearch c\noptions ndots:5\toptions rotate\n",
      {
        search: ["a", "b", "c"],
        options: ["ndots:5", "options", "rotate"],
      },
    ],
    [
      "the last domain wins; spaces and tabs around are trimmed",
      "  domain one\n\tdomain two  \r\n",
      { domain: "two" },
    ],
    ["unknown keywords are ignored", "sortlist 10.0.0.0/8\nlookup file bind\n", {}],
  ];
  for (const [name, text, want] of cases) {
    await t.step(name, () => assert.deepEqual(parseResolvConf(text), want));
  }
});
