/**
 * The responder's TCP listeners (docs/streams.md §3): each connection becomes a CONNECT stream on
 * a tunnel. A fake initiator serves the tunnel's HTTP/2 itself and answers the CONNECT streams by
 * target name, so that the responder's side is tested on its own.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ResponderConfigInput } from '../../src/config/schema.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { resetStreamWith } from '../../src/shared/http2-stream.ts';
import { FakeInitiator } from '../helpers/fake-initiator.ts';
import { TcpCaller } from '../helpers/tcp-caller.ts';
import { tunnelsRegistered } from '../helpers/tunnels.ts';

const tcpListeners: NonNullable<ResponderConfigInput['tcp_listeners']> = [
  { address: '127.0.0.1:0', stat_prefix: 'echo', host_id: 'n1', target: 'echo' },
  { address: '127.0.0.1:0', stat_prefix: 'half', host_id: 'n1', target: 'half' },
  { address: '127.0.0.1:0', stat_prefix: 'missing', host_id: 'n1', target: 'missing' },
  { address: '127.0.0.1:0', stat_prefix: 'nobody', host_id: 'nobody', target: 'echo' },
  { address: '127.0.0.1:0', stat_prefix: 'hold', host_id: 'n1', target: 'hold' },
  {
    address: '127.0.0.1:0',
    stat_prefix: 'one',
    host_id: 'c1',
    target: 'hold',
    max_connections: 1,
  },
  {
    address: '127.0.0.1:0',
    stat_prefix: 'slow',
    host_id: 'n1',
    target: 'silent',
    connect_timeout: '200ms',
  },
];

/** The fake initiator's CONNECT handling, by `:authority` (the target name). */
function answer(
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  held: (stream: http2.ServerHttp2Stream) => void,
): void {
  const target = headers[':authority'];
  if (headers[':method'] !== 'CONNECT') {
    stream.respond({ ':status': 405 });
    stream.end();
    return;
  }
  if (target === 'echo') {
    stream.respond({ ':status': 200 });
    // pipe: backpressure both ways, and the caller's END_STREAM ends the echo.
    stream.pipe(stream);
  } else if (target === 'half') {
    // Answers only after the caller's end: the caller must still receive after its FIN.
    stream.respond({ ':status': 200 });
    const hash = createHash('sha256');
    let bytes = 0;
    stream.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    stream.on('end', () => stream.end(`got ${bytes} bytes ${hash.digest('hex')}`));
  } else if (target === 'hold') {
    stream.respond({ ':status': 200 });
    held(stream);
  } else if (target === 'silent') {
    // Never answers.
  } else {
    stream.respond({ ':status': 404 });
    stream.end(`no tcp target ${String(target)}`);
  }
}

/**
 * A fake initiator with its tunnel registered as node n1 of `responder`; with `serve`, it answers
 * CONNECT streams with `answer`.
 */
async function registeredFake(
  responder: Responder,
  serve?: (stream: http2.ServerHttp2Stream) => void,
): Promise<FakeInitiator> {
  const registered = tunnelsRegistered(responder, 'n1');
  const fake = await FakeInitiator.connect(responder.addresses.tunnel);
  await fake.expectAccepted();
  await registered;
  if (serve !== undefined) {
    void fake.serveHttp2((stream, headers) => answer(stream, headers, serve), {
      enableConnectProtocol: true,
    });
  }
  return fake;
}

