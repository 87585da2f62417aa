import assert from "node:assert/strict";
import { CniError } from "../../spec/errors.ts";
import type { ConfigObject } from "../../spec/config.ts";
import type { JsonObject } from "../../spec/types.ts";
import { SUPPORTED_VERSIONS } from "../../spec/version.ts";
import type { StateFiles, System } from "../../system.ts";
import { memorySystem } from "../../system_record.ts";
import { hostLocalPlugin as plugin } from "./mod.ts";
import { call, referenceView, seededRandom } from "../../../test/host_local.ts";
import { indexName, SEAL_FILE } from "./store.ts";

const DIR = "/data/net";
const decoder = new TextDecoder();

function conf(ipam: ConfigObject, extra: ConfigObject = {}): ConfigObject {
  return {
    cniVersion: "1.0.0",
    name: "net",
    type: "bridge",
    ipam: { type: "host-local", dataDir: "/data", ...ipam },
    ...extra,
  };
}

const V4 = { ranges: [[{ subnet: "10.1.0.0/29" }]] };
const DUAL = { ranges: [[{ subnet: "10.1.0.0/29" }], [{ subnet: "fd00::/126" }]] };

/** The store's files and their text as the reference plugin sees them (the memory system's). */
async function store(system: System, dir = DIR): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (sub: string) => {
    for (const name of await system.files.list(`${dir}${sub}`)) {
      const path = `${sub}/${name}`;
      const data = await system.files.read(`${dir}${path}`);
      if (data === undefined) await walk(path); // a directory
      else out[path.slice(1)] = decoder.decode(data);
    }
  };
  await walk("");
  // The indexes are checked whenever the store is sealed (see store.ts).
  const token = await system.files.dirToken(dir);
  return referenceView(out, token !== undefined && out[SEAL_FILE] === token);
}

const addresses = (result: JsonObject | undefined): string[] =>
  (result?.ips as JsonObject[]).map((ip) => ip.address as string);

async function rejects(promise: Promise<unknown>, code: number, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof CniError, String(err));
    assert.equal(err.code, code, err.message);
    assert.match(err.message, pattern);
    return true;
  });
}

Deno.test("ADD takes addresses round-robin and writes the reference store", async (t) => {
  const system = memorySystem();
  await t.step(
    "the first ADD gets .2 (the gateway .1 is never handed out) and the dual-stack pair",
    async () => {
      const result = await call(plugin, system, "ADD", conf(DUAL), { id: "c1" });
      assert.deepEqual(result, {
        cniVersion: "1.0.0",
        ips: [{ address: "10.1.0.2/29", gateway: "10.1.0.1" }, {
          address: "fd00::2/126",
          gateway: "fd00::1",
        }],
      });
      assert.deepEqual(await store(system), {
        "10.1.0.2": "c1\r\neth0",
        "fd00::2": "c1\r\neth0",
        "last_reserved_ip.0": "10.1.0.2",
        "last_reserved_ip.1": "fd00::2",
      });
    },
  );
  await t.step("the next ADD continues after the last one", async () => {
    assert.deepEqual(addresses(await call(plugin, system, "ADD", conf(DUAL), { id: "c2" })), [
      "10.1.0.3/29",
      "fd00::3/126",
    ]);
  });
  await t.step("a released address is not reused until its set wraps round to it", async () => {
    await call(plugin, system, "DEL", conf(DUAL), { id: "c1" });
    assert.deepEqual(addresses(await call(plugin, system, "ADD", conf(DUAL), { id: "c3" })), [
      "10.1.0.4/29",
      "fd00::2/126",
    ]);
  });
  await t.step(
    "a full IPv6 set gives the IPv4 address back; the cursor moves on as the reference's does",
    async () => {
      await rejects(
        call(plugin, system, "ADD", conf(DUAL), { id: "c4" }),
        999,
        /^range set ipam\.ranges\[1\] .* is full/,
      );
      const files = await store(system);
      assert.deepEqual(Object.keys(files).filter((n) => n.startsWith("10.")), [
        "10.1.0.3",
        "10.1.0.4",
      ]);
      assert.equal(files["last_reserved_ip.0"], "10.1.0.5");
      assert.deepEqual(addresses(await call(plugin, system, "ADD", conf(V4), { id: "c5" })), [
        "10.1.0.6/29",
      ]);
    },
  );
});

