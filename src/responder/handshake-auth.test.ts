import assert from 'node:assert/strict';
import crypto, { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, mock } from 'node:test';
import type { PeerCertificate } from 'node:tls';
import {
  base64url,
  exportJWK,
  generateKeyPair,
  generateSecret,
  SignJWT,
  type CryptoKey,
  type JWK,
  type JWTPayload,
} from 'jose';
import { pino } from 'pino';
import { responderSchema, type ResponderConfigInput } from '../config/schema.ts';
import { buildHandshakeRequest, type Identity } from '../protocol/handshake.ts';
import { RequestHeadParser, type RequestHead } from '../protocol/http1-head.ts';
import { isRevtunError } from '../shared/errors.ts';
import { silentLogger } from '../shared/logger.ts';
import {
  createHandshakeAuthenticator,
  maxCredentialLength,
  parseSubjectAltNames,
  type AuthOutcome,
  type HandshakeAuthenticator,
} from './handshake-auth.ts';

type AuthInput = NonNullable<ResponderConfigInput['tunnel_listener']['auth']>;

const issuer = 'https://issuer.example.com';
const n1: Identity = { nodeId: 'n1', clusterId: 'c1', tenantId: 't1' };
const n2: Identity = { nodeId: 'n2', clusterId: 'c1', tenantId: 't1' };

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'revtun-handshake-auth-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Parses `auth` the way a config file is parsed, so defaults (token header, skew) are the real ones. */
function parseAuth(auth: AuthInput) {
  const config = responderSchema.parse({
    tunnel_listener: {
      address: '127.0.0.1:0',
      auth,
      tls: { cert_file: 'cert.pem', key_file: 'key.pem', client_ca_file: 'ca.pem' },
    },
    egress_listeners: [{ address: '127.0.0.1:0' }],
  });
  return config.tunnel_listener.auth;
}

async function authenticator(auth: AuthInput): Promise<HandshakeAuthenticator> {
  const created = await createHandshakeAuthenticator(parseAuth(auth), { logger: silentLogger });
  assert.ok(created);
  return created;
}

/** A handshake head as a real initiator sends it and the responder's parser reads it. */
function head(identity: Identity, headers: Array<[string, string]> = []): RequestHead {
  const bytes = buildHandshakeRequest({ identity, host: '127.0.0.1:9000', extraHeaders: headers });
  // The largest max_handshake_bytes, so that over-long tokens reach the authenticator.
  const result = new RequestHeadParser({ maxHeadBytes: 65_536, maxHeaders: 100 }).push(bytes);
  assert.equal(result.state, 'complete');
  return result.head;
}

let jwksCount = 0;
async function writeJwks(keys: unknown[]): Promise<string> {
  const file = join(dir, `jwks-${jwksCount++}.json`);
  await writeFile(file, JSON.stringify({ keys }));
  return file;
}

interface SigningKey {
  readonly alg: string;
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly jwk: JWK;
}

