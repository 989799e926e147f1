/**
 * The egress listener's defences (issue 4, item 4): callers by bearer token and by client
 * certificate with their allow-lists, header hygiene, HTTPS, and the limits on heads, bodies and
 * slow callers. Everything runs in one process on port 0.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { after, before, describe, it } from 'node:test';
import type { Initiator } from '../../src/initiator/initiator.ts';
import type { Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { makeTestPki, type TestPki } from '../helpers/certs.ts';
import { request, startNamedService, startService, type TestService } from '../helpers/http.ts';
import { RawPeer } from '../helpers/raw.ts';
import { connectedInitiator, responderOnFreePorts, waitForEvent } from '../helpers/tunnels.ts';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
const newToken = () => randomBytes(24).toString('base64url');
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

interface Seen {
  readonly name: string;
  readonly headers: Record<string, string>;
}

/** Resolves with the next event `ms` from now at the latest: a bounded wait, not a sleep. */
function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

describe('callers by bearer token', () => {
  const tokens = {
    ops: newToken(),
    teamA: newToken(),
    clusterTwo: newToken(),
    otherTenant: newToken(),
    ownTenant: newToken(),
  };
  const callers = [
    { name: 'ops', token_sha256: sha256(tokens.ops) },
    { name: 'team-a', token_sha256: sha256(tokens.teamA), allow: { nodes: ['n1'] } },
    { name: 'cluster-two', token_sha256: sha256(tokens.clusterTwo), allow: { clusters: ['c2'] } },
    { name: 'other-tenant', token_sha256: sha256(tokens.otherTenant), allow: { tenants: ['t9'] } },
    { name: 'own-tenant', token_sha256: sha256(tokens.ownTenant), allow: { tenants: ['t1'] } },
  ];
  let responder: Responder;
  const services: TestService[] = [];
  const initiators: Initiator[] = [];
  /** Listener 0 refuses with 403, listener 1 with 404. */
  const egress = (index: 0 | 1): HostPort => responder.addresses.egress[index]!;

  before(async () => {
    responder = await responderOnFreePorts({
      egress_listeners: [
        { address: '127.0.0.1:0', callers },
        {
          address: '127.0.0.1:0',
          stat_prefix: 'egress_404',
          callers,
          refused_status: 404,
          routes: [{ prefix: '/app' }],
        },
      ],
    });
    // n1 and n3 in cluster c1, n2 in c2; every node in tenant t1.
    for (const [node, cluster] of [
      ['n1', 'c1'],
      ['n2', 'c2'],
      ['n3', 'c1'],
    ] as const) {
      const service = await startNamedService(node);
      services.push(service);
      initiators.push(
        await connectedInitiator(responder, {
          node,
          cluster,
          routes: [{ prefix: '/', target: service.target }],
        }),
      );
    }
  });

  after(async () => {
    for (const initiator of initiators) await initiator.close();
    await responder.close();
    for (const service of services) await service.close();
  });

  it('lets a caller with a good token through, and the service never sees the token', async () => {
    const reply = await request(egress(0), '/app', {
      headers: { ...bearer(tokens.ops), 'x-node-id': 'n2' },
    });
    assert.equal(reply.status, 200);
    const seen = JSON.parse(reply.text) as Seen;
    assert.equal(seen.name, 'n2');
    assert.equal(seen.headers['authorization'], undefined);
  });

  it('answers 401 with a Bearer challenge and a reason without credentials', async () => {
    const before = responder.stats.value('http.egress.callers.unauthorized') ?? 0;
    const reply = await request(egress(0), '/app', { headers: { 'x-node-id': 'n1' } });
    assert.equal(reply.status, 401);
    assert.equal(reply.headers['www-authenticate'], 'Bearer');
    assert.equal(reply.text, 'credentials required: send authorization: Bearer <token>\n');
    assert.equal(responder.stats.value('http.egress.callers.unauthorized'), before + 1);
  });

  it('answers 401 invalid_token to a token that names no caller', async () => {
    const reply = await request(egress(0), '/app', {
      headers: { ...bearer(newToken()), 'x-node-id': 'n1' },
    });
    assert.equal(reply.status, 401);
    assert.equal(reply.headers['www-authenticate'], 'Bearer error="invalid_token"');
    assert.equal(reply.text, 'the bearer token names no caller\n');
  });

  it('answers 401 to credentials that are not a bearer token, and to a token sent twice', async () => {
    const basic = await request(egress(0), '/app', {
      headers: {
        authorization: `Basic ${Buffer.from('a:b').toString('base64')}`,
        'x-node-id': 'n1',
      },
    });
    assert.equal(basic.status, 401);
    assert.equal(basic.headers['www-authenticate'], 'Bearer error="invalid_request"');
    assert.match(basic.text, /^authorization is not a bearer token/);
    // Node keeps only the first of two authorization lines in request.headers; the listener looks
    // at every line, so a good token cannot ride next to another one.
    const twice = await rawExchange(egress(0), [
      'GET /app HTTP/1.1',
      'host: egress',
      `authorization: Bearer ${tokens.ops}`,
      `authorization: Bearer ${tokens.teamA}`,
      'x-node-id: n1',
      'connection: close',
    ]);
    assert.match(twice, /^HTTP\/1\.1 401 /);
    assert.match(twice, /more than one authorization header\n$/);
  });

  it('lets a caller reach only the nodes its allow-list names (403 otherwise)', async () => {
    const allowed = await request(egress(0), '/app', {
      headers: { ...bearer(tokens.teamA), 'x-node-id': 'n1' },
    });
    assert.equal(allowed.status, 200);
    const before = responder.stats.value('http.egress.callers.refused') ?? 0;
    const refused = await request(egress(0), '/app', {
      headers: { ...bearer(tokens.teamA), 'x-node-id': 'n2' },
    });
    assert.equal(refused.status, 403);
    assert.equal(refused.text, 'caller team-a may not reach host id n2\n');
    assert.equal(responder.stats.value('http.egress.callers.refused'), before + 1);
  });

  it('sends a cluster request only to the nodes of the cluster that the caller may reach', async () => {
    // c1 holds n1 and n3; team-a may reach n1 only, so round robin never lands on n3.
    const served = new Set<string>();
    for (let i = 0; i < 4; i += 1) {
      const reply = await request(egress(0), '/app', {
        headers: { ...bearer(tokens.teamA), 'x-cluster-id': 'c1' },
      });
      assert.equal(reply.status, 200);
      served.add(reply.headers['x-served-by'] as string);
    }
    assert.deepEqual([...served], ['n1']);
    // ops may reach both, and gets both.
    const both = new Set<string>();
    for (let i = 0; i < 4; i += 1) {
      const reply = await request(egress(0), '/app', {
        headers: { ...bearer(tokens.ops), 'x-cluster-id': 'c1' },
      });
      both.add(reply.headers['x-served-by'] as string);
    }
    assert.deepEqual([...both].sort(), ['n1', 'n3']);
  });

  it('applies a cluster allow-list to the node a request names', async () => {
    const headers = bearer(tokens.clusterTwo);
    assert.equal(
      (await request(egress(0), '/', { headers: { ...headers, 'x-node-id': 'n2' } })).status,
      200,
    );
    assert.equal(
      (await request(egress(0), '/', { headers: { ...headers, 'x-cluster-id': 'c2' } })).status,
      200,
    );
    assert.equal(
      (await request(egress(0), '/', { headers: { ...headers, 'x-node-id': 'n1' } })).status,
      403,
    );
    assert.equal(
      (await request(egress(0), '/', { headers: { ...headers, 'x-cluster-id': 'c1' } })).status,
      403,
    );
  });

  it('applies a tenant allow-list', async () => {
    const other = await request(egress(0), '/', {
      headers: { ...bearer(tokens.otherTenant), 'x-node-id': 'n1' },
    });
    assert.equal(other.status, 403);
    const own = await request(egress(0), '/', {
      headers: { ...bearer(tokens.ownTenant), 'x-node-id': 'n1' },
    });
    assert.equal(own.status, 200);
  });

  it('still says 503 for a node nobody connected when refused_status is 403', async () => {
    const reply = await request(egress(0), '/', {
      headers: { ...bearer(tokens.ops), 'x-node-id': 'n9' },
    });
    assert.equal(reply.status, 503);
  });

  it('with refused_status 404, answers a refused node exactly as a node that does not exist', async () => {
    /** The answer with the host id and the date taken out: what tells one case from another. */
    const answer = async (hostId: string) => {
      const reply = await request(egress(1), '/app', {
        headers: { ...bearer(tokens.teamA), 'x-node-id': hostId },
      });
      const headers = { ...reply.headers };
      delete headers.date;
      return { status: reply.status, headers, text: reply.text.replaceAll(hostId, '<id>') };
    };
    // n2 is connected and team-a may not reach it; n8 is not connected at all.
    const refused = await answer('n2');
    const missing = await answer('n8');
    assert.equal(refused.status, 404);
    assert.equal(refused.text, 'no route for host id <id>\n');
    assert.deepEqual(refused, missing);
    // The same for a cluster the caller may not reach.
    assert.deepEqual(await answer('c2'), missing);
    // And the wording is the listener's own "no route" answer.
    const noRoute = await rawExchange(egress(1), [
      'GET /elsewhere HTTP/1.1',
      'host: egress',
      `authorization: Bearer ${tokens.teamA}`,
      'connection: close',
    ]);
    assert.match(noRoute, /^HTTP\/1\.1 404 [^]*\r\n\r\nno route for path \/elsewhere\n$/);
  });
});

