/**
 * The CNI types cnichain works with. Internally every result is held in the
 * 1.x shape (`Result`); `result.ts` converts from and to the older encodings at
 * the boundary. Configs stay plain JSON objects so that unknown fields pass
 * through untouched.
 */

export type Json = null | boolean | number | string | Json[] | JsonObject;
export interface JsonObject {
  [key: string]: Json | undefined;
}

export interface Interface {
  name: string;
  mac?: string;
  mtu?: number;
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}

export interface IpConfig {
  /** CIDR notation: the address and its prefix length. */
  address: string;
  gateway?: string;
  /** Index into `interfaces`. */
  interface?: number;
}

export interface Route {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface Dns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

/** A result in the 1.x shape; `cniVersion` says which version it is encoded for. */
export interface Result {
  cniVersion: string;
  interfaces?: Interface[];
  ips?: IpConfig[];
  routes?: Route[];
  dns?: Dns;
}

/** The CNI verbs. */
export type Verb = "ADD" | "DEL" | "CHECK" | "GC" | "STATUS" | "VERSION";
export const VERBS: readonly Verb[] = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"];

/** One attachment as GC's `cni.dev/valid-attachments` names it. */
export interface AttachmentRef {
  containerID: string;
  ifname: string;
}
