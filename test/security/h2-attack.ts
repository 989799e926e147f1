/**
 * A hostile HTTP/2 peer in raw frames (RFC 9113 §4–§6, HPACK RFC 7541): the frames of the known
 * HTTP/2 denial-of-service attacks, a writer that floods them with or without reading the answers,
 * and a watcher that parses what the attacked side sends back (GOAWAY, RST_STREAM) without keeping
 * it, so the attacker's own memory stays out of the figures.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { encodeFrame, frameType } from '../helpers/h2-frames.ts';
import { mib, type MemoryFigures } from './memory.ts';

export const attackFrameType = {
  ...frameType,
  pushPromise: 0x5,
  continuation: 0x9,
} as const;

export const flag = { endStream: 0x1, endHeaders: 0x4 } as const;

/** RFC 9113 §7 error codes, by value, for reports. */
export const errorCodeNames: Record<number, string> = {
  0x0: 'NO_ERROR',
  0x1: 'PROTOCOL_ERROR',
  0x2: 'INTERNAL_ERROR',
  0x3: 'FLOW_CONTROL_ERROR',
  0x4: 'SETTINGS_TIMEOUT',
  0x5: 'STREAM_CLOSED',
  0x6: 'FRAME_SIZE_ERROR',
  0x7: 'REFUSED_STREAM',
  0x8: 'CANCEL',
  0x9: 'COMPRESSION_ERROR',
  0xa: 'CONNECT_ERROR',
  0xb: 'ENHANCE_YOUR_CALM',
  0xc: 'INADEQUATE_SECURITY',
  0xd: 'HTTP_1_1_REQUIRED',
};

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1), the prefix bits of `first` kept. */
function hpackInteger(value: number, prefixBits: number, first = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const bytes = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    bytes.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

/** An HPACK string literal, not Huffman-coded (RFC 7541 §5.2). */
function hpackString(text: string): Buffer {
  const bytes = Buffer.from(text, 'latin1');
  return Buffer.concat([hpackInteger(bytes.length, 7), bytes]);
}

/** A literal header field without indexing, new name (RFC 7541 §6.2.2): no dynamic table state. */
export function hpackLiteral(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x00]), hpackString(name), hpackString(value)]);
}

/** `:method GET`, `:scheme http`, `:path /`, `:authority <authority>` (static table 2, 6, 4, 1). */
export function requestHeaderBlock(authority = 'attacked'): Buffer {
  return Buffer.concat([
    Buffer.from([0x82, 0x86, 0x84]),
    hpackInteger(1, 4),
    hpackString(authority),
  ]);
}

/** `:status 200` (static table 8). */
export const statusHeaderBlock = Buffer.from([0x88]);

/** `count` literal headers of `valueBytes` each, e.g. to make a header block of a chosen size. */
export function bulkHeaders(count: number, valueBytes: number): Buffer {
  return Buffer.concat(
    Array.from({ length: count }, (_, i) => hpackLiteral(`x-bulk-${i}`, 'v'.repeat(valueBytes))),
  );
}