describe('header hygiene', () => {
  let responder: Responder;
  let service: TestService;
  let initiator: Initiator;
  const egress = () => responder.addresses.egress[0]!;

  before(async () => {
    responder = await responderOnFreePorts({
      egress_listeners: [
        {
          address: '127.0.0.1:0',
          tenant_id_headers: ['x-tenant-id'],
          routes: [
            { prefix: '/own', host_id_headers: ['x-route-node'], cluster: 'own' },
            { prefix: '/' },
          ],
        },
      ],
    });
    service = await startNamedService('n1');
    initiator = await connectedInitiator(responder, {
      node: 'n1',
      routes: [{ prefix: '/', target: service.target }],
    });
  });

  after(async () => {
    await initiator.close();
    await responder.close();
    await service.close();
  });

  it('never forwards the routing headers or the tunnel identity headers', async () => {
    const reply = await request(egress(), '/app', {
      headers: {
        'x-node-id': 'n1',
        'x-remote-node-id': 'n1',
        'x-cluster-id': 'c1',
        'x-dst-cluster-uuid': 'c1',
        'x-tenant-id': 't1',
        'x-envoy-reverse-tunnel-node-id': 'spoofed',
        'x-envoy-reverse-tunnel-cluster-id': 'spoofed',
        'x-envoy-reverse-tunnel-tenant-id': 'spoofed',
        'x-other': 'passes',
      },
    });
    assert.equal(reply.status, 200);
    const seen = JSON.parse(reply.text) as Seen;
    assert.equal(seen.headers['x-other'], 'passes');
    for (const name of [
      'x-node-id',
      'x-remote-node-id',
      'x-cluster-id',
      'x-dst-cluster-uuid',
      'x-tenant-id',
      'x-envoy-reverse-tunnel-node-id',
      'x-envoy-reverse-tunnel-cluster-id',
      'x-envoy-reverse-tunnel-tenant-id',
    ]) {
      assert.equal(seen.headers[name], undefined, name);
    }
  });

  it("strips the route's own host id headers, and only the route's", async () => {
    const reply = await request(egress(), '/own', {
      headers: { 'x-route-node': 'n1', 'x-node-id': 'kept' },
    });
    assert.equal(reply.status, 200);
    const seen = JSON.parse(reply.text) as Seen;
    assert.equal(seen.headers['x-route-node'], undefined);
    assert.equal(seen.headers['x-node-id'], 'kept');
  });

  it('answers 400 to a routing header sent on two lines', async () => {
    const reply = await request(egress(), '/app', { headers: { 'x-node-id': ['n1', 'n2'] } });
    assert.equal(reply.status, 400);
    assert.equal(reply.text, 'duplicate routing header x-node-id\n');
  });

  it('answers 400 to a routing header that holds two values joined by a comma', async () => {
    const reply = await request(egress(), '/app', {
      headers: { 'x-cluster-id': 'c1', 'x-node-id': 'n1, n2' },
    });
    assert.equal(reply.status, 400);
    assert.equal(reply.text, 'duplicate routing header x-node-id\n');
  });

  it('answers 400 to a repeated header that would not have routed (x-cluster-id after x-node-id)', async () => {
    const reply = await request(egress(), '/app', {
      headers: { 'x-node-id': 'n1', 'x-cluster-id': ['c1', 'c2'] },
    });
    assert.equal(reply.status, 400);
    assert.equal(reply.text, 'duplicate routing header x-cluster-id\n');
  });

  it('keeps the no-routing-header answer', async () => {
    const reply = await request(egress(), '/app', { headers: { 'x-other': '1' } });
    assert.equal(reply.status, 400);
    assert.match(reply.text, /^no routing header: send one of x-node-id/);
  });
});

