/**
 * The responder's tunnel listener: accepts TCP connections from initiators, reads one handshake
 * request under a deadline and a byte cap, answers it (protocol reference §3), and hands accepted
 * sockets to the registry once the 200 is flushed ("two-phase acceptance": a checkout can never
 * overtake the 200).
 *
 * Pre-auth resources are bounded: a handshake deadline that runs from accept (so a client that sends
 * nothing is closed too, and a TLS handshake counts against it), a cap on the request head, and caps
 * on pending handshakes in total and per source address.
 *
 * With `tls`, the TLS session is kept for the whole tunnel (architecture decision 8): the initiator
 * must ask with the keep-tls header, and the 200 confirms it; RPING and HTTP/2 then run inside TLS.
 * A handshake that does not ask is refused (a cleartext data path after a TLS handshake, Envoy's
 * behaviour, is not offered). With `client_ca_file`, a client certificate that chains to it is
 * required. With `auth`, the handshake's credentials must prove the ids (check 7, between the
 * cluster-name check and the tunnel limits, as Envoy's JWT check).
 */
import net, { type Socket } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import {
  admitHandshake,
  buildHandshakeRejection,
  checkHandshakeRequest,
  handshakeAcceptedResponse,
  handshakeCounters,
  handshakeHeaderNames,
  handshakeKeptTlsResponse,
  handshakeUpgradedResponse,
  type AcceptedHandshake,
  type HandshakeCounter,
  type HandshakeRejection,
  type HandshakeValidationOptions,
  type Identity,
} from '../protocol/handshake.ts';
import { RequestHeadParser, type RequestHead } from '../protocol/http1-head.ts';
import { formatHostPort, type HostPort } from '../shared/address.ts';
import { describeError } from '../shared/errors.ts';
import { closeServer, listen } from '../shared/listen.ts';
import type { Logger } from '../shared/logger.ts';
import type { Histogram, StatsRegistry } from '../shared/stats.ts';
import { loadServerTls, tunnelAlpnProtocols, type ServerTls } from '../shared/tls-files.ts';
import type { TunnelListenerConfig } from '../config/schema.ts';
import { createHandshakeAuthenticator, type HandshakeAuthenticator } from './handshake-auth.ts';

export interface TunnelListenerOptions {
  readonly config: TunnelListenerConfig;
  readonly stats: StatsRegistry;
  readonly logger: Logger;
  /** How many tunnels an identity's node holds now (for the per-node limit). */
  readonly tunnelsOf: (identity: Identity) => number;
  /** Tunnels the responder holds in all (for `max_tunnels`). */
  readonly totalTunnels: () => number;
  /**
   * Why an authenticated identity may not join now (a node id that is a connected cluster id, or
   * held by another credential), or undefined. `credential` is undefined without `auth`.
   */
  readonly conflictOf: (identity: Identity, credential: string | undefined) => string | undefined;
  /** Holds a place for an accepted tunnel until it is handed over or fails; returns the release. */
  readonly reserve: (identity: Identity, credential: string | undefined) => () => void;
  /** Receives each accepted socket after its 200 was written, with the bytes that followed. */
  readonly onAccepted: (
    socket: Socket,
    handshake: AcceptedHandshake,
    leftover: Buffer,
    connectionId: number,
    credential: string | undefined,
  ) => void;
}

/** How long a rejected peer gets to read its response before the socket is destroyed. */
const rejectionLingerMs = 1000;

/** A connection between accept and the end of its handshake request. */
interface PendingHandshake {
  readonly peer: string;
  /** When the TCP connection was accepted (`performance.now()`), for the handshake time. */
  readonly acceptedAt: number;
  /** Ends the pending phase (deadline, counts); false if it had already ended. */
  settle(): boolean;
}

