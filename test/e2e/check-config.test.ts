/**
 * `revtun check-config`: every example passes, every invalid fixture fails with the line and
 * message its entry in test/fixtures/config/invalid/check-config.json names (a fixture without an
 * entry fails the test). Most cases run check-config in this process (its module is what main
 * calls); a few run `revtun check-config` as a user does, for the exit codes and the wiring.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { checkConfig, closest, detectRole, type CheckedRole } from '../../src/cli/check-config.ts';
import { repoRoot, revtun, runToEnd, startDeadlineMs } from '../helpers/process.ts';

interface Expectation {
  readonly role?: CheckedRole;
  readonly line: number | null;
  readonly column: number | null;
  readonly message: string;
  readonly hint?: string;
}

const invalidDirectory = path.join(repoRoot, 'test/fixtures/config/invalid');
const expectations = JSON.parse(
  readFileSync(path.join(invalidDirectory, 'check-config.json'), 'utf8'),
) as Record<string, Expectation | string>;

/** Runs check-config in this process and returns its exit code and what it printed. */
async function check(
  file: string,
  role?: CheckedRole,
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await checkConfig(file, role, {
    out: (line) => (stdout += `${line}\n`),
    err: (line) => (stderr += `${line}\n`),
  });
  return { code, stdout, stderr };
}

/** Every YAML file under `examples/`, relative to the repository. */
function exampleFiles(): string[] {
  const found: string[] = [];
  const walk = (directory: string) => {
    for (const entry of readdirSync(path.join(repoRoot, directory), { withFileTypes: true })) {
      const relative = path.join(directory, entry.name);
      if (entry.isDirectory()) walk(relative);
      else if (/\.ya?ml$/.test(entry.name)) found.push(relative);
    }
  };
  walk('examples');
  return found.sort();
}

describe('revtun check-config on examples/', () => {
  const files = exampleFiles();

  it('finds the examples', () => {
    assert.ok(files.length >= 4, files.join(', '));
  });

  for (const file of files) {
    it(`accepts ${file} and prints what it would run`, async () => {
      const result = await check(path.join(repoRoot, file));
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stderr, '');
      assert.match(result.stdout, /: valid (initiator|responder) config\n {2}role: /);
      assert.match(result.stdout, /^ {2}admin: /m);
    });
  }
});

describe('revtun check-config on test/fixtures/config/invalid/', () => {
  const fixtures = readdirSync(invalidDirectory)
    .filter((name) => name.endsWith('.yaml'))
    .sort();

  it('has an expectation for every fixture, and a fixture for every expectation', () => {
    const named = Object.keys(expectations).filter((key) => !key.startsWith('$'));
    assert.deepEqual(
      fixtures.filter((name) => !named.includes(name)),
      [],
      'fixtures without an entry in check-config.json',
    );
    assert.deepEqual(
      named.filter((name) => !fixtures.includes(name)),
      [],
      'entries in check-config.json without a fixture',
    );
  });

  for (const name of fixtures) {
    it(`rejects ${name} with its line and message`, async () => {
      const expected = expectations[name];
      assert.ok(typeof expected === 'object', `${name} has no entry in check-config.json`);
      const file = path.join(invalidDirectory, name);
      const result = await check(file, expected.role);
      assert.equal(result.code, 1, result.stdout + result.stderr);
      assert.equal(result.stdout, '');
      const where =
        expected.line === null ? `${file}: ` : `${file}:${expected.line}:${expected.column}: `;
      const problem = result.stderr
        .split('\n')
        .find((line) => line.startsWith(where) && line.includes(expected.message));
      assert.ok(problem, `no line "${where}…${expected.message}…" in:\n${result.stderr}`);
      if (expected.hint !== undefined) {
        const lines = result.stderr.split('\n');
        const next = lines[lines.indexOf(problem) + 1] ?? '';
        assert.ok(
          next.startsWith('  hint: ') && next.includes(expected.hint),
          `the line after "${problem}" is not the hint "${expected.hint}":\n${result.stderr}`,
        );
      }
    });
  }
});

