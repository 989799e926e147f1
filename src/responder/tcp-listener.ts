/**
 * A raw TCP listener on the responder (docs/streams.md §3, docs/tcp-and-websocket.md): each
 * accepted connection becomes one CONNECT stream on a tunnel to the listener's host id, whose
 * `:authority` names a TCP target configured on the initiator. After the initiator's 200 the
 * bytes flow both ways (shared/splice.ts). Anything else (no tunnel, a refusal, no answer within
 * connect_timeout, max_connections reached) closes the connection with an RST rather than a FIN,
 * so that the caller cannot take it for a service that accepted and had nothing to say.
 *
 * Stats are Envoy's tcp_proxy ones (`tcp.<stat_prefix>.…`), so dashboards built for Envoy read
 * them as they are.
 */
import net from 'node:net';
import http2, { type ClientHttp2Stream } from 'node:http2';
import type { TcpListenerConfig } from '../config/schema.ts';
import type { HostPort } from '../shared/address.ts';
import { isRevtunError, RevtunError } from '../shared/errors.ts';
import { closeServer, listen } from '../shared/listen.ts';
import type { Logger } from '../shared/logger.ts';
import type { Counter, Gauge, StatsRegistry } from '../shared/stats.ts';
import type { TunnelRegistry } from './registry.ts';
import { resetSocket, splice } from '../shared/splice.ts';
import { resetStreamWith } from '../shared/http2-stream.ts';
import { AccessRecord, type ResponseFlag } from '../shared/access-format.ts';
import { AccessLog } from './access-log.ts';

export interface TcpListenerOptions {
  readonly config: TcpListenerConfig;
  readonly registry: TunnelRegistry;
  readonly stats: StatsRegistry;
  readonly logger: Logger;
  readonly index: number;
}

/** Envoy's tcp_proxy stats (source/common/tcp_proxy/tcp_proxy.h ALL_TCP_PROXY_STATS), and one of ours. */
interface TcpStats {
  readonly total: Counter;
  readonly active: Gauge;
  readonly rxBytes: Counter;
  readonly txBytes: Counter;
  readonly noRoute: Counter;
  readonly connectFail: Counter;
  readonly connectTimeout: Counter;
  readonly overflow: Counter;
  readonly idleTimeout: Counter;
}

export class TcpListener {
  readonly #options: TcpListenerOptions;
  readonly #stats: TcpStats;
  readonly #logger: Logger;
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  /** The access log, if configured: one record per connection. */
  readonly #accessLog: AccessLog | undefined;
  /** Each open connection's record, while it is open. */
  readonly #records = new WeakMap<net.Socket, AccessRecord>();
  #draining = false;
  #drained: (() => void) | undefined;

