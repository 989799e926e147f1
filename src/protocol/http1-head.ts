/**
 * An incremental, strict HTTP/1.1 message-head parser (RFC 9112 §2–§5) for the tunnel handshake.
 *
 * Why not Node's HTTP server or llhttp: the handshake socket must come back untouched after the
 * head, with every byte that followed it (they are tunnel bytes, protocol reference §2 and §4),
 * and the parser must be fed bytes without a socket. Node exposes neither llhttp nor a way to
 * detach a socket from `http.Server` after a non-upgrade response, so the head is parsed here.
 * Bodies are never parsed: the handshake has none, and a head that announces one is rejected by the
 * caller.
 *
 * Strictness: CRLF line endings only (a bare CR or LF is an error), no whitespace before the colon,
 * no obs-fold, no control characters in values, a byte cap and a header-count cap. Leading empty
 * lines before a request line are skipped (RFC 9112 §2.2), within the byte cap.
 */

export interface HeadLimits {
  /** Maximum bytes from the start of the message to the end of the blank line. */
  readonly maxHeadBytes: number;
  /** Maximum number of header fields. Envoy: 100. */
  readonly maxHeaders: number;
}

export const defaultHeadLimits: HeadLimits = { maxHeadBytes: 8 * 1024, maxHeaders: 100 };

/** Header fields in arrival order, names lower-cased, values with surrounding whitespace removed. */
export type HeaderList = ReadonlyArray<readonly [name: string, value: string]>;

export interface RequestHead {
  readonly kind: 'request';
  readonly method: string;
  readonly target: string;
  readonly version: string;
  readonly headers: HeaderList;
}

export interface ResponseHead {
  readonly kind: 'response';
  readonly version: string;
  readonly status: number;
  readonly reason: string;
  readonly headers: HeaderList;
}

export type HeadParseResult<H> =
  | { readonly state: 'incomplete' }
  | { readonly state: 'complete'; readonly head: H; readonly rest: Buffer }
  | { readonly state: 'error'; readonly reason: string; readonly tooLarge: boolean };

const CRLFCRLF = Buffer.from('\r\n\r\n');
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const VERSION = /^HTTP\/1\.[01]$/;
// Field values: visible ASCII, obs-text (0x80-0xFF), space and tab (RFC 9110 §5.5).
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const TARGET = /^[\x21-\x7e]+$/;

abstract class HeadParser<H> {
  readonly #limits: HeadLimits;
  // Bytes received so far, in a buffer that doubles as needed (a 1-byte-at-a-time drip must not
  // cost a full copy per byte).
  #buffer = Buffer.alloc(0);
  #length = 0;
  #done = false;

  constructor(limits: HeadLimits = defaultHeadLimits) {
    this.#limits = limits;
  }

