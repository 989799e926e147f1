/**
 * Reading an Envoy bootstrap field by field, for the translator in envoy-bootstrap.ts. Every key
 * the translator reads is marked; every key it leaves is a problem that names its path and its
 * place in the file. Envoy configs are protobufs where any field can change behaviour, so a key
 * revtun skipped in silence would be a config that runs differently from what it says.
 */
import { formatHostPort } from '../shared/address.ts';
import { formatPath, type ConfigProblem, type KeyPath, type YamlSource } from './load.ts';

/** The problems found so far, each with its file position. */
export class Problems {
  readonly list: ConfigProblem[] = [];
  readonly #yaml: YamlSource;

  constructor(yaml: YamlSource) {
    this.#yaml = yaml;
  }

  /** A problem at `path`; with `key`, placed at the key rather than its value. */
  add(path: KeyPath, message: string, options: { key?: boolean } = {}): void {
    this.list.push({ path: formatPath(path), message, ...this.#yaml.position(path, options) });
  }
}

/** "a", "a and b", "a, b and c" (or "a, b or c"). */
export function joinWords(words: readonly string[], conjunction = 'and'): string {
  if (words.length <= 1) return words.join('');
  return `${words.slice(0, -1).join(', ')} ${conjunction} ${words[words.length - 1]}`;
}

const snakeCase = (key: string) => key.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);

/** Envoy writes durations as protobuf JSON does: seconds with up to 9 decimals and an "s". */
const durationPattern = /^\d+(?:\.\d{1,9})?s$/;

/** One value of the document and where it is. Readers return undefined after a problem. */
export class Field {
  readonly problems: Problems;
  readonly path: KeyPath;
  readonly value: unknown;

  constructor(problems: Problems, path: KeyPath, value: unknown) {
    this.problems = problems;
    this.path = path;
    this.value = value;
  }

  /** Set to something: YAML's null (`key:` with nothing after it) reads as unset, as in Envoy. */
  get present(): boolean {
    return this.value !== undefined && this.value !== null;
  }

  fail(message: string, options: { key?: boolean } = {}): undefined {
    this.problems.add(this.path, message, options);
    return undefined;
  }

  string(): string | undefined {
    if (!this.present) return undefined;
    if (typeof this.value === 'string') return this.value;
    return this.fail(`must be a string, not ${describeValue(this.value)}`);
  }

  boolean(): boolean | undefined {
    if (!this.present) return undefined;
    if (typeof this.value === 'boolean') return this.value;
    return this.fail(`must be true or false, not ${describeValue(this.value)}`);
  }

  /** A protobuf uint32/uint64: a whole number, or its decimal digits as a string (JSON mapping). */
  uint(): number | undefined {
    if (!this.present) return undefined;
    const number =
      typeof this.value === 'number'
        ? this.value
        : typeof this.value === 'string' && /^\d+$/.test(this.value)
          ? Number(this.value)
          : NaN;
    if (Number.isSafeInteger(number) && number >= 0) return number;
    return this.fail(`must be a whole number, not ${describeValue(this.value)}`);
  }

  /** A protobuf Duration (`2s`, `0.5s`); revtun's durations take the same text. */
  duration(): string | undefined {
    const text = this.string();
    if (text === undefined) return undefined;
    if (durationPattern.test(text)) return text;
    return this.fail(`"${text}" is not a duration as Envoy writes them, e.g. 2s or 0.5s`);
  }

  /** One of the names of a protobuf enum (or its number, which the JSON mapping allows too). */
  enumName(names: readonly string[]): string | undefined {
    if (!this.present) return undefined;
    if (typeof this.value === 'number' && names[this.value] !== undefined) return names[this.value];
    if (typeof this.value === 'string' && names.includes(this.value)) return this.value;
    const allowed = names.length === 1 ? names[0] : `one of ${joinWords(names, 'or')}`;
    return this.fail(`must be ${allowed}, not ${describeValue(this.value)}`);
  }

  /** The items of a list; an unset list is empty. */
  list(): Field[] | undefined {
    if (!this.present) return [];
    if (!Array.isArray(this.value))
      return this.fail(`must be a list, not ${describeValue(this.value)}`);
    return this.value.map(
      (item: unknown, index) => new Field(this.problems, [...this.path, index], item),
    );
  }

  /**
   * A mapping whose keys the caller reads from `reads`; `done()` reports the others. Unset, it
   * reads as an empty mapping.
   */
  object(reads: readonly string[]): Fields | undefined {
    if (!this.present) return new Fields(this, {}, reads);
    if (typeof this.value !== 'object' || Array.isArray(this.value)) {
      return this.fail(`must be a mapping, not ${describeValue(this.value)}`);
    }
    return new Fields(this, this.value as Record<string, unknown>, reads);
  }

