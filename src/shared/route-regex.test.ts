import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isRevtunError } from './errors.ts';
import { compileRouteRegex, maxProgramSize, maxRegexPathLength } from './route-regex.ts';

function refusal(source: string): string {
  try {
    compileRouteRegex(source);
  } catch (error) {
    assert.ok(isRevtunError(error, 'ERR_CONFIG_INVALID'));
    return error.message;
  }
  assert.fail(`${source} was accepted`);
}

/** What V8 says about the whole string matching, for comparison. */
function v8Matches(source: string, input: string): boolean {
  return new RegExp(`^(?:${source})$`).test(input);
}

/** Small patterns over a, b and /, with every construct the matcher knows. */
const pattern: fc.Arbitrary<string> = fc.letrec<{ alt: string; seq: string; item: string }>(
  (tie) => ({
    alt: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      tie('seq'),
      fc.tuple(tie('seq'), tie('seq')).map(([x, y]) => `${x}|${y}`),
    ),
    seq: fc.array(tie('item'), { minLength: 1, maxLength: 4 }).map((items) => items.join('')),
    item: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.constantFrom(
        'a',
        'b',
        '/',
        '.',
        '[ab]',
        '[^a]',
        '\\w',
        '\\/',
        '\\x61',
        '^',
        '$',
        '\\b',
        '\\B',
      ),
      fc
        .tuple(
          fc.oneof(
            fc.constantFrom('a', 'b', '.', '[a/]'),
            tie('alt').map((inner) => `(${inner})`),
            tie('alt').map((inner) => `(?:${inner})`),
          ),
          fc.constantFrom('*', '+', '?', '{2}', '{1,2}', '{0,}', '*?', '+?'),
        )
        .map(([atom, quantifier]) => atom + quantifier),
    ),
  }),
).alt;

describe('compileRouteRegex', () => {
  const accepted = [
    '/v[0-9]+/items',
    '/api/(v1|v2)/.*',
    '/users/[^/]+/posts/[^/]+',
    '/(a+)+',
    '/(a|aa)*',
    '/(?<version>v[0-9]{1,3})/x',
    '/a{2}b?c*',
    '/lit\\{1,2}',
    '/x{',
    '/[(|)+*\\]]+',
    '/\\d+\\.json',
    '/\\u0061\\x62\\cJ?\\0?',
  ];
  for (const source of accepted) {
    it(`accepts ${source}`, () => {
      assert.equal(compileRouteRegex(source).source, source);
    });
  }

  const refused: Array<[string, RegExp]> = [
    ['/(a)\\1', /backreferences are not supported/],
    ['/(?<n>a)\\k<n>', /backreferences are not supported/],
    ['/(?=a)a', /lookaheads and lookbehinds are not supported/],
    ['/(?!a).', /lookaheads and lookbehinds are not supported/],
    ['/(?<=a)b', /lookaheads and lookbehinds are not supported/],
    ['/(?<!a)b', /lookaheads and lookbehinds are not supported/],
    ['/\\01', /octal escapes are not supported/],
    ['/\\c', /must be followed by a letter/],
    ['/(a{1000}){1000}', new RegExp(`over ${maxProgramSize} states`)],
    ['/(?:){1001}', /a repetition count above 1000 is not supported/],
    ['/a{0,99999999999}', /a repetition count above 1000 is not supported/],
    ['/(', /not a valid JavaScript regular expression/],
    ['/[a-', /not a valid JavaScript regular expression/],
    ['/a**', /not a valid JavaScript regular expression/],
  ];
  for (const [source, reason] of refused) {
    it(`refuses ${source}, saying why`, () => {
      const message = refusal(source);
      assert.match(message, reason);
      assert.ok(message.includes(JSON.stringify(source)), message);
    });
  }

  it('matches the whole path only, a top-level alternation included', () => {
    const regex = compileRouteRegex('/a|/b/.*');
    assert.ok(regex.test('/a'));
    assert.ok(regex.test('/b/c'));
    assert.ok(!regex.test('/a/'));
    assert.ok(!regex.test('/x/b/c'));
  });

  it('compiles nested repetitions of an empty group (10^9 of them) to a match of nothing', () => {
    // Before the fix this never finished: the test runner's timeout is the bound.
    const regex = compileRouteRegex('/x(?:(?:(?:){1000}){1000}){1000}');
    assert.equal(regex.test('/x'), true);
    assert.equal(regex.test('/xy'), false);
  });

  it('never matches a path longer than the cap', () => {
    const regex = compileRouteRegex('/.*');
    assert.ok(regex.test(`/${'a'.repeat(maxRegexPathLength - 1)}`));
    assert.ok(!regex.test(`/${'a'.repeat(maxRegexPathLength)}`));
  });

  it('matches patterns that make V8 backtrack for ever in linear time', () => {
    // V8 takes seconds (cubic) on the first and does not finish (exponential) on the others.
    const cases: Array<[string, string]> = [
      ['/.*/.*/.*\\.json', `/${'/'.repeat(maxRegexPathLength - 2)}`],
      ['/(a+)+', `/${'a'.repeat(maxRegexPathLength - 2)}!`],
      ['/(a|aa)*b', `/${'a'.repeat(maxRegexPathLength - 1)}`],
    ];
    for (const [source, path] of cases) {
      const started = process.hrtime.bigint();
      assert.equal(compileRouteRegex(source).test(path), false);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      // Generous for a loaded 2-core machine; a backtracking engine takes hours.
      assert.ok(ms < 2000, `${source} took ${ms} ms`);
    }
  });

  it('agrees with V8 on every small pattern and path', () => {
    fc.assert(
      fc.property(pattern, fc.stringMatching(/^[ab/!]{0,8}$/), (source, path) => {
        assert.equal(compileRouteRegex(source).test(path), v8Matches(source, path), source);
      }),
      { numRuns: 2000 },
    );
  });
});
