/**
 * libnftables through Deno FFI. One `run()` is one nft_run_cmd_from_buffer
 * call: the kernel applies the whole batch atomically or none of it, and the
 * library's error text comes back in the thrown error. No `nft` process.
 */

import { INT, int, POINTER, pointer } from "./abi.ts";

// The context handle is the one-pointer struct nft_ctx_new returns, passed back as it is; results
// are one-value structs too (see abi.ts).
const symbols = {
  // struct nft_ctx *nft_ctx_new(uint32_t flags)
  nft_ctx_new: { parameters: ["u32"], result: POINTER },
  // void nft_ctx_free(struct nft_ctx *ctx)
  nft_ctx_free: { parameters: [POINTER], result: "void" },
  // int nft_ctx_buffer_output(struct nft_ctx *ctx)
  nft_ctx_buffer_output: { parameters: [POINTER], result: INT },
  // int nft_ctx_buffer_error(struct nft_ctx *ctx)
  nft_ctx_buffer_error: { parameters: [POINTER], result: INT },
  // const char *nft_ctx_get_output_buffer(struct nft_ctx *ctx)
  nft_ctx_get_output_buffer: { parameters: [POINTER], result: POINTER },
  // const char *nft_ctx_get_error_buffer(struct nft_ctx *ctx)
  nft_ctx_get_error_buffer: { parameters: [POINTER], result: POINTER },
  // void nft_ctx_output_set_flags(struct nft_ctx *ctx, unsigned int flags)
  nft_ctx_output_set_flags: { parameters: [POINTER, "u32"], result: "void" },
  // int nft_run_cmd_from_buffer(struct nft_ctx *nft, const char *buf)
  nft_run_cmd_from_buffer: { parameters: [POINTER, "buffer"], result: INT },
} as const satisfies Deno.ForeignLibraryInterface;

const NFT_CTX_OUTPUT_JSON = 1 << 4;

export class NftError extends Error {
  constructor(readonly commands: string, readonly detail: string) {
    super(`nftables: ${detail.trim().split("\n")[0] || "command failed"}`);
    this.name = "NftError";
  }
}

let lib: Deno.DynamicLibrary<typeof symbols> | undefined;

function nft(): Deno.DynamicLibrary<typeof symbols>["symbols"] {
  if (!lib) {
    try {
      lib = Deno.dlopen("libnftables.so.1", symbols);
    } catch (err) {
      throw new Error(
        `load libnftables.so.1 (Debian package libnftables1): ${
          err instanceof Error ? err.message : err
        }`,
      );
    }
  }
  return lib.symbols;
}

function readCString(result: Uint8Array): string {
  const p = pointer(result);
  return p === null ? "" : new Deno.UnsafePointerView(p).getCString();
}

/** A libnftables context in the calling thread's network namespace. */
export class Nftables {
  #ctx: Uint8Array | null;

  constructor() {
    const s = nft();
    const ctx = s.nft_ctx_new(0);
    if (pointer(ctx) === null) throw new Error("nft_ctx_new failed");
    s.nft_ctx_buffer_output(ctx);
    s.nft_ctx_buffer_error(ctx);
    this.#ctx = ctx;
  }

  #run(commands: string, json: boolean): string {
    if (this.#ctx === null) throw new Error("nftables context is closed");
    const s = nft();
    s.nft_ctx_output_set_flags(this.#ctx, json ? NFT_CTX_OUTPUT_JSON : 0);
    const rc = int(s.nft_run_cmd_from_buffer(this.#ctx, new TextEncoder().encode(`${commands}\0`)));
    const out = readCString(s.nft_ctx_get_output_buffer(this.#ctx));
    const err = readCString(s.nft_ctx_get_error_buffer(this.#ctx));
    if (rc !== 0) throw new NftError(commands, err || out);
    return out;
  }

  /** Runs a batch of nft commands as one atomic transaction. */
  run(commands: string): void {
    this.#run(commands, false);
  }

  /** Runs a command and returns its text output (for `get element`, which prints no JSON). */
  query(command: string): string {
    return this.#run(command, false);
  }

  /** Runs a `list ...` command and returns its JSON `nftables` array. */
  list(command: string): unknown[] {
    const out = this.#run(command, true);
    return out ? (JSON.parse(out).nftables ?? []) : [];
  }

  /** Safe to call twice. */
  close(): void {
    if (this.#ctx !== null) nft().nft_ctx_free(this.#ctx);
    this.#ctx = null;
  }
}
