/**
 * A malicious initiator against a responder: a fake initiator completes the handshake, and when a
 * caller's request checks its tunnel out, answers the responder's HTTP/2 client with the frames of
 * the known HTTP/2 attacks instead of a response. The responder runs in this process with its
 * default `http2` limits, next to an honest initiator. It must survive (no uncaught exception),
 * close the tunnel or refuse the stream within a bounded time, answer the caller, keep serving the
 * honest node, and keep its memory bounded; the figures are printed.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import type { Initiator } from '../../src/initiator/initiator.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import { envoyHandshakeRequest, FakeInitiator } from '../helpers/fake-initiator.ts';
import { clientPreface } from '../helpers/h2-frames.ts';
import { request, startService, type TestService } from '../helpers/http.ts';
import { connectedInitiator, waitForEvent } from '../helpers/tunnels.ts';
import {
  assertMemoryBounded,
  assertSurvived,
  bulkHeaders,
  flag,
  flood,
  FrameWatch,
  frames,
  MemoryPeak,
  setting,
  statusHeaderBlock,
  type Attack,
  repeat,
} from './h2-attack.ts';
import { CrashWatch, describeGrowth, settledMemory } from './memory.ts';

const boundMs = 5_000;
const settledGrowthLimit = 8 * 1024 * 1024;
const peakGrowthLimit = 96 * 1024 * 1024;

/** The responder's first request on a checked-out tunnel is stream 1. */
const stream = 1;

interface InitiatorAttack extends Attack {
  /** The caller's request that checks the tunnel out: a GET, or a POST of this many bytes. */
  readonly uploadBytes?: number;
}

const attacks: readonly InitiatorAttack[] = [
  {
    name: 'SETTINGS flood: 1000000 SETTINGS, the ACKs never read',
    read: false,
    expect: 'closed',
    frames: () => repeat(1_000_000, () => frames.settings([[setting.maxConcurrentStreams, 100]])),
  },
  {
    name: 'PING flood: 1000000 PING, the ACKs never read',
    read: false,
    expect: 'closed',
    frames: () => repeat(1_000_000, (i) => frames.ping(i)),
  },
  {
    name: 'huge response header block: 1 MiB in HEADERS + CONTINUATION',
    read: true,
    expect: 'refused',
    frames: function* () {
      const whole = Buffer.concat([statusHeaderBlock, bulkHeaders(256, 4096)]);
      const size = 16_384;
      const pieces = Math.ceil(whole.length / size);
      yield frames.headers(stream, whole.subarray(0, size), flag.endStream);
      for (let i = 1; i < pieces; i += 1) {
        const last = i === pieces - 1 ? flag.endHeaders : 0;
        yield frames.continuation(stream, whole.subarray(i * size, (i + 1) * size), last);
      }
    },
  },
  {
    name: 'huge response header block within one frame: 200 headers, 16 KiB',
    read: true,
    expect: 'refused',
    frames: () => [
      frames.headers(
        stream,
        Buffer.concat([statusHeaderBlock, bulkHeaders(200, 40)]),
        flag.endHeaders | flag.endStream,
      ),
    ],
  },
  {
    name: 'CONTINUATION flood: response HEADERS without END_HEADERS, then 200000 CONTINUATION',
    read: true,
    expect: 'closed',
    frames: function* () {
      yield frames.headers(stream, statusHeaderBlock, 0);
      yield* repeat(200_000, () => frames.continuation(stream, bulkHeaders(1, 60)));
    },
  },
  {
    name: 'reset flood: 100000 RST_STREAM on streams never opened',
    read: true,
    expect: 'closed',
    frames: () => repeat(100_000, (i) => frames.rstStream(101 + 2 * i)),
  },
  {
    name: 'PUSH_PROMISE although push is disabled',
    read: true,
    expect: 'closed',
    frames: () => repeat(1_000, (i) => frames.pushPromise(stream, 2 * (i + 1), statusHeaderBlock)),
  },
  {
    name: 'window-update abuse: the connection window pushed past 2^31-1',
    read: true,
    expect: 'closed',
    frames: () => repeat(4, () => frames.windowUpdate(0, 0x7fff_ffff)),
  },
  {
    name: 'zero window: SETTINGS_INITIAL_WINDOW_SIZE 0 while the caller uploads 64 MiB',
    read: true,
    expect: 'held',
    uploadBytes: 64 * 1024 * 1024,
    frames: () => [frames.settings([[setting.initialWindowSize, 0]])],
  },
];

