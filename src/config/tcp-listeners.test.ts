/** The responder's `tcp_listeners` config: defaults, tenants, and the loopback rule. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isRevtunError } from '../shared/errors.ts';
import { validateResponderConfig } from './load.ts';
import type { ResponderConfigInput } from './schema.ts';
import { insecurityProblems } from './security.ts';

const listener = { address: '127.0.0.1:0', stat_prefix: 'db', host_id: 'n1', target: 'postgres' };

const responder = (input: Partial<ResponderConfigInput>) =>
  validateResponderConfig({
    tunnel_listener: { address: '127.0.0.1:0' },
    egress_listeners: [{ address: '127.0.0.1:0' }],
    ...input,
  });

/** The messages of a config the schema refuses. */
function refusal(input: Partial<ResponderConfigInput>): string {
  try {
    responder(input);
  } catch (error) {
    assert.ok(isRevtunError(error), String(error));
    return error.message;
  }
  assert.fail('the config was accepted');
}

describe('tcp_listeners in the responder config', () => {
  it('is empty by default', () => {
    assert.deepEqual(responder({}).tcp_listeners, []);
  });

  it('fills in max_connections, connect_timeout and idle_timeout', () => {
    const [tcp] = responder({ tcp_listeners: [listener] }).tcp_listeners;
    assert.equal(tcp?.max_connections, 1024);
    assert.equal(tcp?.connect_timeout, 10_000);
    assert.equal(tcp?.idle_timeout, 3_600_000);
  });

  it('takes idle_timeout 0s as no idle timeout', () => {
    const [tcp] = responder({ tcp_listeners: [{ ...listener, idle_timeout: '0s' }] }).tcp_listeners;
    assert.equal(tcp?.idle_timeout, 0);
  });

  it('refuses a target that is an address rather than a name', () => {
    assert.match(refusal({ tcp_listeners: [{ ...listener, target: '10.0.0.5:5432' }] }), /target/);
  });

  it('needs tenant_id under tenant isolation, and refuses it without', () => {
    assert.match(
      refusal({
        enable_tenant_isolation: true,
        egress_listeners: [{ address: '127.0.0.1:0', tenant_id_headers: ['x-tenant-id'] }],
        tcp_listeners: [listener],
      }),
      /must name the tenant_id/,
    );
    assert.match(
      refusal({ tcp_listeners: [{ ...listener, tenant_id: 't1' }] }),
      /tenant_id needs enable_tenant_isolation/,
    );
  });

  it('refuses a tcp listener beyond loopback unless allow_insecure', () => {
    const open = { tcp_listeners: [{ ...listener, address: '0.0.0.0:5432' }] };
    assert.deepEqual(insecurityProblems('responder', responder(open)), [
      'tcp_listeners[0].address 0.0.0.0:5432 is reachable from other hosts and a tcp listener ' +
        'authenticates no one: anyone who reaches it could open connections to target postgres ' +
        'on host id n1. Bind it to loopback (and reach it through an authenticating proxy or a ' +
        'firewall).',
    ]);
    assert.deepEqual(
      insecurityProblems('responder', responder({ ...open, allow_insecure: true })),
      [],
    );
    assert.deepEqual(insecurityProblems('responder', responder({ tcp_listeners: [listener] })), []);
  });
});