async function signingKey(alg: string, kid = `${alg}-key`): Promise<SigningKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg);
  return { alg, kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

const now = () => Math.floor(Date.now() / 1000);

/**
 * A token from `key`: issuer, audience revtun, sub n1, exp in 5 minutes, unless overridden; a claim
 * set to undefined is left out.
 */
async function sign(
  key: SigningKey,
  claims: Record<string, unknown> = {},
  options: { kid?: boolean } = {},
): Promise<string> {
  const payload: JWTPayload = {
    iss: issuer,
    aud: 'revtun',
    sub: 'n1',
    exp: now() + 300,
    ...claims,
  };
  const header = options.kid === false ? { alg: key.alg } : { alg: key.alg, kid: key.kid };
  return new SignJWT(payload).setProtectedHeader(header).sign(key.privateKey);
}

const bearer = (token: string): Array<[string, string]> => [['authorization', `Bearer ${token}`]];

function assertDenied(outcome: AuthOutcome, status: number, body: string, counter: string): void {
  assert.equal(outcome.ok, false, 'expected a rejection');
  if (outcome.ok) return;
  assert.equal(outcome.rejection.status, status, outcome.reason);
  assert.equal(outcome.rejection.body, body);
  assert.equal(outcome.rejection.counter, counter);
}

const assertJwtDenied = (outcome: AuthOutcome) =>
  assertDenied(outcome, 401, 'JWT authentication failed', 'jwt_denied');
const assertTokenDenied = (outcome: AuthOutcome) =>
  assertDenied(outcome, 401, 'Reverse tunnel authentication failed', 'auth_denied');
const assertBindingFailed = (outcome: AuthOutcome) =>
  assertDenied(outcome, 403, 'validation_failed', 'validation_failed');

function assertAccepted(outcome: AuthOutcome, credential: string): void {
  assert.deepEqual(outcome.ok ? outcome : outcome.reason, { ok: true, credential });
}

async function assertConfigError(promise: Promise<unknown>, ...fragments: string[]) {
  await assert.rejects(promise, (error) => {
    assert.ok(isRevtunError(error, 'ERR_CONFIG_INVALID'), String(error));
    for (const fragment of fragments) assert.ok(error.message.includes(fragment), error.message);
    return true;
  });
}

describe('createHandshakeAuthenticator', () => {
  it('returns undefined when no auth is configured', async () => {
    assert.equal(
      await createHandshakeAuthenticator(undefined, { logger: silentLogger }),
      undefined,
    );
  });

  it('refuses an auth block that names no method, which would let everyone in', async () => {
    await assertConfigError(authenticator({}), 'tunnel_listener.auth');
  });

  it('refuses jwt and tokens that both read the authorization header', async () => {
    const key = await signingKey('ES256');
    const jwks_file = await writeJwks([key.jwk]);
    await assertConfigError(
      authenticator({
        jwt: { issuer, jwks_file },
        tokens: [{ node_id: 'n1', sha256: sha256('secret') }],
      }),
      'token_header',
    );
  });

  it('lists its methods in the order they are checked', async () => {
    const key = await signingKey('ES256');
    const auth = await authenticator({
      tokens: [{ node_id: 'n1', sha256: sha256('secret') }],
      jwt: { issuer, jwks_file: await writeJwks([key.jwk]), token_header: 'x-tunnel-token' },
      client_certificate: { dns_san: 'node_id' },
    });
    assert.deepEqual(auth.methods, ['client_certificate', 'jwt', 'tokens']);
  });
});

describe('a bad JWKS file stops the start, naming the file', () => {
  const start = (jwks_file: string) => authenticator({ jwt: { issuer, jwks_file } });

  it('when it cannot be read', async () => {
    const file = join(dir, 'absent.json');
    await assertConfigError(start(file), 'jwt.jwks_file', file, 'cannot be read', 'ENOENT');
  });

  it('when it is not JSON', async () => {
    const file = join(dir, 'not-json.json');
    await writeFile(file, '{"keys": [');
    await assertConfigError(start(file), file, 'not JSON');
  });

  it('when it is not a key set', async () => {
    const file = join(dir, 'not-a-set.json');
    await writeFile(file, '[{"kty": "EC"}]');
    await assertConfigError(start(file), file, 'JSON Web Key Set');
  });

  it('when a key is symmetric (an HMAC secret)', async () => {
    const secret = await exportJWK(await generateSecret('HS256', { extractable: true }));
    const file = await writeJwks([{ ...secret, kid: 'hmac' }]);
    await assertConfigError(start(file), file, 'kid "hmac"', 'symmetric');
  });

  it('when a key holds private material', async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const file = await writeJwks([await exportJWK(privateKey)]);
    await assertConfigError(start(file), file, 'key 0', 'private');
  });

  it('when a key is malformed', async () => {
    const file = await writeJwks([{ kty: 'EC', crv: 'P-256', x: 'AAAA', y: 'AAAA' }]);
    await assertConfigError(start(file), file, 'not a valid public key');
  });

  it('when no key can verify RS256, ES256 or EdDSA, after warning about each', async () => {
    const rsa1024 = crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey;
    const p384 = await signingKey('ES384');
    const file = await writeJwks([rsa1024.export({ format: 'jwk' }), p384.jwk]);
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) });
    await assertConfigError(
      createHandshakeAuthenticator(parseAuth({ jwt: { issuer, jwks_file: file } }), { logger }),
      file,
      'holds no',
    );
    assert.equal(lines.length, 2);
    assert.match(lines[0] ?? '', /shorter than 2048 bits/);
    assert.match(lines[1] ?? '', /alg \\"ES384\\"/);
  });

  it('but a usable key beside unusable ones is enough', async () => {
    const good = await signingKey('ES256');
    const p384 = await signingKey('ES384');
    const auth = await start(await writeJwks([p384.jwk, good.jwk]));
    assertAccepted(
      await auth.authenticate({ head: head(n1, bearer(await sign(good))), identity: n1 }),
      `jwt:${issuer}:n1`,
    );
  });
});

