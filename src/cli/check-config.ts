/**
 * `revtun check-config FILE`: validates a config the way the role would at start, without binding
 * or dialling anything, and says what it would run. Every problem is printed as
 * `file:line:col: path: message`, with a hint where a common mistake has an obvious fix.
 *
 * Insecure settings (what `assertSecure` refuses at start) are errors for a revtun config file: its
 * role would refuse to start, and only `allow_insecure: true` in the same file changes that. For an
 * Envoy bootstrap they are warnings: `revtun envoy --allow-insecure` runs it anyway.
 */
import { isMap, parseDocument } from 'yaml';
import { translateEnvoyBootstrap } from '../config/envoy-bootstrap.ts';
import {
  ConfigError,
  parseConfigText,
  readConfigFile,
  type ConfigProblem,
  type KeyPath,
  type Role,
} from '../config/load.ts';
import {
  initiatorSchema,
  responderSchema,
  type InitiatorConfig,
  type ResponderConfig,
} from '../config/schema.ts';
import { insecurityProblems } from '../config/security.ts';
import { formatHostPort, type HostPort } from '../shared/address.ts';
import { isRevtunError, RevtunError } from '../shared/errors.ts';
import { keysAt } from './schema-keys.ts';

export type CheckedRole = Role | 'envoy';

export const checkedRoles: readonly CheckedRole[] = ['initiator', 'responder', 'envoy'];

/** Where check-config writes: lines without their newline. */
export interface CheckOutput {
  readonly out: (line: string) => void;
  readonly err: (line: string) => void;
}

/** Exit codes: the config is valid, invalid, or the command was used wrongly (no such file). */
export const exitValid = 0;
export const exitInvalid = 1;
export const exitUsage = 2;

/** Keys only one kind of file has at its top level, to tell the role when `--role` is not given. */
const roleKeys: ReadonlyArray<[CheckedRole, readonly string[]]> = [
  ['envoy', ['static_resources', 'bootstrap_extensions', 'dynamic_resources', 'layered_runtime']],
  ['initiator', ['node_id', 'cluster_id', 'tenant_id', 'remote_clusters', 'local_routes']],
  ['responder', ['tunnel_listener', 'egress_listeners', 'tcp_listeners']],
];

/**
 * The role a config's top-level keys point to, or undefined when they point to none or to several
 * (then `--role` must say). A YAML syntax error leaves it undefined: any role reports it.
 */
export function detectRole(text: string): CheckedRole | undefined {
  const document = parseDocument(text, { prettyErrors: false });
  const root = document.contents;
  if (document.errors.length > 0 || !isMap(root)) return undefined;
  const keys = new Set(root.items.map((pair) => String((pair.key as { value?: unknown })?.value)));
  const matching = roleKeys.filter(([, names]) => names.some((name) => keys.has(name)));
  return matching.length === 1 ? matching[0]?.[0] : undefined;
}

/** Runs check-config on `file`; returns the exit code. */
export async function checkConfig(
  file: string,
  role: CheckedRole | undefined,
  output: CheckOutput,
): Promise<number> {
  let text: string;
  try {
    text = await readConfigFile(file);
  } catch (error) {
    if (!isRevtunError(error, 'ERR_CONFIG_READ')) throw error;
    output.err(`revtun check-config: ${error.message}`);
    return exitUsage;
  }
  const detected = role ?? detectRole(text);
  // A YAML syntax error reads the same for every role, so any role reports it.
  const syntaxOnly = detected === undefined && hasSyntaxError(text);
  const chosen = detected ?? (syntaxOnly ? 'responder' : undefined);
  if (chosen === undefined) {
    output.err(
      `revtun check-config: cannot tell whether ${file} is an initiator, a responder or an Envoy bootstrap from its top-level keys; say which with --role initiator|responder|envoy`,
    );
    return exitUsage;
  }
  try {
    return chosen === 'envoy'
      ? checkEnvoy(text, file, output)
      : checkRevtun(text, file, chosen, output);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    const what = syntaxOnly ? 'YAML' : chosen === 'envoy' ? 'Envoy bootstrap' : `${chosen} config`;
    reportProblems(file, chosen, what, error.problems, text, output);
    return exitInvalid;
  }
}

function hasSyntaxError(text: string): boolean {
  return parseDocument(text, { prettyErrors: false }).errors.length > 0;
}