Deno.test("a cursor torn by a crash only moves where the search starts", async (t) => {
  // The cursor is written in place: a crash can leave it empty, cut short, or with the tail of
  // the longer address it replaced ("10.1.0.3" over "10.1.0.2" is whole, "10.1.0.3" over
  // "10.1.0.25" would read "10.1.0.35" until the file is cut to length).
  for (const torn of ["", "10.1.", "10.1.0.35", "\0\0\0"]) {
    await t.step(JSON.stringify(torn), async () => {
      const system = memorySystem();
      await call(plugin, system, "ADD", conf(V4), { id: "a" });
      await system.files.overwrite(`${DIR}/last_reserved_ip.0`, torn);
      const got = addresses(await call(plugin, system, "ADD", conf(V4), { id: "b" }));
      assert.deepEqual(got, ["10.1.0.3/29"]);
      assert.equal((await store(system))["last_reserved_ip.0"], "10.1.0.3");
    });
  }
});

Deno.test("ADD wraps around the end of the range and then reports it full", async () => {
  const system = memorySystem();
  const got: string[] = [];
  for (const id of ["a", "b", "c", "d"]) {
    got.push(...addresses(await call(plugin, system, "ADD", conf(V4), { id })));
  }
  await call(plugin, system, "DEL", conf(V4), { id: "b" });
  got.push(...addresses(await call(plugin, system, "ADD", conf(V4), { id: "e" })));
  got.push(...addresses(await call(plugin, system, "ADD", conf(V4), { id: "f" })), "|");
  await rejects(
    call(plugin, system, "ADD", conf(V4), { id: "g" }),
    999,
    /^range set ipam\.ranges\[0\] \(10\.1\.0\.1-10\.1\.0\.6\) is full: 5 usable addresses, all allocated$/,
  );
  assert.deepEqual(got, [
    "10.1.0.2/29",
    "10.1.0.3/29",
    "10.1.0.4/29",
    "10.1.0.5/29",
    "10.1.0.6/29",
    "10.1.0.3/29",
    "|",
  ]);
});

Deno.test("ADD encodes its result for every spec version", async (t) => {
  const want: Record<string, JsonObject> = {
    "0.1.0": {
      ip4: { ip: "10.1.0.2/29", gateway: "10.1.0.1", routes: [{ dst: "0.0.0.0/0" }] },
      ip6: { ip: "fd00::2/126", gateway: "fd00::1" },
    },
    "0.3.1": {
      ips: [{ version: "4", address: "10.1.0.2/29", gateway: "10.1.0.1" }, {
        version: "6",
        address: "fd00::2/126",
        gateway: "fd00::1",
      }],
      routes: [{ dst: "0.0.0.0/0" }],
    },
    "1.0.0": {
      ips: [{ address: "10.1.0.2/29", gateway: "10.1.0.1" }, {
        address: "fd00::2/126",
        gateway: "fd00::1",
      }],
      routes: [{ dst: "0.0.0.0/0" }],
    },
  };
  for (const version of SUPPORTED_VERSIONS) {
    await t.step(version, async () => {
      const shape = version < "0.3.0" ? "0.1.0" : version < "1.0.0" ? "0.3.1" : "1.0.0";
      const result = await call(
        plugin,
        memorySystem(),
        "ADD",
        conf({ ...DUAL, routes: [{ dst: "0.0.0.0/0" }] }, { cniVersion: version }),
      );
      assert.deepEqual(result, { cniVersion: version, ...want[shape] });
    });
  }
});