describe('JWT authentication (Envoy jwt_validator)', () => {
  let key: SigningKey;
  let jwksFile: string;
  let auth: HandshakeAuthenticator;

  before(async () => {
    key = await signingKey('ES256');
    jwksFile = await writeJwks([key.jwk]);
    auth = await authenticator({ jwt: { issuer, audiences: ['revtun'], jwks_file: jwksFile } });
  });

  const check = (token: string | undefined, identity = n1, via = auth) =>
    via.authenticate({ head: head(identity, token === undefined ? [] : bearer(token)), identity });

  it('accepts a valid token and names the credential by issuer and subject', async () => {
    assertAccepted(await check(await sign(key)), `jwt:${issuer}:n1`);
  });

  for (const alg of ['RS256', 'EdDSA', 'Ed25519']) {
    it(`accepts ${alg} keys`, async () => {
      const other = await signingKey(alg);
      const via = await authenticator({ jwt: { issuer, jwks_file: await writeJwks([other.jwk]) } });
      assertAccepted(await check(await sign(other), n1, via), `jwt:${issuer}:n1`);
    });
  }

  it('refuses a handshake without a token', async () => {
    assertJwtDenied(await check(undefined));
  });

  it('refuses an empty bearer token', async () => {
    assertJwtDenied(await check(''));
  });

  it('refuses a token repeated in two headers, even if both are valid', async () => {
    const token = await sign(key);
    const identity = n1;
    const outcome = await auth.authenticate({
      head: head(identity, [...bearer(token), ...bearer(token)]),
      identity,
    });
    assertJwtDenied(outcome);
  });

  it('refuses a token that expired longer ago than the clock skew (60 s by default)', async () => {
    assertJwtDenied(await check(await sign(key, { exp: now() - 90 })));
  });

  it('accepts a token that expired within the clock skew', async () => {
    assertAccepted(await check(await sign(key, { exp: now() - 30 })), `jwt:${issuer}:n1`);
  });

  it('honours a configured clock skew', async () => {
    const strict = await authenticator({ jwt: { issuer, jwks_file: jwksFile, clock_skew: '0s' } });
    assertJwtDenied(await check(await sign(key, { exp: now() - 5 }), n1, strict));
  });

  it('refuses a token that is not yet valid beyond the skew', async () => {
    assertJwtDenied(await check(await sign(key, { nbf: now() + 120 })));
  });

  it('refuses a token without exp', async () => {
    const token = await new SignJWT({ iss: issuer, aud: 'revtun', sub: 'n1' })
      .setProtectedHeader({ alg: key.alg, kid: key.kid })
      .sign(key.privateKey);
    assertJwtDenied(await check(token));
  });

  it('refuses a token from another issuer, or with none', async () => {
    assertJwtDenied(await check(await sign(key, { iss: 'https://other.example.com' })));
    assertJwtDenied(await check(await sign(key, { iss: undefined })));
  });

  it('refuses a token for another audience, or with none', async () => {
    assertJwtDenied(await check(await sign(key, { aud: 'someone-else' })));
    assertJwtDenied(await check(await sign(key, { aud: undefined })));
  });

  it('accepts a token for any one of the configured audiences', async () => {
    const via = await authenticator({
      jwt: { issuer, audiences: ['a', 'b'], jwks_file: jwksFile },
    });
    assertAccepted(await check(await sign(key, { aud: ['x', 'b'] }), n1, via), `jwt:${issuer}:n1`);
    assertJwtDenied(await check(await sign(key, { aud: 'revtun' }), n1, via));
  });

  it('refuses an unsigned token (alg: none)', async () => {
    const part = (value: object) => base64url.encode(JSON.stringify(value));
    const payload: JWTPayload = { iss: issuer, aud: 'revtun', sub: 'n1', exp: now() + 300 };
    const token = `${part({ alg: 'none', kid: key.kid })}.${part(payload)}.`;
    const outcome = await check(token);
    assertJwtDenied(outcome);
    assert.match(outcome.ok ? '' : outcome.reason, /alg/i);
  });

  it('refuses an HMAC token, even one keyed with the public key text', async () => {
    const secret = new TextEncoder().encode(JSON.stringify(key.jwk));
    const token = await new SignJWT({ iss: issuer, aud: 'revtun', sub: 'n1', exp: now() + 300 })
      .setProtectedHeader({ alg: 'HS256', kid: key.kid })
      .sign(secret);
    assertJwtDenied(await check(token));
  });

  it('refuses a token signed by another key under the same kid', async () => {
    const impostor = { ...(await signingKey('ES256')), kid: key.kid };
    assertJwtDenied(await check(await sign(impostor)));
  });

  it('refuses a tampered token', async () => {
    const [header, , signature] = (await sign(key)).split('.');
    const payload = base64url.encode(JSON.stringify({ iss: issuer, aud: 'revtun', sub: 'n2' }));
    assertJwtDenied(await check(`${header}.${payload}.${signature}`));
  });

  it(`refuses a token longer than ${maxCredentialLength} characters before verifying it`, async () => {
    const outcome = await check(await sign(key, { pad: 'x'.repeat(maxCredentialLength) }));
    assertJwtDenied(outcome);
    assert.match(outcome.ok ? '' : outcome.reason, /longer than/);
  });

  it('tries every key for a token without kid', async () => {
    const second = await signingKey('ES256', 'second');
    const via = await authenticator({
      jwt: { issuer, jwks_file: await writeJwks([key.jwk, second.jwk]) },
    });
    assertAccepted(
      await check(await sign(second, {}, { kid: false }), n1, via),
      `jwt:${issuer}:n1`,
    );
    const stranger = await signingKey('ES256', 'stranger');
    assertJwtDenied(await check(await sign(stranger, {}, { kid: false }), n1, via));
    assertJwtDenied(await check(await sign(second, { exp: now() - 600 }, { kid: false }), n1, via));
  });

  it('reads another header when configured, with or without "Bearer "', async () => {
    const via = await authenticator({
      jwt: { issuer, jwks_file: jwksFile, token_header: 'x-tunnel-token' },
    });
    const token = await sign(key);
    for (const value of [token, `Bearer ${token}`, `bearer ${token}`]) {
      const outcome = await via.authenticate({
        head: head(n1, [['x-tunnel-token', value]]),
        identity: n1,
      });
      assertAccepted(outcome, `jwt:${issuer}:n1`);
    }
    assertJwtDenied(await check(token, n1, via));
  });

  it('names a token without sub by its issuer alone', async () => {
    assertAccepted(await check(await sign(key, { sub: undefined })), `jwt:${issuer}`);
  });

  describe('binding the claimed ids to claims', () => {
    let bound: HandshakeAuthenticator;
    before(async () => {
      bound = await authenticator({
        jwt: {
          issuer,
          jwks_file: jwksFile,
          claims: {
            node_id: 'sub',
            cluster_id: 'cluster',
            tenant_id: 'https://example.com/tenant',
          },
        },
      });
    });
    const claims = { sub: 'n1', cluster: 'c1', 'https://example.com/tenant': 't1' };

    it('accepts a token whose claims equal the claimed ids', async () => {
      assertAccepted(await check(await sign(key, claims), n1, bound), `jwt:${issuer}:n1`);
    });

    it('answers 403 when a claim differs from the claimed id', async () => {
      assertBindingFailed(await check(await sign(key, claims), n2, bound));
      assertBindingFailed(await check(await sign(key, { ...claims, cluster: 'c2' }), n1, bound));
    });

    it('answers 403 when a bound claim is missing or not a string', async () => {
      assertBindingFailed(
        await check(await sign(key, { ...claims, cluster: undefined }), n1, bound),
      );
      assertBindingFailed(await check(await sign(key, { ...claims, cluster: ['c1'] }), n1, bound));
    });

    it('still answers 401, not 403, to a bad token that names other ids', async () => {
      assertJwtDenied(await check(await sign(key, { ...claims, exp: now() - 600 }), n2, bound));
    });
  });
});

