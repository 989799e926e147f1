/**
 * HTTP/2 frames read and written byte by byte (RFC 9113 §4.1, §6), for tests that check what a peer
 * puts on the wire rather than what Node's HTTP/2 stack makes of it.
 */
import type { RawPeer } from './raw.ts';

/** The client connection preface (RFC 9113 §3.4). */
export const clientPreface = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';

export const frameType = {
  data: 0x0,
  headers: 0x1,
  rstStream: 0x3,
  settings: 0x4,
  ping: 0x6,
  goaway: 0x7,
  windowUpdate: 0x8,
} as const;

export const ackFlag = 0x1;

export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly stream: number;
  readonly payload: Buffer;
}

/** Reads one frame: the 9-byte header, then exactly its payload. */
export async function readFrame(peer: RawPeer, timeoutMs = 5_000): Promise<Frame> {
  const header = await peer.read(9, timeoutMs);
  const length = header.readUIntBE(0, 3);
  return {
    type: header[3] as number,
    flags: header[4] as number,
    stream: header.readUInt32BE(5) & 0x7fffffff,
    payload: await peer.read(length, timeoutMs),
  };
}

export function encodeFrame(
  type: number,
  flags: number,
  stream: number,
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([header, payload]);
}

/** SETTINGS with no parameters, or its ACK. */
export const emptySettings = encodeFrame(frameType.settings, 0, 0);
export const settingsAck = encodeFrame(frameType.settings, ackFlag, 0);

/** The parameters of a SETTINGS frame, by identifier (RFC 9113 §6.5.1). */
export function settingsOf(frame: Frame): Map<number, number> {
  const settings = new Map<number, number>();
  for (let offset = 0; offset + 6 <= frame.payload.length; offset += 6) {
    settings.set(frame.payload.readUInt16BE(offset), frame.payload.readUInt32BE(offset + 2));
  }
  return settings;
}

/** A GOAWAY frame's fields (RFC 9113 §6.8). */
export function goawayOf(frame: Frame): { lastStreamId: number; errorCode: number } {
  return {
    lastStreamId: frame.payload.readUInt32BE(0) & 0x7fffffff,
    errorCode: frame.payload.readUInt32BE(4),
  };
}

/** A WINDOW_UPDATE frame's increment (RFC 9113 §6.9). */
export function windowIncrementOf(frame: Frame): number {
  return frame.payload.readUInt32BE(0) & 0x7fffffff;
}

/**
 * The two frames a revtun peer sends after its SETTINGS, in whichever order they come: the ACK of
 * ours, and the WINDOW_UPDATE on stream 0 that opens its connection window (`http2.connection_window`).
 * Anything else fails.
 */
export async function readAckAndWindowUpdate(
  peer: RawPeer,
): Promise<{ ack: Frame; windowUpdate: Frame }> {
  const frames = [await readFrame(peer), await readFrame(peer)];
  const ack = frames.find((frame) => frame.type === frameType.settings);
  const windowUpdate = frames.find((frame) => frame.type === frameType.windowUpdate);
  if (ack === undefined || windowUpdate === undefined) {
    throw new Error(
      `expected a SETTINGS ACK and a WINDOW_UPDATE, got types ${frames.map((frame) => frame.type).join(', ')}`,
    );
  }
  return { ack, windowUpdate };
}
