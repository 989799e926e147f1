import assert from 'node:assert/strict';
import type { OutgoingHttpHeaders } from 'node:http2';
import { describe, it } from 'node:test';
import { addForwardedHeaders, type ForwardedHeadersConfig } from './egress-forwarded.ts';

const hop = { address: '::ffff:192.0.2.7', proto: 'https', host: 'app.example:8443', version: '2' };
const config = (overrides: Partial<ForwardedHeadersConfig> = {}): ForwardedHeadersConfig => ({
  mode: 'x-forwarded',
  via: true,
  incoming: 'append',
  ...overrides,
});

function added(headers: OutgoingHttpHeaders, settings: ForwardedHeadersConfig, at = hop) {
  const out = { ...headers };
  addForwardedHeaders(out, at, settings);
  return out;
}

describe('addForwardedHeaders', () => {
  it('appends the caller to x-forwarded-for and via, and sets -proto and -host', () => {
    assert.deepEqual(
      added(
        {
          'x-forwarded-for': ['198.51.100.1', '203.0.113.2'],
          via: '1.1 a',
          'x-forwarded-proto': 'http',
        },
        config(),
      ),
      {
        'x-forwarded-for': '198.51.100.1, 203.0.113.2, 192.0.2.7',
        via: '1.1 a, 2 revtun',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'app.example:8443',
      },
    );
  });

  it('drops what the caller sent with incoming: replace', () => {
    assert.deepEqual(
      added(
        { 'x-forwarded-for': '198.51.100.1', forwarded: 'for=x', 'x-forwarded-host': 'spoof' },
        config({ incoming: 'replace', via: false }),
      ),
      {
        'x-forwarded-for': '192.0.2.7',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'app.example:8443',
      },
    );
  });

  it('keeps the caller’s -proto and -host with incoming: trust', () => {
    const out = added(
      { 'x-forwarded-proto': 'http', 'x-forwarded-host': 'outer' },
      config({ incoming: 'trust' }),
    );
    assert.equal(out['x-forwarded-proto'], 'http');
    assert.equal(out['x-forwarded-host'], 'outer');
  });

  it('writes one RFC 7239 element, an IPv6 node bracketed and quoted', () => {
    const out = added(
      { forwarded: 'for=198.51.100.1' },
      config({ mode: 'forwarded', via: false }),
      { ...hop, address: '2001:db8::1', host: 'plain' },
    );
    assert.deepEqual(out, {
      forwarded: 'for=198.51.100.1, for="[2001:db8::1]";proto=https;host=plain',
    });
  });

  it('adds nothing with mode none and no via', () => {
    assert.deepEqual(added({ a: 'b' }, config({ mode: 'none', via: false })), { a: 'b' });
  });
});
