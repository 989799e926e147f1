/**
 * Handshake authentication: whether a handshake's credentials prove the identity it claims
 * (protocol reference §3 check 7 and "Identity binding"; §12 #10, identity is self-asserted in
 * Envoy unless something binds it).
 *
 * Three methods, each optional; a handshake must pass every one that is configured:
 * - `jwt`: Envoy's `jwt_validator` (reference §11) with a local JWKS, optionally binding the ids to
 *   claims;
 * - `tokens`: a static secret per node, stored as SHA-256 and compared in constant time;
 * - `client_certificate`: the mTLS certificate (already verified against tls.client_ca_file by the
 *   TLS layer) must name the claimed ids in a URI SAN, a DNS SAN or the subject CN.
 *
 * Every credential is checked before any binding, so a missing or bad credential is 401 and only a
 * good credential naming other ids is 403, as Envoy orders JWT (check 7) before validation (9).
 *
 * The JWKS file is read once, at start; rotating keys needs a restart (there is no reload).
 */
import crypto from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { PeerCertificate } from 'node:tls';
import {
  createLocalJWKSet,
  errors as joseErrors,
  jwtVerify,
  type JWK,
  type JWTPayload,
  type JWTVerifyOptions,
} from 'jose';
import type { TunnelListenerConfig } from '../config/schema.ts';
import type { HandshakeRejection, Identity } from '../protocol/handshake.ts';
import { headerValues, type RequestHead } from '../protocol/http1-head.ts';
import { describeError, RevtunError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';

export type HandshakeAuthConfig = NonNullable<TunnelListenerConfig['auth']>;

/**
 * `reverse_tunnel.handshake.<name>` counters this module's rejections increment, besides Envoy's
 * `validation_failed`. `jwt_denied` is Envoy's (reference §9); `auth_denied` is revtun's, for a
 * missing or bad static token and a missing client certificate.
 */
export const handshakeAuthCounters = ['jwt_denied', 'auth_denied'] as const;
export type HandshakeAuthCounter = (typeof handshakeAuthCounters)[number];

export interface AuthRejection extends Omit<HandshakeRejection, 'counter'> {
  readonly counter: HandshakeAuthCounter | 'validation_failed';
}

export type AuthOutcome =
  | {
      readonly ok: true;
      /**
       * What proved the identity, stable across reconnects and credential rotation: e.g.
       * `jwt:<iss>:<sub>`, `token:<node_id>`, `cert:uri=<san>`; several methods are joined by a
       * space in the order cert, jwt, token. Two handshakes for one node id with different
       * credentials come from different principals.
       */
      readonly credential: string;
    }
  | {
      readonly ok: false;
      readonly rejection: AuthRejection;
      /** Why, for the responder's log only: never sent, since the body must not tell ids apart. */
      readonly reason: string;
    };

export interface HandshakeAuthInput {
  readonly head: RequestHead;
  /** The ids the handshake headers claim, already syntax-checked. */
  readonly identity: Identity;
  /** `tlsSocket.getPeerCertificate()`: undefined or `{}` when there is none. */
  readonly peerCertificate?: PeerCertificate | undefined;
}

export interface HandshakeAuthenticator {
  /** The configured methods, in the order they are checked. */
  readonly methods: ReadonlyArray<'client_certificate' | 'jwt' | 'tokens'>;
  authenticate(input: HandshakeAuthInput): Promise<AuthOutcome>;
}

/**
 * Longest token hashed or verified, characters (bytes: header values are latin1). Anything longer
 * is refused before any work; a JWT with a few claims is well under 2 KiB.
 */
export const maxCredentialLength = 8192;

/**
 * Signature algorithms a JWT may use. Asymmetric only: HMAC would put the signing secret in the
 * JWKS file on the responder, and jose refuses secret keys in a JWKS anyway; `none` is never
 * accepted by jwtVerify. `Ed25519` is EdDSA's fully specified name (RFC 9864).
 */
export const jwtAlgorithms = ['RS256', 'ES256', 'EdDSA', 'Ed25519'] as const;

/** Cap on the JWKS file: it is read whole at start. */
const maxJwksFileBytes = 1024 * 1024;
/** Cap on usable keys: a token without `kid` is tried against every key of its type. */
const maxJwksKeys = 64;

const jwtDenied: AuthRejection = {
  status: 401,
  body: 'JWT authentication failed',
  counter: 'jwt_denied',
  headers: [['www-authenticate', 'Bearer']],
};
const tokenDenied: AuthRejection = {
  status: 401,
  body: 'Reverse tunnel authentication failed',
  counter: 'auth_denied',
  headers: [['www-authenticate', 'Bearer']],
};
// No HTTP authentication scheme names a TLS client certificate, so no www-authenticate here.
const certificateMissing: AuthRejection = {
  status: 401,
  body: 'Reverse tunnel authentication failed',
  counter: 'auth_denied',
};
// The body and counter of Envoy's validation mismatch (reference §3 check 9).
const bindingFailed: AuthRejection = {
  status: 403,
  body: 'validation_failed',
  counter: 'validation_failed',
};

const deny = (rejection: AuthRejection, reason: string): AuthOutcome => ({
  ok: false,
  rejection,
  reason,
});

/**
 * Builds the authenticator for `tunnel_listener.auth`, or undefined when there is none. Reads and
 * checks the JWKS file; a bad one is ERR_CONFIG_INVALID naming the file.
 */
export async function createHandshakeAuthenticator(
  auth: TunnelListenerConfig['auth'],
  options: { readonly logger: Logger },
): Promise<HandshakeAuthenticator | undefined> {
  if (auth === undefined) return undefined;
  const { jwt, tokens, client_certificate: certificate } = auth;
  if (jwt === undefined && tokens === undefined && certificate === undefined) {
    // An empty block reads as "auth is on" but would let everyone in: refuse it.
    throw new RevtunError(
      'ERR_CONFIG_INVALID',
      'tunnel_listener.auth: set at least one of jwt, tokens or client_certificate, or remove auth',
    );
  }
  if (jwt !== undefined && tokens !== undefined && jwt.token_header === 'authorization') {
    throw new RevtunError(
      'ERR_CONFIG_INVALID',
      'tunnel_listener.auth: jwt and tokens both read the authorization header, so no handshake could pass both; set jwt.token_header to another header, e.g. x-tunnel-token',
    );
  }
  const authenticator = new Authenticator({
    certificate: certificate && new CertificateBinding(certificate),
    jwt: jwt && new JwtVerifier(jwt, await loadJwks(jwt.jwks_file, options.logger)),
    tokens: tokens && new TokenTable(tokens),
  });
  options.logger.debug({ methods: authenticator.methods }, 'handshake authentication configured');
  return authenticator;
}

class Authenticator implements HandshakeAuthenticator {
  readonly methods: HandshakeAuthenticator['methods'];
  readonly #certificate: CertificateBinding | undefined;
  readonly #jwt: JwtVerifier | undefined;
  readonly #tokens: TokenTable | undefined;

  constructor(parts: {
    certificate: CertificateBinding | undefined;
    jwt: JwtVerifier | undefined;
    tokens: TokenTable | undefined;
  }) {
    this.#certificate = parts.certificate;
    this.#jwt = parts.jwt;
    this.#tokens = parts.tokens;
    this.methods = [
      ...(parts.certificate ? (['client_certificate'] as const) : []),
      ...(parts.jwt ? (['jwt'] as const) : []),
      ...(parts.tokens ? (['tokens'] as const) : []),
    ];
  }

  async authenticate({
    head,
    identity,
    peerCertificate,
  }: HandshakeAuthInput): Promise<AuthOutcome> {
    // 1. Every configured credential is present and genuine (401).
    if (this.#certificate !== undefined && !hasCertificate(peerCertificate)) {
      return deny(certificateMissing, 'no client certificate');
    }
    let claims: JWTPayload | undefined;
    if (this.#jwt !== undefined) {
      const verified = await this.#jwt.verify(head);
      if (!verified.ok) return deny(jwtDenied, verified.reason);
      claims = verified.claims;
    }
    if (this.#tokens !== undefined) {
      const reason = this.#tokens.check(head, identity.nodeId);
      if (reason !== undefined) return deny(tokenDenied, reason);
    }
    // 2. Each credential names the claimed ids (403). A static token is bound by construction.
    const credentials: string[] = [];
    if (this.#certificate !== undefined && hasCertificate(peerCertificate)) {
      const bound = this.#certificate.bind(peerCertificate, identity);
      if (!bound.ok) return deny(bindingFailed, bound.reason);
      credentials.push(bound.credential);
    }
    if (this.#jwt !== undefined && claims !== undefined) {
      const reason = this.#jwt.bind(claims, identity);
      if (reason !== undefined) return deny(bindingFailed, reason);
      credentials.push(this.#jwt.credential(claims));
    }
    if (this.#tokens !== undefined) credentials.push(`token:${identity.nodeId}`);
    return { ok: true, credential: credentials.join(' ') };
  }
}

// ---------------------------------------------------------------------------------------------
// JWT (Envoy's jwt_validator, reference §11)
// ---------------------------------------------------------------------------------------------

type JwtConfig = NonNullable<HandshakeAuthConfig['jwt']>;
type KeySet = ReturnType<typeof createLocalJWKSet>;

const idClaims = [
  ['node_id', 'nodeId'],
  ['cluster_id', 'clusterId'],
  ['tenant_id', 'tenantId'],
] as const;

class JwtVerifier {
  readonly #config: JwtConfig;
  readonly #keys: KeySet;
  readonly #options: JWTVerifyOptions;

  constructor(config: JwtConfig, keys: KeySet) {
    this.#config = config;
    this.#keys = keys;
    this.#options = {
      issuer: config.issuer,
      // Any one of them (jose's audience check, as Envoy's audiences).
      ...(config.audiences !== undefined && { audience: [...config.audiences] }),
      algorithms: [...jwtAlgorithms],
      // Applies to exp and nbf, in seconds; Envoy's clock_skew_seconds defaults to 60.
      clockTolerance: config.clock_skew / 1000,
      // Envoy's validator refuses a token without exp (reference §11).
      requiredClaims: ['exp'],
    };
  }

  async verify(
    head: RequestHead,
  ): Promise<{ ok: true; claims: JWTPayload } | { ok: false; reason: string }> {
    const header = this.#config.token_header;
    const values = headerValues(head.headers, header);
    if (values.length === 0) return { ok: false, reason: `no token in ${header}` };
    if (values.length > 1) return { ok: false, reason: `${header} is repeated` };
    // Envoy strips a leading "Bearer "; the scheme is case-insensitive (RFC 9110 §11.1).
    const value = values[0] as string;
    const token = /^bearer /i.test(value) ? value.slice(7).trimStart() : value;
    if (token === '') return { ok: false, reason: `empty token in ${header}` };
    if (token.length > maxCredentialLength) {
      return { ok: false, reason: `token longer than ${maxCredentialLength} characters` };
    }
    try {
      return { ok: true, claims: await this.#verifyWithAnyKey(token) };
    } catch (error) {
      // Fail closed on anything, including errors that are not jose's.
      return { ok: false, reason: `token refused: ${describeError(error)}` };
    }
  }

  /**
   * A token without `kid` matches every key of its type; jwtVerify then throws
   * JWKSMultipleMatchingKeys, which yields the candidates (jose's createLocalJWKSet docs). Their
   * number is bounded by maxJwksKeys.
   */
  async #verifyWithAnyKey(token: string): Promise<JWTPayload> {
    try {
      return (await jwtVerify(token, this.#keys, this.#options)).payload;
    } catch (error) {
      if (!(error instanceof joseErrors.JWKSMultipleMatchingKeys)) throw error;
      for await (const key of error) {
        try {
          return (await jwtVerify(token, key, this.#options)).payload;
        } catch (inner) {
          // Another key may have signed it; a claim error means this key did, so it is final.
          if (inner instanceof joseErrors.JWSSignatureVerificationFailed) continue;
          throw inner;
        }
      }
      throw new joseErrors.JWSSignatureVerificationFailed();
    }
  }

  /** Undefined when every mapped claim is a string equal to the claimed id. */
  bind(claims: JWTPayload, identity: Identity): string | undefined {
    for (const [key, field] of idClaims) {
      const claim = this.#config.claims?.[key];
      if (claim === undefined) continue;
      // Top-level claims only: claim names such as https://example.com/tenant contain dots.
      const value: unknown = claims[claim];
      if (typeof value !== 'string' || value !== identity[field]) {
        return `JWT claim "${claim}" does not equal the claimed ${key}`;
      }
    }
    return undefined;
  }

  /** `jwt:<iss>:<sub>`; without `sub`, any token of the issuer is the same principal. */
  credential(claims: JWTPayload): string {
    return typeof claims.sub === 'string'
      ? `jwt:${this.#config.issuer}:${claims.sub}`
      : `jwt:${this.#config.issuer}`;
  }
}

/**
 * Reads a local JWKS and checks it whole, so a bad key fails at start rather than at the first
 * handshake: public keys only, RSA ≥ 2048 bits, P-256 or Ed25519. Keys for other algorithms are
 * skipped with a warning (an identity provider's JWKS may hold some); jwtVerify never uses them.
 */
async function loadJwks(path: string, logger: Logger): Promise<KeySet> {
  const where = `tunnel_listener.auth.jwt.jwks_file ${path}`;
  const fail = (message: string, cause?: unknown): never => {
    throw new RevtunError(
      'ERR_CONFIG_INVALID',
      `${where}: ${message}`,
      cause === undefined ? undefined : { cause },
    );
  };
  let text: string;
  try {
    const bytes = await readFile(path);
    if (bytes.length > maxJwksFileBytes) fail(`larger than ${maxJwksFileBytes} bytes`);
    text = bytes.toString('utf8');
  } catch (error) {
    if (error instanceof RevtunError) throw error;
    return fail(`cannot be read: ${describeError(error)}`, error);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    return fail(`is not JSON: ${describeError(error)}`, error);
  }
  const keys = (parsed as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) return fail('must be a JSON Web Key Set, {"keys": [...]}');
  const usable: JWK[] = [];
  for (const [index, key] of (keys as unknown[]).entries()) {
    const kid = isRecord(key) && typeof key.kid === 'string' ? ` (kid "${key.kid}")` : '';
    const name = `key ${index}${kid}`;
    if (!isRecord(key)) return fail(`${name} is not an object`);
    if (key.kty === 'oct') return fail(`${name} is a symmetric key; only public keys belong here`);
    if ('d' in key) return fail(`${name} holds private key material ("d"); publish the public key`);
    const unusable = unusableReason(key);
    if (unusable === 'invalid') return fail(`${name} is not a valid public key`);
    if (unusable === undefined) usable.push(key);
    else logger.warn({ file: path, key: name }, `JWKS key skipped: ${unusable}`);
  }
  if (usable.length === 0) return fail(`holds no ${jwtAlgorithms.join(', ')} public key`);
  if (usable.length > maxJwksKeys) return fail(`holds more than ${maxJwksKeys} usable keys`);
  try {
    return createLocalJWKSet({ keys: usable });
  } catch (error) {
    return fail(describeError(error), error);
  }
}

/** Why a public JWK cannot verify one of jwtAlgorithms: 'invalid', a reason, or undefined. */
function unusableReason(jwk: JWK): string | undefined {
  if (jwk.use !== undefined && jwk.use !== 'sig') return `use "${jwk.use}" is not "sig"`;
  if (jwk.alg !== undefined && !(jwtAlgorithms as readonly string[]).includes(jwk.alg)) {
    return `alg "${jwk.alg}" is not one of ${jwtAlgorithms.join(', ')}`;
  }
  let key: crypto.KeyObject;
  try {
    key = crypto.createPublicKey({ key: jwk as crypto.JsonWebKey, format: 'jwk' });
  } catch {
    return 'invalid';
  }
  const details = key.asymmetricKeyDetails;
  switch (key.asymmetricKeyType) {
    case 'rsa':
      // jose refuses shorter RSA keys at verification time; say so now.
      return (details?.modulusLength ?? 0) >= 2048 ? undefined : 'RSA key shorter than 2048 bits';
    case 'ec':
      return details?.namedCurve === 'prime256v1' ? undefined : 'EC key not on P-256';
    case 'ed25519':
      return undefined;
    default:
      return `${key.asymmetricKeyType ?? 'unknown'} keys cannot verify ${jwtAlgorithms.join(', ')}`;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

// ---------------------------------------------------------------------------------------------
// Static tokens
// ---------------------------------------------------------------------------------------------

type TokenConfig = NonNullable<HandshakeAuthConfig['tokens']>;

class TokenTable {
  /** SHA-256 digests per node; several for one node allow rotation. */
  readonly #digests = new Map<string, Buffer[]>();
  /** Comparisons per check: the most digests any node has, so every check costs the same. */
  readonly #comparisons: number;
  /** Stands in for a digest that is not there; random, so no token can match it. */
  readonly #dummy = crypto.randomBytes(32);

  constructor(tokens: TokenConfig) {
    for (const { node_id: nodeId, sha256 } of tokens) {
      const list = this.#digests.get(nodeId) ?? [];
      list.push(Buffer.from(sha256, 'hex'));
      this.#digests.set(nodeId, list);
    }
    this.#comparisons = Math.max(...[...this.#digests.values()].map((list) => list.length));
  }

  /** Undefined when `authorization: Bearer <token>` carries a token configured for the node. */
  check(head: RequestHead, nodeId: string): string | undefined {
    const values = headerValues(head.headers, 'authorization');
    if (values.length === 0) return 'no authorization header';
    if (values.length > 1) return 'authorization is repeated';
    const value = values[0] as string;
    if (!/^bearer /i.test(value)) return 'authorization is not a Bearer token';
    const token = value.slice(7).trimStart();
    if (token === '') return 'empty bearer token';
    if (token.length > maxCredentialLength) {
      return `token longer than ${maxCredentialLength} characters`;
    }
    // The bytes as they came on the wire (header values are latin1), as `sha256sum` of the secret.
    const presented = crypto.createHash('sha256').update(token, 'latin1').digest();
    const digests = this.#digests.get(nodeId);
    // The same work whether the node id is known or not: a fixed number of constant-time
    // comparisons, against the dummy where a digest is missing, so timing tells no ids apart.
    // `crypto.timingSafeEqual` is looked up on the module at each call so that the test can watch it.
    let matched = false;
    for (let i = 0; i < this.#comparisons; i++) {
      const equal = crypto.timingSafeEqual(presented, digests?.[i] ?? this.#dummy);
      matched = equal || matched;
    }
    if (digests === undefined) return 'no token is configured for the node id';
    return matched ? undefined : 'the token does not match the node id';
  }
}

// ---------------------------------------------------------------------------------------------
// Client certificate binding
// ---------------------------------------------------------------------------------------------

type CertificateConfig = NonNullable<HandshakeAuthConfig['client_certificate']>;

/** The template's placeholders; a fixed pattern, never one built from configuration. */
const placeholder = /\{(node_id|cluster_id|tenant_id)\}/g;
const placeholderField = {
  node_id: 'nodeId',
  cluster_id: 'clusterId',
  tenant_id: 'tenantId',
} as const;

class CertificateBinding {
  readonly #config: CertificateConfig;

  constructor(config: CertificateConfig) {
    const template = config.uri_san;
    if (template !== undefined && /[{}]/.test(template.replace(placeholder, ''))) {
      throw new RevtunError(
        'ERR_CONFIG_INVALID',
        `tunnel_listener.auth.client_certificate.uri_san "${template}": the only placeholders are {node_id}, {cluster_id} and {tenant_id}`,
      );
    }
    this.#config = config;
  }

  bind(
    certificate: PeerCertificate,
    identity: Identity,
  ): { ok: true; credential: string } | { ok: false; reason: string } {
    const names = parseSubjectAltNames(certificate.subjectaltname ?? '');
    if (names === undefined) return { ok: false, reason: 'unreadable subjectaltname' };
    const proofs: string[] = [];
    const { uri_san: template, dns_san: dns, common_name: commonName } = this.#config;
    if (template !== undefined) {
      const expected = template.replace(
        placeholder,
        (_, key: keyof typeof placeholderField) => identity[placeholderField[key]],
      );
      if (!names.some(([type, value]) => type === 'URI' && value === expected)) {
        return { ok: false, reason: `no URI SAN equals ${expected}` };
      }
      proofs.push(`uri=${expected}`);
    }
    // Exact, case-sensitive equality: node ids "A" and "a" differ, and no wildcard matches.
    if (dns === 'node_id') {
      if (!names.some(([type, value]) => type === 'DNS' && value === identity.nodeId)) {
        return { ok: false, reason: `no DNS SAN equals the node id ${identity.nodeId}` };
      }
      proofs.push(`dns=${identity.nodeId}`);
    }
    if (commonName === 'node_id') {
      // Node gives an array when the subject has several CNs: that is ambiguous, so no match.
      const cn: unknown = (certificate.subject as { CN?: unknown } | undefined)?.CN;
      if (cn !== identity.nodeId) {
        return { ok: false, reason: `the subject CN is not the node id ${identity.nodeId}` };
      }
      proofs.push(`cn=${identity.nodeId}`);
    }
    // Binding names the principal, so a renewed certificate is the same credential; with nothing
    // bound, only the certificate itself identifies the peer.
    return {
      ok: true,
      credential:
        proofs.length > 0
          ? `cert:${proofs.join(',')}`
          : `cert:sha256=${certificate.fingerprint256}`,
    };
  }
}

/** Node's getPeerCertificate() gives `{}` when the peer sent no certificate. */
function hasCertificate(certificate: PeerCertificate | undefined): certificate is PeerCertificate {
  return certificate !== undefined && Object.keys(certificate).length > 0;
}

/**
 * Splits Node's `subjectaltname` string: `TYPE:value` entries joined by ", ". Since the fix for
 * CVE-2021-44532 Node writes a value holding a comma, a quote or a control character as a JSON
 * string (`URI:"a\u002c b"`), so a crafted value cannot pose as a second entry. Undefined when the
 * text does not follow that form.
 */
export function parseSubjectAltNames(
  text: string,
): Array<[type: string, value: string]> | undefined {
  const names: Array<[string, string]> = [];
  let at = 0;
  while (at < text.length) {
    const colon = text.indexOf(':', at);
    if (colon < 0) return undefined;
    const type = text.slice(at, colon);
    let end: number;
    let value: string;
    if (text[colon + 1] === '"') {
      end = colon + 2;
      while (end < text.length && text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      if (end >= text.length) return undefined;
      end += 1;
      try {
        value = JSON.parse(text.slice(colon + 1, end)) as string;
      } catch {
        return undefined;
      }
    } else {
      const comma = text.indexOf(',', colon + 1);
      end = comma < 0 ? text.length : comma;
      value = text.slice(colon + 1, end);
    }
    names.push([type, value]);
    if (end === text.length) break;
    if (!text.startsWith(', ', end) || end + 2 === text.length) return undefined;
    at = end + 2;
  }
  return names;
}
