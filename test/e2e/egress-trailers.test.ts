/**
 * Trailers and informational responses through an egress listener (docs/streams.md §1): request
 * trailers from HTTP/1.1 (chunked) and HTTP/2 callers become a trailing HEADERS frame on the
 * tunnel stream, response trailers come back the same way, a trailers-only response (gRPC's) stays
 * HEADERS with END_STREAM, gRPC's headers pass intact, and a 103 reaches both kinds of caller. A
 * fake initiator's HTTP/2 server is the node.
 */
import * as grpc from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import http from 'node:http';
import type http2 from 'node:http2';
import { type ClientHttp2Session } from 'node:http2';
import { after, before, describe, it } from 'node:test';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { FakeInitiator } from '../helpers/fake-initiator.ts';
import { connectH2, h2Request } from '../helpers/h2-client.ts';
import { tunnelsRegistered } from '../helpers/tunnels.ts';
import { bytesMethod } from '../helpers/grpc-bytes.ts';

type Handler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;

interface SeenByNode {
  headers: http2.IncomingHttpHeaders;
  body: string;
  trailers: http2.IncomingHttpHeaders | undefined;
}

/**
 * The node reads the whole request (its trailers too), reports it, and answers with a chunked
 * body and trailers.
 */
function answerWithTrailers(seen: (request: SeenByNode) => void): Handler {
  return (stream, headers) => {
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    stream.on('trailers', (head: http2.IncomingHttpHeaders) => {
      trailers = head;
    });
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      seen({ headers, body: Buffer.concat(chunks).toString(), trailers });
      stream.respond({ ':status': 200 }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'c0ffee' }));
      stream.end('response body');
    });
  };
}

interface Http1Reply {
  status: number;
  body: string;
  trailers: NodeJS.Dict<string>;
  informational: number[];
  links: string[];
}

/** An HTTP/1.1 request with a chunked body and trailers. */
function http1WithTrailers(
  address: HostPort,
  headers: http.OutgoingHttpHeaders,
  trailers: Record<string, string> | undefined,
): Promise<Http1Reply> {
  return new Promise((resolve, reject) => {
    const informational: number[] = [];
    const links: string[] = [];
    const outgoing = http.request(
      { host: address.host, port: address.port, path: '/', method: 'POST', headers, agent: false },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            body: Buffer.concat(chunks).toString(),
            trailers: response.trailers,
            informational,
            links,
          }),
        );
        response.on('error', reject);
      },
    );
    outgoing.on('information', (info) => {
      informational.push(info.statusCode);
      const link = info.headers['link'];
      if (typeof link === 'string') links.push(link);
    });
    outgoing.setTimeout(10_000, () => outgoing.destroy(new Error('no response within 10 s')));
    outgoing.on('error', reject);
    outgoing.write('request ');
    if (trailers !== undefined) outgoing.addTrailers(trailers);
    outgoing.end('body');
  });
}