describe('static token authentication', () => {
  const tokens = [
    { node_id: 'n1', sha256: sha256('n1-secret') },
    { node_id: 'n2', sha256: sha256('n2-secret') },
  ];
  let auth: HandshakeAuthenticator;
  before(async () => {
    auth = await authenticator({ tokens });
  });

  const check = (identity: Identity, headers: Array<[string, string]>, via = auth) =>
    via.authenticate({ head: head(identity, headers), identity });

  it("accepts the node's own token and names the credential by node", async () => {
    assertAccepted(await check(n1, bearer('n1-secret')), 'token:n1');
    assertAccepted(await check(n2, [['Authorization', 'bearer n2-secret']]), 'token:n2');
  });

  it("refuses another node's token", async () => {
    assertTokenDenied(await check(n1, bearer('n2-secret')));
  });

  it('refuses a wrong token', async () => {
    assertTokenDenied(await check(n1, bearer('n1-secreT')));
  });

  it('answers an unknown node id exactly as a wrong token', async () => {
    const unknown: Identity = { ...n1, nodeId: 'n9' };
    const wrong = await check(n1, bearer('guess'));
    const stranger = await check(unknown, bearer('guess'));
    assert.ok(!wrong.ok && !stranger.ok);
    assert.deepEqual(stranger.rejection, wrong.rejection);
    assertTokenDenied(stranger);
  });

  it('refuses a missing, empty, repeated or non-Bearer authorization', async () => {
    assertTokenDenied(await check(n1, []));
    assertTokenDenied(await check(n1, [['authorization', 'Bearer']]));
    assertTokenDenied(await check(n1, [...bearer('n1-secret'), ...bearer('n1-secret')]));
    assertTokenDenied(await check(n1, [['authorization', 'Basic bjE6bjEtc2VjcmV0']]));
    assertTokenDenied(await check(n1, [['authorization', 'n1-secret']]));
  });

  it('accepts either of two tokens for one node, for rotation', async () => {
    const via = await authenticator({
      tokens: [...tokens, { node_id: 'n1', sha256: sha256('n1-next') }],
    });
    assertAccepted(await check(n1, bearer('n1-secret'), via), 'token:n1');
    assertAccepted(await check(n1, bearer('n1-next'), via), 'token:n1');
    assertTokenDenied(await check(n2, bearer('n1-next'), via));
  });

  describe('timing', () => {
    // Not a stopwatch test: it checks the property that makes timing uninformative, that an
    // unknown node id takes the same constant-time comparisons as a known one with a bad secret.
    // It fails if the unknown-id path returns early, or compares with `===` or Buffer.equals.
    const comparisons = async (identity: Identity, token: string, via = auth) => {
      const spy = mock.method(crypto, 'timingSafeEqual');
      try {
        await check(identity, bearer(token), via);
        return spy.mock.calls.map((call) =>
          call.arguments.map((buffer) => (buffer as Buffer).length),
        );
      } finally {
        spy.mock.restore();
      }
    };

    it('compares an unknown node id in constant time, as often as a known one', async () => {
      const unknown: Identity = { ...n1, nodeId: 'n9' };
      assert.deepEqual(await comparisons(unknown, 'guess'), [[32, 32]]);
      assert.deepEqual(await comparisons(n1, 'guess'), [[32, 32]]);
      assert.deepEqual(await comparisons(n1, 'n1-secret'), [[32, 32]]);
    });

    it('makes as many comparisons for every node id as the node with most tokens has', async () => {
      const via = await authenticator({
        tokens: [...tokens, { node_id: 'n1', sha256: sha256('n1-next') }],
      });
      const unknown: Identity = { ...n1, nodeId: 'n9' };
      for (const identity of [unknown, n1, n2]) {
        assert.equal((await comparisons(identity, 'guess', via)).length, 2, identity.nodeId);
      }
    });

    it(`hashes nothing longer than ${maxCredentialLength} characters`, async () => {
      const spy = mock.method(crypto, 'createHash');
      try {
        assertTokenDenied(await check(n1, bearer('x'.repeat(maxCredentialLength + 1))));
        assert.equal(spy.mock.callCount(), 0);
      } finally {
        spy.mock.restore();
      }
    });
  });
});

