/**
 * A fault-injecting TCP proxy for the chaos suite (issue 5 item 7): this kernel has no tc netem, so
 * added latency and throttling are made here, in user space, between a client and a target.
 *
 * Per direction (`upstream`: client → target, `downstream`: target → client):
 * - `delayMs`: a delay line; each chunk is released `delayMs` after it arrived, in order;
 * - `bytesPerSecond`: a token bucket (burst of 1/20 s, at least 16 KiB); chunks are split to fit.
 *
 * Memory is bounded: a direction whose queue reaches `maxQueuedBytes` (default 1 MiB) pauses its
 * source socket and resumes it once the queue is below half of that, and it never writes to a sink
 * whose write buffer is full (it waits for 'drain'). So a receiver that does not read stalls the
 * sender through TCP, as a real slow link would, instead of growing a buffer here.
 *
 * Faults on demand: `cut()` resets every connection (RST to both sides); `blackHole(true)` stops
 * forwarding in both directions with every socket left open (nothing is read or released, so TCP
 * backs up as on a dead link), `blackHole(false)` resumes.
 */
import net from 'node:net';

export interface DirectionOptions {
  /** Added latency, ms: each chunk leaves this long after it arrived. Default 0. */
  readonly delayMs?: number;
  /** Throughput cap, bytes per second. Default unlimited. */
  readonly bytesPerSecond?: number;
}

export interface FaultProxyOptions {
  readonly target: { readonly host: string; readonly port: number };
  /** Where to listen; port 0 (the default) picks a free port. Default host 127.0.0.1. */
  readonly listen?: { readonly host?: string; readonly port?: number };
  readonly upstream?: DirectionOptions;
  readonly downstream?: DirectionOptions;
  /** Bytes one direction of one connection may hold before its source is paused. Default 1 MiB. */
  readonly maxQueuedBytes?: number;
}

/**
 * A socket read delivers at most 64 KiB (libuv's read buffer), so a source paused once its queue
 * is within this of the cap never takes the queue past the cap.
 */
const maxReadBytes = 64 * 1024;

interface Queued {
  chunk: Buffer;
  readonly releaseAt: number;
}

/** One direction of one connection: source → delay line → token bucket → sink. */
class Pipe {
  readonly #source: net.Socket;
  readonly #sink: net.Socket;
  readonly #options: DirectionOptions;
  readonly #cap: number;
  readonly #proxy: FaultProxy;
  readonly #queue: Queued[] = [];
  #queuedBytes = 0;
  #tokens: number;
  #tokensAt = Date.now();
  #timer: NodeJS.Timeout | undefined;
  #sinkFull = false;
  #sourceEnded = false;
  #done = false;
  /** The source is paused because the queue is full. */
  stalled = false;

  constructor(source: net.Socket, sink: net.Socket, options: DirectionOptions, proxy: FaultProxy) {
    this.#source = source;
    this.#sink = sink;
    this.#options = options;
    this.#proxy = proxy;
    this.#cap = proxy.maxQueuedBytes;
    this.#tokens = this.#burst;
    source.on('data', (chunk: Buffer) => this.#onData(chunk));
    source.on('end', () => {
      this.#sourceEnded = true;
      this.#pump();
    });
    sink.on('drain', () => {
      this.#sinkFull = false;
      this.#pump();
    });
  }

  get #burst(): number {
    const rate = this.#options.bytesPerSecond;
    return rate === undefined ? Infinity : Math.max(16 * 1024, rate / 20);
  }

  /** Stops for good: the connection is gone. */
  stop(): void {
    this.#done = true;
    clearTimeout(this.#timer);
    this.#queue.length = 0;
    this.#queuedBytes = 0;
  }

  /** Re-evaluates after a black hole is lifted. */
  resume(): void {
    this.#tokensAt = Date.now();
    this.#pump();
  }

  #onData(chunk: Buffer): void {
    if (this.#done) return;
    this.#queue.push({ chunk, releaseAt: Date.now() + (this.#options.delayMs ?? 0) });
    this.#queuedBytes += chunk.length;
    this.#proxy.noteQueued(this.#queuedBytes);
    if (this.#queuedBytes + maxReadBytes > this.#cap) {
      this.stalled = true;
      this.#source.pause();
    }
    this.#pump();
  }

  #refill(now: number): void {
    const rate = this.#options.bytesPerSecond;
    if (rate === undefined) return;
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#tokensAt) * rate) / 1000);
    this.#tokensAt = now;
  }

