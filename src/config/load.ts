/**
 * YAML → schema → frozen typed config, at one boundary. Every problem is reported with its key path
 * and its place in the file (`file:line:col`), all of them at once, like rathole's config.rs with
 * deny_unknown_fields.
 */
import { readFile } from 'node:fs/promises';
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Node } from 'yaml';
import type { z } from 'zod';
import { RevtunError } from '../shared/errors.ts';
import {
  initiatorSchema,
  responderSchema,
  type InitiatorConfig,
  type InitiatorConfigInput,
  type ResponderConfig,
  type ResponderConfigInput,
} from './schema.ts';

export type Role = 'initiator' | 'responder';

export interface ConfigProblem {
  /** Key path, e.g. `remote_clusters[0].hosts[1]`; empty for the whole document. */
  readonly path: string;
  readonly message: string;
  readonly line?: number;
  readonly column?: number;
}

export class ConfigError extends RevtunError {
  readonly problems: readonly ConfigProblem[];

  constructor(source: string, problems: readonly ConfigProblem[]) {
    super('ERR_CONFIG_INVALID', formatProblems(source, problems));
    this.problems = problems;
  }
}

function formatProblems(source: string, problems: readonly ConfigProblem[]): string {
  const inFileOrder = [...problems].sort(
    (a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0),
  );
  const lines = inFileOrder.map((problem) => {
    const where =
      problem.line === undefined ? source : `${source}:${problem.line}:${problem.column}`;
    return `${where}: ${problem.path === '' ? '' : `${problem.path}: `}${problem.message}`;
  });
  return `invalid configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n  ${lines.join('\n  ')}`;
}

const schemas = { initiator: initiatorSchema, responder: responderSchema } as const;

/** Reads and validates a YAML config file for a role. */
export async function loadConfigFile(file: string, role: 'initiator'): Promise<InitiatorConfig>;
export async function loadConfigFile(file: string, role: 'responder'): Promise<ResponderConfig>;
export async function loadConfigFile(
  file: string,
  role: Role,
): Promise<InitiatorConfig | ResponderConfig>;
export async function loadConfigFile(
  file: string,
  role: Role,
): Promise<InitiatorConfig | ResponderConfig> {
  return parseConfigText(await readConfigFile(file), role, file);
}