describe('revtun check-config decides', () => {
  it('tells the role by the top-level keys, and not when they point both ways or nowhere', () => {
    assert.equal(detectRole('node_id: n\nremote_clusters: []\n'), 'initiator');
    assert.equal(detectRole('tunnel_listener: {address: "127.0.0.1:0"}\n'), 'responder');
    assert.equal(detectRole('static_resources: {listeners: []}\n'), 'envoy');
    assert.equal(detectRole('node_id: n\ntunnel_listener: {}\n'), undefined);
    assert.equal(detectRole('# nothing\n'), undefined);
    assert.equal(detectRole('- a list\n'), undefined);
  });

  it('suggests a key only when it is a near miss', () => {
    assert.equal(
      closest('egress_listener', ['egress_listeners', 'tunnel_listener']),
      'egress_listeners',
    );
    assert.equal(closest('ping_intervall', ['ping_interval', 'address']), 'ping_interval');
    assert.equal(closest('colour', ['address', 'routes']), undefined);
  });

  it('refuses a schema-valid config that its role would refuse to start as insecure', async () => {
    const result = await check(
      path.join(repoRoot, 'test/fixtures/config/valid/responder-minimal.yaml'),
    );
    assert.equal(result.code, 1);
    assert.match(
      result.stderr,
      /the responder would refuse to start \(insecure\):\n {2}tunnel_listener\.address 0\.0\.0\.0:9000 /,
    );
    assert.match(result.stderr, /hint: .*allow_insecure: true/);
  });

  it('only warns about the insecure settings of an Envoy bootstrap (revtun envoy --allow-insecure runs it)', async () => {
    const result = await check(
      path.join(repoRoot, 'test/fixtures/envoy/sandbox/responder-envoy.yaml'),
    );
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /valid Envoy bootstrap\n {2}runs a responder:\n {4}role: responder/,
    );
    assert.match(result.stdout, /tunnel listener 0\.0\.0\.0:9000, TLS off, auth off/);
    assert.match(result.stderr, /warning: tunnel_listener\.address 0\.0\.0\.0:9000 is reachable/);
  });

  it('lists the allowed keys when a misspelt key is near none of them', async () => {
    const directory = await mkdtemp(path.join(os.tmpdir(), 'revtun-check-'));
    try {
      const file = path.join(directory, 'responder.yaml');
      await writeFile(
        file,
        'tunnel_listener:\n  address: 127.0.0.1:9000\n  colour: blue\negress_listeners:\n  - address: 127.0.0.1:8085\n',
      );
      const result = await check(file);
      assert.equal(result.code, 1);
      assert.match(
        result.stderr,
        new RegExp(
          `${file}:3:3: tunnel_listener\\.colour: unknown key "colour"\\n {2}hint: allowed here: address, `,
        ),
      );
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});

describe('revtun check-config as a command', () => {
  let directory: string;
  before(async () => {
    directory = await mkdtemp(path.join(os.tmpdir(), 'revtun-check-'));
    await writeFile(path.join(directory, 'nothing.yaml'), '# only a comment\n');
  });
  after(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it('exits 0 and prints the summary on stdout for a valid file', async () => {
    const result = await runToEnd(
      revtun('check-config', 'examples/sandbox/responder.yaml'),
      startDeadlineMs,
    );
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^examples\/sandbox\/responder\.yaml: valid responder config$/m);
    assert.match(result.stdout, /^ {2}tunnel listener 127\.0\.0\.1:9000, TLS off, auth off$/m);
  });

  it('exits 1 for an invalid file, with the problem and its hint on stderr', async () => {
    const file = 'test/fixtures/config/invalid/unknown-nested-keys.yaml';
    const result = await runToEnd(revtun('check-config', file), startDeadlineMs);
    assert.equal(result.code, 1, result.stdout);
    assert.match(
      result.stderr,
      /unknown-nested-keys\.yaml:7:3: tunnel_listener\.ping_intervall: unknown key "ping_intervall"\n {2}hint: did you mean "ping_interval"\?/,
    );
  });

  it('exits 2 naming the problem for no file, an unreadable file, a bad --role or an unknown role', async () => {
    const missing = path.join(directory, 'missing.yaml');
    const cases: Array<[string[], RegExp]> = [
      [[], /^revtun check-config: FILE is required; see revtun check-config --help$/m],
      [[missing], new RegExp(`^revtun check-config: cannot read ${missing}: ENOENT`, 'm')],
      [
        ['--role', 'edge', missing],
        /--role must be one of initiator, responder, envoy, not "edge"/,
      ],
      [[path.join(directory, 'nothing.yaml')], /cannot tell whether .* say which with --role/],
    ];
    const results = await Promise.all(
      cases.map(([args]) => runToEnd(revtun('check-config', ...args), startDeadlineMs)),
    );
    results.forEach((result, index) => {
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, cases[index]?.[1] as RegExp);
    });
  });
});