  /**
   * A `typed_config`: an object whose `@type` must be `type.googleapis.com/<typeName>`, read like
   * `object(reads)`.
   */
  typedConfig(typeName: string, reads: readonly string[]): Fields | undefined {
    if (!this.present)
      return this.fail(`is required: a typed_config with "@type": ${typeUrl(typeName)}`);
    const fields = this.object(reads);
    if (fields === undefined) return undefined;
    const type = fields.typeUrl();
    if (type.value === undefined) {
      type.fail(`"@type" is required: ${typeUrl(typeName)}`);
      return undefined;
    }
    if (type.value !== typeUrl(typeName)) {
      type.fail(`must be ${typeUrl(typeName)}, not ${describeValue(type.value)}`);
      return undefined;
    }
    return fields;
  }
}

export const typeUrl = (typeName: string) => `type.googleapis.com/${typeName}`;

/** A value as a problem names it: `"text"`, `12`, `true`, `a list`, `a mapping`. */
export function describeValue(value: unknown): string {
  if (Array.isArray(value)) return 'a list';
  if (value === null || value === undefined) return 'nothing';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return `"${value}"`;
  return typeof value === 'number' || typeof value === 'boolean' ? String(value) : typeof value;
}

/** The keys of one mapping: those the translator reads are marked; `done()` reports the rest. */
export class Fields {
  readonly field: Field;
  readonly #values: Record<string, unknown>;
  readonly #reads: readonly string[];
  readonly #taken = new Set<string>();

  constructor(field: Field, values: Record<string, unknown>, reads: readonly string[]) {
    this.field = field;
    this.#values = values;
    this.#reads = reads;
  }

  get path(): KeyPath {
    return this.field.path;
  }