describe('TCP listeners on the responder', () => {
  let responder: Responder;
  let fake: FakeInitiator;
  const heldStreams: http2.ServerHttp2Stream[] = [];
  let onHeld: ((stream: http2.ServerHttp2Stream) => void) | undefined;
  const tcp = (index: number) => responder.addresses.tcp[index]!;
  const stat = (name: string) => responder.stats.value(name) ?? 0;

  /** The next stream the fake holds open. */
  const nextHeld = () =>
    new Promise<http2.ServerHttp2Stream>((resolve) => {
      onHeld = resolve;
    });

  before(async () => {
    responder = await startResponder({
      stat_prefix: 'reverse_connections',
      // No RPING while the test runs: a tunnel is checked out at once.
      tunnel_listener: { address: '127.0.0.1:0', ping_interval: '300s' },
      egress_listeners: [{ address: '127.0.0.1:0' }],
      tcp_listeners: tcpListeners,
    });
    fake = await registeredFake(responder, (held) => {
      heldStreams.push(held);
      onHeld?.(held);
    });
  });

  after(async () => {
    fake.destroy();
    await responder.close({ graceMs: 0 });
  });

  it('reports the bound address of each tcp listener', () => {
    assert.equal(responder.addresses.tcp.length, tcpListeners.length);
    for (const address of responder.addresses.tcp) assert.ok(address.port > 0);
  });

  it('echoes bytes through the tunnel and ends cleanly when the caller ends', async () => {
    const caller = await TcpCaller.connect(tcp(0));
    caller.socket.write('hello over tcp');
    assert.equal((await caller.receivedAtLeast(14)).toString(), 'hello over tcp');
    assert.equal(stat('tcp.echo.downstream_cx_active'), 1);
    caller.socket.end();
    const outcome = await caller.closed;
    assert.equal(outcome.data.toString(), 'hello over tcp');
    assert.equal(outcome.ended, true);
    assert.equal(outcome.errorCode, undefined);
    assert.equal(stat('tcp.echo.downstream_cx_total'), 1);
    assert.equal(stat('tcp.echo.downstream_cx_rx_bytes_total'), 14);
    assert.equal(stat('tcp.echo.downstream_cx_tx_bytes_total'), 14);
  });

  it('keeps the direction back open after the caller half-closes', async () => {
    const caller = await TcpCaller.connect(tcp(1));
    const payload = Buffer.from('first half, then FIN');
    caller.socket.end(payload);
    const outcome = await caller.closed;
    const digest = createHash('sha256').update(payload).digest('hex');
    assert.equal(outcome.data.toString(), `got ${payload.length} bytes ${digest}`);
    assert.equal(outcome.ended, true);
    assert.equal(outcome.errorCode, undefined);
  });

  it('carries 64 MiB each way at once, byte for byte', async () => {
    const size = 64 * 1024 * 1024;
    const block = randomBytes(1024 * 1024);
    const caller = await TcpCaller.connect(tcp(0));
    const sent = createHash('sha256');
    // The echo sends everything back: the caller reads while it writes, under backpressure.
    const received = createHash('sha256');
    let receivedBytes = 0;
    caller.socket.on('data', (chunk: Buffer) => {
      received.update(chunk);
      receivedBytes += chunk.length;
    });
    for (let offset = 0; offset < size; offset += block.length) {
      // A different block each time, so that a reordering or a repeat changes the digest.
      block.writeUInt32BE(offset, 0);
      sent.update(block);
      if (!caller.socket.write(Buffer.from(block))) await once(caller.socket, 'drain');
    }
    caller.socket.end();
    const outcome = await caller.closed;
    assert.equal(outcome.ended, true);
    assert.equal(receivedBytes, size);
    assert.equal(received.digest('hex'), sent.digest('hex'));
  });

  it('closes a connection at once when the host id has no tunnel, and counts it', async () => {
    const before = stat('tcp.nobody.downstream_cx_no_route');
    const outcome = await TcpCaller.open(tcp(3)).closed;
    assert.equal(outcome.data.length, 0);
    assert.equal(stat('tcp.nobody.downstream_cx_no_route'), before + 1);
  });

  it('closes a connection the initiator refuses (404), and counts a connect failure', async () => {
    const caller = await TcpCaller.connect(tcp(2));
    caller.socket.write('not for anyone');
    const outcome = await caller.closed;
    assert.equal(outcome.data.length, 0);
    assert.equal(stat('tcp.missing.upstream_cx_connect_fail'), 1);
  });

  it('closes a connection the initiator does not answer within connect_timeout', async () => {
    const outcome = await TcpCaller.open(tcp(6)).closed;
    assert.equal(outcome.data.length, 0);
    assert.equal(stat('tcp.slow.upstream_cx_connect_fail'), 1);
    assert.equal(stat('tcp.slow.upstream_cx_connect_timeout'), 1);
  });

  it('resets the stream with CONNECT_ERROR when the caller resets its connection', async () => {
    const held = nextHeld();
    const caller = await TcpCaller.connect(tcp(4));
    const stream = await held;
    const closed = new Promise((resolve) => stream.on('close', resolve));
    caller.socket.resetAndDestroy();
    await closed;
    assert.equal(stream.rstCode, http2.constants.NGHTTP2_CONNECT_ERROR);
  });

  it("destroys the caller's connection when the initiator resets the stream", async () => {
    const held = nextHeld();
    const caller = await TcpCaller.connect(tcp(4));
    const stream = await held;
    stream.write('partial');
    await caller.receivedAtLeast(7);
    // Not stream.close(code), which may put END_STREAM ahead of the RST_STREAM (http2-stream.ts).
    resetStreamWith(stream, http2.constants.NGHTTP2_CONNECT_ERROR);
    const outcome = await caller.closed;
    assert.equal(outcome.data.toString(), 'partial');
    assert.equal(outcome.ended, false, 'a reset stream must not look like a FIN');
    assert.equal(outcome.errorCode, 'ECONNRESET');
  });

  it('closes connections beyond max_connections at once and counts them', async () => {
    const held = nextHeld();
    const first = await TcpCaller.connect(tcp(5));
    const stream = await held;
    assert.equal(stat('tcp.one.downstream_cx_active'), 1);
    const refused = await TcpCaller.open(tcp(5)).closed;
    assert.equal(refused.data.length, 0);
    assert.equal(stat('tcp.one.downstream_cx_overflow'), 1);
    assert.equal(stat('tcp.one.downstream_cx_total'), 2);
    // The first is untouched: it still carries bytes.
    stream.write('still here');
    assert.equal((await first.receivedAtLeast(10)).toString(), 'still here');
    stream.end();
    first.socket.end();
    assert.equal((await first.closed).ended, true);
  });
});