  constructor(options: TcpListenerOptions) {
    this.#options = options;
    const { config, stats } = options;
    const prefix = `tcp.${config.stat_prefix}`;
    this.#stats = {
      total: stats.counter(`${prefix}.downstream_cx_total`),
      active: stats.gauge(`${prefix}.downstream_cx_active`),
      rxBytes: stats.counter(`${prefix}.downstream_cx_rx_bytes_total`),
      txBytes: stats.counter(`${prefix}.downstream_cx_tx_bytes_total`),
      noRoute: stats.counter(`${prefix}.downstream_cx_no_route`),
      connectFail: stats.counter(`${prefix}.upstream_cx_connect_fail`),
      connectTimeout: stats.counter(`${prefix}.upstream_cx_connect_timeout`),
      overflow: stats.counter(`${prefix}.downstream_cx_overflow`),
      idleTimeout: stats.counter(`${prefix}.idle_timeout`),
    };
    this.#logger = options.logger.child({ tcp_listener: options.index, target: config.target });
    this.#accessLog =
      config.access_log === undefined
        ? undefined
        : new AccessLog(config.access_log, stats.counter(`${prefix}.access_log.dropped`));
    // Half-open: the caller's FIN is END_STREAM on the tunnel, and bytes still flow back.
    this.#server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) =>
      this.#accept(socket),
    );
    // Errors while listening reach listen(); later ones (EMFILE on accept) must not crash.
    this.#server.on('error', (error) => {
      this.#logger.warn({ err: error }, 'tcp listener error');
    });
  }

  listen(): Promise<HostPort> {
    const { config, index } = this.#options;
    return listen(this.#server, config.address, `tcp listener ${index}`);
  }

  /** Stops accepting; resolves once every open connection has closed. */
  async drain(): Promise<void> {
    this.#draining = true;
    await closeServer(this.#server);
    if (this.#sockets.size === 0) return;
    await new Promise<void>((resolve) => {
      this.#drained = resolve;
    });
  }

  /** Destroys every open connection (their streams are reset). */
  destroy(): void {
    this.#draining = true;
    this.#server.close();
    for (const socket of this.#sockets) resetSocket(socket);
    const accessLog = this.#accessLog;
    // On the next turn: a record that comes later still (a reset socket's 'close' can) is counted
    // in access_log.dropped, never written to a closed file (lifecycle-log.ts).
    if (accessLog !== undefined) setImmediate(() => void accessLog.close());
  }

  /** Starts the connection's record; it is written when the socket closes. */
  #record(socket: net.Socket): void {
    const accessLog = this.#accessLog;
    if (accessLog === undefined) return;
    const { config } = this.#options;
    const record = new AccessRecord({
      method: 'CONNECT',
      path: config.target,
      authority: config.target,
      version: '1.1',
      headers: {},
      socket,
    });
    record.protocol = 'TCP';
    record.hostId = config.host_id;
    record.tenant = config.tenant_id;
    this.#records.set(socket, record);
    socket.once('close', () => {
      record.bytesReceived = socket.bytesRead;
      record.bytesSent = socket.bytesWritten;
      accessLog.write(record);
    });
  }

  /** Marks the connection's record (if any) with an outcome. */
  #flag(socket: net.Socket, flag: ResponseFlag): void {
    this.#records.get(socket)?.flag(flag);
  }

  #accept(socket: net.Socket): void {
    socket.on('error', () => {
      // Observed by the splice or by the close below; this keeps an early error from crashing.
    });
    const { config } = this.#options;
    const stats = this.#stats;
    stats.total.inc();
    this.#record(socket);
    if (this.#draining) {
      this.#flag(socket, 'LR');
      resetSocket(socket);
      return;
    }
    if (this.#sockets.size >= config.max_connections) {
      stats.overflow.inc();
      this.#flag(socket, 'UO');
      this.#logger.debug(
        { max_connections: config.max_connections },
        'tcp connection refused: max_connections reached',
      );
      resetSocket(socket);
      return;
    }
    this.#sockets.add(socket);
    stats.active.inc();
    socket.once('close', () => {
      this.#sockets.delete(socket);
      stats.active.dec();
      if (this.#sockets.size === 0) this.#drained?.();
    });
    // Nothing is read until the stream is there: the kernel's buffer holds the caller's bytes.
    socket.pause();
    this.#connect(socket).catch((error: unknown) => {
      // A bug or an unexpected failure costs this one connection, never the process.
      this.#logger.error({ err: error }, 'tcp connection failed');
      resetSocket(socket);
    });
  }

  async #connect(socket: net.Socket): Promise<void> {
    const { config, registry } = this.#options;
    const stats = this.#stats;
    const startedAt = Date.now();
    const node = registry.resolve(config.host_id, config.tenant_id ?? '');
    if (node === undefined) {
      stats.noRoute.inc();
      this.#flag(socket, 'UH');
      this.#logger.info({ host_id: config.host_id }, 'tcp connection closed: no tunnel to host id');
      resetSocket(socket);
      return;
    }
    const log = this.#logger.child({ node_id: node.nodeId });
    const record = this.#records.get(socket);
    if (record !== undefined) record.nodeId = node.nodeId;
    let stream: ClientHttp2Stream;
    try {
      const session = await withDeadline(
        registry.acquire(node),
        config.connect_timeout,
        `no tunnel to node ${node.nodeId} within connect_timeout`,
      );
      if (socket.destroyed) return;
      // Throws if the session closed since it was handed out (a GOAWAY, the tunnel gone).
      stream = session.request(
        { ':method': 'CONNECT', ':authority': config.target },
        { endStream: false },
      );
    } catch (error) {
      stats.noRoute.inc();
      this.#flag(socket, 'UH');
      const why = isRevtunError(error) || error instanceof Error ? error.message : String(error);
      log.info({ err: why }, 'tcp connection closed: no tunnel to node');
      resetSocket(socket);
      return;
    }
    // One deadline from the accept: the wait for a tunnel stream counts against it too.
    const left = Math.max(0, config.connect_timeout - (Date.now() - startedAt));
    const refused = await this.#established(stream, socket, left);
    if (refused !== undefined) {
      // A caller that left first is not the initiator's failure.
      if (!socket.destroyed) {
        stats.connectFail.inc();
        this.#flag(socket, 'UF');
      } else this.#flag(socket, 'DC');
      log.info({ reason: refused }, 'tcp connection closed: the initiator did not connect it');
      resetStreamWith(stream, http2.constants.NGHTTP2_CONNECT_ERROR);
      resetSocket(socket);
      return;
    }
    if (record !== undefined) record.status = 200;
    if (config.idle_timeout > 0) {
      // Node's socket timer restarts on every read and write: only a connection with no bytes
      // either way for idle_timeout is closed.
      socket.setTimeout(config.idle_timeout, () => {
        stats.idleTimeout.inc();
        this.#flag(socket, 'SI');
        log.debug('tcp connection idle for idle_timeout; closing it');
        resetSocket(socket);
      });
    }
    const result = await splice(socket, stream, {
      onRx: (bytes) => stats.rxBytes.inc(bytes),
      onTx: (bytes) => stats.txBytes.inc(bytes),
    });
    log.debug(
      {
        rx_bytes: result.rxBytes,
        tx_bytes: result.txBytes,
        duration_ms: Date.now() - startedAt,
        outcome: result.outcome,
      },
      'tcp connection closed',
    );
  }

  /**
   * Waits for the initiator's answer to the CONNECT, at most `timeoutMs` (what is left of
   * connect_timeout); undefined once it
   * is 200, else why not (its status, a reset, the caller gone, the deadline).
   */
  #established(
    stream: ClientHttp2Stream,
    socket: net.Socket,
    timeoutMs: number,
  ): Promise<string | undefined> {
    const { config } = this.#options;
    return new Promise((resolve) => {
      const done = (reason: string | undefined) => {
        clearTimeout(timer);
        stream.removeListener('response', onResponse);
        stream.removeListener('close', onClose);
        socket.removeListener('close', onCallerClose);
        resolve(reason);
      };
      const onResponse = (headers: Record<string, unknown>) => {
        const status = headers[':status'];
        done(status === 200 ? undefined : `status ${String(status)}`);
      };
      const onClose = () => done(`stream closed with code ${stream.rstCode} before a response`);
      const onCallerClose = () => done('the caller closed its connection first');
      const timer = setTimeout(() => {
        this.#stats.connectTimeout.inc();
        done(`no answer within connect_timeout (${config.connect_timeout} ms)`);
      }, timeoutMs);
      stream.on('response', onResponse);
      stream.on('close', onClose);
      socket.on('close', onCallerClose);
    });
  }
}

/** `promise`, or ERR_NO_TUNNEL after `ms` (the acquire's own wait is bounded too). */
function withDeadline<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new RevtunError('ERR_NO_TUNNEL', message)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}
