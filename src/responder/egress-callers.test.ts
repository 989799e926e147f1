import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mayReach, parseSubjectAltNames, type CallerConfig } from './egress-callers.ts';

const caller = (allow: CallerConfig['allow']): CallerConfig => ({
  name: 'c',
  token_sha256: '0'.repeat(64),
  allow,
});
const node = { nodeId: 'n1', clusterId: 'c1', tenantId: 't1' };

describe('parseSubjectAltNames', () => {
  it("reads Node's subjectaltname text", () => {
    assert.deepEqual(
      parseSubjectAltNames(
        'DNS:node-a, URI:spiffe://tenant-a/cluster-a/node-a, IP Address:127.0.0.1',
      ),
      [
        { type: 'DNS', value: 'node-a' },
        { type: 'URI', value: 'spiffe://tenant-a/cluster-a/node-a' },
        { type: 'IP Address', value: '127.0.0.1' },
      ],
    );
  });

  it('reads a value Node quoted because it holds a comma, without splitting it', () => {
    assert.deepEqual(parseSubjectAltNames('URI:"spiffe://a/b,DNS:evil", DNS:x'), [
      { type: 'URI', value: 'spiffe://a/b,DNS:evil' },
      { type: 'DNS', value: 'x' },
    ]);
  });

  it('reads nothing from an empty text', () => {
    assert.deepEqual(parseSubjectAltNames(''), []);
  });
});

describe('mayReach', () => {
  it('allows everything without allow-lists', () => {
    assert.equal(mayReach(caller({}), node), true);
  });

  it('needs every present list to take the node', () => {
    assert.equal(
      mayReach(caller({ nodes: ['n1'], clusters: ['c1'], tenants: ['t1'] }), node),
      true,
    );
    assert.equal(mayReach(caller({ nodes: ['n1'], clusters: ['c2'] }), node), false);
    assert.equal(mayReach(caller({ tenants: ['t2'] }), node), false);
    assert.equal(mayReach(caller({ nodes: ['n2'] }), node), false);
  });
});