  /** Feeds the next chunk. After `complete` or `error`, the parser must not be fed again. */
  push(chunk: Buffer): HeadParseResult<H> {
    if (this.#done) throw new Error('the head parser has already finished');
    const previous = this.#length;
    this.#append(chunk);
    const bytes = this.#buffer.subarray(0, this.#length);
    let start = 0;
    if (this.skipsLeadingEmptyLines) {
      while (bytes[start] === 0x0d && bytes[start + 1] === 0x0a) start += 2;
    }
    const end = bytes.indexOf(CRLFCRLF, Math.max(previous - 3, start));
    const headLength = end < 0 ? bytes.length : end + 4;
    // Only the head is checked: the bytes after it belong to the tunnel (or the next message).
    const headBytes = bytes.subarray(0, headLength);
    for (let i = headBytes.indexOf(0x0a, previous); i >= 0; i = headBytes.indexOf(0x0a, i + 1)) {
      if (i === 0 || headBytes[i - 1] !== 0x0d) {
        return this.#fail('bare LF in the message head', false);
      }
    }
    if (headLength > this.#limits.maxHeadBytes) {
      return this.#fail(`message head exceeds ${this.#limits.maxHeadBytes} bytes`, true);
    }
    if (end < 0) return { state: 'incomplete' };
    this.#done = true;
    const text = bytes.toString('latin1', start, end);
    // Copied out: the caller keeps these tunnel bytes while this parser's buffer is dropped.
    const rest = Buffer.from(bytes.subarray(end + 4));
    this.#release();
    const lines = text.split('\r\n');
    for (const line of lines) {
      if (line.includes('\r')) return this.#fail('bare CR in the message head', false);
    }
    const headers = parseFields(lines.slice(1), this.#limits.maxHeaders);
    if (typeof headers === 'string') return this.#fail(headers, false);
    const head = this.parseStartLine(lines[0] ?? '', headers);
    if (typeof head === 'string') return this.#fail(head, false);
    return { state: 'complete', head, rest };
  }

  protected abstract readonly skipsLeadingEmptyLines: boolean;
  protected abstract parseStartLine(line: string, headers: HeaderList): H | string;

  #append(chunk: Buffer): void {
    const needed = this.#length + chunk.length;
    if (needed > this.#buffer.length) {
      // Room for the cap plus the bytes of one more read past it, never more than needed.
      const size = Math.max(
        needed,
        Math.min(this.#buffer.length * 2 || 512, this.#limits.maxHeadBytes + 4),
      );
      const grown = Buffer.allocUnsafe(size);
      this.#buffer.copy(grown, 0, 0, this.#length);
      this.#buffer = grown;
    }
    chunk.copy(this.#buffer, this.#length);
    this.#length = needed;
  }

  #release(): void {
    this.#buffer = Buffer.alloc(0);
    this.#length = 0;
  }

  #fail(reason: string, tooLarge: boolean): HeadParseResult<H> {
    this.#done = true;
    this.#release();
    return { state: 'error', reason, tooLarge };
  }
}

function parseFields(lines: string[], maxHeaders: number): HeaderList | string {
  if (lines.length > maxHeaders) return `more than ${maxHeaders} header fields`;
  const headers: Array<readonly [string, string]> = [];
  for (const line of lines) {
    if (line.startsWith(' ') || line.startsWith('\t')) return 'obsolete line folding';
    const colon = line.indexOf(':');
    if (colon <= 0) return `malformed header line "${printable(line)}"`;
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) return `invalid header name "${printable(name)}"`;
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    if (!FIELD_VALUE.test(value)) return `invalid characters in the value of header "${name}"`;
    headers.push([name.toLowerCase(), value]);
  }
  return headers;
}

export class RequestHeadParser extends HeadParser<RequestHead> {
  protected override readonly skipsLeadingEmptyLines = true;

  protected override parseStartLine(line: string, headers: HeaderList): RequestHead | string {
    const parts = line.split(' ');
    if (parts.length !== 3) return `malformed request line "${printable(line)}"`;
    const [method, target, version] = parts as [string, string, string];
    if (!TOKEN.test(method)) return `invalid method "${printable(method)}"`;
    if (!TARGET.test(target)) return `invalid request target "${printable(target)}"`;
    if (!VERSION.test(version)) return `unsupported protocol version "${printable(version)}"`;
    return { kind: 'request', method, target, version, headers };
  }
}

export class ResponseHeadParser extends HeadParser<ResponseHead> {
  protected override readonly skipsLeadingEmptyLines = false;

  protected override parseStartLine(line: string, headers: HeaderList): ResponseHead | string {
    // status-line = HTTP-version SP status-code SP [ reason-phrase ]  (RFC 9112 §4)
    const match = /^(HTTP\/1\.[01]) (\d{3})(?: ([\t\x20-\x7e\x80-\xff]*))?$/.exec(line);
    if (match === null) return `malformed status line "${printable(line)}"`;
    return {
      kind: 'response',
      version: match[1] as string,
      status: Number(match[2]),
      reason: match[3] ?? '',
      headers,
    };
  }
}

/** All values of a header (names compare case-insensitively; the list holds lower-case names). */
export function headerValues(headers: HeaderList, name: string): string[] {
  const wanted = name.toLowerCase();
  const values: string[] = [];
  for (const [key, value] of headers) if (key === wanted) values.push(value);
  return values;
}

/** For log lines and error messages: at most 80 characters, control characters escaped. */
function printable(text: string): string {
  const cut = text.length > 80 ? `${text.slice(0, 80)}…` : text;
  return cut.replace(/[^\x20-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