describe('a TCP listener whose tunnel dies', () => {
  let responder: Responder;
  let fake: FakeInitiator;

  before(async () => {
    responder = await startResponder({
      stat_prefix: 'reverse_connections',
      tunnel_listener: { address: '127.0.0.1:0', ping_interval: '300s' },
      egress_listeners: [{ address: '127.0.0.1:0' }],
      tcp_listeners: [{ address: '127.0.0.1:0', stat_prefix: 'hold', host_id: 'n1', target: 'x' }],
    });
    fake = await registeredFake(responder);
  });

  after(async () => {
    fake.destroy();
    await responder.close({ graceMs: 0 });
  });

  it("destroys the caller's connection, never ending it cleanly", async () => {
    let held: (stream: http2.ServerHttp2Stream) => void = () => {};
    const streamArrived = new Promise<http2.ServerHttp2Stream>((resolve) => {
      held = resolve;
    });
    void fake.serveHttp2(
      (stream) => {
        stream.respond({ ':status': 200 });
        held(stream);
      },
      { enableConnectProtocol: true },
    );
    const caller = await TcpCaller.connect(responder.addresses.tcp[0]!);
    const stream = await streamArrived;
    stream.write('before the end');
    await caller.receivedAtLeast(14);
    fake.destroy();
    const outcome = await caller.closed;
    assert.equal(outcome.ended, false);
    assert.equal(outcome.errorCode, 'ECONNRESET');
    assert.equal(responder.stats.value('tcp.hold.downstream_cx_total'), 1);
  });
});