Deno.test("ADD gives requested addresses and refuses ones it cannot give", async (t) => {
  const system = memorySystem();
  await t.step("from CNI_ARGS IP", async () => {
    const r = await call(plugin, system, "ADD", conf(DUAL), {
      id: "a",
      args: "IgnoreUnknown=1;IP=10.1.0.5",
    });
    assert.deepEqual(addresses(r), ["10.1.0.5/29", "fd00::2/126"]);
    assert.equal((await store(system))["last_reserved_ip.0"], "10.1.0.5");
  });
  await t.step("from args.cni.ips", async () => {
    const r = await call(
      plugin,
      system,
      "ADD",
      conf(DUAL, { args: { cni: { ips: ["fd00::3"] } } }),
      { id: "b" },
    );
    assert.deepEqual(addresses(r), ["10.1.0.6/29", "fd00::3/126"]);
  });
  await t.step("from runtimeConfig.ips, prefix ignored", async () => {
    const r = await call(
      plugin,
      system,
      "ADD",
      conf(V4, { runtimeConfig: { ips: ["10.1.0.3/24"] } }),
      { id: "c" },
    );
    assert.deepEqual(addresses(r), ["10.1.0.3/29"]);
  });
  const before = await store(system);
  await t.step("one already taken is an error and nothing changes", async () => {
    await rejects(
      call(plugin, system, "ADD", conf(DUAL, { runtimeConfig: { ips: ["fd00::3"] } }), { id: "d" }),
      999,
      /^requested address fd00::3 \(runtimeConfig\.ips\[0\]\) is already allocated in range set ipam\.ranges\[1\]$/,
    );
    const after = await store(system);
    // The cursor moved past the address given back, as the reference plugin's does.
    assert.equal(after["last_reserved_ip.0"], "10.1.0.4");
    delete before["last_reserved_ip.0"];
    delete after["last_reserved_ip.0"];
    assert.deepEqual(after, before, "the v4 address taken first was given back");
  });
  await t.step(
    "the gateway or an address outside every set is refused before anything is written",
    async () => {
      const effects = system.effects.length;
      await rejects(
        call(plugin, system, "ADD", conf(V4), { id: "d", args: "IP=10.1.0.1" }),
        4,
        /^CNI_ARGS IP: is the gateway/,
      );
      await rejects(
        call(plugin, system, "ADD", conf(V4, { runtimeConfig: { ips: ["10.9.0.1"] } }), {
          id: "d",
        }),
        7,
        /is not in any range set/,
      );
      assert.equal(system.effects.length, effects);
    },
  );
});

Deno.test("a failed ADD leaves no partial state", async (t) => {
  await t.step("the IPv4 address is given back when the IPv6 set is full", async () => {
    const system = memorySystem();
    const dual = conf({ ranges: [[{ subnet: "10.1.0.0/24" }], [{ subnet: "fd00::/126" }]] });
    await call(plugin, system, "ADD", dual, { id: "a" });
    await call(plugin, system, "ADD", dual, { id: "b" });
    await rejects(
      call(plugin, system, "ADD", dual, { id: "c" }),
      999,
      /^range set ipam\.ranges\[1\] \(fd00::1-fd00::3\) is full: 2 usable addresses, all allocated$/,
    );
    const files = await store(system);
    assert.deepEqual(Object.keys(files).filter((n) => !n.startsWith("last")), [
      "10.1.0.2",
      "10.1.0.3",
      "fd00::2",
      "fd00::3",
    ]);
    assert.ok(!Object.values(files).some((owner) => owner.startsWith("c\r\n")));
  });
  await t.step("a second ADD for the same attachment is refused and changes nothing", async () => {
    const system = memorySystem();
    await call(plugin, system, "ADD", conf(DUAL), { id: "a" });
    const before = await store(system);
    await rejects(
      call(plugin, system, "ADD", conf(DUAL), { id: "a" }),
      999,
      /already has 10\.1\.0\.2 from range set ipam\.ranges\[0\]/,
    );
    assert.deepEqual(await store(system), before);
    assert.deepEqual(
      addresses(await call(plugin, system, "ADD", conf(DUAL), { id: "a", ifname: "eth1" })),
      ["10.1.0.3/29", "fd00::3/126"],
    );
  });
  await t.step("a bad config writes nothing at all", async () => {
    const system = memorySystem();
    await rejects(
      call(
        plugin,
        system,
        "ADD",
        conf({ ranges: [[{ subnet: "10.1.0.0/24", rangeStart: "10.2.0.1" }]] }),
      ),
      7,
      /^invalid network config: ipam\.ranges\[0\]\[0\]\.rangeStart: is not in the subnet 10\.1\.0\.0\/24 \(got "10\.2\.0\.1"\)$/,
    );
    await rejects(
      call(plugin, system, "DEL", conf({ subnet: "10.1.0.0/24", dataDir: "/a/../b" })),
      7,
      /ipam\.dataDir: may not contain \.\. segments/,
    );
    assert.deepEqual(system.effects, []);
  });
});

