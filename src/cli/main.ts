#!/usr/bin/env node
/**
 * The command line. The only code that touches argv, the environment, signals, stdout/stderr and
 * exit codes: 0 after a clean stop, 1 when something failed at start or run time, 2 for a usage
 * error.
 */
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadEnvoyBootstrapFile } from '../config/envoy-bootstrap.ts';
import {
  loadConfigFile,
  validateInitiatorConfig,
  validateResponderConfig,
} from '../config/load.ts';
import type { InitiatorConfig, ResponderConfig } from '../config/schema.ts';
import { assertSecure } from '../config/security.ts';
import { startInitiator, type Initiator } from '../initiator/initiator.ts';
import { startResponder, type Responder } from '../responder/responder.ts';
import { startDemoService } from '../sandbox/demo-service.ts';
import { sandboxDefaultPorts, startSandbox, type SandboxPorts } from '../sandbox/sandbox.ts';
import { formatHostPort, parseHostPort } from '../shared/address.ts';
import { describeError, isRevtunError, RevtunError } from '../shared/errors.ts';
import { checkConfig, parseRole } from './check-config.ts';
import { loggingFlagNames, loggingOptions, makeLogger } from './logging.ts';
import { initiatorFromFlags, responderFromFlags, flagError, type FlagValues } from './flags.ts';
import {
  checkConfigHelp,
  demoServiceHelp,
  envoyHelp,
  initiatorHelp,
  mainHelp,
  responderHelp,
  sandboxHelp,
  statusHelp,
} from './help.ts';
import { status } from './status.ts';
import { printInitiatorTunnels, printResponderTunnels, TunnelLines } from './tunnel-lines.ts';

/** How long a stop may take: in-flight work gets this long, so the whole stop fits in 5 s. */
const stopGraceMs = 3_000;

type Options = NonNullable<ParseArgsConfig['options']>;

const common: Options = {
  help: { type: 'boolean', short: 'h' },
  ...loggingOptions,
};

const commands: Record<
  string,
  { help: string; options: Options; run: (flags: FlagValues) => Promise<Stoppable> }
> = {
  sandbox: {
    help: sandboxHelp,
    options: {
      'initiator-admin-port': { type: 'string' },
      'responder-admin-port': { type: 'string' },
      'tunnel-port': { type: 'string' },
      'egress-port': { type: 'string' },
      'service-port': { type: 'string' },
    },
    run: runSandbox,
  },
  initiator: {
    help: initiatorHelp,
    options: {
      config: { type: 'string', short: 'c' },
      'node-id': { type: 'string' },
      'cluster-id': { type: 'string' },
      'tenant-id': { type: 'string' },
      rc: { type: 'string' },
      responder: { type: 'string', multiple: true },
      'remote-cluster': { type: 'string' },
      tunnels: { type: 'string' },
      route: { type: 'string', multiple: true },
      'admin-listen': { type: 'string' },
      'stat-prefix': { type: 'string' },
      'allow-insecure': { type: 'boolean' },
    },
    run: runInitiator,
  },
  responder: {
    help: responderHelp,
    options: {
      config: { type: 'string', short: 'c' },
      'tunnel-listen': { type: 'string' },
      'egress-listen': { type: 'string' },
      'admin-listen': { type: 'string' },
      route: { type: 'string', multiple: true },
      'host-id-header': { type: 'string', multiple: true },
      'stat-prefix': { type: 'string' },
      'allow-insecure': { type: 'boolean' },
    },
    run: runResponder,
  },
  envoy: {
    help: envoyHelp,
    options: { config: { type: 'string', short: 'c' }, 'allow-insecure': { type: 'boolean' } },
    run: runEnvoy,
  },
  'demo-service': {
    help: demoServiceHelp,
    options: { listen: { type: 'string' } },
    run: runDemoService,
  },
};

/**
 * Commands that do one thing and exit with its code (instead of running until a signal); they may
 * take positional arguments.
 */
const oneShotCommands: Record<
  string,
  {
    help: string;
    options: Options;
    run: (flags: FlagValues, positionals: string[]) => Promise<number>;
  }
