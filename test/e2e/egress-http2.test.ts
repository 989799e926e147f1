/**
 * HTTP/2 callers on an egress listener (docs/egress.md): h2c with prior knowledge beside HTTP/1.1
 * on one cleartext port, the same answers as HTTP/1.1 callers get, 100-continue and HEAD, resets
 * in both directions, streaming, and the bounds on sniffing a connection's protocol. A fake
 * initiator's HTTP/2 server stands in for the node, so each test says exactly what the node does.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import http from 'node:http';
import http2, { type ClientHttp2Session } from 'node:http2';
import { after, before, describe, it } from 'node:test';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import { watchEndStream } from '../../src/shared/http2-stream.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { envoyHandshakeRequest, FakeInitiator } from '../helpers/fake-initiator.ts';
import { clientPreface, emptySettings, frameType, readFrame } from '../helpers/h2-frames.ts';
import { connectH2, h2Request } from '../helpers/h2-client.ts';
import { request } from '../helpers/http.ts';
import { RawPeer } from '../helpers/raw.ts';
import { tunnelsRegistered } from '../helpers/tunnels.ts';

type Handler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;

/** The node answers 200 with the request's method, path and authority. */
const echo: Handler = (stream, headers) => {
  stream.resume();
  stream.respond({ ':status': 200, 'content-type': 'text/plain' });
  stream.end(`${headers[':method']} ${headers[':path']} ${headers[':authority']}`);
};

/** A deferred: resolve it from an event handler, await it in the test. */
function signal<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

/** Runs a command (curl) to its end, bounded; its output and exit code. */
function run(file: string, args: readonly string[]): Promise<{ stdout: string; code: number }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 10_000 }, (error, stdout) => {
      resolve({
        stdout,
        code: error === null ? 0 : Number((error as { code?: number }).code ?? 1),
      });
    });
  });
}