  /** Releases what is due, then sleeps until the next chunk is due or tokens have refilled. */
  #pump(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#done || this.#proxy.blackHoled) return;
    const now = Date.now();
    this.#refill(now);
    let wakeAt: number | undefined;
    for (let head = this.#queue[0]; head !== undefined && !this.#sinkFull; head = this.#queue[0]) {
      if (head.releaseAt > now) {
        wakeAt = head.releaseAt;
        break;
      }
      const rate = this.#options.bytesPerSecond;
      const allowed = Math.min(head.chunk.length, Math.floor(this.#tokens));
      // Sends of at least a quarter burst, not a timer per few bytes.
      const worthSending = Math.min(head.chunk.length, this.#burst / 4);
      if (rate !== undefined && allowed < worthSending) {
        wakeAt = now + Math.max(1, Math.ceil(((worthSending - this.#tokens) * 1000) / rate));
        break;
      }
      const piece = allowed === head.chunk.length ? head.chunk : head.chunk.subarray(0, allowed);
      if (allowed === head.chunk.length) this.#queue.shift();
      else head.chunk = head.chunk.subarray(allowed);
      this.#tokens -= allowed;
      this.#queuedBytes -= allowed;
      if (this.#sink.writable && !this.#sink.write(piece)) this.#sinkFull = true;
    }
    if (this.#queuedBytes <= this.#cap / 2 && this.#source.isPaused() && !this.#sourceEnded) {
      this.stalled = false;
      this.#source.resume();
    }
    if (this.#queue.length === 0 && this.#sourceEnded && this.#sink.writable) this.#sink.end();
    if (wakeAt !== undefined) this.#timer = setTimeout(() => this.#pump(), wakeAt - now);
  }
}

/** One client connection and its connection to the target. */
class Connection {
  readonly client: net.Socket;
  readonly server: net.Socket;
  readonly pipes: readonly Pipe[];

  constructor(client: net.Socket, proxy: FaultProxy, options: FaultProxyOptions) {
    this.client = client;
    // Half-open on both sides, so that a FIN is passed on only after the queue behind it.
    this.server = net.connect({
      host: options.target.host,
      port: options.target.port,
      allowHalfOpen: true,
    });
    this.pipes = [
      new Pipe(client, this.server, options.upstream ?? {}, proxy),
      new Pipe(this.server, client, options.downstream ?? {}, proxy),
    ];
    if (proxy.blackHoled) this.pause();
    let closed = 0;
    for (const [socket, peer] of [
      [client, this.server],
      [this.server, client],
    ] as const) {
      // An error on one side is a reset on the other (a refused target resets the client).
      socket.on('error', () => peer.resetAndDestroy());
      socket.on('close', () => {
        closed += 1;
        if (closed === 2) {
          for (const pipe of this.pipes) pipe.stop();
          proxy.forget(this);
        }
      });
    }
  }

  pause(): void {
    this.client.pause();
    this.server.pause();
  }

  /** Each pipe resumes its source itself, unless its queue is still over half full. */
  resume(): void {
    for (const pipe of this.pipes) pipe.resume();
  }

  reset(): void {
    for (const pipe of this.pipes) pipe.stop();
    this.client.resetAndDestroy();
    this.server.resetAndDestroy();
  }
}

export class FaultProxy {
  readonly #server: net.Server;
  readonly #connections = new Set<Connection>();
  readonly maxQueuedBytes: number;
  #blackHoled = false;
  #peakQueuedBytes = 0;
  #accepted = 0;

  private constructor(options: FaultProxyOptions) {
    this.maxQueuedBytes = options.maxQueuedBytes ?? 1024 * 1024;
    if (this.maxQueuedBytes <= maxReadBytes)
      throw new RangeError(`maxQueuedBytes must be over ${maxReadBytes}`);
    this.#server = net.createServer({ allowHalfOpen: true }, (client) => {
      this.#accepted += 1;
      this.#connections.add(new Connection(client, this, options));
    });
  }

  /** Listens and resolves once bound. */
  static async start(options: FaultProxyOptions): Promise<FaultProxy> {
    const proxy = new FaultProxy(options);
    await new Promise<void>((resolve, reject) => {
      proxy.#server.once('error', reject);
      proxy.#server.listen(options.listen?.port ?? 0, options.listen?.host ?? '127.0.0.1', () => {
        proxy.#server.removeListener('error', reject);
        resolve();
      });
    });
    return proxy;
  }

  get address(): net.AddressInfo {
    return this.#server.address() as net.AddressInfo;
  }

  get blackHoled(): boolean {
    return this.#blackHoled;
  }

  /** The most bytes one direction of one connection ever held. */
  get peakQueuedBytes(): number {
    return this.#peakQueuedBytes;
  }

  /** Connections open now, and accepted since the start. */
  get connections(): { open: number; accepted: number } {
    return { open: this.#connections.size, accepted: this.#accepted };
  }

  /** Directions whose source is paused now because their queue is full (backpressure). */
  get stalledDirections(): number {
    let count = 0;
    for (const connection of this.#connections)
      for (const pipe of connection.pipes) if (pipe.stalled) count += 1;
    return count;
  }

  /** @internal for Pipe */
  noteQueued(bytes: number): void {
    this.#peakQueuedBytes = Math.max(this.#peakQueuedBytes, bytes);
  }

  /** @internal for Connection */
  forget(connection: Connection): void {
    this.#connections.delete(connection);
  }

  /** Resets every open connection, both sides. */
  cut(): void {
    for (const connection of this.#connections) connection.reset();
  }

  /** Stops (true) or resumes (false) forwarding on every connection, sockets kept open. */
  blackHole(on: boolean): void {
    if (on === this.#blackHoled) return;
    this.#blackHoled = on;
    for (const connection of this.#connections) {
      if (on) connection.pause();
      else connection.resume();
    }
  }

  /** Stops listening and resets every connection; idempotent. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => {
      if (!this.#server.listening) resolve();
      else this.#server.close(() => resolve());
    });
    this.cut();
    await closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