export class TunnelListener {
  readonly #options: TunnelListenerOptions;
  #server: net.Server | undefined;
  readonly #pending = new Set<Socket>();
  readonly #pendingBySource = new Map<string, number>();
  /** TLS connections accepted and still in their TLS handshake, by remote address and port. */
  readonly #inTlsHandshake = new Map<string, PendingHandshake>();
  readonly #validation: HandshakeValidationOptions;
  #tls: ServerTls | undefined;
  #authenticator: HandshakeAuthenticator | undefined;
  #nextConnectionId = 1;
  /** From TCP accept to the 200 written, ms, accepted tunnels only (TLS handshake included). */
  readonly #handshakeTime: Histogram;

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
    this.#handshakeTime = options.stats.histogram('reverse_tunnel.handshake_time');
  }

  /** Loads the TLS files and the JWKS (errors name the key and file), then binds. */
  async listen(): Promise<HostPort> {
    const { config, logger } = this.#options;
    if (config.tls !== undefined)
      this.#tls = await loadServerTls(config.tls, 'tunnel_listener.tls');
    this.#authenticator = await createHandshakeAuthenticator(config.auth, { logger });
    const server =
      this.#tls === undefined ? net.createServer({ noDelay: true }) : this.#tlsServer();
    // A tls.Server wraps each socket in its own 'connection' listener, added first; this one runs
    // after it and bounds the pre-auth phase, TLS handshake included, on the TCP socket.
    server.on('connection', (socket: Socket) => this.#onConnection(socket));
    // Errors while listening reach listen(), which turns them into one clear RevtunError.
    server.on('error', (error) => {
      if (server.listening) logger.error({ err: error }, 'tunnel listener error');
    });
    this.#server = server;
    return listen(server, config.address, "the responder's tunnel listener");
  }

  /** Stops accepting and drops handshakes still in progress. */
  async close(): Promise<void> {
    const closed = this.#server === undefined ? undefined : closeServer(this.#server);
    for (const socket of this.#pending) socket.destroy();
    await closed;
  }

  #count(name: HandshakeCounter): void {
    this.#options.stats.counter(`reverse_tunnel.handshake.${name}`).inc();
  }

  /**
   * The TLS server. A tls.Server rather than a TLSSocket made by hand, because only the server's
   * path checks the client certificate (`authorized`) and ends `secureConnecting`, which HTTP/2
   * waits for. The client certificate is requested but checked after the handshake, so that a
   * refusal gets a 401 and a counter rather than a bare TLS alert.
   */
  #tlsServer(): tls.Server {
    const { config, logger } = this.#options;
    const serverTls = this.#tls as ServerTls;
    const server = tls.createServer({
      ...serverTls.options,
      ALPNProtocols: tunnelAlpnProtocols,
      requestCert: serverTls.requireClientCertificate,
      rejectUnauthorized: false,
      // The listener's own deadline (from accept) ends a slow TLS handshake first.
      handshakeTimeout: config.handshake_timeout * 2,
      noDelay: true,
    });
    server.on('secureConnection', (secure: TLSSocket) => {
      const pending = this.#inTlsHandshake.get(endpointOf(secure));
      secure.on('error', (error) => logger.debug({ err: error }, 'tunnel TLS socket error'));
      if (pending === undefined) {
        secure.destroy();
        return;
      }
      this.#inTlsHandshake.delete(endpointOf(secure));
      this.#readHandshake(secure, pending);
    });
    // A TLS handshake that fails (an old protocol version, not TLS at all, a peer that gives up)
    // ends the connection: there is no HTTP to answer with.
    server.on('tlsClientError', (error: Error, secure: TLSSocket) => {
      const pending = this.#inTlsHandshake.get(endpointOf(secure));
      secure.destroy();
      if (pending === undefined || !pending.settle()) return;
      this.#count('tls_error');
      logger.info(
        { peer: pending.peer, reason: describeError(error) },
        'TLS handshake failed; connection closed',
      );
    });
    return server;
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
    const endpoint = endpointOf(socket);
    let settled = false;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(deadline);
      socket.removeListener('close', settle);
      this.#inTlsHandshake.delete(endpoint);
      this.#pending.delete(socket);
      const left = (this.#pendingBySource.get(source) ?? 1) - 1;
      if (left === 0) this.#pendingBySource.delete(source);
      else this.#pendingBySource.set(source, left);
      return true;
    };
    const pending: PendingHandshake = { peer, acceptedAt: performance.now(), settle };
    const deadline = setTimeout(() => {
      if (!settle()) return;
      this.#count('timeout');
      logger.info(
        { peer, timeout_ms: config.handshake_timeout },
        'handshake timed out; connection closed',
      );
      socket.destroy();
    }, config.handshake_timeout);
    socket.on('close', settle);
    if (this.#tls === undefined) this.#readHandshake(socket, pending);
    else this.#inTlsHandshake.set(endpoint, pending);
  }

  /** Reads the handshake request from `stream` (the socket, or TLS over it) under a byte cap. */
  #readHandshake(stream: Socket, pending: PendingHandshake): void {
    const { config, logger } = this.#options;
    const { peer } = pending;
    const parser = new RequestHeadParser({
      maxHeadBytes: config.max_handshake_bytes,
      maxHeaders: 100,
    });
    const onData = (chunk: Buffer) => {
      const result = parser.push(chunk);
      if (result.state === 'incomplete') return;
      stream.removeListener('data', onData);
      if (!pending.settle()) return;
      stream.pause();
      if (result.state === 'error') {
        this.#reject(stream, peer, {
          status: result.tooLarge ? 431 : 400,
          body: result.tooLarge
            ? `Reverse tunnel handshake exceeds ${config.max_handshake_bytes} bytes`
            : `Malformed reverse tunnel handshake: ${result.reason}`,
          counter: 'parse_error',
        });
        return;
      }
      this.#decide(stream, pending, result.head, result.rest).catch((error: unknown) => {
        logger.error({ peer, err: error }, 'handshake decision failed');
        stream.destroy();
      });
    };
    stream.on('data', onData);
  }

  /** Checks 0–9 on a complete request head, with credentials (check 7) in between. */
  async #decide(
    stream: Socket,
    pending: PendingHandshake,
    head: RequestHead,
    rest: Buffer,
  ): Promise<void> {
    const { config, logger } = this.#options;
    const { peer } = pending;
    const checked = checkHandshakeRequest(head, this.#validation);
    if (!checked.accepted) {
      this.#reject(stream, peer, checked.rejection);
      return;
    }
    let { handshake } = checked;
    const secure = stream instanceof tls.TLSSocket ? stream : undefined;
    if (secure !== undefined) {
      if (this.#tls?.requireClientCertificate === true && !secure.authorized) {
        this.#reject(
          stream,
          peer,
          { status: 401, body: 'Reverse tunnel authentication failed', counter: 'auth_denied' },
          `client certificate refused: ${String(secure.authorizationError ?? 'none presented')}`,
        );
        return;
      }
      if (!handshake.keepTls) {
        const name = handshakeHeaderNames(config.header_prefix).keepTls;
        this.#reject(stream, peer, {
          status: 400,
          body: `This listener keeps TLS for the whole tunnel; send ${name}: true`,
          counter: 'parse_error',
        });
        return;
      }
    } else if (handshake.keepTls) {
      // Nothing to keep: answer as a cleartext listener does, without the confirmation.
      handshake = { ...handshake, keepTls: false };
    }
    // 7. Credentials.
    let credential: string | undefined;
    if (this.#authenticator !== undefined) {
      const outcome = await this.#authenticator.authenticate({
        head,
        identity: handshake.identity,
        peerCertificate: secure?.getPeerCertificate(),
      });
      if (stream.destroyed) return;
      if (!outcome.ok) {
        this.#reject(stream, peer, outcome.rejection, outcome.reason);
        return;
      }
      credential = outcome.credential;
    }
    const conflict = this.#options.conflictOf(handshake.identity, credential);
    if (conflict !== undefined) {
      this.#reject(
        stream,
        peer,
        { status: 409, body: 'Reverse tunnel identity conflict', counter: 'conflict' },
        conflict,
      );
      return;
    }
    if (this.#options.totalTunnels() >= config.max_tunnels) {
      const retryAfter = String(Math.ceil(config.connection_limit_retry_after / 1000));
      this.#reject(
        stream,
        peer,
        {
          status: 429,
          body: 'rejected',
          counter: 'rejected',
          headers: [['retry-after', retryAfter]],
        },
        `the responder holds max_tunnels (${config.max_tunnels}) tunnels`,
      );
      return;
    }
    // 8–9.
    const decision = admitHandshake(handshake, head, this.#validation);
    if (!decision.accepted) {
      this.#reject(stream, peer, decision.rejection);
      return;
    }
    if (decision.handshake.badInitiationTime !== undefined) {
      logger.warn(
        { peer, value: decision.handshake.badInitiationTime },
        'unparseable initiation-time header; read as 0',
      );
    }
    this.#accept(stream, pending, decision.handshake, rest, credential);
  }

  #accept(
    socket: Socket,
    pending: PendingHandshake,
    handshake: AcceptedHandshake,
    leftover: Buffer,
    credential: string | undefined,
  ): void {
    const { logger, config } = this.#options;
    const { peer } = pending;
    const answer = handshake.keepTls
      ? handshakeKeptTlsResponse(config.header_prefix, config.use_http_upgrade)
      : config.use_http_upgrade
        ? handshakeUpgradedResponse
        : handshakeAcceptedResponse;
    const connectionId = this.#nextConnectionId++;
    const release = this.#options.reserve(handshake.identity, credential);
    socket.write(answer, (error) => {
      release();
      if (error || socket.destroyed) {
        logger.debug({ peer, err: error }, 'accepted tunnel closed before its 200 was written');
        socket.destroy();
        return;
      }
      this.#count('accepted');
      this.#handshakeTime.observe(performance.now() - pending.acceptedAt);
      logger.debug({ peer, ...handshake.identity }, 'tunnel accepted');
      this.#options.onAccepted(socket, handshake, leftover, connectionId, credential);
    });
  }

  /** Answers and closes; `reason` is for the log only, when the body must say less. */
  #reject(
    socket: Socket,
    peer: string,
    rejection: HandshakeRejection,
    reason: string = rejection.body,
  ): void {
    if (rejection.counter !== undefined) this.#count(rejection.counter);
    this.#options.logger.info(
      { peer, status: rejection.status, counter: rejection.counter, reason },
      'handshake rejected',
    );
    socket.end(buildHandshakeRejection(rejection));
    // end() flushes and half-closes; a peer that never reads or never closes is cut off.
    setTimeout(() => socket.destroy(), rejectionLingerMs).unref();
  }
}

/** A connection's remote address and port: unique among a listener's open connections. */
function endpointOf(socket: Socket): string {
  return `${socket.remoteAddress ?? ''}|${socket.remotePort ?? 0}`;
}
