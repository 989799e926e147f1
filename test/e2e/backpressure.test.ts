/**
 * Backpressure end to end (issue 5 §6): a caller that reads a 256 MiB response slowly must not make
 * the responder or the initiator buffer it. HTTP/2 flow control on the tunnel and `pipeline` on
 * both sides hold the local service back instead. The responder and the initiator each run in a
 * child process of their own (test/helpers/role-process.ts, as in the soak), so that the RSS of
 * each is its own; the local service and the slow caller run in this process. Each role's RSS and
 * heap are read after a GC, over IPC, at the baseline (after a warm-up) and at each of the reader's
 * pauses.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import type { HostPort } from '../../src/shared/address.ts';
import { startService, type TestService } from '../helpers/http.ts';
import { nodeId, RoleProcess, type RoleSample } from '../helpers/role-process.ts';

const mebibyte = 1024 * 1024;
const totalBytes = 256 * mebibyte;
/** Read at full speed first, so that JIT, pools and lazily made buffers exist at the baseline. */
const warmUpBytes = 16 * mebibyte;
const chunk = Buffer.alloc(64 * 1024, 'revtun backpressure ');
/**
 * The caller reads this much, then pauses for at least `pauseMs` (longer while both roles are
 * sampled): at most 64 MiB/s, far below loopback, which the tunnel must not run ahead of.
 */
const readBurst = 4 * mebibyte;
const pauseMs = 60;
const growthLimit = 32 * mebibyte;
/** Deadline for no progress on the response (an http.ClientRequest socket timeout). */
const idleTimeoutMs = 20_000;

/** The SHA-256 of what the service sends for `bytes`: `chunk` repeated. */
function expectedDigest(bytes: number): string {
  const hash = createHash('sha256');
  for (let sent = 0; sent < bytes; sent += chunk.length) hash.update(chunk);
  return hash.digest('hex');
}

/**
 * GETs `path` through the egress listener and hashes the body; with `atPause`, after every
 * `readBurst` bytes it stops reading, awaits `atPause` (given the bytes read so far), and resumes no sooner than `pauseMs` after
 * it stopped.
 */
function readThrough(
  egress: HostPort,
  path: string,
  atPause?: (received: number) => Promise<void>,
): Promise<{ received: number; digest: string; pausesMs: number[] }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let received = 0;
    let sincePause = 0;
    /** How long each pause really lasted: at least `pauseMs`, longer when sampling takes longer. */
    const pausesMs: number[] = [];
    const req = http.get(
      { ...egress, path, headers: { 'x-node-id': nodeId }, agent: false },
      (res) => {
        res.on('error', reject);
        if (res.statusCode !== 200) {
          reject(new Error(`GET ${path}: status ${res.statusCode}`));
          res.resume();
          return;
        }
        res.on('data', (data: Buffer) => {
          hash.update(data);
          received += data.length;
          sincePause += data.length;
          if (atPause === undefined || sincePause < readBurst) return;
          sincePause = 0;
          // The slow reader: it stops reading, and everything behind it must wait.
          res.pause();
          const pausedAt = Date.now();
          atPause(received).then(
            () =>
              setTimeout(
                () => {
                  pausesMs.push(Date.now() - pausedAt);
                  res.resume();
                },
                Math.max(0, pausedAt + pauseMs - Date.now()),
              ),
            (error: unknown) => req.destroy(error as Error),
          );
        });
        res.on('end', () => {
          if (res.complete) resolve({ received, digest: hash.digest('hex'), pausesMs });
          else reject(new Error(`GET ${path}: response ended incomplete after ${received} bytes`));
        });
      },
    );
    req.on('error', reject);
    req.setTimeout(idleTimeoutMs, () =>
      req.destroy(new Error(`GET ${path}: no progress for ${idleTimeoutMs} ms`)),
    );
  });
}

/** A role's figures after GC: at the baseline and the highest seen at the pauses. */
class RoleMemory {
  readonly baseline: RoleSample;
  maxRss: number;
  maxHeapUsed: number;
  maxArrayBuffers: number;
  samples = 0;

  constructor(baseline: RoleSample) {
    this.baseline = baseline;
    this.maxRss = baseline.rss;
    this.maxHeapUsed = baseline.heapUsed;
    this.maxArrayBuffers = baseline.arrayBuffers;
  }

  record(sample: RoleSample): void {
    this.maxRss = Math.max(this.maxRss, sample.rss);
    this.maxHeapUsed = Math.max(this.maxHeapUsed, sample.heapUsed);
    this.maxArrayBuffers = Math.max(this.maxArrayBuffers, sample.arrayBuffers);
    this.samples += 1;
  }

  get rssGrowth(): number {
    return this.maxRss - this.baseline.rss;
  }

