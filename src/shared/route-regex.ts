/**
 * The `regex` of a local route: a JavaScript RegExp source (no flags) that the whole path, without
 * its query, must match, as Envoy's `safe_regex` path match.
 *
 * Envoy runs RE2, whose matching time is linear in the path. V8's engine backtracks, so a pattern
 * as innocent as `/.*\/.*\/.*\.json` takes seconds on a crafted 2 KB path, and `(a+)+` forever;
 * the path is the caller's input, and one such request would stall the initiator's event loop.
 * Node 20 has no linear engine without a process-wide V8 flag
 * (`--enable-experimental-regexp-engine`, experimental, and not a library's to set). So the
 * pattern is matched here by simulating its Thompson NFA (every state at once, as RE2 and
 * Go's regexp do): time O(path length × pattern size), whatever the pattern. V8 still does what it
 * does well: it checks the syntax, and it decides what one character class, escape or `.`
 * accepts, so those mean exactly what they mean in JavaScript.
 *
 * Refused at config load, with the reason: backreferences and lookarounds (not regular, and not in
 * RE2, so no Envoy configuration has them), repetition counts above {@link maxRepeatCount} (as
 * RE2), and a pattern whose repetition counts expand to more than {@link maxProgramSize} states.
 * A path longer than {@link maxRegexPathLength} never matches a regex route, which bounds one
 * match to length × size steps.
 */
import { RevtunError } from './errors.ts';

/** The longest path (without query) a regex route is tried on, characters. */
export const maxRegexPathLength = 8192;
/** The most NFA states one pattern may compile to (`{n,m}` copies its operand). */
export const maxProgramSize = 4096;
/** The largest n or m of `{n}`, `{n,}`, `{n,m}`, as RE2's. */
export const maxRepeatCount = 1000;

/** A compiled route regex: `test(path)` says whether the whole path matches, in linear time. */
export interface RouteRegex {
  readonly source: string;
  test(path: string): boolean;
}

/** Compiles a route's `regex`. Throws ERR_CONFIG_INVALID, naming the pattern and the reason. */
export function compileRouteRegex(source: string): RouteRegex {
  const refuse = (reason: string): never => {
    throw new RevtunError('ERR_CONFIG_INVALID', `regex ${JSON.stringify(source)}: ${reason}`);
  };
  try {
    new RegExp(source);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    refuse(`not a valid JavaScript regular expression: ${reason}`);
  }
  let program: Program;
  try {
    program = compile(new Parser(source).parse());
  } catch (error) {
    if (error instanceof Unsupported) refuse(error.message);
    throw error;
  }
  return { source, test: (path) => path.length <= maxRegexPathLength && run(program, path) };
}

class Unsupported extends Error {}

// ---- Syntax: what the NFA needs of the pattern; everything else was checked by V8 ----

type Node =
  | { readonly kind: 'alternation'; readonly alternatives: readonly Node[] }
  | { readonly kind: 'sequence'; readonly items: readonly Node[] }
  | {
      readonly kind: 'repeat';
      readonly operand: Node;
      readonly min: number;
      readonly max: number;
    }
  | { readonly kind: 'char'; readonly accepts: (char: string) => boolean }
  | { readonly kind: 'assertion'; readonly holds: (input: string, at: number) => boolean };

const isWord = (char: string | undefined) => char !== undefined && /\w/.test(char);

const assertions: Readonly<Record<string, (input: string, at: number) => boolean>> = {
  '^': (_input, at) => at === 0,
  $: (input, at) => at === input.length,
  '\\b': (input, at) => isWord(input[at - 1]) !== isWord(input[at]),
  '\\B': (input, at) => isWord(input[at - 1]) === isWord(input[at]),
};

function assertion(name: string): (input: string, at: number) => boolean {
  return assertions[name] as (input: string, at: number) => boolean;
}

/**
 * What one atom (`a`, `.`, `\d`, `[^/]`) accepts, decided by V8 on its own source. ASCII is asked
 * once at compile time; other characters (rare in a path, which is percent-encoded) when met.
 */
