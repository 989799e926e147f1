/**
 * Durations in configuration are written like Envoy's: a number and a unit, e.g. `250ms`, `2s`,
 * `1.5s`, `5m`. A bare number is refused so that no reader has to guess the unit.
 */
const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Returns milliseconds, or undefined when the text is not a duration. */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text.trim());
  if (match === null) return undefined;
  const ms = Number(match[1]) * (units[match[2] as string] as number);
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

export function formatDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