Deno.test("ADD reads dns from resolvConf", async (t) => {
  const system = memorySystem();
  await system.files.writeAtomic(
    "/etc/test-resolv.conf",
    "# comment\nnameserver 10.0.0.53\nnameserver fd00::53\nsearch a.example b.example\ndomain example\noptions ndots:5\n",
  );
  await t.step("nameservers, domain, search and options", async () => {
    const result = await call(
      plugin,
      system,
      "ADD",
      conf({ ...V4, resolvConf: "/etc/test-resolv.conf" }),
    );
    assert.deepEqual(result?.dns, {
      nameservers: ["10.0.0.53", "fd00::53"],
      domain: "example",
      search: ["a.example", "b.example"],
      options: ["ndots:5"],
    });
  });
  await t.step("a missing file is an I/O error before anything is allocated", async () => {
    const effects = system.effects.length;
    await rejects(
      call(plugin, system, "ADD", conf({ ...V4, resolvConf: "/etc/missing" }), { id: "x" }),
      5,
      /ipam\.resolvConf: cannot read "\/etc\/missing"/,
    );
    assert.equal(system.effects.length, effects);
  });
});

Deno.test("ipRanges from runtimeConfig come first and keep their own cursor", async () => {
  const system = memorySystem();
  const r = await call(
    plugin,
    system,
    "ADD",
    conf(V4, {
      runtimeConfig: { ipRanges: [[{ subnet: "10.5.0.0/24", rangeStart: "10.5.0.100" }]] },
    }),
  );
  assert.deepEqual(addresses(r), ["10.5.0.100/24", "10.1.0.2/29"]);
  assert.deepEqual(Object.keys(await store(system)).filter((n) => n.startsWith("last")), [
    "last_reserved_ip.0",
    "last_reserved_ip.1",
  ]);
});

Deno.test("DEL releases exactly the attachment's addresses and can be repeated", async (t) => {
  const system = memorySystem();
  const WIDE = { ranges: [[{ subnet: "10.1.0.0/29" }], [{ subnet: "fd00::/120" }]] };
  await call(plugin, system, "ADD", conf(WIDE), { id: "a", ifname: "eth0" });
  await call(plugin, system, "ADD", conf(WIDE), { id: "a", ifname: "eth1" });
  await call(plugin, system, "ADD", conf(WIDE), { id: "b", ifname: "eth0" });
  await t.step("only (a, eth0) goes", async () => {
    await call(plugin, system, "DEL", conf(WIDE), { id: "a", ifname: "eth0" });
    const owners = Object.entries(await store(system)).filter(([n]) => !n.startsWith("last")).map((
      [, o],
    ) => o);
    assert.deepEqual(owners.sort(), ["a\r\neth1", "a\r\neth1", "b\r\neth0", "b\r\neth0"]);
  });
  await t.step(
    "again, and for an attachment never added, is success and changes nothing",
    async () => {
      const before = await store(system);
      await call(plugin, system, "DEL", conf(WIDE), { id: "a", ifname: "eth0" });
      await call(plugin, system, "DEL", conf(WIDE), { id: "zzz" });
      assert.deepEqual(await store(system), before);
    },
  );
  await t.step("on a network that never allocated, creates nothing", async () => {
    const fresh = memorySystem();
    await call(plugin, fresh, "DEL", conf(WIDE), { id: "a" });
    assert.deepEqual(fresh.effects, []);
  });
  await t.step(
    "a file written by an old version (container id only) is released by its container",
    async () => {
      await system.files.writeAtomic(`${DIR}/10.1.0.6`, "old");
      await call(plugin, system, "DEL", conf(WIDE), { id: "old", ifname: "eth3" });
      assert.equal((await store(system))["10.1.0.6"], undefined);
    },
  );
});

/** State files that count the reads of allocation files that exist (names that are addresses). */
function countingReads(system: System): { system: System; reads: string[] } {
  const reads: string[] = [];
  const base = system.files;
  const files: StateFiles = {
    read: async (path, limit) => {
      const data = await base.read(path, limit);
      const name = path.slice(path.lastIndexOf("/") + 1);
      const inStore = path.slice(0, path.lastIndexOf("/")) === DIR;
      if (data !== undefined && inStore && /^[0-9a-f.:]+$/.test(name)) reads.push(name);
      return data;
    },
    readSync: (p) => base.readSync(p),
    list: (d) => base.list(d),
    mkdir: (p, m) => base.mkdir(p, m),
    writeAtomic: (p, d, m) => base.writeAtomic(p, d, m),
    overwrite: (p, d, m) => base.overwrite(p, d, m),
    createExclusive: (p, d, m) => base.createExclusive(p, d, m),
    remove: (p) => base.remove(p),
    dirToken: (d) => base.dirToken(d),
    markDir: (d) => base.markDir(d),
    withLock: (p, fn) => base.withLock(p, fn),
  };
  return { system: { ...system, files }, reads };
}