> = {
  'check-config': {
    help: checkConfigHelp,
    options: { role: { type: 'string' } },
    run: runCheckConfig,
  },
  status: {
    help: statusHelp,
    options: {
      admin: { type: 'string' },
      'token-file': { type: 'string' },
      json: { type: 'boolean' },
    },
    run: (flags) =>
      status(
        {
          admin: typeof flags['admin'] === 'string' ? flags['admin'] : undefined,
          tokenFile: typeof flags['token-file'] === 'string' ? flags['token-file'] : undefined,
          json: flags['json'] === true,
        },
        { out, err: (line) => process.stderr.write(`${line}\n`) },
      ),
  },
};

async function runCheckConfig(flags: FlagValues, positionals: string[]): Promise<number> {
  const role = parseRole(typeof flags['role'] === 'string' ? flags['role'] : undefined);
  const [file, ...extra] = positionals;
  if (file === undefined) throw new RevtunError('ERR_USAGE', 'FILE is required');
  if (extra.length > 0) {
    throw new RevtunError('ERR_USAGE', `one FILE at a time, not also ${extra.join(' ')}`);
  }
  return checkConfig(file, role, { out, err: (line) => process.stderr.write(`${line}\n`) });
}

/** Runs a one-shot command; usage errors are exit 2, as for the others. */
async function runOneShot(name: string, rest: string[]): Promise<number> {
  const command = oneShotCommands[name];
  if (command === undefined) return 2;
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: { ...common, ...command.options },
      strict: true,
      allowPositionals: true,
    });
  } catch (error) {
    process.stderr.write(
      `revtun ${name}: ${(error as Error).message}; see revtun ${name} --help\n`,
    );
    return 2;
  }
  if (parsed.values['help'] === true) {
    process.stdout.write(command.help);
    return 0;
  }
  try {
    return await command.run(parsed.values, parsed.positionals);
  } catch (error) {
    if (isRevtunError(error, 'ERR_USAGE')) {
      process.stderr.write(`revtun ${name}: ${error.message}; see revtun ${name} --help\n`);
      return 2;
    }
    process.stderr.write(`revtun ${name}: ${describeError(error)}\n`);
    return 1;
  }
}

interface Stoppable {
  close(options: { graceMs: number }): Promise<void>;
}

// A closed stdout (`revtun … | head`) must not take a running tunnel down with it.
let stdoutOpen = true;
process.stdout.on('error', () => {
  stdoutOpen = false;
});
const out = (line = '') => {
  if (stdoutOpen) process.stdout.write(`${line}\n`);
};

function rejectConfigMix(command: string, flags: FlagValues): void {
  if (flags['config'] === undefined) return;
  const mixed = Object.keys(flags).filter(
    (name) => name !== 'config' && !loggingFlagNames.has(name) && flags[name] !== undefined,
  );
  if (mixed.length > 0) {
    throw new RevtunError(
      'ERR_USAGE',
      `--config cannot be combined with ${mixed.map((name) => `--${name}`).join(', ')}; put those settings in the file`,
    );
  }
}

/**
 * The config of a role: from `--config FILE`, or else built from the quick-start flags (then its
 * problems are reported against the flags).
 */
async function roleConfig<C>(
  role: 'initiator' | 'responder',
  flags: FlagValues,
  fromFlags: () => C,
  fromFile: (file: string) => Promise<C>,
): Promise<C> {
  rejectConfigMix(role, flags);
  const file = flags['config'];
  if (typeof file === 'string') return fromFile(file);
  try {
    return fromFlags();
  } catch (error) {
    throw flagError(error);
  }
}

/** After a refusal of a config built from the quick-start flags. */
const flagsInsecureHint =
  'The quick-start flags cannot set tls, auth, callers or admin.token_file; put them in a --config FILE (see docs/security.md).';

/** After a refusal of a translated Envoy bootstrap. */
const envoyInsecureHint =
  'An Envoy bootstrap cannot set those keys (revtun translates no TLS transport_socket, jwt_validator or admin token yet), nor allow_insecure: use loopback addresses in the bootstrap, or run revtun envoy --allow-insecure on a network you trust.';

/**
 * A role refused as insecure (ERR_INSECURE, from its start function or `assertSecure`) whose config
 * did not come from a revtun config file: the fixes the message names are keys its source cannot
 * set, so `hint` says what to do instead. Other errors pass through.
 */
async function explainInsecure<T>(hint: string, starting: () => T | Promise<T>): Promise<T> {
  try {
    return await starting();
  } catch (error) {
    if (!isRevtunError(error, 'ERR_INSECURE')) throw error;
    throw new RevtunError('ERR_INSECURE', `${error.message}\n${hint}`, { cause: error });
  }
}