export const frames = {
  headers: (stream: number, block: Buffer, flags: number) =>
    encodeFrame(attackFrameType.headers, flags, stream, block),
  continuation: (stream: number, block: Buffer, flags = 0) =>
    encodeFrame(attackFrameType.continuation, flags, stream, block),
  rstStream: (stream: number, code = 0x8) => {
    const payload = Buffer.alloc(4);
    payload.writeUInt32BE(code);
    return encodeFrame(attackFrameType.rstStream, 0, stream, payload);
  },
  settings: (parameters: ReadonlyArray<readonly [id: number, value: number]> = []) => {
    const payload = Buffer.alloc(parameters.length * 6);
    parameters.forEach(([id, value], i) => {
      payload.writeUInt16BE(id, i * 6);
      payload.writeUInt32BE(value, i * 6 + 2);
    });
    return encodeFrame(attackFrameType.settings, 0, 0, payload);
  },
  settingsAck: () => encodeFrame(attackFrameType.settings, 0x1, 0, Buffer.alloc(0)),
  ping: (opaque: number) => {
    const payload = Buffer.alloc(8);
    payload.writeUInt32BE(opaque >>> 0, 4);
    return encodeFrame(attackFrameType.ping, 0, 0, payload);
  },
  windowUpdate: (stream: number, increment: number) => {
    const payload = Buffer.alloc(4);
    payload.writeUInt32BE(increment >>> 0);
    return encodeFrame(attackFrameType.windowUpdate, 0, stream, payload);
  },
  pushPromise: (stream: number, promised: number, block: Buffer) => {
    const payload = Buffer.alloc(4);
    payload.writeUInt32BE(promised);
    return encodeFrame(
      attackFrameType.pushPromise,
      flag.endHeaders,
      stream,
      Buffer.concat([payload, block]),
    );
  },
  data: (stream: number, bytes: Buffer, flags = 0) =>
    encodeFrame(attackFrameType.data, flags, stream, bytes),
};

/** SETTINGS identifiers (RFC 9113 §6.5.2). */
export const setting = {
  enablePush: 0x2,
  maxConcurrentStreams: 0x3,
  initialWindowSize: 0x4,
  maxFrameSize: 0x5,
  maxHeaderListSize: 0x6,
} as const;

/** What the attacked side sent back, frame by frame, and when it closed. */
export class FrameWatch {
  readonly startedAt = Date.now();
  readonly counts = new Map<number, number>();
  goaway: { readonly code: number; readonly afterMs: number } | undefined;
  firstRst:
    { readonly stream: number; readonly code: number; readonly afterMs: number } | undefined;
  /** When the attacked side closed the connection (a close by the attacker is not counted). */
  closedAfterMs: number | undefined;
  bytesReceived = 0;
  #hungUp = false;
  readonly #socket: Socket;
  #pending = Buffer.alloc(0);
  #skip = 0;
  #closeWaiters: Array<() => void> = [];

  constructor(socket: Socket, { read }: { read: boolean }) {
    this.#socket = socket;
    socket.on('data', (chunk: Buffer) => this.#feed(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      if (!this.#hungUp) this.closedAfterMs = Date.now() - this.startedAt;
      for (const waiter of this.#closeWaiters.splice(0)) waiter();
    });
    if (read) socket.resume();
    else socket.pause();
  }

  /** Starts reading (a flood that never read its answers looks at them afterwards). */
  read(): void {
    this.#socket.resume();
  }

  get closed(): boolean {
    return this.closedAfterMs !== undefined;
  }

  /** The attacker gives up and closes the connection itself (not counted as the attacked side's). */
  hangUp(): void {
    if (!this.closed) this.#hungUp = true;
    this.#socket.destroy();
  }

