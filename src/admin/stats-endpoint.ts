/**
 * `GET /stats` and `GET /stats/prometheus`: parses Envoy's query parameters and picks the
 * rendering. The answer is built from one snapshot, so the numbers of one answer are of one moment.
 *
 * - `format=json` (Envoy's JSON), `format=prometheus` (as `/stats/prometheus`), else Envoy's text.
 * - `filter=<regex>` keeps the stats whose full name matches, in every format.
 * - `hidden=include|exclude|only`: revtun hides no tunnel gauges (reference §12 #19), so
 *   `include` and the default list the same stats and `only` lists none.
 * - `histogram_buckets=cumulative` prints histograms as buckets (text and JSON); `summary`, the
 *   default, as quantiles. Prometheus always has buckets.
 */
import type { StatSnapshot } from '../shared/stats.ts';
import { renderStatsJson } from './stats-json.ts';
import { prometheusContentType, renderStatsPrometheus } from './stats-prometheus.ts';
import { renderStatsText, type HistogramBuckets } from './stats-text.ts';

export interface StatsAnswer {
  readonly status: number;
  readonly body: string;
  readonly contentType: string;
}

const textType = 'text/plain; charset=utf-8';
const knownParameters = ['filter', 'hidden', 'format', 'histogram_buckets'];
/** A longer filter is a mistake or an attempt at an expensive regex, not a stat name. */
const maxFilterLength = 1000;

/** The answer to `url` (path `/stats` or `/stats/prometheus`) from `stats()`, or a 400. */
export function answerStats(url: URL, stats: () => readonly StatSnapshot[]): StatsAnswer {
  const { searchParams } = url;
  for (const key of searchParams.keys()) {
    if (!knownParameters.includes(key)) {
      return badRequest(`unknown /stats parameter "${key}"; known: ${knownParameters.join(', ')}`);
    }
  }
  const hidden = searchParams.get('hidden') ?? 'exclude';
  if (hidden !== 'include' && hidden !== 'exclude' && hidden !== 'only') {
    return badRequest(`hidden must be include, exclude or only, not "${hidden}"`);
  }
  const format =
    url.pathname === '/stats/prometheus' ? 'prometheus' : (searchParams.get('format') ?? 'text');
  if (format !== 'text' && format !== 'json' && format !== 'prometheus') {
    return badRequest(`format must be json, prometheus or text, not "${format}"`);
  }
  const buckets = searchParams.get('histogram_buckets') ?? 'summary';
  if (buckets !== 'summary' && buckets !== 'cumulative') {
    return badRequest(`histogram_buckets must be summary or cumulative, not "${buckets}"`);
  }
  const filter = filterOf(searchParams.get('filter'));
  if (typeof filter === 'string') return badRequest(filter);
  const rows = hidden === 'only' ? [] : stats();
  return render(format, rows, filter, buckets);
}

function render(
  format: 'text' | 'json' | 'prometheus',
  rows: readonly StatSnapshot[],
  filter: RegExp | undefined,
  buckets: HistogramBuckets,
): StatsAnswer {
  switch (format) {
    case 'json':
      return {
        status: 200,
        body: renderStatsJson(rows, filter, buckets),
        contentType: 'application/json',
      };
    case 'prometheus':
      return {
        status: 200,
        body: renderStatsPrometheus(rows, filter),
        contentType: prometheusContentType,
      };
    case 'text':
      return { status: 200, body: renderStatsText(rows, filter, buckets), contentType: textType };
  }
}

/** The filter's regex, none for an empty or absent one, or what is wrong with it. */
function filterOf(pattern: string | null): RegExp | undefined | string {
  if (pattern === null || pattern === '') return undefined;
  if (pattern.length > maxFilterLength) {
    return `filter is longer than ${maxFilterLength} characters`;
  }
  try {
    return new RegExp(pattern);
  } catch (error) {
    return `filter is not a valid regular expression: ${(error as Error).message}`;
  }
}

function badRequest(message: string): StatsAnswer {
  return { status: 400, body: `${message}\n`, contentType: textType };
}