describe('trailers and 1xx through an egress listener', () => {
  let responder: Responder;
  let fake: FakeInitiator;
  let handler: Handler = () => {};
  let client: ClientHttp2Session;
  const egress = (): HostPort => responder.addresses.egress[0]!;

  before(async () => {
    responder = await startResponder({
      stat_prefix: 'reverse_connections',
      tunnel_listener: { address: '127.0.0.1:0', ping_interval: '300s' },
      egress_listeners: [{ address: '127.0.0.1:0' }],
    });
    const registered = tunnelsRegistered(responder, 'n1');
    fake = await FakeInitiator.connect(responder.addresses.tunnel);
    await fake.expectAccepted();
    void fake.serveHttp2((stream, headers) => handler(stream, headers));
    await registered;
    client = await connectH2(egress());
  });

  after(async () => {
    client.destroy();
    fake.destroy();
    await responder.close({ graceMs: 0 });
  });

  it('carries an HTTP/2 caller’s request trailers to the node, and the node’s trailers back', async () => {
    let seen: SeenByNode | undefined;
    handler = answerWithTrailers((request) => {
      seen = request;
    });
    const reply = await h2Request(
      client,
      { ':path': '/', ':method': 'POST', 'x-node-id': 'n1', te: 'trailers' },
      { body: 'request body', trailers: { 'x-request-digest': 'abc123' } },
    );
    assert.equal(reply.status, 200);
    assert.equal(reply.text, 'response body');
    assert.equal(reply.trailers?.['x-checksum'], 'c0ffee');
    assert.equal(seen?.body, 'request body');
    assert.equal(seen?.trailers?.['x-request-digest'], 'abc123');
    assert.equal(seen?.headers['te'], 'trailers');
  });

  it('carries an HTTP/1.1 chunked caller’s trailers to the node, and the node’s trailers back chunked', async () => {
    let seen: SeenByNode | undefined;
    handler = answerWithTrailers((request) => {
      seen = request;
    });
    const reply = await http1WithTrailers(
      egress(),
      { 'x-node-id': 'n1', te: 'trailers', connection: 'TE' },
      { 'x-request-digest': 'def456' },
    );
    assert.equal(reply.status, 200);
    assert.equal(reply.body, 'response body');
    assert.equal(reply.trailers['x-checksum'], 'c0ffee');
    assert.equal(seen?.body, 'request body');
    assert.equal(seen?.trailers?.['x-request-digest'], 'def456');
    assert.equal(seen?.headers['te'], 'trailers');
  });

  it('ends a request without trailers cleanly on the tunnel', async () => {
    let seen: SeenByNode | undefined;
    handler = answerWithTrailers((request) => {
      seen = request;
    });
    const reply = await http1WithTrailers(egress(), { 'x-node-id': 'n1' }, undefined);
    assert.equal(reply.status, 200);
    assert.equal(seen?.body, 'request body');
    assert.equal(seen?.trailers, undefined);
  });

  it('drops response trailers for an HTTP/1.1 caller when the response has a content-length', async () => {
    handler = (stream) => {
      stream.resume();
      stream.respond({ ':status': 200, 'content-length': '4' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'lost' }));
      stream.end('body');
    };
    const reply = await http1WithTrailers(egress(), { 'x-node-id': 'n1' }, undefined);
    assert.equal(reply.status, 200);
    assert.equal(reply.body, 'body');
    assert.deepEqual(reply.trailers, {});
  });

  it('keeps gRPC’s headers intact and a trailers-only response as HEADERS with END_STREAM', async () => {
    let seen: http2.IncomingHttpHeaders | undefined;
    handler = (stream, headers) => {
      seen = headers;
      stream.resume();
      stream.respond(
        {
          ':status': 200,
          'content-type': 'application/grpc',
          'grpc-status': '5',
          'grpc-message': 'not found',
        },
        { endStream: true },
      );
    };
    const binary = Buffer.from([0, 1, 2, 255]).toString('base64');
    const reply = await h2Request(
      client,
      {
        ':path': '/pkg.Service/Method',
        ':method': 'POST',
        'x-node-id': 'n1',
        'content-type': 'application/grpc',
        te: 'trailers',
        'grpc-timeout': '5S',
        'x-trace-bin': binary,
      },
      { body: Buffer.from([0, 0, 0, 0, 0]) },
    );
    assert.equal(reply.status, 200);
    assert.equal(reply.endAfterHeaders, true, 'trailers-only: END_STREAM on the HEADERS');
    assert.equal(reply.headers['grpc-status'], '5');
    assert.equal(reply.headers['grpc-message'], 'not found');
    assert.equal(seen?.['content-type'], 'application/grpc');
    assert.equal(seen?.['te'], 'trailers');
    assert.equal(seen?.['grpc-timeout'], '5S');
    assert.equal(seen?.['x-trace-bin'], binary);
  });

  it('passes a 103 Early Hints on to an HTTP/2 caller', async () => {
    handler = (stream) => {
      stream.resume();
      stream.additionalHeaders({ ':status': 103, link: '</style.css>; rel=preload' });
      stream.respond({ ':status': 200 });
      stream.end('page');
    };
    const reply = await h2Request(client, { ':path': '/', 'x-node-id': 'n1' });
    assert.equal(reply.status, 200);
    assert.deepEqual(
      reply.informational.map((head) => [head[':status'], head['link']]),
      [[103, '</style.css>; rel=preload']],
    );
  });

  it('passes a 103 Early Hints on to an HTTP/1.1 caller', async () => {
    handler = (stream) => {
      stream.resume();
      stream.additionalHeaders({ ':status': 103, link: '</style.css>; rel=preload' });
      stream.respond({ ':status': 200 });
      stream.end('page');
    };
    const reply = await http1WithTrailers(egress(), { 'x-node-id': 'n1' }, undefined);
    assert.equal(reply.status, 200);
    assert.deepEqual(reply.informational, [103]);
    assert.deepEqual(reply.links, ['</style.css>; rel=preload']);
  });
});

