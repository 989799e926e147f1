/**
 * What `GET /tunnels` answers, on both roles (the shape is the contract between the admin server,
 * the dashboard and `revtun status`). Times are ISO 8601 strings; durations are milliseconds.
 */

export interface TunnelsResponse {
  /** Which role answers. */
  readonly role: 'initiator' | 'responder';
  /** When the snapshot was taken. */
  readonly now: string;
  readonly tunnels: readonly TunnelRow[];
}

export interface TunnelRow {
  /** The initiator's node id, cluster id and tenant id (the handshake's identity). */
  readonly node: string;
  readonly cluster: string;
  readonly tenant: string;
  /** The other end of the tunnel's TCP connection, `host:port` (`[v6]:port`). */
  readonly remote_address: string;
  /**
   * The responder end: on a responder, its tunnel listener's address; on an initiator, the
   * responder host it dialled (`host:port`).
   */
  readonly responder: string;
  /** idle: open, no stream in flight; in_use: streams in flight; connecting/draining on the way. */
  readonly state: 'connecting' | 'idle' | 'in_use' | 'draining';
  readonly established_at: string | null;
  readonly streams_in_flight: number;
  /** Bytes of tunnel traffic (the TCP connection), each way, since it was established. */
  readonly bytes_sent: number;
  readonly bytes_received: number;
  /** Round trip of the last HTTP/2 PING acknowledged, or null before the first. */
  readonly last_ping_rtt_ms: number | null;
}
