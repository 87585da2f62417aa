/**
 * What each reference release is known not to do. A failure of the plugin
 * level suite against a reference counts as a known gap only when the check
 * depends on a feature the release lacks, or runs at a spec version the
 * release does not speak; any other failure is reported as a failure.
 */
import type { Check, Feature } from "./harness.ts";

export interface Profile {
  name: string;
  /** Spec versions the release does not implement. */
  unsupported: string[];
  /** Missing features, each with why. */
  missing: Partial<Record<Feature, string>>;
  /** Checks that fail for a bug of the release rather than a missing feature, with why. */
  bugs?: Record<string, string>;
}

export const PROFILES: Record<string, Profile> = {
  "plugins-v1.9.1": {
    name: "containernetworking/plugins v1.9.1",
    unsupported: [],
    missing: {
      gc: "no plugin implements GC (plugins#1013)",
      "version-echo": "VERSION answers its own newest version (1.1.0), not the input's",
      "error-cniversion": "error JSON without cniVersion (types.Error has no such field)",
    },
  },
  "debian-1.1.1": {
    name: "Debian containernetworking-plugins 1.1.1",
    unsupported: ["1.1.0"],
    missing: {
      gc: "no GC (predates spec 1.1.0)",
      status: "no STATUS (predates spec 1.1.0)",
      "version-echo": "VERSION answers 1.0.0, not the input's version",
      "error-cniversion": "error JSON without cniVersion",
      "dns-omitted": 'results carry "dns": {}',
    },
    bugs: {
      "check.portmap-after-add":
        "portmap CHECK checks the IPv6 DNAT chain although ADD made none for an IPv4-only pod",
    },
  },
};

/** Why a failure of `check` at `version` is a known gap of `profile`, or undefined. */
export function knownGap(profile: Profile, check: Check, version: string): string | undefined {
  if (profile.unsupported.includes(version)) return `no spec ${version}`;
  if (profile.bugs?.[check.id]) return profile.bugs[check.id];
  for (const f of check.features ?? []) {
    if (profile.missing[f]) return profile.missing[f];
  }
  return undefined;
}

/**
 * Where cnichain itself still departs from the spec or the reference plugins
 * (not a documented departure: a bug to fix). A failure listed here is shown
 * as `xfail` with the reason; once fixed, the check passes and the entry
 * should go (the run prints a reminder).
 */
export const CNICHAIN_DEVIATIONS: Record<string, string> = {};

export function cnichainDeviation(check: Check): string | undefined {
  return CNICHAIN_DEVIATIONS[check.id];
}
