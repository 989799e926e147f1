import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isRevtunError } from '../shared/errors.ts';
import { validateInitiatorConfig, validateResponderConfig } from './load.ts';
import type { InitiatorConfigInput, ResponderConfigInput } from './schema.ts';
import { assertSecure, insecurityProblems, isLoopbackHost } from './security.ts';

const sha256 = 'a'.repeat(64);

const responder = (input: Partial<ResponderConfigInput>) =>
  validateResponderConfig({
    tunnel_listener: { address: '127.0.0.1:9000' },
    egress_listeners: [{ address: '127.0.0.1:8085' }],
    ...input,
  });

const initiator = (input: Partial<InitiatorConfigInput>) =>
  validateInitiatorConfig({
    node_id: 'n1',
    cluster_id: 'c1',
    tenant_id: 't1',
    remote_clusters: [{ name: 'upstream', hosts: ['127.0.0.1:9000'] }],
    local_routes: [{ prefix: '/', target: 'http://127.0.0.1:8080' }],
    ...input,
  });

describe('isLoopbackHost', () => {
  for (const host of [
    '127.0.0.1',
    '127.0.0.2',
    '127.255.255.254',
    '::1',
    '0:0:0:0:0:0:0:1',
    '::ffff:127.0.0.1',
    'localhost',
    'LocalHost',
  ]) {
    it(`counts ${host} as loopback`, () => assert.equal(isLoopbackHost(host), true));
  }
  for (const host of [
    '0.0.0.0',
    '::',
    '10.0.0.1',
    '126.255.255.255',
    '128.0.0.1',
    '::ffff:10.0.0.1',
    'fe80::1',
    'example.com',
    'localhost.example.com',
    'my-localhost',
  ]) {
    it(`counts ${host} as reachable from other hosts`, () =>
      assert.equal(isLoopbackHost(host), false));
  }
});

describe('insecurityProblems for a responder', () => {
  it('finds nothing when every listener is on loopback', () => {
    assert.deepEqual(
      insecurityProblems(
        'responder',
        responder({
          admin: { address: '127.0.0.1:8889' },
          tunnel_listener: { address: '[::1]:0' },
        }),
      ),
      [],
    );
  });

  it('refuses a tunnel listener beyond loopback with neither tls nor auth', () => {
    assert.deepEqual(
      insecurityProblems('responder', responder({ tunnel_listener: { address: '0.0.0.0:9000' } })),
      [
        'tunnel_listener.address 0.0.0.0:9000 is reachable from other hosts and the listener has neither tls nor auth: any initiator could claim any node id and receive its traffic. Set tunnel_listener.auth (and tunnel_listener.tls), or bind it to loopback.',
      ],
    );
  });

  it('accepts a tunnel listener beyond loopback with tls and credentials', () => {
    const tls = { cert_file: '/etc/revtun/cert.pem', key_file: '/etc/revtun/key.pem' };
    const auth = { tokens: [{ node_id: 'n1', sha256 }] };
    for (const tunnel of [
      { address: '[::]:9000', tls, auth },
      { address: '10.0.0.1:9000', tls: { ...tls, client_ca_file: '/etc/revtun/ca.pem' } },
    ]) {
      assert.deepEqual(insecurityProblems('responder', responder({ tunnel_listener: tunnel })), []);
    }
  });

  it('refuses a tunnel listener beyond loopback with auth but no tls, or tls but no credentials', () => {
    const tls = { cert_file: '/etc/revtun/cert.pem', key_file: '/etc/revtun/key.pem' };
    const auth = { tokens: [{ node_id: 'n1', sha256 }] };
    const [cleartext] = insecurityProblems(
      'responder',
      responder({ tunnel_listener: { address: '10.0.0.1:9000', auth } }),
    );
    assert.match(
      cleartext ?? '',
      /has auth but no tls: .* cleartext\. Set tunnel_listener\.tls\.$/,
    );
    const [anyone] = insecurityProblems(
      'responder',
      responder({ tunnel_listener: { address: '10.0.0.1:9000', tls } }),
    );
    assert.match(anyone ?? '', /has tls but takes no credentials/);
  });

  it('refuses token callers on an egress listener beyond loopback without tls', () => {
    const callers = [{ name: 'app', token_sha256: sha256 }];
    const [problem] = insecurityProblems(
      'responder',
      responder({ egress_listeners: [{ address: '0.0.0.0:8085', callers }] }),
    );
    assert.match(problem ?? '', /callers send bearer tokens, but the listener has no tls/);
    const tls = { cert_file: '/etc/revtun/cert.pem', key_file: '/etc/revtun/key.pem' };
    assert.deepEqual(
      insecurityProblems(
        'responder',
        responder({ egress_listeners: [{ address: '0.0.0.0:8085', callers, tls }] }),
      ),
      [],
    );
  });

  it('refuses each egress listener beyond loopback without callers, naming its index', () => {
    const problems = insecurityProblems(
      'responder',
      responder({
        egress_listeners: [
          { address: '127.0.0.1:8085' },
          { address: '[::]:8086' },
          {
            address: '0.0.0.0:8087',
            callers: [{ name: 'app', token_sha256: sha256 }],
            tls: { cert_file: '/etc/revtun/cert.pem', key_file: '/etc/revtun/key.pem' },
          },
        ],
      }),
    );
    assert.deepEqual(problems, [
      'egress_listeners[1].address [::]:8086 is reachable from other hosts and the listener has no callers: anyone who reaches it could send requests to every node. Set egress_listeners[1].callers, or bind it to loopback.',
    ]);
  });

  it('refuses an admin server beyond loopback without token_file', () => {
    assert.deepEqual(
      insecurityProblems('responder', responder({ admin: { address: '0.0.0.0:8889' } })),
      [
        'admin.address 0.0.0.0:8889 is reachable from other hosts and admin.token_file is not set: anyone who reaches it can read the stats. Set admin.token_file, or bind the admin server to loopback (e.g. 127.0.0.1:8889).',
      ],
    );
    assert.deepEqual(
      insecurityProblems(
        'responder',
        responder({ admin: { address: '0.0.0.0:8889', token_file: '/run/secrets/admin' } }),
      ),
      [],
    );
  });

  it('lists every problem, admin first, and none with allow_insecure', () => {
    const open = {
      admin: { address: '0.0.0.0:8889' },
      tunnel_listener: { address: '0.0.0.0:9000' },
      egress_listeners: [{ address: '0.0.0.0:8085' }],
    };
    const problems = insecurityProblems('responder', responder(open));
    assert.deepEqual(
      problems.map((problem) => problem.split(' ')[0]),
      ['admin.address', 'tunnel_listener.address', 'egress_listeners[0].address'],
    );
    assert.deepEqual(
      insecurityProblems('responder', responder({ ...open, allow_insecure: true })),
      [],
    );
  });
});

