/**
 * A malicious responder against an initiator: once the handshake is accepted, the fake responder
 * (the HTTP/2 client on the tunnel) sends the frames of the known HTTP/2 attacks instead of
 * requests. The initiator runs in this process with its default `http2` limits; each attack gets a
 * fresh one. It must survive (no uncaught exception), close the tunnel or refuse the stream within
 * a bounded time, and keep its memory bounded; the figures are printed.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import { FakeResponder } from '../helpers/fake-responder.ts';
import { waitForEvent } from '../helpers/tunnels.ts';
import { clientPreface } from '../helpers/h2-frames.ts';
import { startService, type TestService } from '../helpers/http.ts';
import {
  bulkHeaders,
  hpackLiteral,
  flag,
  flood,
  FrameWatch,
  frames,
  MemoryPeak,
  assertMemoryBounded,
  assertSurvived,
  type Attack,
  requestHeaderBlock,
  setting,
  repeat,
} from './h2-attack.ts';
import { CrashWatch, describeGrowth, memorySettledTo, settledMemory } from './memory.ts';

/** The attacked side must have closed the tunnel or refused the stream by then. */
const boundMs = 5_000;
/** What an attack may leave behind in the heap once collected, and add at its peak. */
const settledGrowthLimit = 8 * 1024 * 1024;
const peakGrowthLimit = 96 * 1024 * 1024;
/** How long that may take to come back (timers of closed sessions, aborted local calls). */
const settleWithinMs = 3_000;

const block = requestHeaderBlock();

const attacks: readonly Attack[] = [
  {
    name: 'rapid reset: 20000 × HEADERS + RST_STREAM',
    read: true,
    expect: 'closed',
    frames: () =>
      repeat(20_000, (i) => [
        frames.headers(2 * i + 1, block, flag.endHeaders | flag.endStream),
        frames.rstStream(2 * i + 1),
      ]),
  },
  {
    name: 'CONTINUATION flood: HEADERS without END_HEADERS, then 200000 CONTINUATION',
    read: true,
    expect: 'closed',
    frames: function* () {
      yield frames.headers(1, block, 0);
      yield* repeat(200_000, (i) =>
        frames.continuation(1, bulkHeaders(1, 100).subarray(0, 60 + (i % 7))),
      );
    },
  },
  {
    name: 'SETTINGS flood: 1000000 SETTINGS, the ACKs never read',
    read: false,
    expect: 'closed',
    frames: () => repeat(1_000_000, () => frames.settings([[setting.enablePush, 0]])),
  },
  {
    name: 'PING flood: 1000000 PING, the ACKs never read',
    read: false,
    expect: 'closed',
    frames: () => repeat(1_000_000, (i) => frames.ping(i)),
  },
  {
    name: 'huge header block: 1 MiB of headers in HEADERS + CONTINUATION',
    read: true,
    expect: 'refused',
    frames: function* () {
      const whole = bulkHeaders(256, 4096);
      const size = 16_384;
      const pieces = Math.ceil(whole.length / size);
      yield frames.headers(1, whole.subarray(0, size), flag.endStream);
      for (let i = 1; i < pieces; i += 1) {
        const last = i === pieces - 1 ? flag.endHeaders : 0;
        yield frames.continuation(1, whole.subarray(i * size, (i + 1) * size), last);
      }
    },
  },
  {
    name: 'huge header block within one frame: 200 headers, 16 KiB',
    read: true,
    expect: 'refused',
    frames: () => [
      frames.headers(
        1,
        Buffer.concat([block, bulkHeaders(200, 40)]),
        flag.endHeaders | flag.endStream,
      ),
    ],
  },
  {
    name: 'window-update abuse: the connection window pushed past 2^31-1',
    read: true,
    expect: 'closed',
    frames: () => repeat(4, () => frames.windowUpdate(0, 0x7fff_ffff)),
  },
  {
    name: 'window-update abuse: 100000 WINDOW_UPDATE of increment 0 on open streams',
    read: true,
    expect: 'closed',
    frames: function* () {
      yield frames.headers(1, block, flag.endHeaders);
      yield* repeat(100_000, () => frames.windowUpdate(1, 0));
    },
  },
  {
    name: 'zero window: 100 requests for 1 MiB each, SETTINGS_INITIAL_WINDOW_SIZE 0, never a WINDOW_UPDATE',
    read: true,
    expect: 'held',
    frames: function* () {
      yield frames.settings([[setting.initialWindowSize, 0]]);
      const big = Buffer.concat([
        Buffer.from([0x82, 0x86]),
        hpackLiteral(':path', '/big'),
        hpackLiteral(':authority', 'attacked'),
      ]);
      yield* repeat(100, (i) => frames.headers(2 * i + 1, big, flag.endHeaders | flag.endStream));
    },
  },
];

