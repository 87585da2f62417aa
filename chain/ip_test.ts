import assert from "node:assert/strict";
import {
  bits,
  compareIp,
  contains,
  countBetween,
  type Family,
  formatCidr,
  formatIp,
  type Ip,
  lastOf,
  maskOf,
  networkOf,
  offset,
  parseCidr,
  parseIp,
  unmapV4,
} from "./ip.ts";
import { seededRandom } from "../test/host_local.ts";

const ip = (text: string): Ip => {
  const parsed = parseIp(text);
  assert.ok(parsed, `test address ${text}`);
  return parsed;
};

Deno.test("parseIp() and formatIp() read every written form and write the canonical one", async (t) => {
  const cases: [string, string][] = [
    ["10.1.0.1", "10.1.0.1"],
    ["0.0.0.0", "0.0.0.0"],
    ["255.255.255.255", "255.255.255.255"],
    ["::", "::"],
    ["::1", "::1"],
    ["FD00:0:0::1", "fd00::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:0db8:0000:0000:0000:0000:0002:0001", "2001:db8::2:1"],
    ["1:0:1:0:1:0:1:0", "1:0:1:0:1:0:1:0"],
    ["1:0:0:1:0:0:0:1", "1:0:0:1::1"],
    ["::ffff:10.1.2.3", "::ffff:a01:203"],
    ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"],
  ];
  for (const [given, canonical] of cases) {
    await t.step(
      `${given} is written ${canonical}`,
      () => assert.equal(formatIp(ip(given)), canonical),
    );
  }
});

Deno.test("parseIp() and parseCidr() reject what is not an address", async (t) => {
  const bad = [
    "",
    "10.1.0",
    "10.1.0.256",
    "10.01.0.1",
    "10.1.0.00",
    "10.1.0.1 ",
    "10.1.0.1.2",
    "10..0.1",
    ".10.1.0",
    "10.1.0.",
    "10.1.0.1000",
    "+10.1.0.1",
    "10.1.0.1e0",
    "10.1.0.\u0661",
    "1::2::3",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7",
    "12345::",
    "g::1",
    "::1%eth0",
  ];
  for (const text of bad) {
    await t.step(`address ${JSON.stringify(text)}`, () => assert.equal(parseIp(text), undefined));
  }
  for (
    const text of ["10.1.0.0", "10.1.0.0/33", "fd00::/129", "10.1.0.0/024", "10.1.0.0/-1", "/24"]
  ) {
    await t.step(`CIDR ${JSON.stringify(text)}`, () => assert.equal(parseCidr(text), undefined));
  }
});

Deno.test("prefix arithmetic is right at the /0, /24, /31, /32, /64, /127 and /128 edges", async (t) => {
  const cases: { cidr: string; network: string; last: string; size: bigint }[] = [
    { cidr: "10.1.2.3/24", network: "10.1.2.0", last: "10.1.2.255", size: 256n },
    { cidr: "10.1.2.3/31", network: "10.1.2.2", last: "10.1.2.3", size: 2n },
    { cidr: "10.1.2.3/32", network: "10.1.2.3", last: "10.1.2.3", size: 1n },
    { cidr: "10.1.2.3/0", network: "0.0.0.0", last: "255.255.255.255", size: 1n << 32n },
    { cidr: "fd00::1:2/64", network: "fd00::", last: "fd00::ffff:ffff:ffff:ffff", size: 1n << 64n },
    { cidr: "fd00::3/127", network: "fd00::2", last: "fd00::3", size: 2n },
    { cidr: "fd00::3/128", network: "fd00::3", last: "fd00::3", size: 1n },
    {
      cidr: "fd00::3/0",
      network: "::",
      last: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
      size: 1n << 128n,
    },
  ];
  for (const c of cases) {
    await t.step(c.cidr, () => {
      const cidr = parseCidr(c.cidr)!;
      assert.equal(formatCidr(cidr), c.cidr, "the written address keeps its host bits");
      assert.equal(formatIp(networkOf(cidr).ip), c.network);
      assert.equal(formatIp(lastOf(cidr)), c.last);
      assert.equal(countBetween(networkOf(cidr).ip, lastOf(cidr)), c.size);
      assert.ok(contains(cidr, ip(c.network)) && contains(cidr, ip(c.last)));
      const before = offset(ip(c.network), -1n);
      const after = offset(ip(c.last), 1n);
      if (before) assert.ok(!contains(cidr, before), "the address before the network is outside");
      if (after) assert.ok(!contains(cidr, after), "the address after the last is outside");
    });
  }
});

