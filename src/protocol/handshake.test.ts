import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  admitHandshake,
  buildHandshakeRejection,
  buildHandshakeRequest,
  checkHandshakeRequest,
  confirmsKeptTls,
  evaluateHandshakeResponse,
  handshakeAcceptedResponse,
  handshakeKeptTlsResponse,
  validateHandshakeRequest,
  type HandshakeDecision,
} from './handshake.ts';
import { RequestHeadParser, ResponseHeadParser, type RequestHead } from './http1-head.ts';

const identity = {
  nodeId: 'downstream-node',
  clusterId: 'downstream-cluster',
  tenantId: 'downstream-tenant',
};
const validation = {
  requestPath: '/reverse_connections/request',
  requestMethod: 'GET',
  headerPrefix: 'x-envoy',
};

function parseRequest(text: string | Buffer): RequestHead {
  const result = new RequestHeadParser().push(Buffer.isBuffer(text) ? text : Buffer.from(text));
  assert.equal(result.state, 'complete');
  return result.head;
}

function decide(text: string): HandshakeDecision {
  return validateHandshakeRequest(parseRequest(text), validation);
}

function request(headers: string[], line = 'GET /reverse_connections/request HTTP/1.1'): string {
  return [line, 'host: 127.0.0.1:9000', ...headers, '', ''].join('\r\n');
}

const ids = [
  'x-envoy-reverse-tunnel-node-id: n1',
  'x-envoy-reverse-tunnel-cluster-id: c1',
  'x-envoy-reverse-tunnel-tenant-id: t1',
];

describe('buildHandshakeRequest', () => {
  it("writes Envoy's request bytes in Envoy's order and case", () => {
    const bytes = buildHandshakeRequest({
      identity,
      host: '203.0.113.10:9000',
      upstreamClusterName: 'upstream-cluster',
      initiationTimeMs: 1760000000000,
    });
    assert.equal(
      bytes.toString('latin1'),
      'GET /reverse_connections/request HTTP/1.1\r\n' +
        'host: 203.0.113.10:9000\r\n' +
        'x-envoy-reverse-tunnel-node-id: downstream-node\r\n' +
        'x-envoy-reverse-tunnel-cluster-id: downstream-cluster\r\n' +
        'x-envoy-reverse-tunnel-tenant-id: downstream-tenant\r\n' +
        'x-envoy-reverse-tunnel-upstream-cluster-name: upstream-cluster\r\n' +
        'x-envoy-reverse-tunnel-initiation-time: 1760000000000\r\n' +
        'content-length: 0\r\n' +
        '\r\n',
    );
  });

  it('uses the configured path and header prefix, and brackets IPv6 hosts as given', () => {
    const text = buildHandshakeRequest({
      identity,
      host: '[::1]:9000',
      path: '/custom/reverse',
      headerPrefix: 'X-Custom',
    }).toString('latin1');
    assert.match(text, /^GET \/custom\/reverse HTTP\/1\.1\r\nhost: \[::1\]:9000\r\n/);
    assert.match(text, /\r\nx-custom-reverse-tunnel-node-id: downstream-node\r\n/);
    assert.doesNotMatch(text, /upstream-cluster-name|initiation-time/);
  });

  it('builds requests that a revtun responder accepts, for any valid identity', () => {
    const id = fc.stringMatching(/^[A-Za-z0-9._-]{1,40}$/);
    fc.assert(
      fc.property(id, id, id, (nodeId, clusterId, tenantId) => {
        // A node id equal to the cluster id is refused on purpose (tested below).
        fc.pre(nodeId !== clusterId);
        const bytes = buildHandshakeRequest({
          identity: { nodeId, clusterId, tenantId },
          host: 'h:1',
        });
        const decision = validateHandshakeRequest(parseRequest(bytes), validation);
        assert.equal(decision.accepted, true);
        assert.deepEqual(decision.handshake.identity, { nodeId, clusterId, tenantId });
      }),
    );
  });
});

