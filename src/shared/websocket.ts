/** RFC 6455 pieces both roles need to turn an HTTP/1.1 upgrade into an RFC 8441 stream and back. */
import { createHash } from 'node:crypto';

/** RFC 6455 §1.3: the GUID appended to the key before hashing. */
const websocketGuid = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** The `Sec-WebSocket-Accept` that answers `key`: base64 of SHA-1 of key + GUID (§4.2.2 step 5). */
export function websocketAccept(key: string): string {
  return createHash('sha1')
    .update(key + websocketGuid)
    .digest('base64');
}