describe('HTTP/2 callers on a cleartext egress listener', () => {
  let responder: Responder;
  let fake: FakeInitiator;
  let handler: Handler = echo;
  let client: ClientHttp2Session;
  const egress = (index = 0): HostPort => responder.addresses.egress[index]!;
  const token = 'secret-token';

  before(async () => {
    responder = await startResponder({
      stat_prefix: 'reverse_connections',
      tunnel_listener: { address: '127.0.0.1:0', ping_interval: '300s' },
      egress_listeners: [
        {
          address: '127.0.0.1:0',
          headers_timeout: '1s',
          request_timeout: '1s',
        },
        {
          address: '127.0.0.1:0',
          stat_prefix: 'egress_callers',
          max_body_bytes: 10,
          callers: [
            {
              name: 'robot',
              token_sha256: createHash('sha256').update(token).digest('hex'),
            },
          ],
        },
        { address: '127.0.0.1:0', stat_prefix: 'egress_impatient', response_timeout: '500ms' },
      ],
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

  it('serves an HTTP/2 caller with prior knowledge, its :authority going on as the tunnel stream’s', async () => {
    handler = echo;
    const reply = await h2Request(client, {
      ':path': '/hello?x=1',
      ':authority': 'app.example',
      'x-node-id': 'n1',
    });
    assert.equal(reply.status, 200);
    assert.equal(reply.text, 'GET /hello?x=1 app.example');
    const both = await h2Request(client, {
      ':path': '/',
      ':authority': 'authority.example',
      host: 'host.example',
      'x-node-id': 'n1',
    });
    assert.equal(both.text, 'GET / authority.example', ':authority wins (RFC 9113 §8.3.1)');
  });

  it('serves HTTP/1.1 on the same port', async () => {
    handler = echo;
    const reply = await request(egress(), '/one', {
      headers: { 'x-node-id': 'n1', host: 'h1.example' },
    });
    assert.equal(reply.status, 200);
    assert.equal(reply.text, 'GET /one h1.example');
  });

  it('answers curl --http2-prior-knowledge over HTTP/2', async () => {
    handler = echo;
    const { stdout, code } = await run('curl', [
      '-sS',
      '--http2-prior-knowledge',
      '-H',
      'x-node-id: n1',
      '-w',
      '\n%{http_version} %{http_code}',
      `http://127.0.0.1:${egress().port}/curl`,
    ]);
    assert.equal(code, 0);
    assert.equal(stdout, `GET /curl 127.0.0.1:${egress().port}\n2 200`);
  });

  it('answers an HTTP/2 caller 400, 503 and 431 as it answers an HTTP/1.1 caller', async () => {
    const none = await h2Request(client, { ':path': '/' });
    assert.equal(none.status, 400);
    assert.match(none.text, /no routing header/);
    const unknown = await h2Request(client, { ':path': '/', 'x-node-id': 'nobody' });
    assert.equal(unknown.status, 503);
    assert.match(unknown.text, /no tunnel for host id nobody/);
    const many: Record<string, string> = { ':path': '/', 'x-node-id': 'n1' };
    for (let i = 0; i < 130; i += 1) many[`x-h${i}`] = 'v';
    const tooMany = await h2Request(client, many);
    assert.equal(tooMany.status, 431);
    // The session goes on: a refusal costs a stream, not the connection.
    assert.equal((await h2Request(client, { ':path': '/', 'x-node-id': 'n1' })).status, 200);
  });

  it('answers an HTTP/2 caller 401 without credentials and 413 for a declared body past max_body_bytes', async () => {
    const session = await connectH2(egress(1));
    try {
      const anonymous = await h2Request(session, { ':path': '/', 'x-node-id': 'n1' });
      assert.equal(anonymous.status, 401);
      assert.equal(anonymous.headers['www-authenticate'], 'Bearer');
      const big = await h2Request(
        session,
        {
          ':path': '/',
          ':method': 'POST',
          'x-node-id': 'n1',
          authorization: `Bearer ${token}`,
          'content-length': '11',
        },
        { body: 'x'.repeat(11) },
      );
      assert.equal(big.status, 413);
      assert.match(big.text, /max_body_bytes/);
    } finally {
      session.destroy();
    }
  });

  it('answers 408 to an HTTP/2 upload that does not finish within request_timeout, and resets the tunnel stream', async () => {
    const tunnelClosed = signal<number>();
    handler = (stream) => {
      stream.resume();
      stream.on('close', () => tunnelClosed.resolve(stream.rstCode));
    };
    const stream = client.request(
      { ':path': '/slow', ':method': 'POST', 'x-node-id': 'n1' },
      { endStream: false },
    );
    stream.on('error', () => {});
    stream.write('a start, and nothing more');
    const status = await new Promise<number>((resolve, reject) => {
      stream.once('response', (head) => resolve(Number(head[':status'])));
      stream.once('close', () => reject(new Error(`reset (${stream.rstCode}) with no response`)));
    });
    assert.equal(status, 408);
    assert.notEqual(await tunnelClosed.promise, http2.constants.NGHTTP2_NO_ERROR);
    stream.close();
  });

  it('sends 100 Continue to an HTTP/2 caller that expects it, and then forwards its body', async () => {
    handler = (stream) => {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        stream.respond({ ':status': 200 });
        stream.end(`got ${Buffer.concat(chunks).toString()}`);
      });
    };
    const stream = client.request(
      { ':path': '/upload', ':method': 'POST', 'x-node-id': 'n1', expect: '100-continue' },
      { endStream: false },
    );
    stream.on('error', () => {});
    const continued = signal<number>();
    stream.once('continue', () => continued.resolve(100));
    stream.on('headers', (head) => {
      if (head[':status'] === 100) continued.resolve(100);
    });
    assert.equal(await continued.promise, 100);
    stream.end('payload');
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    const status = await new Promise<number>((resolve, reject) => {
      stream.once('response', (head) => resolve(Number(head[':status'])));
      stream.once('close', () => reject(new Error(`reset (${stream.rstCode}) with no response`)));
    });
    await new Promise((resolve) => stream.once('end', resolve));
    assert.equal(status, 200);
    assert.equal(Buffer.concat(chunks).toString(), 'got payload');
  });

  it('answers HEAD over HTTP/2 with no body and the content-length kept', async () => {
    handler = (stream, headers) => {
      assert.equal(headers[':method'], 'HEAD');
      stream.respond({ ':status': 200, 'content-length': '1234' }, { endStream: true });
    };
    const reply = await h2Request(client, { ':path': '/', ':method': 'HEAD', 'x-node-id': 'n1' });
    assert.equal(reply.status, 200);
    assert.equal(reply.headers['content-length'], '1234');
    assert.equal(reply.body.length, 0);
    assert.equal(reply.rstCode, 0);
    const refused = await h2Request(client, {
      ':path': '/',
      ':method': 'HEAD',
      'x-node-id': 'nobody',
    });
    assert.equal(refused.status, 503);
    assert.equal(refused.body.length, 0);
    assert.ok(Number(refused.headers['content-length']) > 0, 'the length of the GET answer');
    assert.equal(refused.rstCode, 0);
  });

  it('resets the tunnel stream when the HTTP/2 caller resets its own mid-response', async () => {
    const tunnelClosed = signal<{ aborted: boolean; rstCode: number }>();
    handler = (stream) => {
      stream.respond({ ':status': 200 });
      stream.write('first');
      stream.on('close', () =>
        tunnelClosed.resolve({ aborted: stream.aborted, rstCode: stream.rstCode }),
      );
    };
    const stream = client.request({ ':path': '/long', 'x-node-id': 'n1' });
    stream.on('error', () => {});
    await new Promise((resolve) => stream.once('data', resolve));
    stream.close(http2.constants.NGHTTP2_CANCEL);
    const closed = await tunnelClosed.promise;
    assert.notEqual(closed.rstCode, http2.constants.NGHTTP2_NO_ERROR);
  });

  it('resets the HTTP/2 caller’s stream, never ends it, when the tunnel stream fails after the headers', async () => {
    handler = (stream) => {
      stream.respond({ ':status': 200 });
      // destroy(error) resets without END_STREAM (close(code) would end the body first).
      stream.write('partial', () => stream.destroy(new Error('the node failed')));
    };
    const reply = await h2Request(client, { ':path': '/cut', 'x-node-id': 'n1' });
    assert.equal(reply.status, 200);
    assert.equal(reply.ended, false, 'a cut-off body must not end cleanly');
    assert.notEqual(reply.rstCode, http2.constants.NGHTTP2_NO_ERROR);
    assert.equal((await h2Request(client, { ':path': '/', 'x-node-id': 'n1' })).status, 200);
  });

  it('resets the HTTP/2 caller’s stream when the whole tunnel dies after the response headers', async () => {
    const registered = tunnelsRegistered(responder, 'n2');
    const doomed = await FakeInitiator.connect(
      responder.addresses.tunnel,
      envoyHandshakeRequest({ node: 'n2', cluster: 'c2', tenant: 't1' }),
    );
    try {
      await doomed.expectAccepted();
      void doomed.serveHttp2((stream) => {
        stream.respond({ ':status': 200 });
        stream.write('partial', () => doomed.destroy());
      });
      await registered;
      const reply = await h2Request(client, { ':path': '/cut', 'x-node-id': 'n2' });
      assert.equal(reply.status, 200);
      assert.equal(reply.ended, false, 'a cut-off body must not end cleanly');
      assert.notEqual(reply.rstCode, http2.constants.NGHTTP2_NO_ERROR);
    } finally {
      doomed.destroy();
    }
  });

  it('answers an HTTP/2 caller 504 when the node does not answer within response_timeout', async () => {
    const tunnelClosed = signal<number>();
    handler = (stream) => {
      stream.resume();
      stream.on('close', () => tunnelClosed.resolve(stream.rstCode));
    };
    const session = await connectH2(egress(2));
    try {
      const reply = await h2Request(session, { ':path': '/silent', 'x-node-id': 'n1' });
      assert.equal(reply.status, 504);
      assert.match(reply.text, /response_timeout/);
      assert.equal(await tunnelClosed.promise, http2.constants.NGHTTP2_CANCEL);
    } finally {
      session.destroy();
    }
  });

  it('answers an HTTP/2 caller 504 in the middle of its upload, not a bare reset', async () => {
    handler = (stream) => {
      stream.resume();
    };
    const session = await connectH2(egress(2));
    try {
      const stream = session.request(
        { ':path': '/upload', ':method': 'POST', 'x-node-id': 'n1' },
        { endStream: false },
      );
      stream.on('error', () => {});
      stream.write('the first part of a body that never ends');
      const status = await new Promise<number>((resolve, reject) => {
        stream.once('response', (head) => resolve(Number(head[':status'])));
        stream.once('close', () => reject(new Error(`reset (${stream.rstCode}) with no response`)));
      });
      assert.equal(status, 504);
      stream.close();
    } finally {
      session.destroy();
    }
  });

  it('resets the tunnel stream, never ends it, when an HTTP/2 caller resets its upload', async () => {
    const seen = signal<{ endStream: boolean; rstCode: number; bytes: number }>();
    const reached = signal<void>();
    handler = (stream) => {
      const endStream = watchEndStream(stream);
      let bytes = 0;
      stream.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        reached.resolve();
      });
      stream.on('close', () =>
        seen.resolve({ endStream: endStream(), rstCode: stream.rstCode, bytes }),
      );
    };
    const session = await connectH2(egress());
    try {
      const upload = session.request(
        { ':path': '/upload', ':method': 'POST', 'x-node-id': 'n1' },
        { endStream: false },
      );
      upload.on('error', () => {});
      upload.write('the first part of an upload that is cut off');
      await reached.promise;
      upload.close(http2.constants.NGHTTP2_CANCEL);
      const { endStream, rstCode, bytes } = await seen.promise;
      assert.ok(bytes > 0);
      assert.equal(endStream, false, 'a cut-off upload must not reach the initiator as whole');
      assert.notEqual(rstCode, http2.constants.NGHTTP2_NO_ERROR);
    } finally {
      session.destroy();
    }
  });

  it('answers an HTTP/1.1 caller 504 in the middle of its upload, not a bare reset', async () => {
    handler = (stream) => {
      stream.resume();
    };
    const { host, port } = egress(2);
    const upload = http.request({
      host,
      port,
      method: 'POST',
      path: '/upload',
      headers: { 'x-node-id': 'n1', 'transfer-encoding': 'chunked' },
      agent: false,
    });
    const status = await new Promise<number>((resolve, reject) => {
      upload.once('response', (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      });
      upload.once('error', (error) => reject(new Error(`no response: ${error.message}`)));
      upload.write('the first part of a body that never ends');
    });
    assert.equal(status, 504);
    upload.destroy();
  });

  it('streams server-sent events to an HTTP/2 caller one at a time', async () => {
    let next: (() => void) | undefined;
    handler = (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'text/event-stream' });
      let sent = 0;
      next = () => {
        sent += 1;
        if (sent <= 3) stream.write(`data: event ${sent}\n\n`);
        else stream.end();
      };
      next();
    };
    const stream = client.request({ ':path': '/events', 'x-node-id': 'n1' });
    stream.on('error', () => {});
    const events: string[] = [];
    // Each event is asked for only once the one before has arrived: nothing buffers them.
    stream.on('data', (chunk: Buffer) => {
      events.push(chunk.toString());
      next?.();
    });
    await new Promise((resolve) => stream.once('end', resolve));
    assert.deepEqual(events, ['data: event 1\n\n', 'data: event 2\n\n', 'data: event 3\n\n']);
  });

  it('streams server-sent events to an HTTP/1.1 caller one at a time', async () => {
    let next: (() => void) | undefined;
    handler = (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'text/event-stream' });
      let sent = 0;
      next = () => {
        sent += 1;
        if (sent <= 3) stream.write(`data: event ${sent}\n\n`);
        else stream.end();
      };
      next();
    };
    const peer = await RawPeer.connect(egress());
    try {
      peer.write('GET /events HTTP/1.1\r\nhost: x\r\nx-node-id: n1\r\n\r\n');
      await peer.readUntil('\r\n\r\n');
      for (let event = 1; event <= 3; event += 1) {
        const text = `data: event ${event}\n\n`;
        // One chunk: its size line, the event, CRLF.
        const chunk = await peer.readUntil(`${text}\r\n`);
        assert.ok(chunk.endsWith(`${text}\r\n`));
        next?.();
      }
      assert.equal(await peer.readUntil('0\r\n\r\n'), '0\r\n\r\n');
    } finally {
      peer.destroy();
    }
  });
  it('serves curl --http2 (an h2c Upgrade, not offered) as HTTP/1.1', async () => {
    handler = echo;
    const { stdout, code } = await run('curl', [
      '-sS',
      '--http2',
      '-H',
      'x-node-id: n1',
      '-w',
      '\n%{http_version} %{http_code}',
      `http://127.0.0.1:${egress().port}/upgrade`,
    ]);
    assert.equal(code, 0);
    assert.equal(stdout, `GET /upgrade 127.0.0.1:${egress().port}\n1.1 200`);
  });

  it('puts an HTTP/1.1 WebSocket upgrade through the same checks before handing it on', async () => {
    const peer = await RawPeer.connect(egress());
    try {
      peer.write(
        'GET /ws HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n' +
          'sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n' +
          'x-node-id: nobody\r\n\r\n',
      );
      const head = await peer.readUntil('\r\n\r\n');
      assert.match(head, /^HTTP\/1\.1 503 /);
      assert.match(head, /connection: close/);
      await peer.whenClosed();
    } finally {
      peer.destroy();
    }
  });

  it('puts an HTTP/2 extended CONNECT through the same checks before handing it on', async () => {
    const remote = await new Promise<http2.Settings>((resolve) => {
      if (client.remoteSettings.enableConnectProtocol !== undefined) resolve(client.remoteSettings);
      else client.once('remoteSettings', resolve);
    });
    assert.equal(remote.enableConnectProtocol, true, 'RFC 8441 §3: the setting is announced');
    const reply = await h2Request(client, {
      ':method': 'CONNECT',
      ':protocol': 'websocket',
      ':scheme': 'http',
      ':path': '/ws',
      'sec-websocket-version': '13',
      'x-node-id': 'nobody',
    });
    assert.equal(reply.status, 503);
  });
});

