import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseRcAddress } from './rc-address.ts';
import { isRevtunError } from '../shared/errors.ts';

describe('parseRcAddress', () => {
  it("parses the sandbox's address", () => {
    assert.deepEqual(
      parseRcAddress(
        'rc://downstream-node:downstream-cluster:downstream-tenant@upstream-cluster:1',
      ),
      {
        identity: {
          nodeId: 'downstream-node',
          clusterId: 'downstream-cluster',
          tenantId: 'downstream-tenant',
        },
        remoteCluster: 'upstream-cluster',
        connectionCount: 1,
      },
    );
  });

  it('loads a connection count of 0 (dials nothing)', () => {
    assert.equal(parseRcAddress('rc://n:c:t@r:0').connectionCount, 0);
  });

  const invalid: Array<[string, RegExp]> = [
    ['n:c:t@r:1', /must start with rc:\/\//],
    ['rc://n:c@r:1', /<node_id>:<cluster_id>:<tenant_id>/],
    ['rc://n:c:t@r', /<remote_cluster>:<connection_count>/],
    ['rc://n:c:@r:1', /tenant id is empty/],
    ['rc://:c:t@r:1', /node id is empty/],
    ['rc://n::t@r:1', /cluster id is empty/],
    ['rc://n:c:t@r:x', /"x" is not a uint32/],
    ['rc://n:c:t@r:4294967296', /not a uint32/],
    ['rc://n:c:t@r@s:1', /exactly one "@"/],
    ['rc://n:c:t@:1', /remote cluster name is empty/],
  ];
  for (const [address, message] of invalid) {
    it(`rejects ${address}`, () => {
      assert.throws(
        () => parseRcAddress(address),
        (error) => isRevtunError(error, 'ERR_RC_ADDRESS_INVALID') && message.test(error.message),
      );
    });
  }
});