describe('insecurityProblems for an initiator', () => {
  it('finds nothing when every remote host is on loopback', () => {
    const config = initiator({
      remote_clusters: [{ name: 'up', hosts: ['127.0.0.1:9000', 'localhost:9001', '[::1]:9002'] }],
    });
    assert.deepEqual(insecurityProblems('initiator', config), []);
  });

  it('refuses each remote host beyond loopback in a cluster without tls', () => {
    const config = initiator({
      remote_clusters: [
        { name: 'local', hosts: ['127.0.0.1:9000'] },
        { name: 'public', hosts: ['127.0.0.1:9000', 'responder.example.com:9000', '[::]:9000'] },
        { name: 'secured', hosts: ['203.0.113.10:9000'], tls: {} },
      ],
    });
    assert.deepEqual(insecurityProblems('initiator', config), [
      "remote_clusters[1].hosts[1] responder.example.com:9000 is beyond loopback and remote_clusters[1] (public) has no tls: the tunnel would carry the private service's traffic in cleartext. Set remote_clusters[1].tls.",
      "remote_clusters[1].hosts[2] [::]:9000 is beyond loopback and remote_clusters[1] (public) has no tls: the tunnel would carry the private service's traffic in cleartext. Set remote_clusters[1].tls.",
    ]);
  });

  it("refuses the initiator's admin server beyond loopback without token_file", () => {
    const problems = insecurityProblems(
      'initiator',
      initiator({ admin: { address: '[::]:8888' } }),
    );
    assert.equal(problems.length, 1);
    assert.match(problems[0] ?? '', /^admin\.address \[::\]:8888 is reachable from other hosts/);
  });

  it('finds nothing with allow_insecure', () => {
    const config = initiator({
      allow_insecure: true,
      admin: { address: '0.0.0.0:8888' },
      remote_clusters: [{ name: 'up', hosts: ['203.0.113.10:9000'] }],
    });
    assert.deepEqual(insecurityProblems('initiator', config), []);
  });
});

describe('assertSecure', () => {
  it('returns for a secure configuration', () => {
    assertSecure('responder', responder({}));
    assertSecure('initiator', initiator({}));
  });

  it('throws ERR_INSECURE listing every problem and how to accept the risk', () => {
    const config = responder({
      tunnel_listener: { address: '0.0.0.0:9000' },
      egress_listeners: [{ address: '0.0.0.0:8085' }],
    });
    assert.throws(
      () => assertSecure('responder', config),
      (error: unknown) => {
        assert.ok(isRevtunError(error, 'ERR_INSECURE'));
        assert.equal(
          error.message,
          [
            'refusing to start an insecure responder (2 problems):',
            `  ${insecurityProblems('responder', config).join('\n  ')}`,
            'To accept the risk (a trusted network, a test), set allow_insecure: true (on the command line: --allow-insecure).',
          ].join('\n'),
        );
        return true;
      },
    );
  });
});
