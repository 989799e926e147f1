import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isRevtunError } from './errors.ts';
import { compileRouteRegex, matchesRouteRegex, maxRegexPathLength } from './route-regex.ts';

function refusal(source: string): string {
  try {
    compileRouteRegex(source);
  } catch (error) {
    assert.ok(isRevtunError(error, 'ERR_CONFIG_INVALID'));
    return error.message;
  }
  assert.fail(`${source} was accepted`);
}

describe('compileRouteRegex', () => {
  const accepted = [
    '/v[0-9]+/items',
    '/api/(v1|v2)/.*',
    '/users/[^/]+/posts/[^/]+',
    '/(?:ab)+',
    '/(?<version>v[0-9]{1,3})/x',
    '/a{2}b?c*',
    '/lit\\{1,2}',
    '/x{',
    '/[(|)+*]+',
    '/(a?)+',
    '/\\d+\\.json',
  ];
  for (const source of accepted) {
    it(`accepts ${source}`, () => {
      assert.ok(compileRouteRegex(source) instanceof RegExp);
    });
  }

  const refused: Array<[string, RegExp]> = [
    ['/(a)\\1', /backreferences/],
    ['/(?<n>a)\\k<n>', /backreferences/],
    ['/(?=a)a', /lookaheads and lookbehinds/],
    ['/(?!a).', /lookaheads and lookbehinds/],
    ['/(?<=a)b', /lookaheads and lookbehinds/],
    ['/(?<!a)b', /lookaheads and lookbehinds/],
    ['/(a+)+', /may not hold a repetition/],
    ['/(a*)*b', /may not hold a repetition/],
    ['/((a+))+', /may not hold a repetition/],
    ['/(x[a-z]{2,})*', /may not hold a repetition/],
    ['/(\\/[a-z]+){1,5}', /may not hold a repetition/],
    ['/(a|aa)*', /may not hold an alternation/],
    ['/(x(a|b)y)+', /may not hold an alternation/],
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

  it('matches the whole path only', () => {
    const regex = compileRouteRegex('/a|/b/.*');
    assert.ok(matchesRouteRegex(regex, '/a'));
    assert.ok(matchesRouteRegex(regex, '/b/c'));
    assert.ok(!matchesRouteRegex(regex, '/a/'));
    assert.ok(!matchesRouteRegex(regex, '/x/b/c'));
  });

  it('never matches a path longer than the cap', () => {
    const regex = compileRouteRegex('/.*');
    assert.ok(matchesRouteRegex(regex, `/${'a'.repeat(maxRegexPathLength - 1)}`));
    assert.ok(!matchesRouteRegex(regex, `/${'a'.repeat(maxRegexPathLength)}`));
  });
});