/** A request body of `total` bytes, made chunk by chunk as the responder reads it. */
function upload(total: number): AsyncIterable<Buffer> {
  const chunk = Buffer.alloc(64 * 1024, 'u');
  function* chunks(): Iterable<Buffer> {
    for (let sent = 0; sent < total; sent += chunk.length) yield chunk;
  }
  return Readable.from(chunks(), { objectMode: false });
}

describe('a malicious initiator against a responder (raw HTTP/2 frames)', () => {
  let service: TestService;
  let responder: Responder;
  let honest: Initiator;
  let crashes: CrashWatch;
  let attacked = 0;

  before(async () => {
    crashes = new CrashWatch();
    service = await startService((_request, response) => response.end('honest'));
    responder = await startResponder({
      tunnel_listener: { address: '127.0.0.1:0', ping_interval: '300s' },
      egress_listeners: [{ address: '127.0.0.1:0' }],
    });
    honest = await connectedInitiator(responder, {
      node: 'honest',
      routes: [{ prefix: '/', target: service.target }],
    });
  });

  after(async () => {
    crashes.stop();
    await honest?.close({ graceMs: 0 });
    await responder?.close({ graceMs: 0 });
    await service?.close();
  });

  const egress = () => responder.addresses.egress[0]!;

  /** A registered fake initiator for a new node, and a caller's request checking it out. */
  async function checkedOutTunnel(attack: InitiatorAttack) {
    attacked += 1;
    const node = `evil${attacked}`;
    const registered = waitForEvent(
      responder,
      'tunnel_setup',
      (identity: { nodeId: string }) => identity.nodeId === node,
    );
    const fake = await FakeInitiator.connect(
      responder.addresses.tunnel,
      envoyHandshakeRequest({ node, cluster: 'evil', tenant: 't1' }),
    );
    await fake.expectAccepted();
    await registered;
    const started = Date.now();
    const call = request(egress(), '/', {
      method: attack.uploadBytes === undefined ? 'GET' : 'POST',
      headers: { 'x-node-id': node },
      ...(attack.uploadBytes === undefined ? {} : { body: upload(attack.uploadBytes) }),
      timeoutMs: boundMs * 3,
    }).then(
      (reply) => ({ status: reply.status, afterMs: Date.now() - started }),
      (error: Error) => ({ status: 0, error: error.message, afterMs: Date.now() - started }),
    );
    // The responder's client preface: the tunnel is checked out and HTTP/2 runs on it.
    assert.equal((await fake.peer.read(24)).toString('latin1'), clientPreface);
    return { socket: fake.peer.detach(), call };
  }

  for (const attack of attacks) {
    it(`survives ${attack.name}`, async () => {
      const baseline = await settledMemory();
      const { socket, call } = await checkedOutTunnel(attack);
      const peak = new MemoryPeak();
      const watch = new FrameWatch(socket, { read: attack.read });
      // The server preface, and the ACK of the responder's SETTINGS (sent with its preface): from
      // then on its settings bind (RFC 9113 §6.5.3), SETTINGS_ENABLE_PUSH 0 among them.
      socket.write(Buffer.concat([frames.settings(), frames.settingsAck()]));
      const { sent, stalled } = await flood(socket, attack.frames());
      watch.read();
      const left = () => Math.max(0, boundMs - (Date.now() - watch.startedAt));
      if (attack.expect === 'held') await delay(2_000);
      else if (attack.expect === 'refused') await watch.whenRefused(left());
      else await watch.whenClosed(left());
      peak.stop();
      watch.hangUp();
      const answer = await call;
      const honestReply = await request(egress(), '/', {
        headers: { 'x-node-id': 'honest' },
        timeoutMs: boundMs,
      });
      await delay(50);
      const settled = await settledMemory();
      process.stdout.write(
        `# ${attack.name}: ${sent} frames sent${stalled ? ' (then the responder stopped reading)' : ''}; ${watch.describe()}; ` +
          `the caller got ${answer.status === 0 ? `an error (${'error' in answer ? answer.error : ''})` : answer.status} after ${answer.afterMs} ms; ` +
          `${peak.describe()}; after GC ${describeGrowth(baseline, settled)}\n`,
      );
      assertSurvived({ attack, watch, crashes, boundMs });
      if (attack.expect !== 'held') {
        assert.ok(
          answer.status >= 500 || answer.status === 0,
          `the caller got a failure, not ${answer.status}`,
        );
        assert.ok(
          answer.afterMs <= boundMs * 2,
          `the caller was answered within ${boundMs * 2} ms`,
        );
      }
      assert.equal(honestReply.status, 200, 'the honest node is still served');
      assertMemoryBounded({
        baseline,
        peak,
        settled,
        peakLimit: peakGrowthLimit,
        settledLimit: settledGrowthLimit,
      });
    });
  }
});