describe('the sandbox script: x-computed-host-id', () => {
  let responder: Responder;
  let service: TestService;
  let initiator: Initiator;

  before(async () => {
    responder = await responderOnFreePorts({
      egress_listeners: [
        {
          address: '127.0.0.1:0',
          host_id_headers: ['x-computed-host-id'],
          lua: {
            inline_code: `
              function envoy_on_request(request_handle)
                local headers = request_handle:headers()
                local node = headers:get("x-node-id")
                if node then headers:add("x-computed-host-id", node) end
              end`,
          },
        },
      ],
    });
    service = await startNamedService('n1');
    initiator = await connectedInitiator(responder, {
      node: 'n1',
      routes: [{ prefix: '/', target: service.target }],
    });
  });

  after(async () => {
    await initiator.close();
    await responder.close();
    await service.close();
  });

  it('does not forward the computed host id', async () => {
    const reply = await request(responder.addresses.egress[0]!, '/', {
      headers: { 'x-node-id': 'n1' },
    });
    assert.equal(reply.status, 200);
    assert.equal((JSON.parse(reply.text) as Seen).headers['x-computed-host-id'], undefined);
  });

  it('answers 400 when the caller sends its own x-computed-host-id beside the script', async () => {
    const reply = await request(responder.addresses.egress[0]!, '/', {
      headers: { 'x-node-id': 'n1', 'x-computed-host-id': 'n2' },
    });
    assert.equal(reply.status, 400);
    assert.equal(reply.text, 'duplicate routing header x-computed-host-id\n');
  });
});