/** Starts a role from `config`, explaining a refusal when the config came from the flags. */
const startExplained = <T>(flags: FlagValues, start: () => Promise<T>): Promise<T> =>
  flags['config'] === undefined ? explainInsecure(flagsInsecureHint, start) : start();

async function runInitiator(flags: FlagValues): Promise<Stoppable> {
  const config = await roleConfig(
    'initiator',
    flags,
    () => validateInitiatorConfig(initiatorFromFlags(flags)),
    (file) => loadConfigFile(file, 'initiator'),
  );
  const logger = makeLogger(flags, 'info');
  const initiator = await startExplained(flags, () => startInitiator(config, { logger }));
  printInitiator(initiator, config);
  return printingTunnels((lines) => printInitiatorTunnels(initiator, lines), initiator);
}

/**
 * From now on prints a line per tunnel up and down (bounded, see tunnel-lines.ts); `running`'s
 * close stops that too.
 */
function printingTunnels(
  subscribe: (lines: TunnelLines) => void,
  running: Stoppable,
  lines = new TunnelLines(out),
): Stoppable {
  subscribe(lines);
  return {
    close: async (options) => {
      lines.close();
      await running.close(options);
    },
  };
}

function printInitiator(initiator: Initiator, config: InitiatorConfig): void {
  const admin = initiator.addresses.admin;
  out(
    `revtun initiator ${config.node_id} (cluster ${config.cluster_id}, tenant ${config.tenant_id}) started`,
  );
  for (const cluster of config.remote_clusters) {
    out(
      `  dialling ${cluster.name}: ${cluster.hosts.map(formatHostPort).join(', ')} × ${cluster.tunnels_per_host} tunnel(s) each`,
    );
  }
  for (const route of config.local_routes) {
    const match =
      route.prefix ??
      (route.regex !== undefined ? `${route.regex} (regex)` : `${route.path ?? ''} (exact path)`);
    out(`  local route ${match} → ${(route.targets ?? [route.target]).join(', ')}`);
  }
  if (admin !== undefined) out(`  admin http://${formatHostPort(admin)}/stats`);
}

async function runResponder(flags: FlagValues): Promise<Stoppable> {
  const config = await roleConfig(
    'responder',
    flags,
    () => validateResponderConfig(responderFromFlags(flags)),
    (file) => loadConfigFile(file, 'responder'),
  );
  const logger = makeLogger(flags, 'info');
  const responder = await startExplained(flags, () => startResponder(config, { logger }));
  printResponder(responder, config);
  return printingTunnels((lines) => printResponderTunnels(responder, lines), responder);
}

function printResponder(responder: Responder, config: ResponderConfig): void {
  const { tunnel, egress, tcp, admin } = responder.addresses;
  out('revtun responder started');
  out(`  tunnel listener ${formatHostPort(tunnel)}`);
  for (const address of egress) out(`  egress listener http://${formatHostPort(address)}`);
  tcp.forEach((address, index) => {
    const listener = config.tcp_listeners[index];
    const to = listener === undefined ? '' : ` -> ${listener.host_id} ${listener.target}`;
    out(`  tcp listener ${formatHostPort(address)}${to}`);
  });
  if (admin !== undefined) out(`  admin http://${formatHostPort(admin)}/stats`);
}

/**
 * The roles an Envoy bootstrap file defines; with `--allow-insecure`, each with
 * `allow_insecure: true` (an Envoy bootstrap has no such field).
 */
async function envoyConfigs(
  file: string,
  flags: FlagValues,
): Promise<{ initiator?: InitiatorConfig | undefined; responder?: ResponderConfig | undefined }> {
  const translation = await loadEnvoyBootstrapFile(file);
  if (flags['allow-insecure'] !== true) return translation;
  const { initiator, responder } = translation.inputs;
  return {
    initiator: initiator && validateInitiatorConfig({ ...initiator, allow_insecure: true }),
    responder: responder && validateResponderConfig({ ...responder, allow_insecure: true }),
  };
}

/**
 * Runs the roles an Envoy bootstrap defines: the responder first (an initiator in the same file may
 * dial it), then the initiator; a stop closes both at once. Both are checked for insecure settings
 * before either starts, so a refused initiator leaves no responder bound for a moment.
 */
