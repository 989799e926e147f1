/**
 * The README's configuration reference against the schema: every key a config may set has a row,
 * and every row names a key that exists. The keys come from the zod schemas themselves
 * (src/cli/schema-keys.ts), so a key added to the schema without a README row fails here.
 *
 * A row's first cell lists keys in backticks, with the README's shorthands: several keys
 * (`a`, `b` or `c`), a key relative to the previous one (`a.b`, `.c` is `a.c`), alternatives in
 * braces (`a.{b,c}`), and `a.*` for everything under `a` (a row that says "as on the initiator").
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { z } from 'zod';
import { configKeyPaths } from '../../src/cli/schema-keys.ts';
import { initiatorSchema, responderSchema } from '../../src/config/schema.ts';
import { repoRoot } from '../helpers/process.ts';

const readme = readFileSync(path.join(repoRoot, 'README.md'), 'utf8');

/** The text under `## Configuration reference` → `### <title>`, up to the next heading. */
function referenceSection(title: string): string {
  const reference = readme.split(/^## Configuration reference$/m)[1]?.split(/^## /m)[0];
  assert.ok(reference !== undefined, 'README.md has no "## Configuration reference" section');
  const section = reference.split(new RegExp(`^### ${title}$`, 'm'))[1]?.split(/^#{2,3} /m)[0];
  assert.ok(section !== undefined, `README.md's reference has no "### ${title}" table`);
  return section;
}

/** `a.{b,c}` → `a.b`, `a.c`. */
function expandBraces(key: string): string[] {
  const match = /^(.*?)\{([^}]*)\}(.*)$/.exec(key);
  if (match === null) return [key];
  const [, before = '', options = '', rest = ''] = match;
  return options.split(',').flatMap((option) => expandBraces(`${before}${option.trim()}${rest}`));
}

/** The keys a table's rows name, `[]` at the end dropped (a list's own row). */
export function tableKeys(section: string): string[] {
  const keys: string[] = [];
  for (const line of section.split('\n')) {
    if (!line.startsWith('| `')) continue;
    const cell = line.split('|')[1] ?? '';
    let previous: string | undefined;
    for (const [, code = ''] of cell.matchAll(/`([^`]+)`/g)) {
      let key = code;
      if (key.startsWith('.')) {
        assert.ok(previous !== undefined, `"${code}" has no key before it in: ${line}`);
        key = `${previous.slice(0, previous.lastIndexOf('.'))}${key}`;
      }
      previous = key;
      for (const expanded of expandBraces(key)) keys.push(expanded.replace(/\[\]$/, ''));
    }
  }
  return keys;
}

/** Schema leaves with no row, and rows that name no key of the schema. */
function compare(schema: z.ZodType, documented: readonly string[]) {
  const paths = configKeyPaths(schema);
  const all = new Set(paths.map((entry) => entry.path));
  const objects = new Set(paths.filter((entry) => !entry.leaf).map((entry) => entry.path));
  const wildcards = documented.filter((key) => key.endsWith('.*')).map((key) => key.slice(0, -2));
  const exact = new Set(documented.filter((key) => !key.endsWith('.*')));
  const missing = paths
    .filter((entry) => entry.leaf)
    .map((entry) => entry.path)
    .filter(
      (leaf) => !exact.has(leaf) && !wildcards.some((prefix) => leaf.startsWith(`${prefix}.`)),
    );
  const stale = [
    ...[...exact].filter((key) => !all.has(key)),
    ...wildcards.filter((prefix) => !objects.has(prefix)).map((prefix) => `${prefix}.*`),
  ];
  return { missing, stale };
}

describe("the README's configuration reference matches the schema", () => {
  for (const [title, schema] of [
    ['Initiator', initiatorSchema],
    ['Responder', responderSchema],
  ] as const) {
    it(`has a row for every ${title.toLowerCase()} key and none for a key that does not exist`, () => {
      const { missing, stale } = compare(schema, tableKeys(referenceSection(title)));
      assert.deepEqual(
        { missing, stale },
        { missing: [], stale: [] },
        `README.md "### ${title}": add rows for the missing keys, remove or fix the stale ones`,
      );
    });
  }

  it('reads the shorthands of the first column', () => {
    const keys = tableKeys(
      [
        '| `node_id`, `cluster_id` | required | x |',
        '| `local_routes[].prefix`, `.path` or `.regex` | one | x |',
        '| `tunnel_listener.validation.{node_id,cluster_id}` | none | x |',
        '| `tunnel_listener.auth.tokens[]` | none | x |',
        '| `http2.*` | as on the initiator | x |',
        '| Key | Default | Meaning |',
      ].join('\n'),
    );
    assert.deepEqual(keys, [
      'node_id',
      'cluster_id',
      'local_routes[].prefix',
      'local_routes[].path',
      'local_routes[].regex',
      'tunnel_listener.validation.node_id',
      'tunnel_listener.validation.cluster_id',
      'tunnel_listener.auth.tokens',
      'http2.*',
    ]);
  });

  it('fails for a schema key without a row and for a row without a key', () => {
    const documented = configKeyPaths(responderSchema).map((entry) => entry.path);
    const result = compare(responderSchema, [
      ...documented.filter((key) => key !== 'tunnel_listener.address'),
      'tunnel_listener.no_such_key',
    ]);
    assert.deepEqual(result.missing, ['tunnel_listener.address']);
    assert.deepEqual(result.stale, ['tunnel_listener.no_such_key']);
  });
});