function charAtom(raw: string): Node {
  const regex = new RegExp(`^(?:${raw})$`);
  const ascii = Array.from({ length: 128 }, (_, code) => regex.test(String.fromCharCode(code)));
  return {
    kind: 'char',
    accepts: (char) => {
      const code = char.charCodeAt(0);
      return code < 128 ? (ascii[code] as boolean) : regex.test(char);
    },
  };
}

/** A recursive-descent reader of a pattern V8 has already accepted (no flags, Annex B syntax). */
class Parser {
  readonly #source: string;
  #at = 0;

  constructor(source: string) {
    this.#source = source;
  }

  parse(): Node {
    const node = this.#alternation();
    if (this.#at < this.#source.length) {
      throw new Unsupported(`unexpected "${this.#source[this.#at]}" at ${this.#at}`);
    }
    return node;
  }

  #alternation(): Node {
    const alternatives = [this.#sequence()];
    while (this.#source[this.#at] === '|') {
      this.#at += 1;
      alternatives.push(this.#sequence());
    }
    return alternatives.length === 1
      ? (alternatives[0] as Node)
      : { kind: 'alternation', alternatives };
  }

  #sequence(): Node {
    const items: Node[] = [];
    while (this.#at < this.#source.length) {
      const char = this.#source[this.#at];
      if (char === '|' || char === ')') break;
      items.push(this.#quantified(this.#atom()));
    }
    return { kind: 'sequence', items };
  }

  #quantified(operand: Node): Node {
    const rest = this.#source.slice(this.#at);
    const match = /^(?:([*+?])|\{(\d+)(?:(,)(\d*))?\})\??/.exec(rest);
    if (match === null) return operand;
    this.#at += match[0].length;
    const [, symbol, low, comma, high] = match;
    if (symbol !== undefined) {
      const bounds = { '*': [0, Infinity], '+': [1, Infinity], '?': [0, 1] }[symbol as '*'];
      return { kind: 'repeat', operand, min: bounds[0] as number, max: bounds[1] as number };
    }
    const min = Number(low);
    const max = comma === undefined ? min : high === '' ? Infinity : Number(high);
    // RE2's limit too; and an empty operand (`(?:){n}`) adds no states to count.
    if (min > maxRepeatCount || (max !== Infinity && max > maxRepeatCount)) {
      throw new Unsupported(`a repetition count above ${maxRepeatCount} is not supported`);
    }
    return { kind: 'repeat', operand, min, max };
  }

  #atom(): Node {
    const source = this.#source;
    const start = this.#at;
    const char = source[start] as string;
    if (char === '(') return this.#group();
    if (char === '^' || char === '$') {
      this.#at += 1;
      return { kind: 'assertion', holds: assertion(char) };
    }
    if (char === '[') {
      this.#at = endOfClass(source, start);
      return charAtom(source.slice(start, this.#at));
    }
    if (char === '\\') return this.#escape();
    this.#at += 1;
    return charAtom(char === '.' ? '.' : escapeLiteral(char));
  }

  #group(): Node {
    const head = /^\((\?:|\?<[^>=!][^>]*>|\?[=!]|\?<[=!])?/.exec(
      this.#source.slice(this.#at),
    ) as RegExpExecArray;
    const kind = head[1];
    if (kind !== undefined && /^\?<?[=!]$/.test(kind)) {
      throw new Unsupported('lookaheads and lookbehinds are not supported (RE2 has none either)');
    }
    this.#at += head[0].length;
    const inner = this.#alternation();
    this.#at += 1; // ')', which V8 has made sure is there.
    return inner;
  }

  #escape(): Node {
    const rest = this.#source.slice(this.#at);
    const next = rest[1] ?? '';
    if (/[1-9]/.test(next) || next === 'k') {
      throw new Unsupported('backreferences are not supported (RE2 has none either)');
    }
    if (next === 'b' || next === 'B') {
      this.#at += 2;
      return { kind: 'assertion', holds: assertion(`\\${next}`) };
    }
    if (/^\\0[0-9]/.test(rest))
      throw new Unsupported('octal escapes are not supported; write \\xHH');
    if (next === 'c' && !/^\\c[A-Za-z]/.test(rest)) {
      throw new Unsupported('"\\c" must be followed by a letter');
    }
    // \xHH, \uHHHH, \cX; any other escape is two characters (\d, \/, and Annex B's \x for x).
    const escape = /^\\(?:x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|c[A-Za-z]|[\s\S])/.exec(rest);
    const raw = (escape as RegExpExecArray)[0];
    this.#at += raw.length;
    return charAtom(raw);
  }
}

