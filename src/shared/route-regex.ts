/**
 * The `regex` of a local route: a JavaScript RegExp source that the whole path (without its query)
 * must match, as Envoy's `safe_regex` path match. Envoy runs RE2, whose matching time is linear in
 * the path; V8's engine backtracks, and Node 20 offers no linear engine without a process-wide V8
 * flag (`--enable-experimental-regexp-engine`, experimental, and not a library's to set). The path
 * is the caller's input, so a pattern that backtracks exponentially on it would let any caller
 * stall the initiator's event loop. What is refused here, at config load:
 *
 * - backreferences (`\1`, `\k<name>`) and lookarounds (`(?=`, `(?!`, `(?<=`, `(?<!`): not regular,
 *   and not in RE2 either, so no Envoy configuration uses them;
 * - a repeated group (`*`, `+`, `{n,}`, `{n,m}` with m > 1) that holds a repetition or an
 *   alternation, e.g. `(a+)+`, `(a|aa)*`, `(\/[a-z]+)*`: the classic exponential shapes (star
 *   height above one, or overlapping alternatives under a star). Write `(?:\/[a-z0-9]+)` once per
 *   segment, or a character class, instead.
 *
 * What remains can still backtrack polynomially (`.*a.*a.*b` is cubic), so a path longer than
 * {@link maxRegexPathLength} never matches a regex route: the cost is bounded by the pattern's
 * number of repetitions to the power of a small path.
 */
import { RevtunError } from './errors.ts';

/** The longest path (without query) a regex route is tried on, characters. */
export const maxRegexPathLength = 2048;

/** A compiled route regex, anchored at both ends. Throws ERR_CONFIG_INVALID with the reason. */
export function compileRouteRegex(source: string): RegExp {
  const refused = refusedConstruct(source);
  if (refused !== undefined) {
    throw new RevtunError('ERR_CONFIG_INVALID', `regex ${JSON.stringify(source)}: ${refused}`);
  }
  try {
    // The group keeps a top-level alternation anchored: ^(?:a|b)$, not ^a|b$.
    return new RegExp(`^(?:${source})$`);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new RevtunError(
      'ERR_CONFIG_INVALID',
      `regex ${JSON.stringify(source)} is not a valid JavaScript regular expression: ${reason}`,
    );
  }
}

/** Whether a compiled route regex matches the whole of `path`. */
export function matchesRouteRegex(regex: RegExp, path: string): boolean {
  return path.length <= maxRegexPathLength && regex.test(path);
}

interface Group {
  /** It holds a repeating quantifier, at any depth. */
  repeats: boolean;
  /** It holds an alternation, at any depth. */
  alternates: boolean;
}

/**
 * Why a pattern is refused, or undefined. A small scanner, not a parser: it knows escapes,
 * character classes, groups and quantifiers, which is all the rules above need; syntax errors are
 * left to the RegExp constructor.
 */
function refusedConstruct(source: string): string | undefined {
  const stack: Group[] = [{ repeats: false, alternates: false }];
  /** The group that just closed, when the next token could quantify it. */
  let closed: Group | undefined;
  let i = 0;
  while (i < source.length) {
    const c = source[i] as string;
    const top = stack[stack.length - 1] as Group;
    if (c === '\\') {
      const next = source[i + 1] ?? '';
      if (/[1-9]/.test(next) || next === 'k') return 'backreferences are not supported';
      i += 2;
      closed = undefined;
      continue;
    }
    if (c === '[') {
      i = endOfClass(source, i);
      closed = undefined;
      continue;
    }
    if (c === '(') {
      if (/^\(\?(?:[=!]|<[=!])/.test(source.slice(i, i + 4))) {
        return 'lookaheads and lookbehinds are not supported';
      }
      stack.push({ repeats: false, alternates: false });
      i += 1;
      closed = undefined;
      continue;
    }
    if (c === ')') {
      if (stack.length > 1) {
        const group = stack.pop() as Group;
        const parent = stack[stack.length - 1] as Group;
        parent.repeats ||= group.repeats;
        parent.alternates ||= group.alternates;
        closed = group;
      }
      i += 1;
      continue;
    }
    if (c === '|') {
      top.alternates = true;
      i += 1;
      closed = undefined;
      continue;
    }
    const quantifier = quantifierAt(source, i);
    if (quantifier !== undefined) {
      if (quantifier.repeats) {
        if (closed !== undefined && (closed.repeats || closed.alternates)) {
          return closed.repeats
            ? 'a repeated group may not hold a repetition (e.g. (a+)+), which can backtrack exponentially'
            : 'a repeated group may not hold an alternation (e.g. (a|ab)*), which can backtrack exponentially';
        }
        top.repeats = true;
      }
      i += quantifier.length;
      // A lazy quantifier's `?` belongs to it.
      if (source[i] === '?') i += 1;
      closed = undefined;
      continue;
    }
    i += 1;
    closed = undefined;
  }
  return undefined;
}

/** The index after the `]` closing the class that opens at `start`. */
function endOfClass(source: string, start: number): number {
  let i = start + 1;
  if (source[i] === ']') i += 1; // `[]]` is not JavaScript, but the constructor will say so.
  while (i < source.length && source[i] !== ']') i += source[i] === '\\' ? 2 : 1;
  return i + 1;
}

function quantifierAt(
  source: string,
  i: number,
): { readonly length: number; readonly repeats: boolean } | undefined {
  const c = source[i];
  if (c === '*' || c === '+') return { length: 1, repeats: true };
  if (c === '?') return { length: 1, repeats: false };
  if (c !== '{') return undefined;
  const braces = /^\{(\d+)(,(\d*))?\}/.exec(source.slice(i));
  // Without the u flag, a `{` that is no quantifier is a literal.
  if (braces === null) return undefined;
  const max =
    braces[2] === undefined ? Number(braces[1]) : braces[3] === '' ? Infinity : Number(braces[3]);
  return { length: braces[0].length, repeats: max > 1 };
}