function checkRevtun(text: string, file: string, role: Role, output: CheckOutput): number {
  const config = parseConfigText(text, role, file);
  const insecure = insecurityProblems(role, config);
  if (insecure.length > 0) {
    output.err(`${file}: the ${role} would refuse to start (insecure):`);
    for (const problem of insecure) output.err(`  ${problem}`);
    output.err(
      '  hint: add TLS or credentials as the messages say, or set allow_insecure: true on a network you trust (docs/security.md)',
    );
    return exitInvalid;
  }
  output.out(`${file}: valid ${role} config`);
  for (const line of role === 'initiator'
    ? initiatorSummary(config as InitiatorConfig)
    : responderSummary(config as ResponderConfig)) {
    output.out(`  ${line}`);
  }
  return exitValid;
}

function checkEnvoy(text: string, file: string, output: CheckOutput): number {
  const translation = translateEnvoyBootstrap(text, file);
  output.out(`${file}: valid Envoy bootstrap`);
  const roles: Array<[Role, InitiatorConfig | ResponderConfig | undefined]> = [
    ['responder', translation.responder],
    ['initiator', translation.initiator],
  ];
  for (const [role, config] of roles) {
    if (config === undefined) continue;
    output.out(`  runs ${role === 'initiator' ? 'an' : 'a'} ${role}:`);
    const lines =
      role === 'initiator'
        ? initiatorSummary(config as InitiatorConfig)
        : responderSummary(config as ResponderConfig);
    for (const line of lines) output.out(`    ${line}`);
    for (const problem of insecurityProblems(role, config)) {
      output.err(
        `${file}: warning: ${problem} (revtun envoy starts it only with --allow-insecure)`,
      );
    }
  }
  return exitValid;
}

const onOff = (on: boolean): string => (on ? 'on' : 'off');

function adminLine(admin: { address: HostPort; token_file?: string | undefined } | undefined) {
  return admin === undefined
    ? 'admin: none'
    : `admin: http://${formatHostPort(admin.address)} (token ${onOff(admin.token_file !== undefined)})`;
}

/** What an initiator config would run, one line each. */
export function initiatorSummary(config: InitiatorConfig): string[] {
  const lines = [
    `role: initiator, node ${config.node_id}, cluster ${config.cluster_id}, tenant ${config.tenant_id}`,
  ];
  for (const cluster of config.remote_clusters) {
    lines.push(
      `remote cluster ${cluster.name}: ${cluster.hosts.map(formatHostPort).join(', ')} × ${cluster.tunnels_per_host} tunnel(s), TLS ${onOff(cluster.tls !== undefined)}`,
    );
  }
  for (const route of config.local_routes) {
    const match =
      route.prefix ??
      (route.regex !== undefined ? `${route.regex} (regex)` : `${route.path ?? ''} (exact path)`);
    lines.push(`local route ${match} → ${(route.targets ?? [route.target]).join(', ')}`);
  }
  for (const target of config.tcp_targets) {
    lines.push(`tcp target ${target.name} → ${formatHostPort(target.address)}`);
  }
  const bearer = config.handshake.bearer_token_file !== undefined;
  lines.push(`handshake auth: ${bearer ? 'bearer token file' : 'none'}`);
  lines.push(adminLine(config.admin));
  return lines;
}

/** What a responder config would run, one line each. */
export function responderSummary(config: ResponderConfig): string[] {
  const tunnel = config.tunnel_listener;
  const auth = tunnel.auth;
  const methods = [
    auth?.jwt === undefined ? undefined : 'JWT',
    auth?.tokens === undefined ? undefined : 'tokens',
    tunnel.tls?.client_ca_file === undefined ? undefined : 'client certificates',
  ].filter((method) => method !== undefined);
  const lines = [
    `role: responder, stat prefix ${config.stat_prefix}`,
    `tunnel listener ${formatHostPort(tunnel.address)}, TLS ${onOff(tunnel.tls !== undefined)}, auth ${methods.length === 0 ? 'off' : methods.join(' + ')}`,
  ];
  for (const egress of config.egress_listeners) {
    const routes = egress.routes.map((route) => route.prefix ?? `${route.path ?? ''} (exact)`);
    const callers =
      egress.callers === undefined ? 'any caller' : `${egress.callers.length} caller(s)`;
    lines.push(
      `egress listener ${formatHostPort(egress.address)}, routes ${routes.join(' ')}, TLS ${onOff(egress.tls !== undefined)}, ${callers}`,
    );
  }
  for (const tcp of config.tcp_listeners) {
    lines.push(`tcp listener ${formatHostPort(tcp.address)} → ${tcp.host_id} ${tcp.target}`);
  }
  lines.push(adminLine(config.admin));
  return lines;
}

