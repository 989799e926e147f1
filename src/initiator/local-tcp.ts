/**
 * A TCP connection the responder opened as a CONNECT (docs/streams.md §3). `:authority` is the
 * name of one of the initiator's `tcp_targets`, never an address: the initiator dials only what it
 * was configured to, so it is not an open relay. An unknown name gets 404 (without the list of
 * names there are: the responder has no business learning them), a failed or late connect 502, a
 * connection `:status 200` and then the byte stream both ways.
 */
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import net from 'node:net';
import type { TcpTargetConfig } from '../config/schema.ts';
import { describeError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { splice } from '../shared/splice.ts';
import { respondText } from './local-common.ts';

interface Target {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly connectTimeoutMs: number;
}

export class TcpTargets {
  readonly #targets = new Map<string, Target>();
  readonly #logger: Logger;
  readonly #sockets = new Set<net.Socket>();

  constructor(targets: readonly TcpTargetConfig[], logger: Logger) {
    this.#logger = logger;
    for (const target of targets) {
      const { host, port } = target.address;
      this.#targets.set(target.name, {
        name: target.name,
        host,
        port,
        connectTimeoutMs: target.connect_timeout,
      });
    }
  }

  /** Serves a plain CONNECT stream. */
  handle(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, hasBody: boolean): void {
    const name = headers[':authority'] ?? '';
    const target = this.#targets.get(name);
    if (target === undefined) {
      respondText(
        stream,
        404,
        `no TCP target named ${JSON.stringify(name.slice(0, 100))}`,
        hasBody,
      );
      return;
    }
    const socket = net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
    this.#sockets.add(socket);
    socket.once('close', () => {
      this.#sockets.delete(socket);
      clearTimeout(timer);
    });
    let connected = false;
    const timer = setTimeout(() => {
      socket.destroy(new Error(`not connected within ${target.connectTimeoutMs} ms`));
    }, target.connectTimeoutMs);
    const abort = () => socket.destroy();
    stream.once('close', abort);
    socket.once('error', (error) => {
      if (connected) return; // splice's own handler resets the stream
      clearTimeout(timer);
      this.#logger.warn({ target: target.name, err: error }, 'TCP target connect failed');
      respondText(
        stream,
        502,
        `TCP target ${target.name} failed: ${describeError(error)}`,
        hasBody,
      );
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      stream.removeListener('close', abort);
      if (stream.destroyed || stream.closed) {
        socket.destroy();
        return;
      }
      connected = true;
      stream.respond({ ':status': 200 });
      void splice(socket, stream, { resetCode: http2.constants.NGHTTP2_CONNECT_ERROR });
    });
  }

  destroy(): void {
    for (const socket of this.#sockets) socket.destroy();
  }
}