describe('TCP listeners with tenant isolation and an idle timeout', () => {
  let responder: Responder;
  let fake: FakeInitiator;
  const stat = (name: string) => responder.stats.value(name) ?? 0;

  before(async () => {
    responder = await startResponder({
      stat_prefix: 'reverse_connections',
      enable_tenant_isolation: true,
      tunnel_listener: { address: '127.0.0.1:0', ping_interval: '300s' },
      egress_listeners: [{ address: '127.0.0.1:0', tenant_id_headers: ['x-tenant-id'] }],
      tcp_listeners: [
        {
          address: '127.0.0.1:0',
          stat_prefix: 'mine',
          host_id: 'n1',
          tenant_id: 't1',
          target: 'echo',
          idle_timeout: '300ms',
        },
        {
          address: '127.0.0.1:0',
          stat_prefix: 'theirs',
          host_id: 'n1',
          tenant_id: 't2',
          target: 'echo',
        },
      ],
    });
    // The fake's handshake names tenant t1.
    fake = await registeredFake(responder, () => {});
  });

  after(async () => {
    fake.destroy();
    await responder.close({ graceMs: 0 });
  });

  it("never reaches another tenant's node of the same id", async () => {
    const outcome = await TcpCaller.open(responder.addresses.tcp[1]!).closed;
    assert.equal(outcome.data.length, 0);
    assert.equal(stat('tcp.theirs.downstream_cx_no_route'), 1);
  });

  it('keeps a busy connection past idle_timeout and closes an idle one', async () => {
    const caller = await TcpCaller.connect(responder.addresses.tcp[0]!);
    // Ten bytes 100 ms apart: 1 s of traffic, over three idle timeouts, never idle for one.
    for (let index = 0; index < 10; index += 1) {
      caller.socket.write('x');
      await caller.receivedAtLeast(index + 1);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(caller.socket.destroyed, false);
    assert.equal(stat('tcp.mine.idle_timeout'), 0);
    // Then silence: the responder closes it.
    const outcome = await caller.closed;
    assert.equal(outcome.data.toString(), 'x'.repeat(10));
    assert.equal(outcome.ended, false);
    assert.equal(stat('tcp.mine.idle_timeout'), 1);
  });
});

describe('a TCP listener when the responder closes', () => {
  it('stops accepting, and resets connections still open at the drain deadline', async () => {
    const responder = await startResponder({
      stat_prefix: 'reverse_connections',
      tunnel_listener: { address: '127.0.0.1:0', ping_interval: '300s' },
      egress_listeners: [{ address: '127.0.0.1:0' }],
      tcp_listeners: [
        { address: '127.0.0.1:0', stat_prefix: 'echo', host_id: 'n1', target: 'echo' },
      ],
    });
    const registered = tunnelsRegistered(responder, 'n1');
    const fake = await FakeInitiator.connect(responder.addresses.tunnel);
    try {
      await fake.expectAccepted();
      await registered;
      void fake.serveHttp2((stream, headers) => answer(stream, headers, () => {}), {
        enableConnectProtocol: true,
      });
      const address = responder.addresses.tcp[0]!;
      const caller = await TcpCaller.connect(address);
      caller.socket.write('open');
      await caller.receivedAtLeast(4);
      await responder.close({ graceMs: 200 });
      const outcome = await caller.closed;
      assert.equal(outcome.ended, false, 'a connection cut by the close must not look ended');
      await assert.rejects(TcpCaller.connect(address));
    } finally {
      fake.destroy();
      await responder.close({ graceMs: 0 });
    }
  });
});

describe("a TCP listener's access log", () => {
  let responder: Responder;
  let fake: FakeInitiator;
  let directory: string;
  let logPath: string;

  /** The log's lines once it has `count` of them (records are written when sockets close). */
  async function records(count: number): Promise<Array<Record<string, unknown>>> {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const text = await readFile(logPath, 'utf8').catch(() => '');
      const lines = text.split('\n').filter((line) => line !== '');
      if (lines.length >= count)
        return lines.map((line) => JSON.parse(line) as Record<string, unknown>);
      if (Date.now() > deadline)
        assert.fail(`${logPath} has ${lines.length} lines, expected ${count}`);
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  before(async () => {
    directory = await mkdtemp(path.join(os.tmpdir(), 'revtun-tcp-access-'));
    logPath = path.join(directory, 'tcp.jsonl');
    const access_log = [{ path: logPath }];
    responder = await startResponder({
      tunnel_listener: { address: '127.0.0.1:0', ping_interval: '300s' },
      egress_listeners: [{ address: '127.0.0.1:0' }],
      tcp_listeners: [
        { address: '127.0.0.1:0', stat_prefix: 'echo', host_id: 'n1', target: 'echo', access_log },
        {
          address: '127.0.0.1:0',
          stat_prefix: 'missing',
          host_id: 'n1',
          target: 'missing',
          access_log,
        },
        {
          address: '127.0.0.1:0',
          stat_prefix: 'nobody',
          host_id: 'nobody',
          target: 'echo',
          access_log,
        },
      ],
    });
    fake = await registeredFake(responder, () => {});
  });

  after(async () => {
    fake.destroy();
    await responder.close({ graceMs: 0 });
    await rm(directory, { recursive: true, force: true });
  });

  it('writes one record per connection: connected with its bytes, refused (UF), no tunnel (UH)', async () => {
    const [echo, missing, nobody] = responder.addresses.tcp as [HostPort, HostPort, HostPort];
    const caller = await TcpCaller.connect(echo);
    caller.socket.write('twelve bytes');
    await caller.receivedAtLeast(12);
    caller.socket.end();
    await caller.closed;
    const [connected] = await records(1);
    assert.deepEqual(
      [connected!.method, connected!.path, connected!.protocol, connected!.response_code],
      ['CONNECT', 'echo', 'TCP', 200],
    );
    assert.deepEqual(
      [connected!.host_id, connected!.node_id, connected!.bytes_received, connected!.bytes_sent],
      ['n1', 'n1', 12, 12],
    );
    assert.equal(connected!.response_flags, null);

    const refused = await TcpCaller.connect(missing);
    refused.socket.write('x');
    await refused.closed;
    const [, failed] = await records(2);
    assert.deepEqual(
      [failed!.path, failed!.response_code, failed!.response_flags],
      ['missing', 0, 'UF'],
    );

    await TcpCaller.open(nobody).closed;
    const [, , unrouted] = await records(3);
    assert.deepEqual(
      [unrouted!.host_id, unrouted!.node_id, unrouted!.response_flags],
      ['nobody', null, 'UH'],
    );
  });
});