Deno.test("a sealed store's indexes let ADD and DEL skip other attachments' files", async (t) => {
  const WIDE = { ranges: [[{ subnet: "10.1.0.0/24" }]] };
  const system = memorySystem();
  for (let i = 0; i < 20; i++) await call(plugin, system, "ADD", conf(WIDE), { id: `p${i}` });
  const text = async (name: string) => decoder.decode(await system.files.read(`${DIR}/${name}`));
  await t.step("each attachment has its index, and the store is sealed", async () => {
    assert.deepEqual(JSON.parse(await text(indexName({ id: "p0", ifname: "eth0" }))), {
      owner: "p0\r\neth0",
      addresses: ["10.1.0.2"],
    });
    assert.equal(await text(SEAL_FILE), await system.files.dirToken(DIR));
  });
  await t.step("ADD and DEL read no other attachment's file", async () => {
    const counted = countingReads(system);
    await call(plugin, counted.system, "ADD", conf(WIDE), { id: "new" });
    assert.deepEqual(counted.reads, []);
    await call(plugin, counted.system, "DEL", conf(WIDE), { id: "p3" });
    assert.deepEqual(counted.reads, ["10.1.0.5"], "only p3's own file, to be sure of it");
    assert.equal((await store(system))["10.1.0.5"], undefined);
    assert.equal(
      await system.files.read(`${DIR}/${indexName({ id: "p3", ifname: "eth0" })}`),
      undefined,
    );
  });
  await t.step("a second ADD of an attachment is still refused", async () => {
    await rejects(
      call(plugin, system, "ADD", conf(WIDE), { id: "p7" }),
      999,
      /container "p7" interface "eth0" already has 10\.1\.0\.9/,
    );
  });
  await t.step(
    "a file the reference wrote unseals the store: all is read, and indexed",
    async () => {
      await system.files.writeAtomic(`${DIR}/10.1.0.200`, "ref\r\neth0");
      const counted = countingReads(system);
      await rejects(
        call(plugin, counted.system, "ADD", conf(WIDE), { id: "ref" }),
        999,
        /10\.1\.0\.200/,
      );
      assert.equal(counted.reads.length, 21, "every allocation file");
      assert.ok(await system.files.read(`${DIR}/${indexName({ id: "ref", ifname: "eth0" })}`));
      await call(plugin, system, "DEL", conf(WIDE), { id: "ref" });
      assert.equal(await text(SEAL_FILE), await system.files.dirToken(DIR), "sealed again");
    },
  );
  await t.step(
    "an index that does not hold (changed in place, sealed) has the store read",
    async () => {
      // q's index claims p5's address: q's ADD must not believe it, nor touch p5's file.
      const index = `${DIR}/${indexName({ id: "q", ifname: "eth0" })}`;
      await system.files.overwrite(
        index,
        JSON.stringify({ owner: "q\r\neth0", addresses: ["10.1.0.7"] }),
      );
      const got = addresses(await call(plugin, system, "ADD", conf(WIDE), { id: "q" }));
      assert.notDeepEqual(got, ["10.1.0.7/24"]);
      assert.equal(await text("10.1.0.7"), "p5\r\neth0");
      await store(system); // and every index holds again
    },
  );
});