/** The index after the `]` closing the class that opens at `start` (V8 checked it closes). */
function endOfClass(source: string, start: number): number {
  let at = start + 1;
  if (source[at] === '^') at += 1;
  while (at < source.length && source[at] !== ']') at += source[at] === '\\' ? 2 : 1;
  return at + 1;
}

/** A literal character as an atom's source: `]`, `{`, `}` are literals only in context. */
function escapeLiteral(char: string): string {
  return /[\]{}/]/.test(char) ? `\\${char}` : char;
}

// ---- The NFA (Thompson's construction) and its simulation ----

type State =
  | { kind: 'char'; accepts: (char: string) => boolean; next: number }
  | { kind: 'split'; first: number; second: number }
  | { kind: 'assertion'; holds: (input: string, at: number) => boolean; next: number }
  | { kind: 'match' };

interface Program {
  readonly states: readonly State[];
  readonly start: number;
}

function compile(root: Node): Program {
  const states: State[] = [{ kind: 'match' }];
  const add = (state: State): number => {
    if (states.length >= maxProgramSize) {
      throw new Unsupported(
        `the pattern is too large once its repetitions are expanded (over ${maxProgramSize} states)`,
      );
    }
    return states.push(state) - 1;
  };
  /** The state that matches `node` and then goes on to `next`. */
  const build = (node: Node, next: number): number => {
    switch (node.kind) {
      case 'char':
        return add({ kind: 'char', accepts: node.accepts, next });
      case 'assertion':
        return add({ kind: 'assertion', holds: node.holds, next });
      case 'sequence':
        return node.items.reduceRight((after, item) => build(item, after), next);
      case 'alternation': {
        const starts = node.alternatives.map((alternative) => build(alternative, next));
        return starts
          .slice(0, -1)
          .reduceRight(
            (rest, first) => add({ kind: 'split', first, second: rest }),
            starts[starts.length - 1] as number,
          );
      }
      case 'repeat': {
        let after = next;
        if (node.max === Infinity) {
          const loop = add({ kind: 'split', first: -1, second: next });
          (states[loop] as { first: number }).first = build(node.operand, loop);
          after = loop;
        } else {
          for (let optional = node.min; optional < node.max; optional += 1) {
            after = add({ kind: 'split', first: build(node.operand, after), second: after });
          }
        }
        for (let required = 0; required < node.min; required += 1) {
          const built = build(node.operand, after);
          // An operand that adds no state (an empty group) adds none however often it repeats:
          // nested `{1000}`s of one would otherwise take 10^9 steps to compile to nothing.
          if (built === after) break;
          after = built;
        }
        return after;
      }
    }
  };
  const start = build(root, 0);
  return { states, start };
}

/** Every state at once, one character at a time: no backtracking, so no blow-up. */
function run(program: Program, input: string): boolean {
  const { states } = program;
  const seen = new Int32Array(states.length).fill(-1);
  let generation = 0;
  /** The char and match states reachable from `from` at `at` without reading a character. */
  const closure = (from: readonly number[], at: number): number[] => {
    generation += 1;
    const reached: number[] = [];
    const stack = [...from];
    while (stack.length > 0) {
      const index = stack.pop() as number;
      if (seen[index] === generation) continue;
      seen[index] = generation;
      const state = states[index] as State;
      if (state.kind === 'split') stack.push(state.second, state.first);
      else if (state.kind === 'assertion') {
        if (state.holds(input, at)) stack.push(state.next);
      } else reached.push(index);
    }
    return reached;
  };
  let current = closure([program.start], 0);
  for (let at = 0; at < input.length && current.length > 0; at += 1) {
    const char = input[at] as string;
    const next: number[] = [];
    for (const index of current) {
      const state = states[index] as State;
      if (state.kind === 'char' && state.accepts(char)) next.push(state.next);
    }
    current = closure(next, at + 1);
  }
  return current.some((index) => states[index]?.kind === 'match');
}
