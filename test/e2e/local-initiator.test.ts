/**
 * The stream kinds of docs/streams.md through a real initiator and its tunnel, with a fake
 * responder as the HTTP/2 client: the server session announces the connect protocol (RFC 8441),
 * and an initiator with TCP targets and no local routes starts and serves a CONNECT by name.
 */
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import type http2 from 'node:http2';
import { after, before, describe, it } from 'node:test';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import { FakeResponder } from '../helpers/fake-responder.ts';
import { waitForEvent } from '../helpers/tunnels.ts';

describe('an initiator with TCP targets and no local routes', () => {
  let echo: net.Server;
  let responder: FakeResponder;
  let initiator: Initiator;
  let session: http2.ClientHttp2Session;

  before(async () => {
    echo = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on('error', () => {});
      socket.pipe(socket);
    });
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    responder = await FakeResponder.listen();
    initiator = await startInitiator({
      node_id: 'n1',
      cluster_id: 'c1',
      tenant_id: 't1',
      remote_clusters: [{ name: 'upstream', hosts: [responder.hostText] }],
      tcp_targets: [{ name: 'echo', address: `127.0.0.1:${(echo.address() as AddressInfo).port}` }],
    });
    const tunnel = await responder.accept();
    await tunnel.readHandshake();
    const connected = waitForEvent(initiator, 'handshake_success');
    tunnel.accept();
    await connected;
    session = tunnel.http2Client();
    await waitForEvent(session, 'remoteSettings');
  });

  after(async () => {
    session.destroy();
    await initiator.close({ graceMs: 0 });
    await responder.close();
    await new Promise<void>((resolve) => echo.close(() => resolve()));
  });

  it('announces SETTINGS_ENABLE_CONNECT_PROTOCOL on the tunnel', () => {
    assert.equal(session.remoteSettings.enableConnectProtocol, true);
  });

  it('carries a CONNECT to a target by name through the tunnel, half-close included', async () => {
    const stream = session.request({ ':method': 'CONNECT', ':authority': 'echo' });
    stream.on('error', () => {});
    const [headers] = await waitForEvent<[http2.IncomingHttpHeaders]>(stream, 'response');
    assert.equal(headers[':status'], 200);
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    const ended = waitForEvent(stream, 'end');
    stream.end('through the tunnel');
    await ended;
    assert.equal(Buffer.concat(chunks).toString(), 'through the tunnel');
  });

  it('answers 404 to a request for a path: there is no local route', async () => {
    const stream = session.request({ ':path': '/anything' });
    stream.on('error', () => {});
    stream.resume();
    const [headers] = await waitForEvent<[http2.IncomingHttpHeaders]>(stream, 'response');
    assert.equal(headers[':status'], 404);
  });
});
