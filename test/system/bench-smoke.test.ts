/**
 * A smoke run of the benchmark harness (issue 6: "a short smoke run of the harness with tiny
 * durations may be part of npm run test:system to keep it from rotting"): `npm run bench` with
 * `--quick --only direct,revtun --figures wrk --seconds 1`, which starts the nginx origin, revtun's
 * two roles and wrk, and must end 0 with a results file holding every figure of both. Asserts no
 * timing: the figures only have to exist and be positive.
 *
 * Needs wrk and nginx (Debian packages wrk, nginx; `.ci/run` installs them).
 */
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot, runToEnd } from '../helpers/process.ts';

const deadlineMs = 90_000;

/** One figure of the results file (bench/lib/report.ts), with each contender's median. */
interface Metric {
  readonly figure: string;
  readonly name: string;
  readonly rows: ReadonlyArray<{ readonly contender: string; readonly median: number | null }>;
}

describe('the benchmark harness, in a smoke run', () => {
  it('measures direct and revtun with wrk and writes its results', async (t) => {
    const run = await runToEnd(
      [
        process.execPath,
        '--import',
        'tsx',
        'bench/bench.ts',
        '--quick',
        '--only',
        'direct,revtun',
        '--figures',
        'wrk',
        '--seconds',
        '1',
      ],
      deadlineMs,
    );
    assert.equal(run.code, 0, `${run.stdout}\n${run.stderr}`);
    const written = /results: (\S+\.json)/.exec(run.stdout);
    assert.ok(written, run.stdout);
    const file = path.resolve(repoRoot, written[1]!);
    try {
      const results = JSON.parse(await readFile(file, 'utf8')) as { metrics: Metric[] };
      const reqPerSecond = results.metrics.filter((metric) => metric.name === 'req/s');
      assert.ok(reqPerSecond.length > 0, 'no req/s figure');
      for (const metric of reqPerSecond) {
        for (const contender of ['direct', 'revtun']) {
          const row = metric.rows.find((candidate) => candidate.contender === contender);
          assert.ok((row?.median ?? 0) > 0, `${contender}: ${metric.figure} = ${row?.median}`);
        }
      }
      t.diagnostic(
        run.stdout
          .split('\n')
          .filter((line) => line.includes('req/s'))
          .join('\n'),
      );
    } finally {
      await rm(file, { force: true });
    }
  });
});