describe('a malicious responder against an initiator (raw HTTP/2 frames)', () => {
  let service: TestService;
  let crashes: CrashWatch;
  const running: Array<{ initiator: Initiator; fake: FakeResponder }> = [];

  before(async () => {
    crashes = new CrashWatch();
    const mebibyte = Buffer.alloc(1024 * 1024, 'x');
    service = await startService((request, response) =>
      response.end(request.url === '/big' ? mebibyte : 'ok'),
    );
  });

  after(async () => {
    for (const { initiator, fake } of running) {
      await initiator.close({ graceMs: 0 });
      await fake.close();
    }
    await service?.close();
    crashes.stop();
  });

  /**
   * An initiator dialling a fake responder; resolves with the tunnel's socket once the initiator
   * has taken the 200 (bytes sent earlier would arrive with the 200 itself).
   */
  async function attackedTunnel(): Promise<{ initiator: Initiator; socket: Socket }> {
    const fake = await FakeResponder.listen();
    const initiator = await startInitiator({
      node_id: 'n1',
      cluster_id: 'c1',
      tenant_id: 't1',
      remote_clusters: [{ name: 'upstream', hosts: [fake.hostText], tunnels_per_host: 1 }],
      // A small pool: the streams an attack opens may fill it (its sockets stay alive for undici's
      // keep-alive time), which is bounded by max_connections and is not what is measured here.
      local_routes: [{ prefix: '/', target: service.target, max_connections: 8 }],
    });
    running.push({ initiator, fake });
    const established = waitForEvent(initiator, 'handshake_success');
    const tunnel = await fake.accept();
    await tunnel.readHandshake();
    tunnel.accept();
    await established;
    return { initiator, socket: tunnel.peer.detach() };
  }

  /**
   * Runs the code paths every attack takes (stream handling, calls to the local service, the reset
   * budget) once before any baseline is taken: the first run compiles and caches several MiB that
   * stay, which would otherwise be counted against the first attack.
   */
  before(async () => {
    const { socket } = await attackedTunnel();
    const watch = new FrameWatch(socket, { read: true });
    socket.write(Buffer.concat([Buffer.from(clientPreface, 'latin1'), frames.settings()]));
    await flood(
      socket,
      repeat(2_000, (i) => [
        frames.headers(2 * i + 1, block, flag.endHeaders | flag.endStream),
        frames.rstStream(2 * i + 1),
      ]),
    );
    watch.read();
    assert.equal(await watch.whenClosed(boundMs), true, 'the warm-up tunnel was not closed');
    watch.hangUp();
  });

  for (const attack of attacks) {
    it(`survives ${attack.name}`, async () => {
      const { socket } = await attackedTunnel();
      const baseline = await settledMemory();
      const peak = new MemoryPeak();
      const watch = new FrameWatch(socket, { read: attack.read });
      socket.write(Buffer.concat([Buffer.from(clientPreface, 'latin1'), frames.settings()]));
      const { sent, stalled } = await flood(socket, attack.frames());
      watch.read();
      const left = () => Math.max(0, boundMs - (Date.now() - watch.startedAt));
      if (attack.expect === 'held') await delay(1_000);
      else if (attack.expect === 'refused') await watch.whenRefused(left());
      else await watch.whenClosed(left());
      peak.stop();
      watch.hangUp();
      const { figures: settled, afterMs } = await memorySettledTo(
        baseline.heapUsed + settledGrowthLimit,
        settleWithinMs,
      );
      process.stdout.write(
        `# ${attack.name}: ${sent} frames sent${stalled ? ' (then the initiator stopped reading)' : ''}; ${watch.describe()}; ` +
          `${peak.describe()}; after GC (${afterMs} ms later) ${describeGrowth(baseline, settled)}\n`,
      );
      assertSurvived({ attack, watch, crashes, boundMs });
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