  /** The value at `key` (maybe unset); `key` must be one the caller declared it reads. */
  get(key: string): Field {
    if (!this.#reads.includes(key)) throw new Error(`envoy-reader: "${key}" was not declared`);
    this.#taken.add(key);
    return new Field(this.field.problems, [...this.path, key], this.#values[key]);
  }

  /** `@type`, which every typed_config has and no reads list names. */
  typeUrl(): Field {
    this.#taken.add('@type');
    return new Field(this.field.problems, [...this.path, '@type'], this.#values['@type']);
  }

  has(key: string): boolean {
    return this.#values[key] !== undefined && this.#values[key] !== null;
  }

  /** Every key of a mapping whose keys are data (a map field): each one read by the caller. */
  entries(): Array<[string, Field]> {
    return Object.keys(this.#values).map((key) => {
      this.#taken.add(key);
      return [key, new Field(this.field.problems, [...this.path, key], this.#values[key])];
    });
  }

  /** A key whose owner already had a problem (e.g. the typed_config of an unknown filter). */
  ignore(key: string): void {
    this.#taken.add(key);
  }

  /** A key revtun knows and does not support: a problem with the reason, if it is set. */
  reject(key: string, why: string): void {
    this.#taken.add(key);
    if (this.has(key)) this.field.problems.add([...this.path, key], why, { key: true });
  }

  /** Reports every key not read, at the key, saying what revtun reads here instead. */
  done(): void {
    for (const key of Object.keys(this.#values)) {
      if (this.#taken.has(key)) continue;
      const snake = snakeCase(key);
      const message =
        snake !== key && this.#reads.includes(snake)
          ? `write ${snake}: revtun reads Envoy's snake_case field names`
          : this.#reads.length === 0
            ? 'is not supported: revtun reads nothing here'
            : `is not supported; revtun reads only ${joinWords(this.#reads)} here`;
      this.field.problems.add([...this.path, key], message, { key: true });
    }
  }
}

export type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** `{ key: value }`, or nothing when the value is unset (for exactOptionalPropertyTypes). */
export function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}

/** Access loggers revtun can write a lifecycle log to: the file, or stdout/stderr as a file. */
const accessLoggers = [
  {
    name: 'envoy.access_loggers.file',
    type: 'envoy.extensions.access_loggers.file.v3.FileAccessLog',
    path: undefined,
  },
  {
    name: 'envoy.access_loggers.stdout',
    type: 'envoy.extensions.access_loggers.stream.v3.StdoutAccessLog',
    path: '/dev/stdout',
  },
  {
    name: 'envoy.access_loggers.stderr',
    type: 'envoy.extensions.access_loggers.stream.v3.StderrAccessLog',
    path: '/dev/stderr',
  },
] as const;

export interface SocketAddress {
  readonly host: string;
  readonly port: number;
  /** `host:port`, IPv6 in brackets. */
  readonly text: string;
  /** The socket_address. */
  readonly field: Field;
}

/** `host:port` from an `address.socket_address` that is not an rc:// one. */
export function readSocketAddress(field: Field): SocketAddress | undefined {
  const address = field.object(['socket_address']);
  const socket = address?.get('socket_address');
  if (address === undefined || socket === undefined) return undefined;
  address.done();
  if (!socket.present)
    return field.fail('is required: a socket_address with address and port_value');
  const fields = socket.object(['address', 'port_value', 'protocol']);
  if (fields === undefined) return undefined;
  const hostField = fields.get('address');
  const host = hostField.string();
  const port = fields.get('port_value').uint();
  fields.get('protocol').enumName(['TCP']);
  fields.reject(
    'resolver_name',
    'is not supported here: only rc:// listener addresses take a resolver',
  );
  fields.done();
  if (host === undefined) return hostField.fail('is required');
  if (port === undefined || port > 65535) {
    return fields
      .get('port_value')
      .fail(port === undefined ? 'is required' : 'must be a port from 0 to 65535');
  }
  return { host, port, text: formatHostPort({ host, port }), field: socket };
}

/** A file access logger's path; `use` says what revtun writes there, for the log_format error. */
export function readAccessLog(
  field: Field,
  use: 'lifecycle' | 'admin' = 'lifecycle',
): string | undefined {
  const logger = readLogger(field, use === 'admin' ? 'admin request' : 'lifecycle event', []);
  if (logger === undefined) return undefined;
  logger.config.reject(
    'log_format',
    use === 'admin'
      ? "is not supported: revtun writes admin requests in Envoy's default access-log format; remove log_format"
      : "is not supported: revtun writes each lifecycle event as one JSON line with Envoy's field names (event, node_id, cluster_id, tenant_id, …); remove log_format",
  );
  logger.config.done();
  return logger.path;
}

/** What an HCM's access logger becomes on an egress listener (its `access_log` entry). */
export interface RequestAccessLog {
  readonly path: string;
  readonly format: 'json' | 'text';
  readonly text_format?: string;
}

/**
 * An HCM's access logger: its path, and its `log_format` as revtun's format. Without one it is
 * Envoy's default text format; `text_format_source.inline_string` (or the older `text_format`) is
 * the same text format, checked when the config loads; `json_format` gives revtun's JSON record
 * (its keys are revtun's, not the ones the config lists).
 */
export function readRequestAccessLog(field: Field): RequestAccessLog | undefined {
  const logger = readLogger(field, 'request', ['log_format']);
  if (logger === undefined) return undefined;
  const formatField = logger.config.get('log_format');
  logger.config.done();
  if (!formatField.present) return { path: logger.path, format: 'text' };
  const format = formatField.object(['text_format_source', 'text_format', 'json_format']);
  if (format === undefined) return undefined;
  let result: RequestAccessLog | undefined;
  const source = format.get('text_format_source');
  const legacy = format.get('text_format');
  if (source.present) {
    const inline = source.object(['inline_string']);
    const text = inline?.get('inline_string').string();
    inline?.done();
    if (text !== undefined) result = { path: logger.path, format: 'text', text_format: line(text) };
  } else if (legacy.present) {
    const text = legacy.string();
    if (text !== undefined) result = { path: logger.path, format: 'text', text_format: line(text) };
  } else if (format.get('json_format').present) {
    result = { path: logger.path, format: 'json' };
  } else {
    formatField.fail('needs text_format_source.inline_string or json_format');
  }
  format.done();
  return result;
}

/** An Envoy format ends its line with "\n" itself; revtun ends every line, so one is dropped. */
function line(format: string): string {
  return format.endsWith('\n') ? format.slice(0, -1) : format;
}

/** The logger of an access_log entry and its typed_config, with the file it writes. */
function readLogger(
  field: Field,
  what: string,
  reads: readonly string[],
): { path: string; config: Fields } | undefined {
  const log = field.object(['name', 'typed_config']);
  if (log === undefined) return undefined;
  const nameField = log.get('name');
  const name = nameField.string();
  log.reject('filter', `is not supported: revtun logs every ${what}`);
  const logger = accessLoggers.find((candidate) => candidate.name === name);
  if (logger === undefined) {
    log.ignore('typed_config');
    log.done();
    return nameField.fail(
      `"${name ?? ''}" is not supported; revtun writes only to ${joinWords(
        accessLoggers.map((candidate) => candidate.name),
        'or',
      )}`,
    );
  }
  const config = log
    .get('typed_config')
    .typedConfig(logger.type, logger.path === undefined ? ['path', ...reads] : [...reads]);
  log.done();
  if (config === undefined) return undefined;
  let path: string | undefined = logger.path;
  if (logger.path === undefined) {
    const pathField = config.get('path');
    path = pathField.string();
    if (path === undefined || path === '')
      path = pathField.fail('is required: the file to write to');
  }
  if (path === undefined) {
    config.ignore('log_format');
    config.done();
    return undefined;
  }
  return { path, config };
}