/** A TLS peer certificate as tlsSocket.getPeerCertificate() returns it, with only what is read. */
function certificate(fields: { subjectaltname?: string; CN?: string | string[] }): PeerCertificate {
  const subject = fields.CN === undefined ? {} : { CN: fields.CN };
  return {
    subject,
    ...(fields.subjectaltname !== undefined && { subjectaltname: fields.subjectaltname }),
    fingerprint256: 'AB:CD',
    raw: Buffer.from('not really DER'),
  } as unknown as PeerCertificate;
}

describe('client certificate binding', () => {
  const check = (via: HandshakeAuthenticator, identity: Identity, peer?: PeerCertificate) =>
    via.authenticate({ head: head(identity), identity, peerCertificate: peer });

  describe('uri_san', () => {
    let auth: HandshakeAuthenticator;
    before(async () => {
      auth = await authenticator({
        client_certificate: { uri_san: 'spiffe://{tenant_id}/{cluster_id}/{node_id}' },
      });
    });

    it('accepts a certificate with the URI SAN the template makes of the claimed ids', async () => {
      const peer = certificate({ subjectaltname: 'DNS:other, URI:spiffe://t1/c1/n1' });
      assertAccepted(await check(auth, n1, peer), 'cert:uri=spiffe://t1/c1/n1');
    });

    it('answers 403 when no URI SAN matches', async () => {
      const peer = certificate({ subjectaltname: 'URI:spiffe://t1/c1/n1' });
      assertBindingFailed(await check(auth, n2, peer));
      assertBindingFailed(await check(auth, { ...n1, tenantId: 't2' }, peer));
      // A DNS SAN with the same text is not a URI SAN.
      assertBindingFailed(
        await check(auth, n1, certificate({ subjectaltname: 'DNS:spiffe://t1/c1/n1' })),
      );
      assertBindingFailed(await check(auth, n1, certificate({})));
    });

    it('is not fooled by a SAN value that poses as a second entry', async () => {
      // Node quotes a SAN holding a comma (CVE-2021-44532); the fixture has
      // URI "spiffe://x, URI:spiffe://t1/c1/n2" besides URI spiffe://t1/c1/n1.
      const pem = await readFile(
        new URL('../../test/fixtures/auth/crafted-san.pem', import.meta.url),
      );
      const x509 = new X509Certificate(pem);
      const peer = certificate({ subjectaltname: x509.subjectAltName ?? '', CN: 'n1' });
      assertAccepted(await check(auth, n1, peer), 'cert:uri=spiffe://t1/c1/n1');
      assertBindingFailed(await check(auth, n2, peer));
    });

    it('refuses a template with an unknown placeholder at start', async () => {
      await assertConfigError(
        authenticator({ client_certificate: { uri_san: 'spiffe://{tenant}/{node_id}' } }),
        'uri_san',
        '{tenant}',
      );
    });
  });

  describe('dns_san and common_name', () => {
    it('dns_san: accepts a DNS SAN equal to the node id, exactly', async () => {
      const auth = await authenticator({ client_certificate: { dns_san: 'node_id' } });
      const peer = certificate({ subjectaltname: 'DNS:n0, DNS:n1', CN: 'n2' });
      assertAccepted(await check(auth, n1, peer), 'cert:dns=n1');
      assertBindingFailed(await check(auth, n2, peer));
      assertBindingFailed(await check(auth, n1, certificate({ subjectaltname: 'DNS:N1' })));
      assertBindingFailed(await check(auth, n1, certificate({ subjectaltname: 'DNS:*' })));
      assertBindingFailed(await check(auth, n1, certificate({ subjectaltname: 'URI:n1' })));
    });

    it('common_name: accepts a subject CN equal to the node id', async () => {
      const auth = await authenticator({ client_certificate: { common_name: 'node_id' } });
      assertAccepted(await check(auth, n1, certificate({ CN: 'n1' })), 'cert:cn=n1');
      assertBindingFailed(
        await check(auth, n2, certificate({ CN: 'n1', subjectaltname: 'DNS:n2' })),
      );
      assertBindingFailed(await check(auth, n1, certificate({})));
      // Several CNs are ambiguous.
      assertBindingFailed(await check(auth, n1, certificate({ CN: ['n1', 'n2'] })));
    });

    it('all three at once must all match', async () => {
      const auth = await authenticator({
        client_certificate: {
          uri_san: 'spiffe://{tenant_id}/{node_id}',
          dns_san: 'node_id',
          common_name: 'node_id',
        },
      });
      const full = { subjectaltname: 'URI:spiffe://t1/n1, DNS:n1', CN: 'n1' };
      assertAccepted(
        await check(auth, n1, certificate(full)),
        'cert:uri=spiffe://t1/n1,dns=n1,cn=n1',
      );
      assertBindingFailed(await check(auth, n1, certificate({ ...full, CN: 'n2' })));
      assertBindingFailed(
        await check(auth, n1, certificate({ ...full, subjectaltname: 'DNS:n1' })),
      );
    });
  });

  it('answers 401 when the peer sent no certificate', async () => {
    const auth = await authenticator({ client_certificate: { dns_san: 'node_id' } });
    for (const peer of [undefined, {} as PeerCertificate]) {
      assertDenied(
        await check(auth, n1, peer),
        401,
        'Reverse tunnel authentication failed',
        'auth_denied',
      );
    }
  });

  it('names a certificate that binds nothing by its fingerprint', async () => {
    const auth = await authenticator({ client_certificate: {} });
    assertAccepted(await check(auth, n1, certificate({ CN: 'anyone' })), 'cert:sha256=AB:CD');
  });
});

