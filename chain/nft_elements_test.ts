/**
 * The netlink fast path for set elements (ffi/nft_netlink.ts through Kernel.nftElements)
 * against libnftables in a real kernel: what one writes the other reads back the same, key,
 * value and comment, for every set and map the masquerade and portmap skeletons make.
 */
import assert from "node:assert/strict";
import { kernelTest } from "../test/netns.ts";
import { runProgram } from "../test/helpers.ts";

const PROBE = new URL("../test/nft_elements_probe.ts", import.meta.url).pathname;

const ELEMENTS = [
  { set: "masq4", key: "10.1.0.5", comment: "net c1 eth0" },
  { set: "nomasq4", key: "10.1.0.5 . 10.1.0.0/16", comment: "net c1 eth0" },
  { set: "nomasq4", key: "10.1.0.5 . 224.0.0.0/4", comment: "net c1 eth0" },
  { set: "masq6", key: "fd00:1::5", comment: "net c1 eth0" },
  { set: "nomasq6", key: "fd00:1::5 . fd00:1::/64", comment: "net c1 eth0" },
  { set: "pm_dnat4", key: "tcp . 8080", value: "10.1.0.5 . 80", comment: "net c1 eth0" },
  {
    set: "pm_dnat4_ip",
    key: "192.0.2.7 . udp . 5353",
    value: "10.1.0.5 . 53",
    comment: "net c1 eth0",
  },
  { set: "pm_dnat6", key: "sctp . 9000", value: "fd00:1::5 . 9001", comment: "net c1 eth0" },
  {
    set: "pm_dnat6_ip",
    key: "2001:db8::7 . tcp . 443",
    value: "fd00:1::5 . 8443",
    comment: "net c1 eth0",
  },
  { set: "pm_hairpin4", key: "10.1.0.0/16 . 10.1.0.5", comment: "net c1 eth0" },
  { set: "pm_hairpin4", key: "127.0.0.0/8 . 10.1.0.5", comment: "net c1 eth0" },
  { set: "pm_local4", key: "10.1.0.5", comment: "net c1 eth0" },
  { set: "pm_hairpin6", key: "fd00:1::/64 . fd00:1::5", comment: "net c1 eth0" },
];

kernelTest(
  "nftables fast path: elements written over netlink read back the same through libnftables",
  async (lab) => {
    const out = await runProgram("/usr/sbin/ip", {
      args: [
        "netns",
        "exec",
        lab.host,
        Deno.execPath(),
        "run",
        "--allow-all",
        PROBE,
        JSON.stringify(ELEMENTS),
      ],
      env: {
        DENO_DIR: Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`,
        HOME: Deno.env.get("HOME") ?? "/root",
      },
    });
    assert.equal(out.code, 0, out.stderr);
    const r = JSON.parse(out.stdout);
    assert.equal(r.missingTable, 2, "ENOENT before the skeleton exists");
    for (const [chain, comments] of Object.entries(r.rules as Record<string, string[]>)) {
      assert.ok(comments.length > 0, `${chain} has rules`);
      const feature = chain.startsWith("pm_") ? "portmap" : "masquerade";
      for (const c of comments) assert.match(c, new RegExp(`^cnichain ${feature} [0-9a-f]{8}$`));
    }
    assert.equal(r.added, undefined, "every element added");
    const want: Record<string, { key: string; value?: string; comment: string }[]> = {};
    for (const e of ELEMENTS) {
      (want[e.set] ??= []).push({
        key: e.key,
        ...(e.value ? { value: e.value } : {}),
        comment: e.comment,
      });
    }
    for (const [set, elements] of Object.entries(want)) {
      const sort = (l: { key: string }[]) => [...l].sort((a, b) => a.key.localeCompare(b.key));
      assert.deepEqual(sort(r.afterAdd[set]), sort(elements), `set ${set}`);
    }
    assert.deepEqual(r.comments, ELEMENTS.map((e) => e.comment));
    assert.equal(r.createTaken.errno, 17, "create of a key that is there: EEXIST");
    assert.equal(r.createTaken.change.element.set, "pm_dnat4");
    assert.deepEqual(r.afterRefused, r.afterAdd, "a refused batch changes nothing");
    assert.equal(r.deleted, undefined, "every element deleted");
    for (const set of Object.keys(want)) {
      assert.deepEqual(r.afterDelete[set], [], `set ${set} empty`);
    }
    assert.deepEqual(r.commentsGone, ELEMENTS.map(() => null));
  },
  { only: "cnichain", versions: ["1.1.0"] },
);
