/**
 * `pump(source, sink)`: what `stream/promises` `pipeline(source, sink)` does for the two streams of
 * a proxied body, without its per-call cost. pipeline makes an AbortController for every call and
 * aborts it when it finishes, which builds a DOMException with a stack trace: 12–17 % of a role's
 * busy time in a profile of small requests (issue 6). Here a handful of listeners do the same work.
 *
 * The semantics are pipeline's, which the tunnel's END_STREAM rules rely on (see http2-stream.ts):
 *
 * - Backpressure: a write that returns false pauses the source until the sink's 'drain', so at
 *   most the sink's highWaterMark (plus one chunk) is held.
 * - Success: the source ended ('end'), and then, with `end` (the default), the sink was ended and
 *   emitted 'finish'. Without `end` the sink is left open for the caller.
 * - Failure: an error on either stream, the source closing before its 'end', or the sink closing
 *   before it finished (or, without `end`, before the source ended) rejects, and both streams are
 *   destroyed with the error. Destroying an HTTP/2 stream whose writable side is open resets it
 *   without END_STREAM, so a cut-off body never ends cleanly.
 */
import type { EventEmitter } from 'node:events';
import type { Readable, Writable } from 'node:stream';

export interface PumpOptions {
  /** End the sink once the source has ended (pipeline's `end`). Default true. */
  readonly end?: boolean;
}

/** The error of a stream that closed before its end, as pipeline reports it. */
export class PrematureCloseError extends Error {
  readonly code = 'ERR_STREAM_PREMATURE_CLOSE';

  constructor() {
    super('Premature close');
  }
}

const ignore = (): void => {};

type Listener = Parameters<EventEmitter['on']>[1];
type Toggle = (emitter: EventEmitter, event: string, listener: Listener) => void;
const listen: Toggle = (emitter, event, listener) => {
  emitter.on(event, listener);
};
const unlisten: Toggle = (emitter, event, listener) => {
  emitter.removeListener(event, listener);
};

export function pump(source: Readable, sink: Writable, options: PumpOptions = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    new Pump(source, sink, options.end ?? true, resolve, reject).start();
  });
}

/** One pump's state and listeners; methods are bound once, as fields, so nothing else allocates. */
class Pump {
  readonly #source: Readable;
  readonly #sink: Writable;
  readonly #end: boolean;
  readonly #resolve: () => void;
  readonly #reject: (error: Error) => void;
  #sourceEnded = false;
  #settled = false;

  constructor(
    source: Readable,
    sink: Writable,
    end: boolean,
    resolve: () => void,
    reject: (error: Error) => void,
  ) {
    this.#source = source;
    this.#sink = sink;
    this.#end = end;
    this.#resolve = resolve;
    this.#reject = reject;
  }

  start(): void {
    const source = this.#source;
    const sink = this.#sink;
    if (sink.destroyed || sink.writableFinished || (this.#end && sink.writableEnded)) {
      this.#fail(new PrematureCloseError());
      return;
    }
    this.#listeners(listen);
    if (source.readableEnded) {
      this.#onSourceEnd();
      return;
    }
    if (source.destroyed) {
      this.#fail(source.errored ?? new PrematureCloseError());
      return;
    }
    source.on('data', this.#onData);
  }

  readonly #onData = (chunk: unknown): void => {
    if (!this.#sink.write(chunk)) this.#source.pause();
  };

  readonly #onDrain = (): void => {
    if (!this.#settled) this.#source.resume();
  };

  readonly #onSourceEnd = (): void => {
    this.#sourceEnded = true;
    if (!this.#end) {
      this.#succeed();
      return;
    }
    if (this.#sink.writableFinished) this.#succeed();
    else this.#sink.end();
  };

  readonly #onSourceClose = (): void => {
    if (!this.#sourceEnded) this.#fail(this.#source.errored ?? new PrematureCloseError());
  };

  readonly #onSinkFinish = (): void => {
    if (this.#sourceEnded) this.#succeed();
  };

  readonly #onSinkClose = (): void => {
    this.#fail(this.#sink.errored ?? new PrematureCloseError());
  };

  readonly #onError = (error: Error): void => {
    this.#fail(error);
  };

  #succeed(): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#cleanup();
    this.#resolve();
  }

  #fail(error: Error): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#cleanup();
    // Whatever either stream emits from here on has been reported already.
    for (const stream of [this.#source, this.#sink]) {
      if (stream.destroyed) continue;
      stream.on('error', ignore);
      stream.destroy(error);
    }
    this.#reject(error);
  }

  #cleanup(): void {
    this.#source.removeListener('data', this.#onData);
    this.#listeners(unlisten);
  }

  /** Adds or removes the listeners on both streams ('data' is added last, once they are on). */
  #listeners(toggle: Toggle): void {
    toggle(this.#source, 'error', this.#onError);
    toggle(this.#source, 'close', this.#onSourceClose);
    toggle(this.#source, 'end', this.#onSourceEnd);
    toggle(this.#sink, 'error', this.#onError);
    toggle(this.#sink, 'close', this.#onSinkClose);
    toggle(this.#sink, 'drain', this.#onDrain);
    toggle(this.#sink, 'finish', this.#onSinkFinish);
  }
}