describe('telling HTTP/2 from HTTP/1.1 on a cleartext port', () => {
  let responder: Responder;
  let egress: HostPort;

  before(async () => {
    responder = await startResponder({
      stat_prefix: 'reverse_connections',
      tunnel_listener: { address: '127.0.0.1:0', ping_interval: '300s' },
      egress_listeners: [{ address: '127.0.0.1:0', headers_timeout: '1s', request_timeout: '1s' }],
    });
    egress = responder.addresses.egress[0]!;
  });

  after(async () => {
    await responder.close({ graceMs: 0 });
  });

  it('takes a connection preface that arrives a few bytes at a time', async () => {
    const peer = await RawPeer.connect(egress);
    try {
      const preface = Buffer.from(clientPreface, 'latin1');
      for (const [from, to] of [
        [0, 1],
        [1, 5],
        [5, 23],
        [23, 24],
      ] as const) {
        await new Promise<void>((resolve) =>
          peer.socket.write(preface.subarray(from, to), () => resolve()),
        );
      }
      peer.write(emptySettings);
      const frame = await readFrame(peer);
      assert.equal(frame.type, frameType.settings, 'the server’s SETTINGS: HTTP/2 was recognized');
    } finally {
      peer.destroy();
    }
  });

  it('answers bytes that are neither HTTP/2 nor HTTP/1.1 with 400 and closes', async () => {
    const peer = await RawPeer.connect(egress);
    try {
      peer.write('PRX garbage\r\n\r\n');
      const head = await peer.readUntil('\r\n\r\n');
      assert.match(head, /^HTTP\/1\.1 400 /);
      await peer.whenClosed();
    } finally {
      peer.destroy();
    }
  });

  it('closes a connection that sends nothing within headers_timeout', async () => {
    const peer = await RawPeer.connect(egress);
    try {
      await peer.whenClosed(5_000);
      assert.equal(peer.pending.length, 0);
    } finally {
      peer.destroy();
    }
  });

  it('closes a connection that stops halfway through the preface', async () => {
    const peer = await RawPeer.connect(egress);
    try {
      peer.write(clientPreface.slice(0, 10));
      await peer.whenClosed(5_000);
    } finally {
      peer.destroy();
    }
  });
});

describe('draining an egress listener with HTTP/2 callers', () => {
  it('sends GOAWAY to a connected HTTP/2 caller when the responder shuts down', async () => {
    const responder = await startResponder({
      stat_prefix: 'reverse_connections',
      tunnel_listener: { address: '127.0.0.1:0', ping_interval: '300s' },
      egress_listeners: [{ address: '127.0.0.1:0' }],
    });
    const client = await connectH2(responder.addresses.egress[0]!);
    try {
      const goaway = new Promise<number>((resolve) =>
        client.once('goaway', (code: number) => resolve(code)),
      );
      const closed = responder.close({ graceMs: 1_000 });
      assert.equal(await goaway, http2.constants.NGHTTP2_NO_ERROR);
      await closed;
    } finally {
      client.destroy();
    }
  });
});