describe('callers by client certificate, over HTTPS', () => {
  let pki: TestPki;
  let responder: Responder;
  let service: TestService;
  let initiator: Initiator;
  const token = newToken();
  /** Listener 0: certificate and token callers. Listener 1: certificate callers only. */
  const egress = (index: 0 | 1): HostPort => responder.addresses.egress[index]!;

  before(async () => {
    pki = await makeTestPki();
    const tls = {
      cert_file: pki.server.certFile,
      key_file: pki.server.keyFile,
      client_ca_file: pki.ca.certFile,
    };
    responder = await responderOnFreePorts({
      egress_listeners: [
        {
          address: '127.0.0.1:0',
          tls,
          callers: [
            {
              name: 'node-a-uri',
              client_certificate_san: 'spiffe://tenant-a/cluster-a/node-a',
              allow: { nodes: ['n1'] },
            },
            { name: 'robot', token_sha256: sha256(token) },
          ],
        },
        {
          address: '127.0.0.1:0',
          stat_prefix: 'egress_mtls',
          tls,
          callers: [{ name: 'node-a-dns', client_certificate_san: 'node-a' }],
        },
      ],
    });
    service = await startNamedService('n1');
    initiator = await connectedInitiator(responder, {
      node: 'n1',
      routes: [{ prefix: '/', target: service.target }],
    });
  });

  after(async () => {
    await initiator.close();
    await responder.close();
    await service.close();
    await pki.remove();
  });

  const withClientCertificate = () => ({ cert: pki.client.cert, key: pki.client.key });

  it('authenticates a caller by the URI SAN of its certificate', async () => {
    const reply = await httpsRequest(egress(0), pki, {
      ...withClientCertificate(),
      headers: { 'x-node-id': 'n1' },
    });
    assert.equal(reply.status, 200);
    assert.equal((JSON.parse(reply.text) as Seen).headers['x-node-id'], undefined);
  });

  it("applies the certificate caller's allow-list", async () => {
    const reply = await httpsRequest(egress(0), pki, {
      ...withClientCertificate(),
      headers: { 'x-cluster-id': 'c1' },
    });
    assert.equal(reply.status, 200, 'n1 is c1');
    const refused = await httpsRequest(egress(0), pki, {
      ...withClientCertificate(),
      headers: { 'x-node-id': 'n2' },
    });
    // n2 is not connected: a 403 listener says so.
    assert.equal(refused.status, 503);
  });

  it('lets a client without a certificate finish TLS and authenticate by token, beside certificate callers', async () => {
    const reply = await httpsRequest(egress(0), pki, {
      headers: { ...bearer(token), 'x-node-id': 'n1' },
    });
    assert.equal(reply.status, 200);
    const none = await httpsRequest(egress(0), pki, { headers: { 'x-node-id': 'n1' } });
    assert.equal(none.status, 401);
    assert.equal(none.headers['www-authenticate'], 'Bearer');
  });

  it('does not take a certificate from another CA for an identity', async () => {
    const reply = await httpsRequest(egress(0), pki, {
      cert: pki.otherServer.cert,
      key: pki.otherServer.key,
      headers: { 'x-node-id': 'n1' },
    });
    assert.equal(reply.status, 401);
  });

  it('authenticates by a DNS SAN', async () => {
    const reply = await httpsRequest(egress(1), pki, {
      ...withClientCertificate(),
      headers: { 'x-node-id': 'n1' },
    });
    assert.equal(reply.status, 200);
  });

  it('with certificate callers only, refuses a client without a certificate at the TLS handshake', async () => {
    await assert.rejects(
      httpsRequest(egress(1), pki, { headers: { 'x-node-id': 'n1' } }),
      /certificate|ECONNRESET|socket hang up|alert/i,
    );
  });

  it('answers 401 to a verified certificate that names no caller', async () => {
    // A listener whose only caller wants another SAN: the same client certificate names nobody.
    const other = await responderOnFreePorts({
      egress_listeners: [
        {
          address: '127.0.0.1:0',
          tls: {
            cert_file: pki.server.certFile,
            key_file: pki.server.keyFile,
            client_ca_file: pki.ca.certFile,
          },
          callers: [{ name: 'somebody', client_certificate_san: 'spiffe://tenant-b/x/y' }],
        },
      ],
    });
    try {
      const reply = await httpsRequest(other.addresses.egress[0]!, pki, {
        ...withClientCertificate(),
        headers: { 'x-node-id': 'n1' },
      });
      assert.equal(reply.status, 401);
      assert.equal(reply.text, 'the client certificate names no caller of this listener\n');
    } finally {
      await other.close();
    }
  });

  it('fails to start, naming the file, when a TLS file cannot be read', async () => {
    await assert.rejects(
      responderOnFreePorts({
        egress_listeners: [
          {
            address: '127.0.0.1:0',
            tls: { cert_file: `${pki.dir}/missing.pem`, key_file: pki.server.keyFile },
          },
        ],
      }),
      (error: Error) => {
        assert.match(
          error.message,
          /^cannot read egress_listeners\[0\]\.tls\.cert_file .*missing\.pem: /,
        );
        assert.equal((error as Error & { code?: string }).code, 'ERR_CONFIG_READ');
        return true;
      },
    );
  });

  it('refuses TLS below min_version', async () => {
    await assert.rejects(
      httpsRequest(egress(0), pki, {
        headers: { ...bearer(token), 'x-node-id': 'n1' },
        maxVersion: 'TLSv1.1',
        minVersion: 'TLSv1',
      }),
      /protocol version|unsupported protocol|alert|ECONNRESET|socket hang up/i,
    );
  });
});