Deno.test("CHECK confirms the attachment still holds its addresses", async (t) => {
  const system = memorySystem();
  const result = await call(plugin, system, "ADD", conf(DUAL), { id: "a" });
  await t.step("with and without prevResult", async () => {
    await call(plugin, system, "CHECK", conf(DUAL), { id: "a" });
    await call(plugin, system, "CHECK", conf(DUAL, { prevResult: result }), { id: "a" });
  });
  await t.step("addresses of other plugins in prevResult are not ours to check", async () => {
    const prev = {
      ...result,
      ips: [...(result!.ips as JsonObject[]), { address: "192.168.9.9/24" }],
    };
    await call(plugin, system, "CHECK", conf(DUAL, { prevResult: prev }), { id: "a" });
  });
  await t.step("fails for an attachment without addresses", async () => {
    await rejects(
      call(plugin, system, "CHECK", conf(DUAL), { id: "b" }),
      999,
      /no address in "\/data\/net" is allocated to container "b" interface "eth0"/,
    );
  });
  await t.step("fails when prevResult and the store disagree", async () => {
    const other = {
      cniVersion: "1.0.0",
      ips: [{ address: "10.1.0.4/29" }, { address: "fd00::2/126" }],
    };
    await rejects(
      call(plugin, system, "CHECK", conf(DUAL, { prevResult: other }), { id: "a" }),
      999,
      /prevResult has 10\.1\.0\.4, which the store does not hold/,
    );
    const fewer = { cniVersion: "1.0.0", ips: [{ address: "10.1.0.2/29" }] };
    await rejects(
      call(plugin, system, "CHECK", conf(DUAL, { prevResult: fewer }), { id: "a" }),
      999,
      /the store holds fd00::2 .* but prevResult does not have it/,
    );
  });
  await t.step("fails after another attachment took over the address", async () => {
    await call(plugin, system, "DEL", conf(DUAL), { id: "a" });
    await call(plugin, system, "ADD", conf(V4, { runtimeConfig: { ips: ["10.1.0.2"] } }), {
      id: "b",
    });
    await rejects(
      call(plugin, system, "CHECK", conf(DUAL, { prevResult: result }), { id: "a" }),
      999,
      /no address/,
    );
  });
});

Deno.test("GC releases every address whose attachment is not valid", async (t) => {
  const system = memorySystem();
  const gcConf = (valid: { containerID: string; ifname: string }[]) =>
    conf(DUAL, { cniVersion: "1.1.0", "cni.dev/valid-attachments": valid });
  for (const [id, ifname] of [["a", "eth0"], ["a", "eth1"], ["b", "eth0"]]) {
    await call(plugin, system, "ADD", conf(V4, { cniVersion: "1.1.0" }), { id, ifname });
  }
  await system.files.writeAtomic(`${DIR}/10.1.0.6`, "legacy");
  await system.files.writeAtomic(`${DIR}/fd00::3`, "");
  await t.step(
    "keeps valid attachments, the legacy file of a valid container, lock and cursors",
    async () => {
      await call(
        plugin,
        system,
        "GC",
        gcConf([{ containerID: "a", ifname: "eth0" }, { containerID: "legacy", ifname: "eth9" }]),
      );
      assert.deepEqual(await store(system), {
        "10.1.0.2": "a\r\neth0",
        "10.1.0.6": "legacy",
        "last_reserved_ip.0": "10.1.0.4",
      });
    },
  );
  await t.step("an empty list releases everything", async () => {
    await call(plugin, system, "GC", gcConf([]));
    assert.deepEqual(await store(system), { "last_reserved_ip.0": "10.1.0.4" });
  });
  await t.step("is refused below spec 1.1.0", async () => {
    await rejects(
      call(plugin, system, "GC", conf(DUAL, { "cni.dev/valid-attachments": [] })),
      1,
      /incompatible CNI versions/,
    );
  });
});

/**
 * State files that stop dead before the `stopAt`-th change, as a process
 * killed there would: the change and everything after it never happen, and
 * nothing runs to clean up. Locks are not shared: a killed process's flock
 * goes away with it.
 */
function killedAt(base: StateFiles, stopAt: number): { files: StateFiles; stopped: Promise<void> } {
  let changes = 0;
  let stop: () => void;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  const gate = <T>(fn: () => Promise<T>): Promise<T> => {
    if (changes++ < stopAt) return fn();
    stop();
    return new Promise<T>(() => {});
  };
  return {
    stopped,
    files: {
      read: (p) => base.read(p),
      readSync: (p) => base.readSync(p),
      list: (d) => base.list(d),
      mkdir: (p, m) => base.mkdir(p, m),
      writeAtomic: (p, d, m) => gate(() => base.writeAtomic(p, d, m)),
      overwrite: (p, d, m) => gate(() => base.overwrite(p, d, m)),
      createExclusive: (p, d, m) => gate(() => base.createExclusive(p, d, m)),
      remove: (p) => gate(() => base.remove(p)),
      dirToken: (d) => base.dirToken(d),
      markDir: (d) => gate(() => base.markDir(d)),
      withLock: (_p, fn) => fn(),
    },
  };
}