function reportProblems(
  file: string,
  role: CheckedRole,
  what: string,
  problems: readonly ConfigProblem[],
  text: string,
  output: CheckOutput,
): void {
  const inFileOrder = [...problems].sort(
    (a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0),
  );
  const count = `${problems.length} problem${problems.length === 1 ? '' : 's'}`;
  output.err(`${file}: invalid ${what} (${count}):`);
  for (const problem of inFileOrder) {
    const where = problem.line === undefined ? file : `${file}:${problem.line}:${problem.column}`;
    output.err(`${where}: ${problem.path === '' ? '' : `${problem.path}: `}${problem.message}`);
    const hint = hintFor(problem, role, text);
    if (hint !== undefined) output.err(`  hint: ${hint}`);
  }
}

/** The key path of a problem, from its formatted `a.b[0].c`. */
export function parsePath(path: string): KeyPath {
  const keys: Array<string | number> = [];
  for (const match of path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) {
    keys.push(match[2] === undefined ? (match[1] as string) : Number(match[2]));
  }
  return keys;
}

/**
 * A fix for a common mistake, or undefined. Each case is one a reader hits often: a misspelt key,
 * a duration without a unit or with a foreign one, a listener written as a bare port, a header in
 * capitals, a YAML key written twice, and routes in the wrong order.
 */
export function hintFor(
  problem: ConfigProblem,
  role: CheckedRole,
  text: string,
): string | undefined {
  const { message } = problem;
  const unknown = /^unknown key "(.+)"$/.exec(message);
  if (unknown !== null && role !== 'envoy') {
    const path = parsePath(problem.path).slice(0, -1);
    const allowed = keysAt(role === 'initiator' ? initiatorSchema : responderSchema, path) ?? [];
    const near = closest(unknown[1] as string, allowed);
    return near === undefined ? `allowed here: ${allowed.join(', ')}` : `did you mean "${near}"?`;
  }
  if (message.startsWith('must be a duration with a unit')) {
    const value = valueOnLine(text, problem.line);
    return /^\d+$/.test(value ?? '')
      ? `write ${value}s for seconds or ${value}ms for milliseconds`
      : 'write a number and a unit, e.g. 10s';
  }
  if (/is not a duration/.test(message)) {
    return 'units are ms, s, m and h, with no space: e.g. 250ms, 10s, 5m, 1h';
  }
  const barePort = /^invalid address "(\d{1,5})": expected host:port$/.exec(message);
  if (barePort !== null) {
    return `write 127.0.0.1:${barePort[1]} (this host only) or 0.0.0.0:${barePort[1]} (every interface)`;
  }
  if (message.startsWith('must be a lower-case HTTP header name')) {
    return 'header names are compared in lower case: write e.g. authorization, not Authorization';
  }
  if (message.startsWith('Map keys must be unique')) {
    return 'a key is written twice in the same map; keep one (YAML readers would silently use the last)';
  }
  if (/can never match/.test(message)) {
    return 'the first matching route wins: put the longer prefix before the shorter one';
  }
  if (/only http:\/\/ targets are supported/.test(message)) {
    return 'the local service is reached in cleartext next to the initiator; write http://127.0.0.1:PORT';
  }
  return undefined;
}

/** The scalar after `key:` on a 1-based line of `text`, quotes removed. */
function valueOnLine(text: string, line: number | undefined): string | undefined {
  if (line === undefined) return undefined;
  const match = /:\s*['"]?([^'"#]*?)['"]?\s*(#.*)?$/.exec(text.split('\n')[line - 1] ?? '');
  return match?.[1];
}

/** The allowed key nearest to `key` by edit distance, if it is near enough to be a typo. */
export function closest(key: string, allowed: readonly string[]): string | undefined {
  let best: { name: string; distance: number } | undefined;
  for (const name of allowed) {
    const distance = editDistance(key, name);
    if (best === undefined || distance < best.distance) best = { name, distance };
  }
  const limit = Math.max(2, Math.floor(key.length / 3));
  return best !== undefined && best.distance <= limit ? best.name : undefined;
}

/** Levenshtein distance, one row at a time. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i += 1) {
    const row = [i];
    for (let j = 1; j <= b.length; j += 1) {
      const substitution = (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1);
      row.push(Math.min((previous[j] as number) + 1, (row[j - 1] as number) + 1, substitution));
    }
    previous = row;
  }
  return previous[b.length] as number;
}

/** `--role` as given, or a usage error. */
export function parseRole(value: string | undefined): CheckedRole | undefined {
  if (value === undefined) return undefined;
  if (!(checkedRoles as readonly string[]).includes(value)) {
    throw new RevtunError(
      'ERR_USAGE',
      `--role must be one of ${checkedRoles.join(', ')}, not "${value}"`,
    );
  }
  return value as CheckedRole;
}