describe('limits on the egress listener', () => {
  let responder: Responder;
  const initiators: Initiator[] = [];
  const services: TestService[] = [];
  /** What the upload services saw of each request: 'complete' or 'aborted'. */
  const uploads: Array<{ bytes: number; outcome: 'complete' | 'aborted' }> = [];
  let uploadSeen: () => void = () => {};
  let uploadArrived: () => void = () => {};
  const egress = () => responder.addresses.egress[0]!;
  const maxBodyBytes = 1000;

  before(async () => {
    responder = await responderOnFreePorts({
      egress_listeners: [
        {
          address: '127.0.0.1:0',
          headers_timeout: '1s',
          max_header_bytes: 4096,
          max_body_bytes: maxBodyBytes,
        },
      ],
    });
    /** Reads the whole body before answering (`late`), or answers at once and then reads it. */
    const uploadService = (answerAtOnce: boolean) =>
      startService((req, res) => {
        let bytes = 0;
        if (answerAtOnce) {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write('started');
        }
        req.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          uploadArrived();
        });
        req.on('end', () => {
          uploads.push({ bytes, outcome: 'complete' });
          uploadSeen();
          res.end(`got ${bytes}`);
        });
        req.on('close', () => {
          if (!req.complete) {
            uploads.push({ bytes, outcome: 'aborted' });
            uploadSeen();
          }
        });
      });
    for (const [node, answerAtOnce] of [
      ['late', false],
      ['eager', true],
    ] as const) {
      const service = await uploadService(answerAtOnce);
      services.push(service);
      initiators.push(
        await connectedInitiator(responder, {
          node,
          routes: [{ prefix: '/', target: service.target }],
        }),
      );
    }
  });

  after(async () => {
    for (const initiator of initiators) await initiator.close();
    await responder.close();
    for (const service of services) await service.close();
  });

  /** Resolves at the next upload a service finished or lost, with what it saw. */
  const nextUpload = () =>
    new Promise<(typeof uploads)[number]>((resolve) => {
      uploadSeen = () => resolve(uploads.at(-1)!);
    });
  const nextChunkArrives = () =>
    new Promise<void>((resolve) => {
      uploadArrived = resolve;
    });

  it('answers 431 to a head larger than max_header_bytes, and closes the connection', async () => {
    const peer = await RawPeer.connect(egress());
    peer.write(
      `GET / HTTP/1.1\r\nhost: egress\r\nx-node-id: late\r\nx-big: ${'a'.repeat(5000)}\r\n\r\n`,
    );
    const head = await peer.readUntil('\r\n\r\n');
    assert.match(head, /^HTTP\/1\.1 431 /);
    assert.match(head, /connection: close/i);
    const length = Number(/content-length: (\d+)/i.exec(head)?.[1]);
    assert.equal(
      (await peer.read(length)).toString(),
      'the request head is larger than 4096 bytes (max_header_bytes)\n',
    );
    await peer.whenClosed(2_000);
  });

  it('answers 431 to more header fields than a tunnel stream carries', async () => {
    const headers: Record<string, string> = { 'x-node-id': 'late' };
    for (let i = 0; i < 130; i += 1) headers[`x-h${i}`] = '1';
    const reply = await request(egress(), '/', { headers });
    assert.equal(reply.status, 431);
    assert.match(
      reply.text,
      /^too many header fields: \d+, a tunnel stream carries at most 124\n$/,
    );
  });

  it('answers 413 at once to a declared body larger than max_body_bytes, before any of it is sent', async () => {
    const before = responder.stats.value('cluster.reverse_connection_cluster.upstream_rq_total');
    const peer = await RawPeer.connect(egress());
    // Only the head: the answer must come without the body.
    peer.write(
      `POST / HTTP/1.1\r\nhost: egress\r\nx-node-id: late\r\ncontent-length: ${maxBodyBytes + 1}\r\n\r\n`,
    );
    const head = await peer.readUntil('\r\n\r\n');
    assert.match(head, /^HTTP\/1\.1 413 /);
    assert.match(head, /connection: close/i);
    await peer.whenClosed(2_000);
    assert.equal(
      responder.stats.value('cluster.reverse_connection_cluster.upstream_rq_total'),
      before,
      'the tunnel is not used',
    );
  });

  it('answers 413 to expect: 100-continue without asking for the body', async () => {
    const peer = await RawPeer.connect(egress());
    peer.write(
      `POST / HTTP/1.1\r\nhost: egress\r\nx-node-id: late\r\nexpect: 100-continue\r\ncontent-length: ${maxBodyBytes + 1}\r\n\r\n`,
    );
    const head = await peer.readUntil('\r\n\r\n');
    assert.match(head, /^HTTP\/1\.1 413 /, 'no 100 Continue first');
  });

  it('still asks for the body of an acceptable expect: 100-continue request', async () => {
    const peer = await RawPeer.connect(egress());
    peer.write(
      'POST / HTTP/1.1\r\nhost: egress\r\nx-node-id: late\r\nexpect: 100-continue\r\ncontent-length: 5\r\nconnection: close\r\n\r\n',
    );
    assert.match(await peer.readUntil('\r\n\r\n'), /^HTTP\/1\.1 100 Continue/);
    peer.write('hello');
    const head = await peer.readUntil('\r\n\r\n');
    assert.match(head, /^HTTP\/1\.1 200 /);
    peer.destroy();
  });

  it('lets a body of exactly max_body_bytes through', async () => {
    const reply = await request(egress(), '/', {
      method: 'POST',
      headers: { 'x-node-id': 'late' },
      body: Buffer.alloc(maxBodyBytes, 1),
    });
    assert.deepEqual([reply.status, reply.text], [200, `got ${maxBodyBytes}`]);
  });

  it('cuts a chunked upload that grows past max_body_bytes: 413, and the service sees an aborted request', async () => {
    const outcome = nextUpload();
    const firstChunk = nextChunkArrives();
    const reply = request(egress(), '/', {
      method: 'POST',
      headers: { 'x-node-id': 'late' },
      body: (async function* () {
        yield Buffer.alloc(600, 1);
        // The second chunk goes once the service holds the first: the cut comes mid-upload.
        await firstChunk;
        yield Buffer.alloc(600, 2);
        // Never ends by itself: only the cut ends this upload.
        await new Promise(() => {});
      })(),
    });
    const answer = await reply.catch((error: Error) => error);
    assert.ok(
      !(answer instanceof Error),
      `expected a 413, got ${answer instanceof Error ? answer.message : ''}`,
    );
    assert.equal(answer.status, 413);
    assert.equal(
      answer.text,
      `the request body is larger than ${maxBodyBytes} bytes (max_body_bytes)\n`,
    );
    const seen = await within(5_000, 'the service', outcome);
    assert.equal(seen.outcome, 'aborted');
    assert.ok(seen.bytes <= maxBodyBytes, `the service got ${seen.bytes} bytes`);
  });

  it('aborts the caller when the upload passes max_body_bytes after the response began', async () => {
    const outcome = nextUpload();
    const outgoing = http.request({
      ...egress(),
      method: 'POST',
      path: '/',
      headers: { 'x-node-id': 'eager' },
      agent: false,
    });
    outgoing.on('error', () => {});
    outgoing.write(Buffer.alloc(600, 1));
    // The response has begun at the caller before the upload passes the limit.
    const [response] = await waitForEvent<[http.IncomingMessage]>(outgoing, 'response');
    assert.equal(response.statusCode, 200);
    const ended = new Promise<string>((resolve) => {
      response.on('error', () => resolve('error'));
      response.on('aborted', () => resolve('aborted'));
      response.on('end', () => resolve(response.complete ? 'complete' : 'incomplete'));
    });
    response.resume();
    outgoing.write(Buffer.alloc(600, 2));
    assert.notEqual(await within(5_000, 'the caller', ended), 'complete');
    const seen = await within(5_000, 'the service', outcome);
    assert.equal(seen.outcome, 'aborted');
    outgoing.destroy();
  });

  it('closes a caller that sends its head a byte at a time (headers_timeout 1 s), and serves others meanwhile', async () => {
    const slow = await RawPeer.connect(egress());
    const started = Date.now();
    const head = 'GET / HTTP/1.1\r\nhost: egress\r\nx-node-id: late\r\nx-slow: ' + 'a'.repeat(100);
    let sent = 0;
    // The slow caller's own pace, not a wait in the test: one byte every 200 ms.
    const drip = setInterval(() => {
      if (!slow.closed && sent < head.length) slow.write(head[sent++] as string);
    }, 200);
    try {
      const answer = await slow.readUntil('\r\n\r\n', 4_000);
      assert.match(answer, /^HTTP\/1\.1 408 /);
      await slow.whenClosed(1_000);
      const elapsed = Date.now() - started;
      // 1 s of headers_timeout, found by Node's check that runs every second.
      assert.ok(elapsed >= 900 && elapsed < 3_000, `closed after ${elapsed} ms`);
      assert.ok(sent < head.length, 'the head was not complete');
    } finally {
      clearInterval(drip);
      slow.destroy();
    }
  });

  it('serves a normal request while a slow caller is dripping its head', async () => {
    const slow = await RawPeer.connect(egress());
    const drip = setInterval(() => slow.write('x'), 200);
    slow.write('GET / HTTP/1.1\r\nhost: egress\r\nx-slow: ');
    try {
      const reply = await request(egress(), '/', {
        method: 'POST',
        headers: { 'x-node-id': 'late' },
        body: 'hi',
      });
      assert.deepEqual([reply.status, reply.text], [200, 'got 2']);
      assert.equal(slow.closed, false, 'the slow caller is still being read');
    } finally {
      clearInterval(drip);
      slow.destroy();
    }
  });
});

