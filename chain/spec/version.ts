/** Every spec version cnichain speaks, oldest first. */
export const SUPPORTED_VERSIONS = [
  "0.1.0",
  "0.2.0",
  "0.3.0",
  "0.3.1",
  "0.4.0",
  "1.0.0",
  "1.1.0",
] as const;

export type SpecVersion = (typeof SUPPORTED_VERSIONS)[number];

export const LATEST_VERSION: SpecVersion = "1.1.0";

/** A config without `cniVersion` is 0.1.0, as the Go library reads it. */
export const DEFAULT_VERSION: SpecVersion = "0.1.0";

export function isSupported(version: string): version is SpecVersion {
  return (SUPPORTED_VERSIONS as readonly string[]).includes(version);
}

/** Parses `major.minor.patch`; undefined when the string is not of that form. */
export function parseSemver(version: string): [number, number, number] | undefined {
  const m = /^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$/.exec(version);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

/** Compares two well-formed versions; negative when a < b. */
export function compareVersions(a: string, b: string): number {
  const pa = parseSemver(a) ?? [0, 0, 0];
  const pb = parseSemver(b) ?? [0, 0, 0];
  for (let i = 0; i < 3; i++) {
    if (pa[i] !== pb[i]) return pa[i] - pb[i];
  }
  return 0;
}

export function atLeast(version: string, minimum: string): boolean {
  return compareVersions(version, minimum) >= 0;
}

/**
 * The version a conflist runs at: the highest supported one among `cniVersion`
 * and `cniVersions` (spec 1.1.0), or undefined when none is supported.
 */
export function pickVersion(cniVersion: unknown, cniVersions: unknown): SpecVersion | undefined {
  const candidates: string[] = [];
  if (typeof cniVersion === "string") {
    candidates.push(cniVersion === "" ? DEFAULT_VERSION : cniVersion);
  }
  if (cniVersion === undefined && cniVersions === undefined) candidates.push(DEFAULT_VERSION);
  if (Array.isArray(cniVersions)) {
    for (const v of cniVersions) if (typeof v === "string") candidates.push(v);
  }
  const supported = candidates.filter(isSupported).sort(compareVersions);
  return supported.at(-1);
}