describe('validateHandshakeRequest', () => {
  it('accepts a request with node, cluster and tenant ids', () => {
    const decision = decide(
      request([
        ...ids,
        'x-envoy-reverse-tunnel-initiation-time: 1760000000000',
        'content-length: 0',
      ]),
    );
    assert.equal(decision.accepted, true);
    assert.deepEqual(decision.handshake.identity, {
      nodeId: 'n1',
      clusterId: 'c1',
      tenantId: 't1',
    });
    assert.equal(decision.handshake.initiationTimeMs, 1760000000000);
    assert.equal(decision.handshake.badInitiationTime, undefined);
  });

  it('compares header names case-insensitively and the method too', () => {
    const decision = decide(
      request(
        [
          'X-Envoy-Reverse-Tunnel-Node-Id: n1',
          'X-ENVOY-REVERSE-TUNNEL-CLUSTER-ID: c1',
          ids[2] as string,
        ],
        'get /reverse_connections/request HTTP/1.1',
      ),
    );
    assert.equal(decision.accepted, true);
  });

  it('reads a bad initiation time as 0 and reports it', () => {
    const decision = decide(request([...ids, 'x-envoy-reverse-tunnel-initiation-time: soon']));
    assert.equal(decision.accepted, true);
    assert.equal(decision.handshake.initiationTimeMs, 0);
    assert.equal(decision.handshake.badInitiationTime, 'soon');
  });

  const rejections: Array<[string, string, number, string, string | undefined]> = [
    [
      'a body',
      request([...ids, 'content-length: 15']),
      400,
      'Reverse tunnel handshake must not carry a body',
      'body_rejected',
    ],
    [
      'a chunked body',
      request([...ids, 'transfer-encoding: chunked']),
      400,
      'Reverse tunnel handshake must not carry a body',
      'body_rejected',
    ],
    [
      'a body on the wrong path (the body check comes first)',
      request([...ids, 'content-length: 1'], 'GET /x HTTP/1.1'),
      400,
      'Reverse tunnel handshake must not carry a body',
      'body_rejected',
    ],
    [
      'a wrong path',
      request(ids, 'GET /custom/reverse HTTP/1.1'),
      404,
      'Not a reverse tunnel request',
      undefined,
    ],
    [
      'a query string',
      request(ids, 'GET /reverse_connections/request?a=1 HTTP/1.1'),
      404,
      'Not a reverse tunnel request',
      undefined,
    ],
    [
      'a wrong method',
      request(ids, 'POST /reverse_connections/request HTTP/1.1'),
      404,
      'Not a reverse tunnel request',
      undefined,
    ],
    [
      'a missing node id',
      request(ids.slice(1)),
      400,
      'Missing required reverse tunnel headers',
      'parse_error',
    ],
    [
      'a missing tenant id',
      request(ids.slice(0, 2)),
      400,
      'Missing required reverse tunnel headers',
      'parse_error',
    ],
    [
      'an empty tenant id',
      request([...ids.slice(0, 2), 'x-envoy-reverse-tunnel-tenant-id:']),
      400,
      'Empty tenant-id header value',
      'parse_error',
    ],
    [
      'an empty node id',
      request(['x-envoy-reverse-tunnel-node-id: ', ...ids.slice(1)]),
      400,
      'Empty node-id header value',
      'parse_error',
    ],
    [
      'a repeated node id',
      request([...ids, 'x-envoy-reverse-tunnel-node-id: n2']),
      400,
      'Duplicate reverse tunnel identity headers',
      'parse_error',
    ],
    [
      'a ":" in an id',
      request(['x-envoy-reverse-tunnel-node-id: a:b', ...ids.slice(1)]),
      400,
      "Reverse tunnel identifiers must not contain ':' (node-id)",
      'parse_error',
    ],
    [
      'another header prefix',
      request(ids.map((h) => h.replace('x-envoy', 'x-custom'))),
      400,
      'Missing required reverse tunnel headers',
      'parse_error',
    ],
  ];
  for (const [what, text, status, body, counter] of rejections) {
    it(`answers ${status} to ${what}`, () => {
      const decision = decide(text);
      assert.equal(decision.accepted, false);
      assert.deepEqual(decision.rejection, { status, body, counter });
    });
  }

  it('uses the configured header prefix', () => {
    const custom = ids.map((h) => h.replace('x-envoy', 'x-custom'));
    const head = parseRequest(request(custom));
    assert.equal(
      validateHandshakeRequest(head, { ...validation, headerPrefix: 'x-custom' }).accepted,
      true,
    );
  });
});