/** A config file's text; a file that cannot be read is ERR_CONFIG_READ naming it. */
export async function readConfigFile(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw new RevtunError('ERR_CONFIG_READ', `cannot read ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/** Validates YAML text for a role; `source` names it in error messages. */
export function parseConfigText(text: string, role: 'initiator', source?: string): InitiatorConfig;
export function parseConfigText(text: string, role: 'responder', source?: string): ResponderConfig;
export function parseConfigText(
  text: string,
  role: Role,
  source?: string,
): InitiatorConfig | ResponderConfig;
export function parseConfigText(
  text: string,
  role: Role,
  source = '<config>',
): InitiatorConfig | ResponderConfig {
  const yaml = readYaml(text, source);
  const schema = schemas[role];
  const result = schema.safeParse(yaml.value);
  if (result.success) return seal(result.data, schema);
  throw new ConfigError(
    source,
    result.error.issues.flatMap((issue) =>
      describeIssue(issue, yaml.value, yaml.root, yaml.positionAt),
    ),
  );
}

export type KeyPath = ReadonlyArray<string | number>;
type Position = { line?: number; column?: number };

/** A parsed YAML document that knows where each of its nodes is: for file:line:col problems. */
export interface YamlSource {
  /** The document as plain data (`{}` for an empty document). */
  readonly value: unknown;
  /** The yaml library's document node, for describeIssue. */
  readonly root: unknown;
  /** Line and column of a byte offset in the text. */
  readonly positionAt: (offset: number | undefined) => Position;
  /**
   * Where the node at `path` starts, or with `key` where its key does (for "unknown key"
   * problems); the nearest existing ancestor when the node is missing.
   */
  position(path: KeyPath, options?: { key?: boolean }): Position;
}

/** Parses YAML text with duplicate keys refused; syntax errors are a ConfigError for `source`. */
export function readYaml(text: string, source: string): YamlSource {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const positionAt = (offset: number | undefined): Position => {
    if (offset === undefined) return {};
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
  if (document.errors.length > 0) {
    throw new ConfigError(
      source,
      document.errors.map((error) => ({
        path: '',
        message: error.message.split('\n')[0] ?? '',
        ...positionAt(error.pos[0]),
      })),
    );
  }
  let value: unknown;
  try {
    // yaml caps alias expansion (maxAliasCount 100) and throws on an unresolved alias.
    value = document.toJS() ?? {};
  } catch (error) {
    throw new ConfigError(source, [{ path: '', message: (error as Error).message }]);
  }
  const root = document.contents;
  return {
    value,
    root,
    positionAt,
    position(path, options = {}) {
      const last = path[path.length - 1];
      if (options.key === true && typeof last === 'string') {
        const key = keyNode(root, path.slice(0, -1), last);
        if (key !== undefined) return positionAt(key.range?.[0]);
      }
      return positionAt((nodeAt(root, path) ?? nearestNode(root, path))?.range?.[0]);
    },
  };
}

/**
 * Validates a config object (the library entry point); errors name key paths only. A config that
 * this module returned is taken as it is; a copy of one is not (its durations are already numbers
 * of ms): change the input and validate that instead.
 */
export function validateInitiatorConfig(
  input: InitiatorConfigInput | InitiatorConfig,
): InitiatorConfig {
  return validateObject(initiatorSchema, input);
}

export function validateResponderConfig(
  input: ResponderConfigInput | ResponderConfig,
): ResponderConfig {
  return validateObject(responderSchema, input);
}

/** Configs this module produced, with the schema that passed them. */
const validated = new WeakMap<object, z.ZodType>();

function validateObject<S extends z.ZodType>(schema: S, input: unknown): DeepFrozen<z.output<S>> {
  if (typeof input === 'object' && input !== null && validated.get(input) === schema) {
    return input as DeepFrozen<z.output<S>>;
  }
  const result = schema.safeParse(input);
  if (result.success) return seal(result.data, schema);
  throw new ConfigError(
    '<config>',
    result.error.issues.flatMap((issue) => describeIssue(issue, input, null, () => ({}))),
  );
}

function describeIssue(
  issue: z.core.$ZodIssue,
  input: unknown,
  root: unknown,
  at: (offset: number | undefined) => Position,
): ConfigProblem[] {
  const path = issue.path.filter((key): key is string | number => typeof key !== 'symbol');
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({
      path: formatPath([...path, key]),
      message: `unknown key "${key}"`,
      ...at(keyNode(root, path, key)?.range?.[0]),
    }));
  }
  const node = nodeAt(root, path);
  let message = issue.message;
  if (issue.code === 'invalid_type' && valueAt(input, path) === undefined) message = 'is required';
  return [
    {
      path: formatPath(path),
      message,
      ...at(node?.range?.[0] ?? nearestNode(root, path)?.range?.[0]),
    },
  ];
}

/** `a.b[0].c`, as problems name their place. */
export function formatPath(path: KeyPath): string {
  return path
    .map((key, index) => (typeof key === 'number' ? `[${key}]` : index === 0 ? key : `.${key}`))
    .join('');
}

function nodeAt(root: unknown, path: ReadonlyArray<string | number>): Node | undefined {
  let node: unknown = root;
  for (const key of path) {
    if (isMap(node)) {
      node = node.items.find(
        (pair) => isPair(pair) && isScalar(pair.key) && pair.key.value === key,
      )?.value;
    } else if (isSeq(node) && typeof key === 'number') {
      node = node.items[key];
    } else {
      return undefined;
    }
  }
  return (node ?? undefined) as Node | undefined;
}

function valueAt(input: unknown, path: ReadonlyArray<string | number>): unknown {
  let value = input;
  for (const key of path) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<string | number, unknown>)[key];
  }
  return value;
}

/** The deepest node that exists on the way to `path`, to place "is required" problems. */
function nearestNode(root: unknown, path: ReadonlyArray<string | number>): Node | undefined {
  for (let length = path.length; length >= 0; length -= 1) {
    const node = nodeAt(root, path.slice(0, length));
    if (node !== undefined) return node;
  }
  return undefined;
}

function keyNode(
  root: unknown,
  path: ReadonlyArray<string | number>,
  key: string,
): Node | undefined {
  const map = nodeAt(root, path);
  if (!isMap(map)) return undefined;
  const pair = map.items.find((item) => isScalar(item.key) && item.key.value === key);
  return pair?.key as Node | undefined;
}

function seal<T>(value: T, schema: z.ZodType): DeepFrozen<T> {
  const frozen = deepFreeze(value);
  validated.set(frozen as object, schema);
  return frozen;
}

type DeepFrozen<T> = T extends object ? { readonly [K in keyof T]: DeepFrozen<T[K]> } : T;

function deepFreeze<T>(value: T): DeepFrozen<T> {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value as DeepFrozen<T>;
}
