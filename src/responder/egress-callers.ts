/**
 * The callers of an egress listener (`egress_listeners[].callers`): who a request comes from, by a
 * bearer token (RFC 6750 §2.1) or by a client certificate, and which nodes that caller may reach.
 *
 * Decisions, so that the listener reads straight:
 * - Tokens are stored and compared as SHA-256 digests, with `crypto.timingSafeEqual` against every
 *   token caller, never stopping at the first match: the time taken says nothing about which caller
 *   (or how many) a token is close to.
 * - A request that carries `authorization` on a listener with token callers is judged by that header
 *   alone: a bad token is a 401 even if a client certificate would have matched (explicit
 *   credentials that fail are a failure, not a hint to try something else).
 * - A client certificate counts only once the TLS layer verified it against `tls.client_ca_file`
 *   (`socket.authorized`); a caller matches when one of the certificate's URI or DNS SANs equals its
 *   `client_certificate_san`, compared exactly (no wildcards).
 * - An absent allow-list allows all; present lists must all accept the node (tenant, cluster, node).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { EgressListenerConfig } from '../config/schema.ts';

export type CallerConfig = NonNullable<EgressListenerConfig['callers']>[number];

/** What authentication reads of a request, whichever protocol brought it (egress-exchange.ts). */
export interface AuthenticatedRequest {
  /** Every `authorization` field, each as received. */
  readonly authorization: readonly string[] | undefined;
  /** The caller's connection (a TLSSocket, or HTTP/2's proxy of one, over TLS). */
  readonly socket: object;
}

/** What an allow-list is checked against: the node a request resolved to. */
export interface ReachableNode {
  readonly nodeId: string;
  readonly clusterId: string;
  readonly tenantId: string;
}

export type Authentication =
  | { readonly ok: true; readonly caller: CallerConfig }
  | {
      readonly ok: false;
      /** One line for the 401 body. */
      readonly reason: string;
      /** RFC 6750 §3.1 error code for `www-authenticate`, when a token was presented. */
      readonly error: 'invalid_request' | 'invalid_token' | undefined;
    };

/** RFC 6750 §2.1: `Bearer` (any case), one or more spaces, a b64token. */
const bearerPattern = /^Bearer +([A-Za-z0-9\-._~+/]+=*)$/i;

export class EgressCallers {
  readonly #tokens: ReadonlyArray<{ readonly caller: CallerConfig; readonly digest: Buffer }>;
  readonly #certificates: readonly CallerConfig[];

  constructor(callers: readonly CallerConfig[]) {
    this.#tokens = callers.flatMap((caller) =>
      caller.token_sha256 === undefined
        ? []
        : [{ caller, digest: Buffer.from(caller.token_sha256, 'hex') }],
    );
    this.#certificates = callers.filter((caller) => caller.client_certificate_san !== undefined);
  }

  /** True if some caller is known by a token: `authorization` is then this listener's header. */
  get hasTokenCallers(): boolean {
    return this.#tokens.length > 0;
  }

  authenticate(request: AuthenticatedRequest): Authentication {
    const authorization = request.authorization;
    if (this.hasTokenCallers && authorization !== undefined) {
      return this.#byToken(authorization);
    }
    const names = verifiedCertificateNames(request);
    if (names !== undefined) {
      const caller = this.#certificates.find((candidate) =>
        names.includes(candidate.client_certificate_san as string),
      );
      if (caller !== undefined) return { ok: true, caller };
      return {
        ok: false,
        reason: 'the client certificate names no caller of this listener',
        error: undefined,
      };
    }
    return {
      ok: false,
      reason: this.hasTokenCallers
        ? 'credentials required: send authorization: Bearer <token>'
        : 'credentials required: present a client certificate',
      error: undefined,
    };
  }

  #byToken(values: readonly string[]): Authentication {
    if (values.length !== 1) {
      return { ok: false, reason: 'more than one authorization header', error: 'invalid_request' };
    }
    const token = bearerPattern.exec(values[0] as string)?.[1];
    if (token === undefined) {
      return {
        ok: false,
        reason: 'authorization is not a bearer token: send authorization: Bearer <token>',
        error: 'invalid_request',
      };
    }
    const digest = createHash('sha256').update(token, 'utf8').digest();
    let match: CallerConfig | undefined;
    for (const candidate of this.#tokens) {
      // Every digest is compared, and in constant time each: no early exit on a match.
      const equal = timingSafeEqual(digest, candidate.digest);
      if (equal && match === undefined) match = candidate.caller;
    }
    if (match === undefined) {
      return { ok: false, reason: 'the bearer token names no caller', error: 'invalid_token' };
    }
    return { ok: true, caller: match };
  }
}

/** True if the caller's allow-lists (an absent one allows all) all take the node. */
export function mayReach(caller: CallerConfig, node: ReachableNode): boolean {
  const { tenants, clusters, nodes } = caller.allow;
  return (
    (tenants === undefined || tenants.includes(node.tenantId)) &&
    (clusters === undefined || clusters.includes(node.clusterId)) &&
    (nodes === undefined || nodes.includes(node.nodeId))
  );
}

/**
 * The URI and DNS SANs of the client certificate, if the request came over TLS with a certificate
 * that chains to the listener's client CA; undefined otherwise.
 */
function verifiedCertificateNames(request: AuthenticatedRequest): string[] | undefined {
  const socket = request.socket as Partial<TLSSocket>;
  if (socket.encrypted !== true || socket.authorized !== true) return undefined;
  const certificate = socket.getPeerCertificate?.();
  const altNames = certificate?.subjectaltname;
  if (altNames === undefined || altNames === '') return [];
  return parseSubjectAltNames(altNames)
    .filter((name) => name.type === 'URI' || name.type === 'DNS')
    .map((name) => name.value);
}

/**
 * Node's `subjectaltname` text: `DNS:a, URI:spiffe://b, IP Address:…`. A value with a comma, quote,
 * backslash or a byte outside printable ASCII is written as a JSON string (CVE-2021-44532's fix,
 * src/crypto/crypto_common.cc `PrintAltName`), so a plain value never holds ", ".
 */
export function parseSubjectAltNames(text: string): Array<{ type: string; value: string }> {
  const names: Array<{ type: string; value: string }> = [];
  let at = 0;
  while (at < text.length) {
    const colon = text.indexOf(':', at);
    if (colon < 0) break;
    const type = text.slice(at, colon).trim();
    let value: string;
    let end: number;
    if (text[colon + 1] === '"') {
      let close = colon + 2;
      while (close < text.length && text[close] !== '"') close += text[close] === '\\' ? 2 : 1;
      try {
        value = JSON.parse(text.slice(colon + 1, close + 1)) as string;
      } catch {
        value = '';
      }
      end = text.indexOf(',', close + 1);
    } else {
      end = text.indexOf(', ', colon + 1);
      value = text.slice(colon + 1, end < 0 ? undefined : end);
    }
    if (value !== '') names.push({ type, value });
    if (end < 0) break;
    at = end + 1;
  }
  return names;
}