describe('revtun additions to the handshake', () => {
  it('refuses a node id equal to the cluster id: a host id could not tell them apart', () => {
    const decision = decide(
      request([
        'x-envoy-reverse-tunnel-node-id: same',
        'x-envoy-reverse-tunnel-cluster-id: same',
        'x-envoy-reverse-tunnel-tenant-id: t1',
      ]),
    );
    assert.equal(decision.accepted, false);
    assert.equal(decision.accepted || decision.rejection.status, 400);
  });

  it('reads keep-tls: true (any case) and nothing else as the request to keep TLS', () => {
    const keep = (value: string | undefined) => {
      const extra = value === undefined ? [] : [`x-envoy-reverse-tunnel-keep-tls: ${value}`];
      const checked = checkHandshakeRequest(parseRequest(request([...ids, ...extra])), validation);
      assert.equal(checked.accepted, true);
      return checked.accepted && checked.handshake.keepTls;
    };
    assert.equal(keep('true'), true);
    assert.equal(keep('TRUE'), true);
    assert.equal(keep(undefined), false);
    assert.equal(keep('false'), false);
    assert.equal(keep('1'), false);
  });

  it('checks in two halves that together decide as validateHandshakeRequest', () => {
    const limited = { ...validation, maxTunnelsPerNode: 1, tunnelsOf: () => 1 };
    const head = parseRequest(request(ids));
    const checked = checkHandshakeRequest(head, limited);
    assert.equal(checked.accepted, true);
    const admitted = checked.accepted ? admitHandshake(checked.handshake, head, limited) : checked;
    assert.deepEqual(admitted, validateHandshakeRequest(head, limited));
    assert.equal(admitted.accepted || admitted.rejection.status, 429);
  });

  it('confirms keep-tls with one extra header in the 200, under the configured prefix', () => {
    assert.equal(
      handshakeKeptTlsResponse('x-custom').toString('latin1'),
      'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nx-custom-reverse-tunnel-keep-tls: true\r\n\r\n',
    );
    const parsed = new ResponseHeadParser().push(handshakeKeptTlsResponse());
    assert.equal(parsed.state, 'complete');
    if (parsed.state !== 'complete') return;
    assert.deepEqual(evaluateHandshakeResponse(parsed.head), { ok: true });
    assert.equal(confirmsKeptTls(parsed.head), true);
    assert.equal(confirmsKeptTls(parsed.head, 'x-custom'), false);
    const bare = new ResponseHeadParser().push(handshakeAcceptedResponse);
    assert.equal(bare.state === 'complete' && confirmsKeptTls(bare.head), false);
  });
});

describe('handshake responses', () => {
  it('accepts with exactly "HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n"', () => {
    assert.equal(
      handshakeAcceptedResponse.toString('hex'),
      Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n').toString('hex'),
    );
  });

  it('rejects with a plain-text body, its length and connection: close', () => {
    const bytes = buildHandshakeRejection({
      status: 404,
      body: 'Not a reverse tunnel request',
      counter: undefined,
    });
    assert.equal(
      bytes.toString('latin1'),
      'HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 28\r\nconnection: close\r\n\r\nNot a reverse tunnel request',
    );
  });

  function evaluate(text: string) {
    const result = new ResponseHeadParser().push(Buffer.from(text));
    assert.equal(result.state, 'complete');
    return evaluateHandshakeResponse(result.head);
  }

  it("counts Envoy's responder's lower-case content-length as success", () => {
    assert.deepEqual(evaluate('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n'), { ok: true });
    assert.deepEqual(evaluate('HTTP/1.1 200 OK\r\n\r\n'), { ok: true });
  });

  it('fails any other status with reason http.<status>', () => {
    assert.deepEqual(evaluate('HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n'), {
      ok: false,
      reason: 'http.500',
      status: 500,
      retryAfterSeconds: undefined,
    });
    assert.deepEqual(evaluate('HTTP/1.1 101 Switching Protocols\r\n\r\n'), {
      ok: false,
      reason: 'http.101',
      status: 101,
      retryAfterSeconds: undefined,
    });
  });

  it('reads Retry-After in seconds on 429 and 503, clamped to 3600, ignoring 0 and dates', () => {
    const retry = (status: string, value: string) => {
      const outcome = evaluate(
        `HTTP/1.1 ${status}\r\nretry-after: ${value}\r\ncontent-length: 0\r\n\r\n`,
      );
      return outcome.ok ? 'ok' : outcome.retryAfterSeconds;
    };
    assert.equal(retry('429 Too Many Requests', '20'), 20);
    assert.equal(retry('503 Service Unavailable', '7'), 7);
    assert.equal(retry('429 Too Many Requests', '90000'), 3600);
    assert.equal(retry('429 Too Many Requests', '0'), undefined);
    assert.equal(retry('429 Too Many Requests', 'Wed, 21 Oct 2026 07:28:00 GMT'), undefined);
    assert.equal(retry('500 Internal Server Error', '20'), undefined);
  });

  it('in Upgrade mode takes only a 101 as success, and a 200 as a failure', () => {
    const head = (text: string) => {
      const result = new ResponseHeadParser().push(Buffer.from(text));
      assert.equal(result.state, 'complete');
      return result.head;
    };
    assert.deepEqual(
      evaluateHandshakeResponse(
        head(
          'HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: reverse-tunnel\r\n\r\n',
        ),
        { upgrade: true },
      ),
      { ok: true },
    );
    assert.equal(
      evaluateHandshakeResponse(head('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n'), {
        upgrade: true,
      }).ok,
      false,
    );
  });

  it('fails a 200 that declares a body', () => {
    assert.equal(evaluate('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok').ok, false);
    assert.equal(evaluate('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n').ok, false);
  });
});
