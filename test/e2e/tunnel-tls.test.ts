/**
 * TLS on the tunnel (issue 4 §1, §2): the session kept for the whole tunnel, mTLS, SPKI pins,
 * protocol versions, and identities bound to certificates and tokens. Certificates are made fresh
 * for the run (test/helpers/certs.ts).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { InitiatorConfigInput, ResponderConfigInput } from '../../src/config/schema.ts';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import { makeTestPki, type IssuedFiles, type TestPki } from '../helpers/certs.ts';
import { envoyHandshakeRequest } from '../helpers/fake-initiator.ts';
import { request, startNamedService, type TestService } from '../helpers/http.ts';
import { RawPeer } from '../helpers/raw.ts';
import { tunnelsRegistered, waitForEvent } from '../helpers/tunnels.ts';

type TunnelListenerInput = ResponderConfigInput['tunnel_listener'];
type ClusterTls = NonNullable<InitiatorConfigInput['remote_clusters'][number]['tls']>;

let pki: TestPki;
let service: TestService;
const running: Array<{ close(): Promise<void> }> = [];

before(async () => {
  pki = await makeTestPki();
  service = await startNamedService('tls-node');
});

after(async () => {
  for (const item of running.reverse()) await item.close();
  await service.close();
  await pki.remove();
});

const counter = (responder: Responder, name: string) =>
  responder.stats.value(`reverse_tunnel.handshake.${name}`) ?? 0;

async function tlsResponder(
  listener: Partial<TunnelListenerInput> & { tls?: TunnelListenerInput['tls'] } = {},
): Promise<Responder> {
  const responder = await startResponder({
    tunnel_listener: {
      address: '127.0.0.1:0',
      tls: { cert_file: pki.server.certFile, key_file: pki.server.keyFile },
      ...listener,
    },
    egress_listeners: [{ address: '127.0.0.1:0' }],
  });
  running.push(responder);
  return responder;
}

function tlsInitiator(
  responder: Responder | { port: number },
  options: {
    node?: string;
    cluster?: string;
    tenant?: string;
    tls?: ClusterTls | undefined;
    handshake?: InitiatorConfigInput['handshake'];
  } = {},
): Promise<Initiator> {
  const port = 'addresses' in responder ? responder.addresses.tunnel.port : responder.port;
  return startInitiator({
    node_id: options.node ?? 'node-a',
    cluster_id: options.cluster ?? 'cluster-a',
    tenant_id: options.tenant ?? 'tenant-a',
    max_reconnect_backoff: '1s',
    ...(options.handshake === undefined ? {} : { handshake: options.handshake }),
    remote_clusters: [
      {
        name: 'responders',
        hosts: [`127.0.0.1:${port}`],
        tunnels_per_host: 1,
        ...(options.tls === undefined ? {} : { tls: options.tls }),
      },
    ],
    local_routes: [{ prefix: '/', target: service.target }],
  }).then((initiator) => {
    running.push(initiator);
    return initiator;
  });
}

/** Resolves with the first handshake failure reason the initiator reports. */
const firstFailure = (initiator: Initiator) =>
  waitForEvent(initiator, 'handshake_failure').then(([, , reason]) => reason as string);

/** Starts an initiator and waits for its first failure, then stops it. */
async function failureOf(
  responder: Responder | { port: number },
  options: Parameters<typeof tlsInitiator>[1],
): Promise<string> {
  const initiator = await tlsInitiator(responder, options);
  try {
    return await firstFailure(initiator);
  } finally {
    await initiator.close();
  }
}

const trustingCa = (extra: Partial<ClusterTls> = {}): ClusterTls => ({
  ca_file: pki.ca.certFile,
  server_name: 'responder.revtun.test',
  ...extra,
});

const withClientCert = (client: IssuedFiles = pki.client, extra: Partial<ClusterTls> = {}) =>
  trustingCa({ cert_file: client.certFile, key_file: client.keyFile, ...extra });

/** A raw TLS connection to the tunnel listener, trusting the test CA. */
function rawTls(responder: Responder, options: tls.ConnectionOptions = {}): Promise<RawPeer> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port: responder.addresses.tunnel.port,
      ca: pki.ca.cert,
      servername: 'responder.revtun.test',
      ...options,
    });
    socket.once('secureConnect', () => {
      socket.removeListener('error', reject);
      resolve(new RawPeer(socket));
    });
    socket.once('error', reject);
  });
}

