import assert from 'node:assert/strict';
import { once } from 'node:events';
import { PassThrough, Readable, Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { pump } from './pump.ts';

/** A sink that keeps what it is given and takes `delayMs` per chunk. */
function slowSink(delayMs: number, highWaterMark: number): Writable & { chunks: Buffer[] } {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    highWaterMark,
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk);
      setTimeout(done, delayMs);
    },
  });
  return Object.assign(sink, { chunks });
}

describe('pump', () => {
  it('copies every chunk and ends the sink', async () => {
    const sink = slowSink(0, 16);
    await pump(Readable.from([Buffer.from('a'), Buffer.from('b'), Buffer.from('c')]), sink);
    assert.equal(Buffer.concat(sink.chunks).toString(), 'abc');
    assert.equal(sink.writableFinished, true);
  });

  it('leaves the sink open with end: false', async () => {
    const sink = slowSink(0, 16);
    await pump(Readable.from([Buffer.from('a')]), sink, { end: false });
    assert.equal(sink.writableEnded, false);
    sink.end();
    await once(sink, 'finish');
    assert.equal(Buffer.concat(sink.chunks).toString(), 'a');
  });

  it('pauses the source while a slow sink is full, so memory stays bounded', async () => {
    const chunkBytes = 1024;
    const total = 200;
    let produced = 0;
    let maxAhead = 0;
    const sink = slowSink(1, 4 * chunkBytes);
    const source = new Readable({
      highWaterMark: 4 * chunkBytes,
      read() {
        if (produced === total) {
          this.push(null);
          return;
        }
        produced += 1;
        maxAhead = Math.max(maxAhead, produced - sink.chunks.length);
        this.push(Buffer.alloc(chunkBytes));
      },
    });
    await pump(source, sink);
    assert.equal(sink.chunks.length, total);
    // The source's and the sink's buffers (4 chunks each) and a chunk in flight, not all 200.
    assert.ok(maxAhead <= 12, `the source ran ${maxAhead} chunks ahead of the sink`);
  });

  const sourceFailures = [
    {
      name: "rejects with the source's error and destroys the sink unfinished",
      fail: (source: PassThrough) => source.destroy(new Error('upstream broke')),
      expected: /upstream broke/,
    },
    {
      name: 'rejects with a premature close when the source closes before its end',
      fail: (source: PassThrough) => source.destroy(),
      expected: { code: 'ERR_STREAM_PREMATURE_CLOSE' },
    },
  ];
  for (const { name, fail, expected } of sourceFailures) {
    it(name, async () => {
      const source = new PassThrough();
      const sink = slowSink(0, 16);
      const pumped = pump(source, sink);
      source.write('partial');
      await nextTurn();
      fail(source);
      await assert.rejects(pumped, expected);
      assert.equal(sink.destroyed, true);
      assert.equal(sink.writableFinished, false);
    });
  }

  it('rejects with a premature close and destroys the source when the sink closes first', async () => {
    const source = new PassThrough();
    const sink = slowSink(0, 16);
    const pumped = pump(source, sink, { end: false });
    source.write('partial');
    await nextTurn();
    sink.destroy();
    await assert.rejects(pumped, { code: 'ERR_STREAM_PREMATURE_CLOSE' });
    assert.equal(source.destroyed, true);
  });

  it("rejects with the sink's error", async () => {
    const source = new PassThrough();
    const sink = new Writable({
      write(_chunk, _encoding, done) {
        done(new Error('sink broke'));
      },
    });
    const pumped = pump(source, sink);
    source.write('x');
    await assert.rejects(pumped, /sink broke/);
    assert.equal(source.destroyed, true);
  });

  it('removes its listeners once done', async () => {
    const source = Readable.from([Buffer.from('a')]);
    const sink = slowSink(0, 16);
    await pump(source, sink, { end: false });
    for (const event of ['data', 'error', 'close', 'end'])
      assert.equal(source.listenerCount(event), 0, `source ${event}`);
    for (const event of ['error', 'close', 'drain', 'finish'])
      assert.equal(sink.listenerCount(event), 0, `sink ${event}`);
  });
});
