/**
 * Envoy's `/stats` text rendering: one `name: value` line per stat, sorted by name
 * (protocol reference §9). `filter` is a regular expression over names.
 */
import type { StatSnapshot } from '../shared/stats.ts';

export function renderStatsText(stats: readonly StatSnapshot[], filter?: RegExp): string {
  let text = '';
  for (const stat of stats) {
    if (filter === undefined || filter.test(stat.name)) text += `${stat.name}: ${stat.value}\n`;
  }
  return text;
}