async function runEnvoy(flags: FlagValues): Promise<Stoppable> {
  const file = flags['config'];
  if (typeof file !== 'string') {
    throw new RevtunError('ERR_USAGE', '--config FILE (an Envoy bootstrap) is required');
  }
  const { initiator: initiatorConfig, responder: responderConfig } = await envoyConfigs(
    file,
    flags,
  );
  await explainInsecure(envoyInsecureHint, () => {
    if (responderConfig !== undefined) assertSecure('responder', responderConfig);
    if (initiatorConfig !== undefined) assertSecure('initiator', initiatorConfig);
  });
  const logger = makeLogger(flags, 'info');
  const running: Stoppable[] = [];
  const stopAll: Stoppable = {
    close: async (options) => {
      await Promise.all(running.map((role) => role.close(options)));
    },
  };
  try {
    if (responderConfig !== undefined) {
      const responder = await startResponder(responderConfig, {
        logger: logger.child({ role: 'responder' }),
      });
      printResponder(responder, responderConfig);
      running.push(printingTunnels((lines) => printResponderTunnels(responder, lines), responder));
    }
    if (initiatorConfig !== undefined) {
      const initiator = await startInitiator(initiatorConfig, {
        logger: logger.child({ role: 'initiator' }),
      });
      printInitiator(initiator, initiatorConfig);
      running.push(printingTunnels((lines) => printInitiatorTunnels(initiator, lines), initiator));
    }
  } catch (error) {
    await stopAll.close({ graceMs: 0 });
    throw error;
  }
  return stopAll;
}

function portFlag(flags: FlagValues, name: string, fallback: number): number {
  const value = flags[name];
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !/^\d{1,5}$/.test(value) || Number(value) > 65535) {
    throw new RevtunError(
      'ERR_USAGE',
      `--${name}: "${String(value)}" is not a port number (0-65535)`,
    );
  }
  return Number(value);
}

async function runSandbox(flags: FlagValues): Promise<Stoppable> {
  const logger = makeLogger(flags, 'warn');
  const ports: SandboxPorts = {
    initiatorAdmin: portFlag(flags, 'initiator-admin-port', sandboxDefaultPorts.initiatorAdmin),
    responderAdmin: portFlag(flags, 'responder-admin-port', sandboxDefaultPorts.responderAdmin),
    tunnel: portFlag(flags, 'tunnel-port', sandboxDefaultPorts.tunnel),
    egress: portFlag(flags, 'egress-port', sandboxDefaultPorts.egress),
    service: portFlag(flags, 'service-port', sandboxDefaultPorts.service),
  };
  let sandbox;
  try {
    sandbox = await startSandbox(ports, { logger });
  } catch (error) {
    if (isRevtunError(error, 'ERR_LISTEN')) {
      throw new RevtunError(
        'ERR_LISTEN',
        `${error.message}\nIs another sandbox running? Pick other ports with --initiator-admin-port, --responder-admin-port, --tunnel-port and --egress-port (0 picks a free one); see revtun sandbox --help`,
        { cause: error },
      );
    }
    throw error;
  }
  const p = sandbox.ports;
  out("revtun sandbox: Envoy's reverse-tunnel sandbox on this machine");
  out(
    `  demo service       http://127.0.0.1:${p.service}  (the private service, reachable only through the tunnel)`,
  );
  out(
    `  initiator admin    http://127.0.0.1:${p.initiatorAdmin}/stats  (node downstream-node, cluster downstream-cluster)`,
  );
  out(`  responder admin    http://127.0.0.1:${p.responderAdmin}/stats`);
  out(`  tunnel listener    127.0.0.1:${p.tunnel}`);
  out(`  egress listener    http://127.0.0.1:${p.egress}`);
  const up = await sandbox.tunnelUp(10_000);
  out(
    up
      ? '  tunnel             established'
      : '  tunnel             NOT established after 10 s; check the logs on stderr',
  );
  out();
  out('Try, from another shell:');
  out(`  curl -s localhost:${p.initiatorAdmin}/stats | grep reverse_connection`);
  out(`  curl -s localhost:${p.responderAdmin}/stats | grep reverse_connections`);
  out(
    `  curl -v -H "x-remote-node-id: downstream-node" -H "x-dst-cluster-uuid: downstream-cluster" http://localhost:${p.egress}/downstream_service`,
  );
  out(`  curl -H "x-node-id: downstream-node" http://localhost:${p.egress}/downstream_service`);
  out(
    `  curl -H "x-cluster-id: downstream-cluster" http://localhost:${p.egress}/downstream_service`,
  );
  out();
  out('Press Ctrl-C to stop.');
  return sandbox;
}

