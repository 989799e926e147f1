/**
 * What the local service learns of how a request reached revtun (`forwarded_headers`,
 * docs/egress.md), and HTTP/2 over TLS by ALPN with HTTP/1.1 beside it and the client-certificate
 * callers working for both. A real initiator serves a service that echoes the headers it got.
 */
import assert from 'node:assert/strict';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import type { Initiator } from '../../src/initiator/initiator.ts';
import type { Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { makeTestPki, type TestPki } from '../helpers/certs.ts';
import { connectH2, h2Request } from '../helpers/h2-client.ts';
import { request, startNamedService, type TestService } from '../helpers/http.ts';
import { connectedInitiator, responderOnFreePorts } from '../helpers/tunnels.ts';

interface Seen {
  readonly headers: Record<string, string | undefined>;
}

const seenBy = (text: string): Seen['headers'] => (JSON.parse(text) as Seen).headers;

describe('forwarding headers', () => {
  let responder: Responder;
  let service: TestService;
  let initiator: Initiator;
  /** 0: the defaults. 1: RFC 7239 forwarded, incoming replaced, no via. 2: incoming trusted. */
  const egress = (index: number): HostPort => responder.addresses.egress[index]!;

  before(async () => {
    responder = await responderOnFreePorts({
      egress_listeners: [
        { address: '127.0.0.1:0' },
        {
          address: '127.0.0.1:0',
          stat_prefix: 'egress_rfc7239',
          forwarded_headers: { mode: 'forwarded', via: false, incoming: 'replace' },
        },
        {
          address: '127.0.0.1:0',
          stat_prefix: 'egress_trusting',
          forwarded_headers: { incoming: 'trust' },
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

  it('adds via and x-forwarded-* for an HTTP/1.1 caller, appending to its x-forwarded-for and via', async () => {
    const reply = await request(egress(0), '/', {
      headers: {
        'x-node-id': 'n1',
        host: 'app.example:8443',
        'x-forwarded-for': '203.0.113.9',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'spoofed.example',
        via: '1.1 edge-proxy',
      },
    });
    assert.equal(reply.status, 200);
    const headers = seenBy(reply.text);
    assert.equal(headers['via'], '1.1 edge-proxy, 1.1 revtun');
    assert.equal(headers['x-forwarded-for'], '203.0.113.9, 127.0.0.1');
    assert.equal(headers['x-forwarded-proto'], 'http', "the caller's claim is replaced");
    assert.equal(headers['x-forwarded-host'], 'app.example:8443');
  });

  it('writes via as 2 revtun for an HTTP/2 caller, with its :authority as x-forwarded-host', async () => {
    const session = await connectH2(egress(0));
    try {
      const reply = await h2Request(session, {
        ':path': '/',
        ':authority': 'h2.example',
        'x-node-id': 'n1',
      });
      assert.equal(reply.status, 200);
      const headers = seenBy(reply.text);
      assert.equal(headers['via'], '2 revtun');
      assert.equal(headers['x-forwarded-for'], '127.0.0.1');
      assert.equal(headers['x-forwarded-host'], 'h2.example');
      assert.equal(headers['host'], 'h2.example');
    } finally {
      session.destroy();
    }
  });

  it('streams a 4 MiB upload from an HTTP/2 caller to the local service, under flow control', async () => {
    const session = await connectH2(egress(0));
    try {
      const body = Buffer.alloc(4 * 1024 * 1024, 7);
      const reply = await h2Request(
        session,
        { ':path': '/upload', ':method': 'POST', 'x-node-id': 'n1' },
        { body, timeoutMs: 20_000 },
      );
      assert.equal(reply.status, 200);
      assert.equal((JSON.parse(reply.text) as { bodyLength: number }).bodyLength, body.length);
    } finally {
      session.destroy();
    }
  });

  it('sends one RFC 7239 forwarded element instead, dropping what the caller sent, when so configured', async () => {
    const reply = await request(egress(1), '/', {
      headers: {
        'x-node-id': 'n1',
        host: 'app.example:8443',
        forwarded: 'for=198.51.100.1',
        'x-forwarded-for': '203.0.113.9',
      },
    });
    assert.equal(reply.status, 200);
    const headers = seenBy(reply.text);
    assert.equal(headers['forwarded'], 'for=127.0.0.1;proto=http;host="app.example:8443"');
    assert.equal(headers['x-forwarded-for'], undefined);
    assert.equal(headers['via'], undefined);
  });

  it('keeps a trusted caller’s x-forwarded-proto and -host', async () => {
    const reply = await request(egress(2), '/', {
      headers: {
        'x-node-id': 'n1',
        host: 'inner.example',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'outer.example',
      },
    });
    const headers = seenBy(reply.text);
    assert.equal(headers['x-forwarded-proto'], 'https');
    assert.equal(headers['x-forwarded-host'], 'outer.example');
    assert.equal(headers['x-forwarded-for'], '127.0.0.1');
  });
});

describe('HTTP/2 and HTTP/1.1 over TLS', () => {
  let pki: TestPki;
  let responder: Responder;
  let service: TestService;
  let initiator: Initiator;
  /** 0: TLS with a client-certificate caller beside a token caller. 1: TLS, HTTP/2 off. */
  const egress = (index: number): HostPort => responder.addresses.egress[index]!;

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
            { name: 'node-a', client_certificate_san: 'node-a', allow: { nodes: ['n1'] } },
            { name: 'robot', token_sha256: 'a'.repeat(64) },
          ],
        },
        {
          address: '127.0.0.1:0',
          stat_prefix: 'egress_h1',
          tls: { cert_file: pki.server.certFile, key_file: pki.server.keyFile },
          http2: { enabled: false },
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

  const clientTls = () => ({
    ca: pki.ca.cert,
    cert: pki.client.cert,
    key: pki.client.key,
    servername: 'localhost',
  });

  it('speaks HTTP/2 by ALPN h2 and authenticates the caller by its certificate', async () => {
    const session = await connectH2(egress(0), clientTls());
    try {
      assert.equal(session.alpnProtocol, 'h2');
      const reply = await h2Request(session, { ':path': '/', 'x-node-id': 'n1' });
      assert.equal(reply.status, 200);
      const headers = seenBy(reply.text);
      assert.equal(headers['x-forwarded-proto'], 'https');
      assert.equal(headers['via'], '2 revtun');
      const refused = await h2Request(session, { ':path': '/', 'x-node-id': 'n2' });
      assert.equal(refused.status, 503);
    } finally {
      session.destroy();
    }
  });

  it('answers an HTTP/2 caller without a certificate or token 401 over TLS', async () => {
    const session = await connectH2(egress(0), { ca: pki.ca.cert, servername: 'localhost' });
    try {
      const reply = await h2Request(session, { ':path': '/', 'x-node-id': 'n1' });
      assert.equal(reply.status, 401);
    } finally {
      session.destroy();
    }
  });

  it('still speaks HTTP/1.1 over TLS to a caller that offers only http/1.1', async () => {
    const reply = await httpsGet(egress(0), {
      ...clientTls(),
      ALPNProtocols: ['http/1.1'],
    });
    assert.equal(reply.status, 200);
    assert.equal(reply.alpn, 'http/1.1');
    assert.equal(seenBy(reply.text)['via'], '1.1 revtun');
  });

  it('offers only http/1.1 by ALPN when http2 is disabled', async () => {
    const reply = await httpsGet(egress(1), {
      ca: pki.ca.cert,
      servername: 'localhost',
      ALPNProtocols: ['h2', 'http/1.1'],
    });
    assert.equal(reply.status, 200);
    assert.equal(reply.alpn, 'http/1.1');
  });
});

function httpsGet(
  address: HostPort,
  tls: https.RequestOptions & { ALPNProtocols?: string[] },
): Promise<{ status: number; text: string; alpn: string | false | undefined }> {
  return new Promise((resolve, reject) => {
    const outgoing = https.request(
      {
        ...tls,
        host: address.host,
        port: address.port,
        path: '/',
        headers: { 'x-node-id': 'n1' },
        agent: false,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            text: Buffer.concat(chunks).toString(),
            alpn: (response.socket as TLSSocket).alpnProtocol ?? undefined,
          }),
        );
      },
    );
    outgoing.setTimeout(10_000, () => outgoing.destroy(new Error('no response within 10 s')));
    outgoing.on('error', reject);
    outgoing.end();
  });
}
