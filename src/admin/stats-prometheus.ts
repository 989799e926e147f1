/**
 * `/stats/prometheus`: the registry in the Prometheus text exposition format 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/), as Envoy's admin serves it.
 *
 * - Every name gets Envoy's `envoy_` prefix, so that dashboards and rules written for Envoy's
 *   reverse tunnels read revtun's metrics unchanged, and every character outside
 *   `[a-zA-Z0-9_:]` becomes `_` (Envoy's `PrometheusStatsFormatter::sanitizeName`).
 * - A stat created with tags (shared/stats.ts `StatTags`: the responder's per-node and
 *   per-cluster gauges, the initiator's per-cluster and per-host gauges and handshake counters) is
 *   rendered under its tag-extracted name with the tags as labels, so one family holds every node
 *   (`envoy_reverse_tunnel_acceptor_nodes{node="n1"}`) instead of one family per node.
 * - Each family has `# HELP` and `# TYPE` once, before its samples; families are in name order.
 *   Counters keep Envoy's names (no `_total` suffix). A histogram is `_bucket{le="…"}` per bound
 *   plus `le="+Inf"`, `_sum` and `_count`, in its unit (milliseconds, as Envoy).
 * - Two stats that sanitise to the same family with different types, or to the same series, would
 *   make the exposition invalid: the first in name order is kept and the other left out.
 */
import type { StatSnapshot, StatType } from '../shared/stats.ts';

export const prometheusContentType = 'text/plain; version=0.0.4; charset=utf-8';

/** The prefix of every metric name (Envoy's). */
export const prometheusPrefix = 'envoy_';

interface Family {
  readonly type: StatType;
  readonly help: string;
  readonly lines: string[];
  readonly series: Set<string>;
}

export function renderStatsPrometheus(stats: readonly StatSnapshot[], filter?: RegExp): string {
  const families = new Map<string, Family>();
  for (const stat of stats) {
    if (filter !== undefined && !filter.test(stat.name)) continue;
    const name = metricName(stat.tags?.name ?? stat.name);
    const labels = stat.tags?.labels ?? {};
    let family = families.get(name);
    if (family === undefined) {
      const help =
        stat.tags === undefined
          ? `revtun ${stat.type} ${stat.name}`
          : `revtun ${stat.type} ${stat.tags.name} by ${Object.keys(labels).join(', ')}`;
      family = { type: stat.type, help, lines: [], series: new Set() };
      families.set(name, family);
    }
    const series = labelText(labels);
    if (family.type !== stat.type || family.series.has(series)) continue;
    family.series.add(series);
    family.lines.push(...sampleLines(name, labels, stat));
  }
  let text = '';
  for (const name of [...families.keys()].sort()) {
    const family = families.get(name) as Family;
    text += `# HELP ${name} ${escapeHelp(family.help)}\n# TYPE ${name} ${family.type}\n`;
    text += family.lines.join('');
  }
  return text;
}

function sampleLines(
  name: string,
  labels: Readonly<Record<string, string>>,
  stat: StatSnapshot,
): string[] {
  const histogram = stat.histogram;
  if (histogram === undefined) return [`${name}${labelText(labels)} ${sampleValue(stat.value)}\n`];
  const lines = histogram.bounds.map(
    (bound, slot) =>
      `${name}_bucket${labelText({ ...labels, le: String(bound) })} ${histogram.cumulative[slot] ?? 0}\n`,
  );
  lines.push(`${name}_bucket${labelText({ ...labels, le: '+Inf' })} ${histogram.count}\n`);
  lines.push(`${name}_sum${labelText(labels)} ${sampleValue(histogram.sum)}\n`);
  lines.push(`${name}_count${labelText(labels)} ${histogram.count}\n`);
  return lines;
}

/** `envoy_` + the name with every character outside `[a-zA-Z0-9_:]` as `_`. */
export function metricName(statName: string): string {
  return prometheusPrefix + statName.replace(/[^a-zA-Z0-9_:]/g, '_');
}

/** A label name: `[a-zA-Z_][a-zA-Z0-9_]*`. */
function labelName(name: string): string {
  const sanitized = name.replace(/[^a-zA-Z0-9_]/g, '_');
  return /^[0-9]/.test(sanitized) ? `_${sanitized}` : sanitized;
}

function labelText(labels: Readonly<Record<string, string>>): string {
  const pairs = Object.entries(labels).map(
    ([name, value]) => `${labelName(name)}="${escapeLabelValue(value)}"`,
  );
  return pairs.length === 0 ? '' : `{${pairs.join(',')}}`;
}

/** The format's escapes in a label value: backslash, double quote and line feed. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** The format's escapes in HELP text: backslash and line feed. */
function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function sampleValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (!Number.isFinite(value)) return value > 0 ? '+Inf' : '-Inf';
  return String(value);
}