  /** Resolves true once the socket is closed, false after `timeoutMs`. */
  whenClosed(timeoutMs: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.#closeWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** Resolves true once a stream was reset, a GOAWAY came or the socket closed; false after `timeoutMs`. */
  async whenRefused(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.firstRst !== undefined || this.goaway !== undefined || this.closed) return true;
      await this.whenClosed(Math.min(20, deadline - Date.now()));
    }
    return this.firstRst !== undefined || this.goaway !== undefined || this.closed;
  }

  /** "GOAWAY ENHANCE_YOUR_CALM after 12 ms, closed after 15 ms, 2 RST_STREAM". */
  describe(): string {
    const parts: string[] = [];
    if (this.goaway !== undefined) {
      parts.push(
        `GOAWAY ${errorCodeNames[this.goaway.code] ?? this.goaway.code} after ${this.goaway.afterMs} ms`,
      );
    }
    const rsts = this.counts.get(attackFrameType.rstStream) ?? 0;
    if (this.firstRst !== undefined) {
      parts.push(
        `${rsts} RST_STREAM (first ${errorCodeNames[this.firstRst.code] ?? this.firstRst.code} on stream ${this.firstRst.stream} after ${this.firstRst.afterMs} ms)`,
      );
    }
    parts.push(
      this.closedAfterMs === undefined
        ? 'connection left open (the attacker hung up)'
        : `connection closed after ${this.closedAfterMs} ms`,
    );
    return parts.join(', ');
  }

  #feed(chunk: Buffer): void {
    this.bytesReceived += chunk.length;
    let data = chunk;
    if (this.#skip > 0) {
      const skipped = Math.min(this.#skip, data.length);
      this.#skip -= skipped;
      data = data.subarray(skipped);
    }
    let buffer = this.#pending.length > 0 ? Buffer.concat([this.#pending, data]) : data;
    while (buffer.length >= 9) {
      const length = buffer.readUIntBE(0, 3);
      const type = buffer[3] as number;
      const stream = buffer.readUInt32BE(5) & 0x7fffffff;
      this.counts.set(type, (this.counts.get(type) ?? 0) + 1);
      const wanted = type === attackFrameType.goaway || type === attackFrameType.rstStream;
      if (!wanted) {
        // Payloads of other frames are skipped, never kept.
        const available = Math.min(length, buffer.length - 9);
        this.#skip = length - available;
        buffer = buffer.subarray(9 + available);
        continue;
      }
      if (buffer.length < 9 + length) break;
      const payload = buffer.subarray(9, 9 + length);
      const afterMs = Date.now() - this.startedAt;
      if (type === attackFrameType.goaway && this.goaway === undefined && length >= 8) {
        this.goaway = { code: payload.readUInt32BE(4), afterMs };
      }
      if (type === attackFrameType.rstStream && this.firstRst === undefined && length >= 4) {
        this.firstRst = { stream, code: payload.readUInt32BE(0), afterMs };
      }
      buffer = buffer.subarray(9 + length);
    }
    this.#pending = Buffer.from(buffer);
  }
}

/**
 * Writes `frames` in corked batches, waiting for 'drain' when the socket pushes back; stops when
 * the socket closes or stays blocked for `stallMs` (the attacked side stopped reading: the flood
 * has done what it can). Returns how many frames were written and whether it stalled.
 */
export async function flood(
  socket: Socket,
  source: Iterable<Buffer>,
  { batch = 64, stallMs = 2_000 } = {},
): Promise<{ sent: number; stalled: boolean }> {
  let sent = 0;
  let inBatch = 0;
  socket.cork();
  for (const frame of source) {
    if (socket.destroyed) break;
    const more = socket.write(frame);
    sent += 1;
    inBatch += 1;
    if (inBatch >= batch || !more) {
      socket.uncork();
      inBatch = 0;
      if (!more || socket.writableLength > 0) {
        if (!(await drained(socket, stallMs))) {
          return { sent, stalled: !socket.destroyed };
        }
      }
      socket.cork();
    }
  }
  socket.uncork();
  return { sent, stalled: false };
}

function drained(socket: Socket, stallMs: number): Promise<boolean> {
  if (socket.writableLength === 0) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.removeListener('drain', onDrain);
      socket.removeListener('close', onClose);
      resolve(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    const timer = setTimeout(() => done(false), stallMs);
    socket.once('drain', onDrain);
    socket.once('close', onClose);
  });
}

/** Samples heapUsed and RSS every `intervalMs` until stopped, keeping the peaks. */
export class MemoryPeak {
  heapUsed = 0;
  arrayBuffers = 0;
  rss = 0;
  readonly #timer: NodeJS.Timeout;