/** Writes a request head as raw lines and reads until the server closes the connection. */
async function rawExchange(target: HostPort, lines: readonly string[]): Promise<string> {
  const peer = await RawPeer.connect(target);
  peer.write(`${lines.join('\r\n')}\r\n\r\n`);
  await peer.whenClosed();
  return peer.pending.toString('utf8');
}

interface HttpsOptions {
  readonly headers?: http.OutgoingHttpHeaders;
  readonly cert?: string;
  readonly key?: string;
  readonly minVersion?: 'TLSv1' | 'TLSv1.2';
  readonly maxVersion?: 'TLSv1.1' | 'TLSv1.3';
}

/** One HTTPS request to 127.0.0.1 trusting the test CA, with an optional client certificate. */
function httpsRequest(
  target: HostPort,
  pki: TestPki,
  options: HttpsOptions,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const outgoing = https.request(
      {
        host: target.host,
        port: target.port,
        path: '/',
        headers: options.headers,
        ca: pki.ca.cert,
        ...(options.cert === undefined ? {} : { cert: options.cert, key: options.key }),
        ...(options.minVersion === undefined ? {} : { minVersion: options.minVersion }),
        ...(options.maxVersion === undefined ? {} : { maxVersion: options.maxVersion }),
        // An old protocol needs OpenSSL's security level 0 to be offered at all (Node 22+ refuses
        // to send a TLS 1.1 ClientHello otherwise), so that it is the listener that refuses it.
        ...(options.maxVersion === 'TLSv1.1' ? { ciphers: 'DEFAULT@SECLEVEL=0' } : {}),
        agent: false,
        timeout: 5_000,
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('error', reject);
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, headers: response.headers, text }),
        );
      },
    );
    outgoing.on('timeout', () => outgoing.destroy(new Error('no answer in 5 s')));
    outgoing.on('error', reject);
    outgoing.end();
  });
}
