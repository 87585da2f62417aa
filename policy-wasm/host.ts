/**
 * The TypeScript side of the policy engine: loads policy.wasm (once, on first
 * use), checks its ABI version, and turns JSON requests into responses. Only
 * pointers and lengths cross the boundary: the request is written into memory
 * the module allocated, the response read from memory it returns, and both
 * are freed again.
 */

import { fnv64 } from "../chain/hash.ts";
import { readTrailer } from "../chain/trailer.ts";

export const ABI_VERSION = 1;

/**
 * tools/bundle.ts replaces this with "trailer": the module's bytes then travel at the end of the
 * bundled program (chain/trailer.ts), so that it is one file.
 */
const EMBEDDED: string = "__CNICHAIN_POLICY_WASM__";
/** ... and this with a hash of those bytes. */
const EMBEDDED_ID: string = "__CNICHAIN_POLICY_WASM_ID__";

interface Exports {
  memory: WebAssembly.Memory;
  cnichain_policy_abi(): number;
  alloc(len: number): number;
  free(ptr: number, len: number): void;
  evaluate(ptr: number, len: number): bigint;
}

export interface PolicyProblem {
  path: string;
  message: string;
  value?: unknown;
}

export interface PortRange {
  protocol: "tcp" | "udp" | "sctp";
  port?: number;
  endPort?: number;
}

export type Peer = { set: string } | { cidr: string; except?: string[] };

export interface PlanRule {
  action: "allow" | "deny";
  policy: string;
  index: number;
  priority: number | null;
  peers: Peer[];
  ports: PortRange[];
}

export interface Direction {
  isolated: boolean;
  rules: PlanRule[];
}

export interface Plan {
  ingress: Direction;
  egress: Direction;
  memberOf: string[];
  sets: Record<string, string>;
}

export interface Identity {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  namespaceLabels: Record<string, string>;
  addresses: string[];
}

export type Endpoint = Identity | { address: string };

export interface Half {
  verdict: "allow" | "deny";
  reason: string;
  policy?: string;
  rule?: number;
  direction?: "egress" | "ingress";
}

export interface Verdict {
  verdict: "allow" | "deny";
  reason: string;
  egress: Half;
  ingress: Half;
}

/** The module refused a request: every problem, with its path in the policies list. */
export class PolicyProblems extends Error {
  constructor(readonly problems: PolicyProblem[]) {
    super(problems.map((p) => `${p.path}: ${p.message}`).join("; "));
    this.name = "PolicyProblems";
  }
}

/** The name of the trailer that carries the module's bytes in the bundled program. */
export const WASM_TRAILER = "cnichain-policy-wasm";

function wasmBytes(): Uint8Array<ArrayBuffer> {
  if (EMBEDDED === "trailer") {
    const bytes = readTrailer(WASM_TRAILER);
    if (!bytes) throw new Error(`${Deno.mainModule} carries no policy engine`);
    return bytes;
  }
  return Deno.readFileSync(new URL("./policy.wasm", import.meta.url));
}

let devId: string | undefined;

/**
 * Names this build of the engine (a hash of its bytes), for answers remembered across runs:
 * another build may answer otherwise.
 */
export function engineId(): string {
  if (!EMBEDDED_ID.startsWith("__")) return EMBEDDED_ID;
  devId ??= fnv64(wasmBytes());
  return devId;
}

export class PolicyEngine {
  readonly #x: Exports;

  constructor(bytes: Uint8Array<ArrayBuffer> = wasmBytes()) {
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), {});
    this.#x = instance.exports as unknown as Exports;
    const abi = this.#x.cnichain_policy_abi();
    if (abi !== ABI_VERSION) {
      throw new Error(
        `policy.wasm speaks ABI ${abi}, this host speaks ${ABI_VERSION}: rebuild one of them`,
      );
    }
  }

  /** Sends one JSON request and returns the parsed response. */
  request(body: unknown): Record<string, unknown> {
    const input = new TextEncoder().encode(JSON.stringify(body));
    const ptr = this.#x.alloc(input.length);
    // Views are made after each call: the module may grow (and so move) its memory.
    new Uint8Array(this.#x.memory.buffer, ptr, input.length).set(input);
    const packed = this.#x.evaluate(ptr, input.length);
    this.#x.free(ptr, input.length);
    const outPtr = Number(BigInt.asUintN(64, packed) >> 32n);
    const outLen = Number(BigInt.asUintN(64, packed) & 0xffffffffn);
    const text = new TextDecoder().decode(
      new Uint8Array(this.#x.memory.buffer, outPtr, outLen).slice(),
    );
    this.#x.free(outPtr, outLen);
    return JSON.parse(text);
  }

  #ok(body: unknown): Record<string, unknown> {
    const out = this.request(body);
    if (out.ok !== true) {
      throw new PolicyProblems(
        (out.problems as PolicyProblem[]) ?? [{ path: "", message: "refused" }],
      );
    }
    return out;
  }

  /** Policy lists already parsed inside the module, by the list object the caller holds. */
  readonly #handles = new WeakMap<unknown[], number>();

  /**
   * Sends `body` with the policies as a handle to a set the module has parsed
   * once (loading it on first use), so a thousand policies are not re-sent
   * and re-parsed for every plan or verdict.
   */
  #withPolicies(policies: unknown[], body: Record<string, unknown>): Record<string, unknown> {
    for (let attempt = 0; attempt < 2; attempt++) {
      let handle = this.#handles.get(policies);
      if (handle === undefined) {
        handle = this.#ok({ op: "load", policies }).handle as number;
        this.#handles.set(policies, handle);
      }
      const out = this.request({ ...body, handle });
      const evicted = (out.problems as PolicyProblem[] | undefined)?.some((p) =>
        p.path === "handle"
      );
      if (out.ok !== true && evicted && attempt === 0) {
        this.#handles.delete(policies); // the module keeps a few sets only; load this one again
        continue;
      }
      if (out.ok !== true) {
        throw new PolicyProblems(
          (out.problems as PolicyProblem[]) ?? [{ path: "", message: "refused" }],
        );
      }
      return out;
    }
    throw new Error("unreachable");
  }

  /**
   * Every problem in the policies; empty when they are valid. Valid lists stay
   * loaded, so the plan that usually follows does not parse them again.
   */
  validate(policies: unknown[]): PolicyProblem[] {
    if (this.#handles.has(policies)) return [];
    const out = this.request({ op: "load", policies });
    if (out.ok !== true) return out.problems as PolicyProblem[];
    this.#handles.set(policies, out.handle as number);
    return [];
  }

  plan(policies: unknown[], pod: Identity): Plan {
    return this.#withPolicies(policies, { op: "plan", pod }).plan as Plan;
  }

  verdict(
    policies: unknown[],
    from: Endpoint,
    to: Endpoint,
    port: number,
    protocol: string,
  ): Verdict {
    return this.#withPolicies(policies, {
      op: "verdict",
      from,
      to,
      port,
      protocol,
    }) as unknown as Verdict;
  }
}

let shared: PolicyEngine | undefined;

/** The engine, compiled on first use only: plugins without a policy step never load it. */
export function policyEngine(): PolicyEngine {
  shared ??= new PolicyEngine();
  return shared;
}
