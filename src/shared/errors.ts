/**
 * The one catalogue of revtun errors. Every error has a stable `code`, the HTTP status used when it
 * surfaces at an HTTP edge (egress listener, admin), and keeps its `cause`.
 * Modelled on fastify's lib/errors.js and undici's lib/core/errors.js.
 */

export const errorCatalogue = {
  ERR_CONFIG_INVALID: { status: 500, summary: 'invalid configuration' },
  ERR_CONFIG_READ: { status: 500, summary: 'cannot read the configuration file' },
  ERR_ADDRESS_INVALID: { status: 500, summary: 'invalid address' },
  ERR_RC_ADDRESS_INVALID: { status: 500, summary: 'invalid rc:// address' },
  ERR_LISTEN: { status: 500, summary: 'cannot listen' },
  ERR_USAGE: { status: 500, summary: 'invalid command line' },
  ERR_NO_ROUTE: { status: 404, summary: 'no route matches the request path' },
  ERR_NO_HOST_ID: { status: 400, summary: 'the request names no node or cluster' },
  ERR_NO_TUNNEL: { status: 503, summary: 'no tunnel is available for the host id' },
  ERR_TUNNEL_BUSY: { status: 503, summary: 'every tunnel to the node is at its stream limit' },
  ERR_BODY_TOO_LARGE: { status: 413, summary: 'the request body is larger than max_body_bytes' },
  ERR_TUNNEL_FAILED: { status: 502, summary: 'the tunnel failed before the response started' },
  ERR_LOCAL_SERVICE: { status: 502, summary: 'the local service failed' },
  ERR_CLOSED: { status: 503, summary: 'shutting down' },
  ERR_SCRIPT: { status: 500, summary: 'the request script failed' },
  ERR_INSECURE: { status: 500, summary: 'the configuration is insecure' },
} as const satisfies Record<string, { status: number; summary: string }>;

export type ErrorCode = keyof typeof errorCatalogue;

export class RevtunError extends Error {
  override readonly name = 'RevtunError';
  readonly code: ErrorCode;
  /** HTTP status used when this error is answered at an HTTP edge. */
  readonly status: number;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.status = errorCatalogue[code].status;
  }
}

export function isRevtunError(error: unknown, code?: ErrorCode): error is RevtunError {
  return error instanceof RevtunError && (code === undefined || error.code === code);
}

/** A short, printable description of any thrown value, for logs and one-line replies. */
export function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code !== undefined && !error.message.includes(code)
      ? `${error.message} (${code})`
      : error.message;
  }
  return String(error);
}