Deno.test("a process killed at any point of ADD or DEL leaves a store the next call reads correctly", async (t) => {
  const dual = conf({ ranges: [[{ subnet: "10.1.0.0/29" }], [{ subnet: "fd00::/125" }]] });
  for (const verb of ["ADD", "DEL"] as const) {
    await t.step(verb, async () => {
      for (let stopAt = 0;; stopAt++) {
        const system = memorySystem();
        await call(plugin, system, "ADD", dual, { id: "keep" });
        if (verb === "DEL") await call(plugin, system, "ADD", dual, { id: "victim" });
        const killed = killedAt(system.files, stopAt);
        const run = call(plugin, { ...system, files: killed.files }, verb, dual, { id: "victim" });
        const outcome = await Promise.race([
          run.then(() => "done"),
          killed.stopped.then(() => "killed"),
        ]);
        const files = await store(system);
        for (const [name, owner] of Object.entries(files)) {
          if (name.startsWith("last_reserved_ip.")) continue;
          assert.match(
            owner,
            /^(keep|victim)\r\neth0$/,
            `stopAt ${stopAt}: ${name} holds a whole owner`,
          );
        }
        // The runtime retries: DEL then ADD again must work from whatever was left.
        await call(plugin, system, "DEL", dual, { id: "victim" });
        const again = addresses(await call(plugin, system, "ADD", dual, { id: "victim" }));
        const kept = Object.entries(await store(system)).filter(([, o]) => o.startsWith("keep"))
          .map(([n]) => n);
        assert.deepEqual(kept, ["10.1.0.2", "fd00::2"], `stopAt ${stopAt}`);
        assert.ok(
          !again.some((a) => kept.includes(a.split("/")[0])),
          `stopAt ${stopAt}: no address given twice`,
        );
        await call(plugin, system, "DEL", dual, { id: "victim" });
        await call(plugin, system, "DEL", dual, { id: "keep" });
        assert.deepEqual(Object.keys(await store(system)), [
          "last_reserved_ip.0",
          "last_reserved_ip.1",
        ]);
        if (outcome === "done") {
          // Every change was a kill point: ADD's two allocation files and two cursors, then the
          // index, the directory's mark and the seal; DEL's two removals, index, mark and seal.
          assert.equal(stopAt, verb === "ADD" ? 7 : 5);
          break;
        }
      }
    });
  }
});

Deno.test("random ADD and DEL sequences match a model of round-robin allocation", async () => {
  const { int } = seededRandom("host-local model");
  // The model: a /28 with gateway .1, so .2-.14 are usable, a cursor, and who holds what.
  const usable = Array.from({ length: 13 }, (_, i) => i + 2);
  {
    for (let round = 0; round < 20; round++) {
      const system = memorySystem();
      const held = new Map<string, number>();
      let last: number | undefined;
      for (let step = 0; step < 40; step++) {
        const ids = [...held.keys()];
        if (ids.length && int(3) === 0) {
          const id = ids[int(ids.length)];
          await call(plugin, system, "DEL", conf({ subnet: "10.1.0.0/28" }), { id });
          held.delete(id);
          continue;
        }
        const id = `c${round}-${step}`;
        const start = last === undefined ? 0 : usable.indexOf(last) + 1;
        const order = [...usable.slice(start), ...usable.slice(0, start)];
        const free = order.find((n) => ![...held.values()].includes(n));
        const run = call(plugin, system, "ADD", conf({ subnet: "10.1.0.0/28" }), { id });
        if (free === undefined) {
          await rejects(run, 999, /is full: 13 usable addresses, all allocated/);
          continue;
        }
        assert.deepEqual(
          addresses(await run),
          [`10.1.0.${free}/28`],
          `round ${round} step ${step}`,
        );
        held.set(id, free);
        last = free;
      }
      const files = await store(system);
      const expected = Object.fromEntries(
        [...held].map(([id, n]) => [`10.1.0.${n}`, `${id}\r\neth0`]),
      );
      const allocations = Object.fromEntries(
        Object.entries(files).filter(([n]) => !n.startsWith("last")),
      );
      assert.deepEqual(allocations, expected);
    }
  }
});
