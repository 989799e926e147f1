/**
 * The responder's tunnel listener: accepts TCP connections from initiators, reads one handshake
 * request under a deadline and a byte cap, answers it (protocol reference §3), and hands accepted
 * sockets to the registry once the 200 is flushed ("two-phase acceptance": a checkout can never
 * overtake the 200).
 *
 * Pre-auth resources are bounded: a handshake deadline that runs from accept (so a client that sends
 * nothing is closed too), a cap on the request head, and caps on pending handshakes in total and per
 * source address.
 */
import net, { type Socket } from 'node:net';
import {
  buildHandshakeRejection,
  handshakeAcceptedResponse,
  handshakeCounters,
  handshakeUpgradedResponse,
  validateHandshakeRequest,
  type AcceptedHandshake,
  type HandshakeCounter,
  type HandshakeRejection,
  type HandshakeValidationOptions,
  type Identity,
} from '../protocol/handshake.ts';
import { RequestHeadParser } from '../protocol/http1-head.ts';
import { formatHostPort, type HostPort } from '../shared/address.ts';
import { closeServer, listen } from '../shared/listen.ts';
import type { Logger } from '../shared/logger.ts';
import type { StatsRegistry } from '../shared/stats.ts';
import type { TunnelListenerConfig } from '../config/schema.ts';

export interface TunnelListenerOptions {
  readonly config: TunnelListenerConfig;
  readonly stats: StatsRegistry;
  readonly logger: Logger;
  /** How many tunnels an identity's node holds now (for the per-node limit). */
  readonly tunnelsOf: (identity: Identity) => number;
  /** Holds a place for an accepted tunnel until it is handed over or fails; returns the release. */
  readonly reserve: (identity: Identity) => () => void;
  /** Receives each accepted socket after its 200 was written, with the bytes that followed. */
  readonly onAccepted: (
    socket: Socket,
    handshake: AcceptedHandshake,
    leftover: Buffer,
    connectionId: number,
  ) => void;
}

/** How long a rejected peer gets to read its response before the socket is destroyed. */
const rejectionLingerMs = 1000;

export class TunnelListener {
  readonly #options: TunnelListenerOptions;
  readonly #server: net.Server;
  readonly #pending = new Set<Socket>();
  readonly #pendingBySource = new Map<string, number>();
  readonly #validation: HandshakeValidationOptions;
  #nextConnectionId = 1;