  constructor(intervalMs = 25) {
    const sample = () => {
      const { heapUsed, arrayBuffers, rss } = process.memoryUsage();
      this.heapUsed = Math.max(this.heapUsed, heapUsed);
      this.arrayBuffers = Math.max(this.arrayBuffers, arrayBuffers);
      this.rss = Math.max(this.rss, rss);
    };
    sample();
    this.#timer = setInterval(sample, intervalMs);
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  describe(): string {
    return `peak heapUsed ${mib(this.heapUsed)}, arrayBuffers ${mib(this.arrayBuffers)}, rss ${mib(this.rss)}`;
  }
}

/** One attack: its frames, whether the attacker reads, and what the attacked side must do. */
export interface Attack {
  readonly name: string;
  /** False: the attacker never reads what it is sent until the flood is over (a flood attack). */
  readonly read: boolean;
  /**
   * `closed`: the session must go (GOAWAY, then the connection closed); `refused`: a reset of the
   * stream will do; `held`: nothing is refused (the frames are legal), only memory must stay
   * bounded.
   */
  readonly expect: 'closed' | 'refused' | 'held';
  readonly frames: () => Iterable<Buffer>;
}

/**
 * The attacked side survived: no uncaught exception, and it did what `attack.expect` says within
 * `boundMs` of the first frame. For `closed`, a GOAWAY is not enough: a session that sent one must
 * also close the connection, or a peer that never closes keeps a dead tunnel (and its place) open.
 */
export function assertSurvived(options: {
  readonly attack: Attack;
  readonly watch: FrameWatch;
  readonly crashes: { readonly errors: readonly unknown[] };
  readonly boundMs: number;
}): void {
  const { attack, watch, crashes, boundMs } = options;
  assert.deepEqual(crashes.errors, [], 'no uncaught exception or unhandled rejection');
  const within = (afterMs: number | undefined) => afterMs !== undefined && afterMs <= boundMs;
  const refused =
    within(watch.firstRst?.afterMs) || within(watch.goaway?.afterMs) || within(watch.closedAfterMs);
  if (attack.expect === 'refused') {
    assert.ok(
      refused,
      `the stream or the session was refused within ${boundMs} ms: ${watch.describe()}`,
    );
  }
  if (attack.expect === 'closed') {
    assert.ok(
      within(watch.goaway?.afterMs) || within(watch.closedAfterMs),
      `the session was refused (GOAWAY or close) within ${boundMs} ms: ${watch.describe()}`,
    );
    assert.ok(
      within(watch.closedAfterMs),
      `the connection was closed within ${boundMs} ms, not only sent a GOAWAY: ${watch.describe()}`,
    );
  }
}

/**
 * Memory stayed bounded: at the peak of the attack, the heap and the buffers grew by less than
 * `peakLimit`; once collected, the heap is back within `settledLimit` of the baseline.
 */
export function assertMemoryBounded(options: {
  readonly baseline: MemoryFigures;
  readonly peak: MemoryPeak;
  readonly settled: MemoryFigures;
  readonly peakLimit: number;
  readonly settledLimit: number;
}): void {
  const { baseline, peak, settled, peakLimit, settledLimit } = options;
  const peakGrowth =
    peak.heapUsed + peak.arrayBuffers - (baseline.heapUsed + baseline.arrayBuffers);
  assert.ok(
    peakGrowth < peakLimit,
    `heapUsed + arrayBuffers grew by ${mib(peakGrowth)} at the peak, more than ${mib(peakLimit)}`,
  );
  const settledGrowth = settled.heapUsed - baseline.heapUsed;
  assert.ok(
    settledGrowth < settledLimit,
    `heapUsed after GC is ${mib(settledGrowth)} above the baseline, more than ${mib(settledLimit)}`,
  );
}

/** The frames `make` gives for 0 … count−1, one or several each, lazily: a flood without the memory. */
export function* repeat(count: number, make: (i: number) => Buffer | Buffer[]): Iterable<Buffer> {
  for (let i = 0; i < count; i += 1) {
    const made = make(i);
    if (Array.isArray(made)) yield* made;
    else yield made;
  }
}