describe('a TLS tunnel kept for the whole tunnel', () => {
  it('carries requests over TLS and confirms keep-tls in the 200', async () => {
    const responder = await tlsResponder({ ping_interval: '1s' });
    const registered = tunnelsRegistered(responder, 'node-a');
    const initiator = await tlsInitiator(responder, { tls: trustingCa() });
    await registered;
    const reply = await request(responder.addresses.egress[0]!, '/x', {
      headers: { 'x-node-id': 'node-a' },
    });
    assert.equal(reply.status, 200);
    assert.equal(reply.headers['x-served-by'], 'tls-node');
    await initiator.close();

    const peer = await rawTls(responder);
    peer.write(
      envoyHandshakeRequest(
        { node: 'raw-node', cluster: 'raw-cluster', tenant: 't' },
        { extra: ['x-envoy-reverse-tunnel-keep-tls: true'] },
      ),
    );
    const head = await peer.readUntil('\r\n\r\n');
    assert.equal(
      head,
      'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nx-envoy-reverse-tunnel-keep-tls: true\r\n\r\n',
    );
    // RPING runs inside TLS: the responder's ping arrives through the TLS session.
    assert.equal((await peer.read(5, 3_000)).toString('latin1'), 'RPING');
    peer.destroy();
  });

  it('keeps TLS in Upgrade mode too: the 101 confirms keep-tls', async () => {
    const responder = await tlsResponder({ use_http_upgrade: true });
    const registered = tunnelsRegistered(responder, 'node-a');
    await tlsInitiator(responder, { tls: trustingCa(), handshake: { use_http_upgrade: true } });
    await registered;
    const reply = await request(responder.addresses.egress[0]!, '/', {
      headers: { 'x-node-id': 'node-a' },
    });
    assert.equal(reply.status, 200);
  });

  it('refuses, with a reason, a TLS handshake that does not ask to keep TLS', async () => {
    const responder = await tlsResponder();
    const before = counter(responder, 'parse_error');
    const peer = await rawTls(responder);
    peer.write(envoyHandshakeRequest({ node: 'n', cluster: 'c', tenant: 't' }));
    const head = await peer.readUntil('\r\n\r\n');
    assert.match(head, /^HTTP\/1\.1 400 /);
    await peer.whenClosed();
    assert.equal(counter(responder, 'parse_error'), before + 1);
  });

  it('refuses an initiator whose responder accepts without confirming keep-tls', async () => {
    // An Envoy-like responder: TLS, then the bare 200.
    const server = tls.createServer({ cert: pki.server.cert, key: pki.server.key }, (socket) => {
      socket.on('error', () => {});
      socket.once('data', () => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as { port: number };
      assert.equal(await failureOf({ port }, { tls: trustingCa() }), 'tls_not_kept');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('refuses a responder whose certificate chains to another CA', async () => {
    const responder = await tlsResponder({
      tls: { cert_file: pki.otherServer.certFile, key_file: pki.otherServer.keyFile },
    });
    assert.equal(await failureOf(responder, { tls: trustingCa() }), 'tls_error');
    assert.equal(counter(responder, 'accepted'), 0);
  });

  it('refuses a responder from another CA even with NODE_TLS_REJECT_UNAUTHORIZED=0', async () => {
    const responder = await tlsResponder({
      tls: { cert_file: pki.otherServer.certFile, key_file: pki.otherServer.keyFile },
    });
    process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = '0';
    try {
      assert.equal(await failureOf(responder, { tls: trustingCa() }), 'tls_error');
    } finally {
      delete process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
    }
  });

  it('refuses a responder whose certificate does not name server_name', async () => {
    const responder = await tlsResponder();
    const tls = trustingCa({ server_name: 'elsewhere.revtun.test' });
    assert.equal(await failureOf(responder, { tls }), 'tls_error');
  });

  it('checks SPKI pins: the right pin connects, a wrong one is refused', async () => {
    const responder = await tlsResponder();
    const wrongPin = createHash('sha256').update('not a key').digest('base64');
    assert.equal(
      await failureOf(responder, { tls: trustingCa({ spki_pins: [wrongPin] }) }),
      'tls_pin_mismatch',
    );
    const registered = tunnelsRegistered(responder, 'node-a');
    const initiator = await tlsInitiator(responder, {
      tls: trustingCa({ spki_pins: [wrongPin, pki.server.spkiPin] }),
    });
    await registered;
    await initiator.close();
  });

  it('refuses a TLS 1.1 client, and a TLS 1.2 client when min_version is TLSv1.3', async () => {
    const responder = await tlsResponder();
    const oldClient = rawTls(responder, {
      minVersion: 'TLSv1',
      maxVersion: 'TLSv1.1',
      ciphers: 'DEFAULT@SECLEVEL=0',
    });
    await assert.rejects(oldClient);
    const strict = await tlsResponder({
      tls: {
        cert_file: pki.server.certFile,
        key_file: pki.server.keyFile,
        min_version: 'TLSv1.3',
      },
    });
    await assert.rejects(rawTls(strict, { maxVersion: 'TLSv1.2' }));
    const modern = await rawTls(strict);
    assert.equal(modern.socket instanceof tls.TLSSocket && modern.socket.getProtocol(), 'TLSv1.3');
    modern.destroy();
    // Counted when the TLS handshake fails, before the client reads the alert.
    assert.equal(counter(responder, 'tls_error'), 1);
    assert.equal(counter(strict, 'tls_error'), 1);
  });

  it('refuses a cleartext initiator on a TLS listener', async () => {
    const responder = await tlsResponder();
    assert.equal(await failureOf(responder, { tls: undefined }), 'closed');
    assert.equal(counter(responder, 'tls_error'), 1);
  });
});

describe('mTLS and identities bound to the client certificate', () => {
  const mtls = (auth?: TunnelListenerInput['auth']) =>
    tlsResponder({
      tls: {
        cert_file: pki.server.certFile,
        key_file: pki.server.keyFile,
        client_ca_file: pki.ca.certFile,
      },
      ...(auth === undefined ? {} : { auth }),
    });

  it('brings the tunnel up with a client certificate from the CA', async () => {
    const responder = await mtls();
    const registered = tunnelsRegistered(responder, 'node-a');
    await tlsInitiator(responder, { tls: withClientCert() });
    await registered;
    const reply = await request(responder.addresses.egress[0]!, '/', {
      headers: { 'x-node-id': 'node-a' },
    });
    assert.equal(reply.status, 200);
  });

  it('answers 401 (auth_denied) without a client certificate, or with one from another CA', async () => {
    const responder = await mtls();
    assert.equal(await failureOf(responder, { tls: trustingCa() }), 'http.401');
    assert.equal(counter(responder, 'auth_denied'), 1);
    const foreign = await pki.issueOtherClient('foreign-client', 'node-a', [
      { type: 'url', value: 'spiffe://tenant-a/cluster-a/node-a' },
    ]);
    assert.equal(await failureOf(responder, { tls: withClientCert(foreign) }), 'http.401');
    assert.equal(counter(responder, 'auth_denied'), 2);
  });

  it('binds the ids to the URI SAN: a certificate for other ids gets 403 validation_failed', async () => {
    const responder = await mtls({
      client_certificate: { uri_san: 'spiffe://{tenant_id}/{cluster_id}/{node_id}' },
    });
    const registered = tunnelsRegistered(responder, 'node-a');
    const good = await tlsInitiator(responder, { tls: withClientCert() });
    await registered;
    await good.close();
    assert.equal(await failureOf(responder, { node: 'node-b', tls: withClientCert() }), 'http.403');
    assert.equal(counter(responder, 'validation_failed'), 1);
  });

  it('binds the node id to a DNS SAN', async () => {
    const responder = await mtls({ client_certificate: { dns_san: 'node_id' } });
    const registered = tunnelsRegistered(responder, 'node-a');
    await tlsInitiator(responder, { tls: withClientCert() });
    await registered;
    assert.equal(await failureOf(responder, { node: 'node-z', tls: withClientCert() }), 'http.403');
  });
});

describe('bearer tokens on the handshake', () => {
  const tokenHash = (token: string) => createHash('sha256').update(token).digest('hex');

  it('reads the token file at every dial: a rotated token is sent at the next dial', async () => {
    const file = path.join(pki.dir, 'token');
    await writeFile(file, 'old-secret\n');
    const responder = await tlsResponder({
      auth: { tokens: [{ node_id: 'node-a', sha256: tokenHash('new-secret') }] },
    });
    const initiator = await tlsInitiator(responder, {
      tls: trustingCa(),
      handshake: { bearer_token_file: file },
    });
    assert.equal(await firstFailure(initiator), 'http.401');
    assert.equal(counter(responder, 'auth_denied'), 1);
    const registered = tunnelsRegistered(responder, 'node-a');
    await writeFile(file, 'new-secret\n');
    await registered;
    await initiator.close();
  });

  it('gives an unknown node and a bad secret the same 401 answer', async () => {
    const responder = await tlsResponder({
      auth: { tokens: [{ node_id: 'node-a', sha256: tokenHash('s3cret') }] },
    });
    const answers: string[] = [];
    for (const [node, token] of [
      ['node-a', 'wrong'],
      ['node-unknown', 's3cret'],
    ] as const) {
      const peer = await rawTls(responder);
      peer.write(
        envoyHandshakeRequest(
          { node, cluster: 'cluster-a', tenant: 'tenant-a' },
          {
            extra: ['x-envoy-reverse-tunnel-keep-tls: true', `authorization: Bearer ${token}`],
          },
        ),
      );
      answers.push(await peer.readUntil('\r\n\r\n'));
      peer.destroy();
    }
    assert.match(answers[0]!, /^HTTP\/1\.1 401 Unauthorized\r\n/);
    assert.equal(answers[0], answers[1]);
  });
});

describe('identity conflicts', () => {
  it('refuses a node id held by a different credential (409)', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const jwksFile = path.join(pki.dir, 'jwks.json');
    await writeFile(
      jwksFile,
      JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] }),
    );
    const sign = (subject: string) =>
      new SignJWT({})
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
        .setIssuer('https://issuer.revtun.test')
        .setSubject(subject)
        .setExpirationTime('10m')
        .sign(privateKey);
    const responder = await tlsResponder({
      auth: { jwt: { issuer: 'https://issuer.revtun.test', jwks_file: jwksFile } },
    });
    const handshakeWith = (token: string) => ({
      headers: [{ name: 'authorization', value: `Bearer ${token}` }],
    });
    const registered = tunnelsRegistered(responder, 'node-a');
    await tlsInitiator(responder, {
      tls: trustingCa(),
      handshake: handshakeWith(await sign('principal-1')),
    });
    await registered;
    assert.equal(
      await failureOf(responder, {
        tls: trustingCa(),
        handshake: handshakeWith(await sign('principal-2')),
      }),
      'http.409',
    );
    assert.equal(counter(responder, 'conflict'), 1);
  });

  it('refuses a node id that is a connected cluster id, and the other way round', async () => {
    const responder = await tlsResponder();
    const registered = tunnelsRegistered(responder, 'node-a');
    await tlsInitiator(responder, { tls: trustingCa() });
    await registered;
    assert.equal(
      await failureOf(responder, { node: 'cluster-a', cluster: 'other', tls: trustingCa() }),
      'http.409',
    );
    assert.equal(
      await failureOf(responder, { node: 'node-b', cluster: 'node-a', tls: trustingCa() }),
      'http.409',
    );
  });
});

describe('max_tunnels', () => {
  it('answers 429 with Retry-After once the responder holds max_tunnels', async () => {
    const responder = await tlsResponder({ max_tunnels: 1 });
    const registered = tunnelsRegistered(responder, 'node-a');
    await tlsInitiator(responder, { tls: trustingCa() });
    await registered;
    const peer = await rawTls(responder);
    peer.write(
      envoyHandshakeRequest(
        { node: 'node-b', cluster: 'cluster-b', tenant: 't' },
        { extra: ['x-envoy-reverse-tunnel-keep-tls: true'] },
      ),
    );
    const head = await peer.readUntil('\r\n\r\n');
    assert.match(head, /^HTTP\/1\.1 429 Too Many Requests\r\nretry-after: \d+\r\n/);
    peer.destroy();
  });
});
