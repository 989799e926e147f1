/**
 * The HTTP/2 limits of a tunnel's session, the same on both roles: the responder's client sessions
 * (responder/tunnel-session.ts) and the initiator's server sessions (initiator/tunnel.ts). A peer
 * that goes past one has the offending stream reset or the session closed; neither takes the
 * process down (Node's lib/internal/http2/core.js and src/node_http2.cc enforce them).
 */
import type { Http2Session, ServerSessionOptions } from 'node:http2';

/** The `http2` block of either role's config (config/schema.ts `http2Limits`). */
export interface Http2LimitsConfig {
  /** SETTINGS_MAX_HEADER_LIST_SIZE announced and enforced: bytes, counted as RFC 9113 §6.5.2. */
  readonly max_header_list_size: number;
  /** MiB one session may buffer before new streams are refused (Node's maxSessionMemory). */
  readonly max_session_memory: number;
  /** Invalid frames before the session is closed (Node's maxSessionInvalidFrames). */
  readonly max_invalid_frames: number;
  /** Streams refused before the session is closed (Node's maxSessionRejectedStreams). */
  readonly max_rejected_streams: number;
  /** Receive window announced per stream (SETTINGS_INITIAL_WINDOW_SIZE), bytes. */
  readonly stream_window: number;
  /** Receive window of the whole session (WINDOW_UPDATE on stream 0), bytes. */
  readonly connection_window: number;
  /** SETTINGS_MAX_FRAME_SIZE announced, bytes. */
  readonly max_frame_size: number;
  /** A PING this often, ms (shared/http2-keepalive.ts). */
  readonly ping_interval: number;
  /** …acknowledged within this, ms, or the session is closed. */
  readonly ping_timeout: number;
}

/**
 * Header fields one stream may carry, pseudo-headers included: Node's own default, stated so that
 * the egress listener can refuse a caller with more (431) rather than let the initiator reset the
 * stream (a peer past it gets RST_STREAM ENHANCE_YOUR_CALM, src/node_http2.cc `AddHeader`).
 */
export const maxHeaderListPairs = 128;

/**
 * Node session options for these limits. Server push is off in both directions: the responder
 * never accepts a pushed stream and the initiator announces it will not take one either
 * (RFC 9113 §6.5.2 SETTINGS_ENABLE_PUSH). Typed as server options because @types/node lists the
 * invalid-frame and rejected-stream limits there only; Node reads them for client sessions too
 * (the Http2Session constructor, lib/internal/http2/core.js).
 */
export function http2SessionOptions(limits: Http2LimitsConfig): ServerSessionOptions {
  return {
    maxHeaderListPairs,
    maxSessionMemory: limits.max_session_memory,
    maxSessionInvalidFrames: limits.max_invalid_frames,
    maxSessionRejectedStreams: limits.max_rejected_streams,
    settings: {
      enablePush: false,
      maxHeaderListSize: limits.max_header_list_size,
      initialWindowSize: limits.stream_window,
      maxFrameSize: limits.max_frame_size,
    },
  };
}

/**
 * Opens the session's own receive window to `connection_window` (SETTINGS cannot: the connection
 * window starts at 65 535 bytes and only a WINDOW_UPDATE on stream 0 moves it, RFC 9113 §6.9.2).
 * Node sends that update once the session is connected.
 */
export function openConnectionWindow(session: Http2Session, limits: Http2LimitsConfig): void {
  const apply = () => {
    if (!session.destroyed) session.setLocalWindowSize(limits.connection_window);
  };
  if (session.connecting) session.once('connect', apply);
  else apply();
}
