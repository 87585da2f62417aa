import assert from "node:assert/strict";
import {
  bits,
  type Family,
  formatIp,
  type Ip,
  lastOf,
  offset,
  parseCidr,
  parseIp,
} from "../../ip.ts";
import {
  type AddressRange,
  candidates,
  type RangeSet,
  reservedReason,
  usableCount,
  usableCountOfSet,
} from "./range.ts";
import { seededRandom } from "../../../test/host_local.ts";

const ip = (text: string): Ip => parseIp(text)!;

/** A range as parseHostLocal fills it in: defaults from the subnet unless given. */
function range(subnet: string, start?: string, end?: string, gateway?: string): AddressRange {
  const net = parseCidr(subnet)!;
  const last = lastOf(net);
  return {
    subnet: net,
    start: start ? ip(start) : offset(net.ip, 1n)!,
    end: end ? ip(end) : net.ip.family === 4 ? offset(last, -1n)! : last,
    gateway: gateway ? ip(gateway) : offset(net.ip, 1n)!,
  };
}

const set = (...ranges: AddressRange[]): RangeSet => ({ label: "ipam.ranges[0]", ranges });

const order = (s: RangeSet, last?: string) =>
  [...candidates(s, last ? ip(last) : undefined)].map((c) => formatIp(c.ip));

Deno.test("candidates() hands out round-robin from after the last reserved address, wrapping", async (t) => {
  const cases: { name: string; set: RangeSet; last?: string; want: string[] }[] = [
    {
      name: "a /29 from the start skips the gateway and the broadcast address",
      set: set(range("10.1.0.0/29")),
      want: ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"],
    },
    {
      name: "after the last reserved one, wrapping to the start",
      set: set(range("10.1.0.0/29")),
      last: "10.1.0.4",
      want: ["10.1.0.5", "10.1.0.6", "10.1.0.2", "10.1.0.3", "10.1.0.4"],
    },
    {
      name: "the last reserved one at the end of the range starts over",
      set: set(range("10.1.0.0/29")),
      last: "10.1.0.6",
      want: ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"],
    },
    {
      name: "a last reserved address outside the set starts from the beginning",
      set: set(range("10.1.0.0/29")),
      last: "192.168.0.9",
      want: ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"],
    },
    {
      name: "a /30 has one address",
      set: set(range("10.1.0.0/30")),
      want: ["10.1.0.2"],
    },
    {
      name: "a /126 hands out its last address: IPv6 has no broadcast",
      set: set(range("fd00::/126")),
      want: ["fd00::2", "fd00::3"],
    },
    {
      name: "a gateway elsewhere frees .1 and is skipped where it is",
      set: set(range("10.1.0.0/29", undefined, undefined, "10.1.0.4")),
      want: ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.5", "10.1.0.6"],
    },
    {
      name: "the network and broadcast addresses are skipped even inside rangeStart-rangeEnd",
      set: set(range("10.1.0.0/29", "10.1.0.0", "10.1.0.7", "10.1.0.6")),
      want: ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5"],
    },
    {
      name: "the IPv6 network address is skipped too",
      set: set(range("fd00::/126", "fd00::", "fd00::3", "fd00::3")),
      want: ["fd00::1", "fd00::2"],
    },
    {
      name: "several ranges in order, from the range holding the last one, wrapping across",
      set: set(range("10.1.0.0/30"), range("10.2.0.0/29", "10.2.0.4"), range("10.3.0.0/30")),
      last: "10.2.0.5",
      want: ["10.2.0.6", "10.3.0.2", "10.1.0.2", "10.2.0.4", "10.2.0.5"],
    },
    {
      name: "the last one at the end of the last range wraps to the first range",
      set: set(range("10.1.0.0/30"), range("10.3.0.0/30")),
      last: "10.3.0.2",
      want: ["10.1.0.2", "10.3.0.2"],
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const got = order(c.set, c.last);
      assert.deepEqual(got, c.want);
      assert.equal(BigInt(got.length), usableCountOfSet(c.set));
    });
  }
});