  constructor(options: TunnelListenerOptions) {
    this.#options = options;
    const { config } = options;
    this.#validation = {
      requestPath: config.request_path,
      requestMethod: config.request_method,
      headerPrefix: config.header_prefix,
      useHttpUpgrade: config.use_http_upgrade,
      requiredClusterName: config.required_cluster_name,
      validation: config.validation,
      maxTunnelsPerNode: config.max_tunnels_per_node,
      retryAfterSeconds: Math.ceil(config.connection_limit_retry_after / 1000),
      tunnelsOf: options.tunnelsOf,
    };
    for (const name of handshakeCounters) options.stats.counter(`reverse_tunnel.handshake.${name}`);
    this.#server = net.createServer({ noDelay: true }, (socket) => this.#onConnection(socket));
    // Errors while listening reach listen(), which turns them into one clear RevtunError.
    this.#server.on('error', (error) => {
      if (this.#server.listening) options.logger.error({ err: error }, 'tunnel listener error');
    });
  }

  listen(): Promise<HostPort> {
    return listen(this.#server, this.#options.config.address, "the responder's tunnel listener");
  }

  /** Stops accepting and drops handshakes still in progress. */
  async close(): Promise<void> {
    const closed = closeServer(this.#server);
    for (const socket of this.#pending) socket.destroy();
    await closed;
  }

  #count(name: HandshakeCounter): void {
    this.#options.stats.counter(`reverse_tunnel.handshake.${name}`).inc();
  }

  #onConnection(socket: Socket): void {
    const { config, logger } = this.#options;
    const source = socket.remoteAddress ?? 'unknown';
    const peer = `${formatHostPort({ host: source, port: socket.remotePort ?? 0 })}`;
    socket.on('error', (error) => logger.debug({ peer, err: error }, 'handshake socket error'));
    const fromSource = this.#pendingBySource.get(source) ?? 0;
    if (
      this.#pending.size >= config.max_pending_handshakes ||
      fromSource >= config.max_pending_handshakes_per_source
    ) {
      logger.warn(
        { peer, pending: this.#pending.size, pending_from_source: fromSource },
        'too many pending handshakes; connection refused',
      );
      socket.destroy();
      return;
    }
    this.#pending.add(socket);
    this.#pendingBySource.set(source, fromSource + 1);
    let settled = false;
    const settle = () => {
      if (settled) return false;
      settled = true;
      clearTimeout(deadline);
      socket.removeListener('data', onData);
      socket.removeListener('close', settle);
      this.#pending.delete(socket);
      const left = (this.#pendingBySource.get(source) ?? 1) - 1;
      if (left === 0) this.#pendingBySource.delete(source);
      else this.#pendingBySource.set(source, left);
      return true;
    };
    const deadline = setTimeout(() => {
      if (!settle()) return;
      this.#count('timeout');
      logger.info(
        { peer, timeout_ms: config.handshake_timeout },
        'handshake timed out; connection closed',
      );
      socket.destroy();
    }, config.handshake_timeout);
    const parser = new RequestHeadParser({
      maxHeadBytes: config.max_handshake_bytes,
      maxHeaders: 100,
    });
    const onData = (chunk: Buffer) => {
      const result = parser.push(chunk);
      if (result.state === 'incomplete') return;
      settle();
      socket.pause();
      if (result.state === 'error') {
        this.#reject(socket, peer, {
          status: result.tooLarge ? 431 : 400,
          body: result.tooLarge
            ? `Reverse tunnel handshake exceeds ${config.max_handshake_bytes} bytes`
            : `Malformed reverse tunnel handshake: ${result.reason}`,
          counter: 'parse_error',
        });
        return;
      }
      const decision = validateHandshakeRequest(result.head, this.#validation);
      if (!decision.accepted) {
        this.#reject(socket, peer, decision.rejection);
        return;
      }
      this.#accept(socket, peer, decision.handshake, result.rest);
    };
    socket.on('data', onData);
    socket.on('close', settle);
  }

  #accept(socket: Socket, peer: string, handshake: AcceptedHandshake, leftover: Buffer): void {
    const { logger } = this.#options;
    if (handshake.badInitiationTime !== undefined) {
      logger.warn(
        { peer, value: handshake.badInitiationTime },
        'unparseable initiation-time header; read as 0',
      );
    }
    const answer = this.#options.config.use_http_upgrade
      ? handshakeUpgradedResponse
      : handshakeAcceptedResponse;
    const connectionId = this.#nextConnectionId++;
    const release = this.#options.reserve(handshake.identity);
    socket.write(answer, (error) => {
      release();
      if (error || socket.destroyed) {
        logger.debug({ peer, err: error }, 'accepted tunnel closed before its 200 was written');
        socket.destroy();
        return;
      }
      this.#count('accepted');
      logger.debug({ peer, ...handshake.identity }, 'tunnel accepted');
      this.#options.onAccepted(socket, handshake, leftover, connectionId);
    });
  }

  #reject(socket: Socket, peer: string, rejection: HandshakeRejection): void {
    if (rejection.counter !== undefined) this.#count(rejection.counter);
    this.#options.logger.info(
      { peer, status: rejection.status, counter: rejection.counter, reason: rejection.body },
      'handshake rejected',
    );
    socket.end(buildHandshakeRejection(rejection));
    // end() flushes and half-closes; a peer that never reads or never closes is cut off.
    setTimeout(() => socket.destroy(), rejectionLingerMs).unref();
  }
}