Deno.test("offset() stops at the ends of the address space", async (t) => {
  const cases: [string, bigint, string | undefined][] = [
    ["10.0.0.255", 1n, "10.0.1.0"],
    ["10.0.1.0", -1n, "10.0.0.255"],
    ["255.255.255.255", 1n, undefined],
    ["0.0.0.0", -1n, undefined],
    ["fd00::ffff", 1n, "fd00::1:0"],
    ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1n, undefined],
    ["::", -1n, undefined],
    ["::", 1n << 127n, "8000::"],
  ];
  for (const [from, n, to] of cases) {
    await t.step(`${from} + ${n}`, () => {
      const got = offset(ip(from), n);
      assert.equal(got && formatIp(got), to);
    });
  }
});

Deno.test("compareIp(), unmapV4() and countBetween() order, unmap and count", () => {
  assert.ok(compareIp(ip("255.255.255.255"), ip("::")) < 0, "IPv4 sorts before IPv6");
  assert.ok(compareIp(ip("10.0.0.2"), ip("10.0.0.10")) < 0);
  assert.equal(compareIp(ip("fd00::1"), ip("fd00:0::1")), 0);
  assert.deepEqual(unmapV4(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
  assert.deepEqual(unmapV4(ip("::10.1.2.3")), ip("::10.1.2.3"), "only ::ffff:0:0/96 is mapped");
  assert.equal(countBetween(ip("10.0.0.5"), ip("10.0.0.4")), 0n);
  assert.equal(countBetween(ip("10.0.0.5"), ip("10.0.0.5")), 1n);
});

function randomIp(next: () => number, family: Family): Ip {
  let value = 0n;
  for (let i = 0; i < bits(family) / 16; i++) {
    // Zero groups half the time, so that "::" runs of every length come up.
    const group = next() < 0.5 ? 0 : Math.floor(next() * 0x10000);
    value = (value << 16n) | BigInt(group);
  }
  return { family, value };
}

Deno.test("formatIp() writes IPv6 as the WHATWG URL serializer does (RFC 5952) and parses back", () => {
  const { next } = seededRandom("formatIp property");
  for (let i = 0; i < 2000; i++) {
    const address = randomIp(next, 6);
    const text = formatIp(address);
    const viaUrl = new URL(`http://[${text}]/`).hostname.slice(1, -1);
    assert.equal(text, viaUrl, `value ${address.value.toString(16)}`);
    assert.deepEqual(parseIp(text), address);
    assert.deepEqual(parseIp(text.toUpperCase()), address);
  }
  for (let i = 0; i < 500; i++) {
    const address = randomIp(next, 4);
    assert.deepEqual(parseIp(formatIp(address)), address);
  }
});

Deno.test("networkOf(), lastOf() and contains() agree for random addresses and prefixes", () => {
  const { next, int } = seededRandom("prefix property");
  for (let i = 0; i < 2000; i++) {
    const family: Family = next() < 0.5 ? 4 : 6;
    const prefix = int(bits(family) + 1);
    const cidr = { ip: randomIp(next, family), prefix };
    const network = networkOf(cidr).ip;
    const last = lastOf(cidr);
    const context = `${formatCidr(cidr)}`;
    assert.equal(network.value & ~maskOf(family, prefix), 0n, context);
    assert.equal(countBetween(network, last), 1n << BigInt(bits(family) - prefix), context);
    assert.ok(contains(cidr, cidr.ip) && contains(cidr, network) && contains(cidr, last), context);
    const inside = {
      family,
      value: network.value + BigInt(int(1000)) % (last.value - network.value + 1n),
    };
    assert.ok(contains(cidr, inside), context);
    const before = offset(network, -1n);
    const after = offset(last, 1n);
    if (before) assert.ok(!contains(cidr, before), context);
    if (after) assert.ok(!contains(cidr, after), context);
  }
});