Deno.test("reservedReason() names the gateway, network and IPv4 broadcast addresses", async (t) => {
  const cases: [AddressRange, string, string | undefined][] = [
    [range("10.1.0.0/24"), "10.1.0.1", "is the gateway"],
    [range("10.1.0.0/24", "10.1.0.0"), "10.1.0.0", "is the network address"],
    [range("10.1.0.0/24", undefined, "10.1.0.255"), "10.1.0.255", "is the broadcast address"],
    [range("10.1.0.0/24"), "10.1.0.254", undefined],
    [range("fd00::/120"), "fd00::ff", undefined],
    [range("fd00::/120"), "fd00::", "is the network address"],
  ];
  for (const [r, address, want] of cases) {
    await t.step(`${address} in ${formatIp(r.subnet.ip)}/${r.subnet.prefix}`, () => {
      assert.equal(reservedReason(r, ip(address)), want);
    });
  }
});

Deno.test("usableCount() counts what candidates() can hand out", async (t) => {
  const cases: [AddressRange, bigint][] = [
    [range("10.1.0.0/24"), 253n],
    [range("10.1.0.0/30"), 1n],
    [range("10.1.0.0/24", "10.1.0.0", "10.1.0.255"), 253n],
    [range("10.1.0.0/24", "10.1.0.10", "10.1.0.20"), 11n],
    [range("10.1.0.0/24", "10.1.0.1", "10.1.0.1", "10.1.0.1"), 0n],
    [range("fd00::/64"), (1n << 64n) - 2n],
    [range("fd00::/126"), 2n],
  ];
  for (const [r, want] of cases) {
    await t.step(`${formatIp(r.start)}-${formatIp(r.end)} gateway ${formatIp(r.gateway)}`, () => {
      assert.equal(usableCount(r), want);
    });
  }
});

/** A random small range: prefix /24-/30 (v4) or /120-/126 (v6), random bounds and gateway inside. */
function randomRange(int: (n: number) => number, family: Family, base: bigint): AddressRange {
  const hostBits = 2 + int(7);
  const prefix = bits(family) - hostBits;
  const size = 1n << BigInt(hostBits);
  const network: Ip = { family, value: base };
  const at = (n: bigint): Ip => ({ family, value: base + n });
  const a = BigInt(int(Number(size)));
  const b = BigInt(int(Number(size)));
  const [lo, hi] = a <= b ? [a, b] : [b, a];
  return {
    subnet: { ip: network, prefix },
    start: at(lo),
    end: at(hi),
    gateway: at(BigInt(int(Number(size)))),
  };
}

Deno.test("candidates() yields every usable address of a random set once, starting after the last", () => {
  const { next, int } = seededRandom("candidates property");
  for (let round = 0; round < 300; round++) {
    const family: Family = next() < 0.5 ? 4 : 6;
    const ranges = Array.from(
      { length: 1 + int(3) },
      (_, i) =>
        randomRange(
          int,
          family,
          (family === 4 ? 0x0a000000n : 0xfd00n << 112n) + (BigInt(i) << 16n),
        ),
    );
    const s = set(...ranges);
    const all = ranges.flatMap((r) => {
      const out: Ip[] = [];
      for (let v = r.start.value; v <= r.end.value; v++) {
        if (!reservedReason(r, { family, value: v })) out.push({ family, value: v });
      }
      return out;
    });
    const inRanges = ranges.flatMap((r) => {
      const out: Ip[] = [];
      for (let v = r.start.value; v <= r.end.value; v++) out.push({ family, value: v });
      return out;
    });
    const last = inRanges.length && next() < 0.8 ? inRanges[int(inRanges.length)] : undefined;
    const got = [...candidates(s, last)].map((c) => c.ip);
    const context = `round ${round}: ${
      JSON.stringify(s, (_, v) => typeof v === "bigint" ? v.toString(16) : v)
    }`;
    assert.equal(got.length, all.length, context);
    assert.equal(BigInt(got.length), usableCountOfSet(s), context);
    assert.deepEqual(new Set(got.map((g) => g.value)), new Set(all.map((g) => g.value)), context);
    if (got.length && last) {
      // The first candidate is the first usable address after `last` in set order, cyclically.
      const position = inRanges.findIndex((x) => x.value === last.value);
      const after = [...inRanges.slice(position + 1), ...inRanges.slice(0, position + 1)];
      const expected = after.find((x) => all.some((u) => u.value === x.value));
      assert.equal(got[0].value, expected?.value, context);
    }
  }
});