describe('a gRPC client through an h2c egress listener', () => {
  let responder: Responder;
  let fake: FakeInitiator;
  let seen: http2.IncomingHttpHeaders | undefined;

  before(async () => {
    responder = await startResponder({
      stat_prefix: 'reverse_connections',
      tunnel_listener: { address: '127.0.0.1:0', ping_interval: '300s' },
      egress_listeners: [{ address: '127.0.0.1:0' }],
    });
    const registered = tunnelsRegistered(responder, 'n1');
    fake = await FakeInitiator.connect(responder.addresses.tunnel);
    await fake.expectAccepted();
    // The node answers gRPC by hand: the request message echoed in one length-prefixed frame,
    // then grpc-status in trailers; a method named Missing gets a trailers-only NOT_FOUND.
    void fake.serveHttp2((stream, headers) => {
      seen = headers;
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        if (headers[':path'] === '/test.Echo/Missing') {
          stream.respond(
            {
              ':status': 200,
              'content-type': 'application/grpc',
              'grpc-status': '5',
              'grpc-message': 'no such thing',
            },
            { endStream: true },
          );
          return;
        }
        stream.respond(
          { ':status': 200, 'content-type': 'application/grpc' },
          { waitForTrailers: true },
        );
        stream.on('wantTrailers', () =>
          stream.sendTrailers({
            'grpc-status': '0',
            'x-reply-bin': Buffer.from([9, 8]).toString('base64'),
          }),
        );
        stream.end(Buffer.concat(chunks));
      });
    });
    await registered;
  });

  after(async () => {
    fake.destroy();
    await responder.close({ graceMs: 0 });
  });

  /** A generic client: messages are raw bytes, so no .proto is needed. */
  function echoClient(): grpc.Client {
    const Client = grpc.makeGenericClientConstructor(
      { Say: bytesMethod('test.Echo', 'Say'), Missing: bytesMethod('test.Echo', 'Missing') },
      'Echo',
    );
    const { port } = responder.addresses.egress[0]!;
    return new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  }

  function call(
    client: grpc.Client,
    method: 'Say' | 'Missing',
  ): Promise<{
    error: grpc.ServiceError | null;
    value: Buffer | undefined;
    trailers: grpc.Metadata | undefined;
  }> {
    const metadata = new grpc.Metadata();
    metadata.set('x-node-id', 'n1');
    metadata.set('x-trace-bin', Buffer.from([1, 2, 3]));
    return new Promise((resolve) => {
      let answer: { error: grpc.ServiceError | null; value: Buffer | undefined } | undefined;
      const unary = (
        client as unknown as Record<string, (...args: unknown[]) => grpc.ClientUnaryCall>
      )[method]!;
      const pending = unary.call(
        client,
        Buffer.from('hello'),
        metadata,
        { deadline: Date.now() + 5_000 },
        (error: grpc.ServiceError | null, value?: Buffer) => {
          answer = { error, value };
        },
      );
      // grpc-js calls back first, then emits the status with the trailers.
      pending.on('status', (status: grpc.StatusObject) => {
        resolve({
          error: answer?.error ?? null,
          value: answer?.value,
          trailers: status.metadata,
        });
      });
    });
  }

  it('completes a unary call, its metadata, deadline and trailers intact', async () => {
    const client = echoClient();
    try {
      const result = await call(client, 'Say');
      assert.equal(result.error, null);
      assert.equal(result.value?.toString(), 'hello');
      assert.deepEqual(result.trailers?.get('x-reply-bin'), [Buffer.from([9, 8])]);
      assert.equal(seen?.['content-type'], 'application/grpc');
      assert.equal(seen?.['te'], 'trailers');
      assert.match(String(seen?.['grpc-timeout']), /^\d+[mSu]$/);
      assert.equal(seen?.['x-trace-bin'], Buffer.from([1, 2, 3]).toString('base64'));
    } finally {
      client.close();
    }
  });

  it('gives the client a trailers-only status as the node sent it', async () => {
    const client = echoClient();
    try {
      const result = await call(client, 'Missing');
      assert.equal(result.error?.code, grpc.status.NOT_FOUND);
      assert.equal(result.error?.details, 'no such thing');
    } finally {
      client.close();
    }
  });
});