describe('several methods at once', () => {
  let key: SigningKey;
  let auth: HandshakeAuthenticator;
  const peer = certificate({ subjectaltname: 'URI:spiffe://t1/c1/n1' });
  const token = (value: string): [string, string] => ['x-tunnel-token', value];

  before(async () => {
    key = await signingKey('ES256');
    auth = await authenticator({
      jwt: {
        issuer,
        jwks_file: await writeJwks([key.jwk]),
        token_header: 'x-tunnel-token',
        claims: { node_id: 'sub' },
      },
      tokens: [{ node_id: 'n1', sha256: sha256('n1-secret') }],
      client_certificate: { uri_san: 'spiffe://{tenant_id}/{cluster_id}/{node_id}' },
    });
  });

  const check = (identity: Identity, headers: Array<[string, string]>, cert?: PeerCertificate) =>
    auth.authenticate({ head: head(identity, headers), identity, peerCertificate: cert });

  it('accepts a handshake that passes every method and names every credential', async () => {
    const outcome = await check(n1, [token(await sign(key)), ...bearer('n1-secret')], peer);
    assertAccepted(outcome, `cert:uri=spiffe://t1/c1/n1 jwt:${issuer}:n1 token:n1`);
  });

  it('refuses a handshake that misses any one credential', async () => {
    const jwt = token(await sign(key));
    assertTokenDenied(await check(n1, [jwt, ...bearer('n1-secret')]));
    assertJwtDenied(await check(n1, bearer('n1-secret'), peer));
    assertTokenDenied(await check(n1, [jwt], peer));
    assertTokenDenied(await check(n1, [jwt, ...bearer('wrong')], peer));
  });

  it('checks every credential before any binding: 401 beats 403', async () => {
    const otherCert = certificate({ subjectaltname: 'URI:spiffe://t1/c1/n2' });
    assertJwtDenied(await check(n1, bearer('n1-secret'), otherCert));
  });

  it('answers 403 when good credentials name other ids', async () => {
    const otherCert = certificate({ subjectaltname: 'URI:spiffe://t1/c1/n2' });
    assertBindingFailed(
      await check(n1, [token(await sign(key)), ...bearer('n1-secret')], otherCert),
    );
    const otherSub = token(await sign(key, { sub: 'n2' }));
    assertBindingFailed(await check(n1, [otherSub, ...bearer('n1-secret')], peer));
  });
});

describe('parseSubjectAltNames', () => {
  it("splits Node's subjectaltname, unquoting JSON-quoted values", () => {
    assert.deepEqual(
      parseSubjectAltNames(
        'URI:spiffe://t1/c1/n1, URI:"spiffe://x\\u002c URI:spiffe://t1/c1/n2", IP Address:127.0.0.1',
      ),
      [
        ['URI', 'spiffe://t1/c1/n1'],
        ['URI', 'spiffe://x, URI:spiffe://t1/c1/n2'],
        ['IP Address', '127.0.0.1'],
      ],
    );
    assert.deepEqual(parseSubjectAltNames('DNS:"a\\"b", DNS:c'), [
      ['DNS', 'a"b'],
      ['DNS', 'c'],
    ]);
    assert.deepEqual(parseSubjectAltNames(''), []);
  });

  it('refuses text that does not follow that form', () => {
    for (const text of ['DNS', 'DNS:a,DNS:b', 'DNS:"a', 'DNS:"a"x', 'DNS:"\\q"', 'DNS:a, ']) {
      assert.equal(parseSubjectAltNames(text), undefined, text);
    }
  });
});

function sha256(secret: string): string {
  return crypto.createHash('sha256').update(secret).digest('hex');
}