async function runDemoService(flags: FlagValues): Promise<Stoppable> {
  // The demo service logs nothing, but a bad --log-level or --log-format is still an error.
  makeLogger(flags, 'info');
  const listenText = typeof flags['listen'] === 'string' ? flags['listen'] : '127.0.0.1:8080';
  let address;
  try {
    address = parseHostPort(listenText, { defaultHost: '127.0.0.1', allowPortZero: true });
  } catch (error) {
    throw new RevtunError('ERR_USAGE', `--listen: ${(error as Error).message}`);
  }
  const service = await startDemoService(address);
  out(`revtun demo service on http://${formatHostPort(service.address)}`);
  return { close: () => service.close() };
}

function version(): string {
  const manifest = JSON.parse(
    readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
  ) as { version: string };
  return manifest.version;
}

/** Stops on the first SIGINT/SIGTERM (gracefully), at once on the second. */
/**
 * Installed before the command starts, so that a signal that comes while it starts (or right after
 * it printed its addresses) stops it gracefully once it is up, rather than killing the process.
 */
function stopOnSignals(started: Promise<Stoppable>): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      process.stderr.write(`revtun: ${signal} again, exiting now\n`);
      process.exit(130);
    }
    stopping = true;
    process.stderr.write(
      `revtun: ${signal}, stopping (up to ${stopGraceMs / 1000} s for requests in flight)\n`,
    );
    started
      .then((running) => running.close({ graceMs: stopGraceMs }))
      .then(
        () => {
          // Everything is closed, so the event loop should drain by itself; if a handle is left, say
          // so and exit anyway: the contract is to leave no process behind.
          setTimeout(() => {
            process.stderr.write('revtun: stopped, but a handle was still open; exiting\n');
            process.exit(0);
          }, 1_000).unref();
        },
        (error: unknown) => {
          process.stderr.write(`revtun: error while stopping: ${describeError(error)}\n`);
          process.exit(1);
        },
      );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

/**
 * Node reads NODE_TLS_REJECT_UNAUTHORIZED=0 as "accept any certificate" for every TLS connection
 * the process makes (lib/internal/options: exactly the string "0"), which would silently void the
 * initiator's certificate and pin checks. revtun never needs it, so it refuses to run with it.
 */
function insecureEnvironment(env: NodeJS.ProcessEnv): string | undefined {
  if (env['NODE_TLS_REJECT_UNAUTHORIZED'] !== '0') return undefined;
  return (
    'refusing to start: NODE_TLS_REJECT_UNAUTHORIZED=0 is set in the environment, which turns off ' +
    'certificate checks for every TLS connection; unset it (for a private CA, set ' +
    'remote_clusters[].tls.ca_file instead)'
  );
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    process.stderr.write(mainHelp);
    return 2;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(mainHelp);
    return 0;
  }
  if (name === '--version' || name === '-v') {
    out(version());
    return 0;
  }
  if (oneShotCommands[name] !== undefined) return runOneShot(name, rest);
  const command = commands[name];
  if (command === undefined) {
    process.stderr.write(`revtun: unknown command "${name}"\n\n${mainHelp}`);
    return 2;
  }
  let flags: FlagValues;
  try {
    flags = parseArgs({
      args: rest,
      options: { ...common, ...command.options },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    process.stderr.write(
      `revtun ${name}: ${(error as Error).message}; see revtun ${name} --help\n`,
    );
    return 2;
  }
  if (flags['help'] === true) {
    process.stdout.write(command.help);
    return 0;
  }
  const environmentProblem = insecureEnvironment(process.env);
  if (environmentProblem !== undefined) {
    process.stderr.write(`revtun ${name}: ${environmentProblem}\n`);
    return 1;
  }
  let started: (running: Stoppable) => void = () => {};
  stopOnSignals(new Promise((resolve) => (started = resolve)));
  try {
    started(await command.run(flags));
    return -1;
  } catch (error) {
    if (isRevtunError(error, 'ERR_USAGE')) {
      process.stderr.write(`revtun ${name}: ${error.message}; see revtun ${name} --help\n`);
      return 2;
    }
    process.stderr.write(
      `revtun ${name}: ${isRevtunError(error) ? error.message : describeError(error)}\n`,
    );
    return 1;
  }
}

const code = await main(process.argv.slice(2));
if (code >= 0) process.exitCode = code;