  describe(): string {
    const { baseline: b } = this;
    return (
      `baseline rss ${mib(b.rss)}, max rss ${mib(this.maxRss)}, growth +${mib(this.rssGrowth)} MiB; ` +
      `heap after GC ${mib(b.heapUsed)} → max ${mib(this.maxHeapUsed)} MiB, ` +
      `arrayBuffers ${mib(b.arrayBuffers)} → max ${mib(this.maxArrayBuffers)} MiB ` +
      `(${this.samples} samples)`
    );
  }
}

const mib = (bytes: number) => (bytes / mebibyte).toFixed(1);

describe('a slow reader of a 256 MiB response', () => {
  let service: TestService;
  let responder: RoleProcess;
  let initiator: RoleProcess;
  let egress: HostPort;
  /** Bytes of the 256 MiB body the service has written so far. */
  let bigSent = 0;

  before(async () => {
    // Writes as fast as the tunnel lets it, honouring its own backpressure ('drain').
    service = await startService((req, res) => {
      const bytes = req.url === '/warm-up' ? warmUpBytes : totalBytes;
      res.writeHead(200, { 'content-length': bytes });
      let sent = 0;
      const write = () => {
        while (sent < bytes) {
          sent += chunk.length;
          if (bytes === totalBytes) bigSent = sent;
          if (!res.write(chunk)) {
            res.once('drain', write);
            return;
          }
        }
        res.end();
      };
      // A caller that went away (a failed run) ends the response with an error: not this test's.
      res.on('error', () => {});
      write();
    });
    responder = new RoleProcess('responder');
    const started = await responder.call({ type: 'start' });
    egress = started.egress as HostPort;
    initiator = new RoleProcess('initiator');
    await initiator.call({
      type: 'start',
      initiator: { tunnel: started.tunnel as HostPort, target: service.target, tunnels: 1 },
    });
    await responder.call({ type: 'tunnels', atLeast: 1 });
  });

  after(async () => {
    // stop() closes the role and kills the child by its PID if it has not exited in time.
    await Promise.allSettled([initiator?.stop(), responder?.stop()]);
    await service?.close();
  });

  it('arrives whole while the responder and the initiator each add less than 32 MiB of RSS', async (t) => {
    const warmUp = await readThrough(egress, '/warm-up');
    assert.equal(warmUp.received, warmUpBytes);
    assert.equal(warmUp.digest, expectedDigest(warmUpBytes));

    const [responderBaseline, initiatorBaseline] = await Promise.all([
      responder.sample(true),
      initiator.sample(true),
    ]);
    const roles = {
      responder: new RoleMemory(responderBaseline),
      initiator: new RoleMemory(initiatorBaseline),
    };
    const startedAt = Date.now();
    /** The most the service was ahead of the reader at a pause: what every buffer between holds. */
    let maxAhead = 0;
    const { received, digest, pausesMs } = await readThrough(egress, '/big', async (read) => {
      maxAhead = Math.max(maxAhead, bigSent - read);
      const [r, i] = await Promise.all([responder.sample(true), initiator.sample(true)]);
      roles.responder.record(r);
      roles.initiator.record(i);
    });
    const seconds = (Date.now() - startedAt) / 1000;

    const meanPauseMs = pausesMs.reduce((sum, ms) => sum + ms, 0) / pausesMs.length;
    t.diagnostic(
      `256 MiB read in ${seconds.toFixed(1)} s (${(256 / seconds).toFixed(0)} MiB/s) in ` +
        `${readBurst / mebibyte} MiB bursts; ${pausesMs.length} pauses of at least ${pauseMs} ms ` +
        `(mean ${meanPauseMs.toFixed(0)} ms, max ${Math.max(...pausesMs)} ms: both roles sampled after a GC in each)`,
    );
    t.diagnostic(
      `the service was at most ${mib(maxAhead)} MiB ahead of the reader at a pause ` +
        '(socket buffers of three connections, both roles and HTTP/2 windows together)',
    );
    t.diagnostic(`responder (pid ${responder.pid}): ${roles.responder.describe()}`);
    t.diagnostic(`initiator (pid ${initiator.pid}): ${roles.initiator.describe()}`);
    assert.equal(received, totalBytes);
    assert.equal(digest, expectedDigest(totalBytes));
    // Flow control reaches the service: whatever the roles hold is part of this, whatever their
    // allocators keep.
    assert.ok(maxAhead < growthLimit, `the service ran ${mib(maxAhead)} MiB ahead of the reader`);
    for (const [name, memory] of Object.entries(roles)) {
      // A sample at every pause: a read that never paused would measure nothing.
      assert.ok(memory.samples >= totalBytes / readBurst - 1, `${name}: ${memory.samples} samples`);
      assert.ok(memory.rssGrowth < growthLimit, `${name}: ${memory.describe()}`);
      assert.ok(
        memory.maxHeapUsed - memory.baseline.heapUsed < growthLimit,
        `${name}: ${memory.describe()}`,
      );
      assert.ok(
        memory.maxArrayBuffers - memory.baseline.arrayBuffers < growthLimit,
        `${name}: ${memory.describe()}`,
      );
    }
  });
});
