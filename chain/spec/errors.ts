/** The spec's well-known error codes (SPEC.md "Error"). 100+ are plugin-specific. */
export const ErrorCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnv: 4,
  Io: 5,
  Decode: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  NotAvailable: 50,
  LimitedConnectivity: 51,
  /** cnichain's own (100+): the interface or attachment already exists; nothing was changed. */
  AlreadyExists: 100,
  /** Used by the Go library for anything unclassified; we keep it for the same purpose. */
  Internal: 999,
} as const;

/**
 * An error that crosses the CNI boundary as `{cniVersion, code, msg, details}`.
 * Anything thrown that is not a CniError becomes code 999 at the dispatcher.
 */
export class CniError extends Error {
  constructor(
    readonly code: number,
    msg: string,
    readonly details = "",
  ) {
    super(msg);
    this.name = "CniError";
  }

  /** The error object as the spec prints it. */
  toJSON(cniVersion: string): Record<string, unknown> {
    const out: Record<string, unknown> = { cniVersion, code: this.code, msg: this.message };
    if (this.details) out.details = this.details;
    return out;
  }
}

/** Code 7, naming the field (a JSON path) and the offending value. */
export function invalidConfig(field: string, problem: string, value?: unknown): CniError {
  const shown = value === undefined ? "" : ` (got ${quote(value)})`;
  return new CniError(
    ErrorCode.InvalidConfig,
    `invalid network config: ${field}: ${problem}${shown}`,
  );
}

/** Renders a value for an error message: short, quoted, never a whole document. */
export function quote(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** Wraps anything thrown into a CniError, keeping CniErrors as they are. */
export function toCniError(err: unknown, context?: string): CniError {
  if (err instanceof CniError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.PermissionDenied) {
    return new CniError(ErrorCode.Io, context ? `${context}: ${message}` : message);
  }
  return new CniError(ErrorCode.Internal, context ? `${context}: ${message}` : message);
}
