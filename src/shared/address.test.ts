import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { formatHostPort, parseHostPort } from './address.ts';
import { isRevtunError } from './errors.ts';

function assertInvalid(text: string, why: string, options?: Parameters<typeof parseHostPort>[1]) {
  assert.throws(
    () => parseHostPort(text, options),
    (error) =>
      isRevtunError(error, 'ERR_ADDRESS_INVALID') &&
      error.message === `invalid address "${text}": ${why}`,
  );
}

describe('parseHostPort', () => {
  const valid: Array<[string, string, number]> = [
    ['127.0.0.1:9000', '127.0.0.1', 9000],
    ['localhost:1', 'localhost', 1],
    ['upstream-a.example.com:65535', 'upstream-a.example.com', 65_535],
    ['[::1]:9000', '::1', 9000],
    ['[2001:db8::10]:443', '2001:db8::10', 443],
    ['[::ffff:192.0.2.1]:80', '::ffff:192.0.2.1', 80],
    ['host:00080', 'host', 80],
  ];
  for (const [text, host, port] of valid) {
    it(`reads ${text} as host ${host} and port ${port}`, () => {
      assert.deepEqual(parseHostPort(text), { host, port });
    });
  }

  it('reads a bare port as the default host and that port', () => {
    assert.deepEqual(parseHostPort('8080', { defaultHost: '0.0.0.0' }), {
      host: '0.0.0.0',
      port: 8080,
    });
  });

  it('refuses a bare port when there is no default host', () => {
    assertInvalid('8080', 'expected host:port');
  });

  it('accepts port 0 only when asked to', () => {
    assert.deepEqual(parseHostPort('127.0.0.1:0', { allowPortZero: true }), {
      host: '127.0.0.1',
      port: 0,
    });
    assert.deepEqual(parseHostPort('[::]:0', { allowPortZero: true }), { host: '::', port: 0 });
    assertInvalid('127.0.0.1:0', 'port 0 is not allowed here');
    assertInvalid('127.0.0.1:0', 'port 0 is not allowed here', { allowPortZero: false });
    assertInvalid('0', 'port 0 is not allowed here', { defaultHost: 'localhost' });
  });

  const invalid: Array<[string, string]> = [
    ['localhost', 'expected host:port'],
    ['', 'expected host:port'],
    [':9000', 'expected host:port'],
    ['host:', '"" is not a port number'],
    ['host:http', '"http" is not a port number'],
    ['host:-1', '"-1" is not a port number'],
    ['host:123456', '"123456" is not a port number'],
    ['host:65536', 'port 65536 is above 65535'],
    ['host:70000', 'port 70000 is above 65535'],
    ['::1:9000', 'an IPv6 address must be written in brackets, e.g. [::1]:9000'],
    ['2001:db8::1:443', 'an IPv6 address must be written in brackets, e.g. [::1]:9000'],
    ['[::1]', 'expected [ipv6]:port'],
    ['[::1:9000', 'expected [ipv6]:port'],
    ['[::1]9000', 'expected [ipv6]:port'],
    ['[127.0.0.1]:80', '"127.0.0.1" is not an IPv6 address'],
    ['[]:80', '"" is not an IPv6 address'],
    ['[::1]:', '"" is not a port number'],
    ['my host:80', '"my host" is not a host name or IPv4 address'],
    ['user@host:80', '"user@host" is not a host name or IPv4 address'],
    ['host_name:80', '"host_name" is not a host name or IPv4 address'],
    [' host:80', '" host" is not a host name or IPv4 address'],
    ['host:80 ', '"80 " is not a port number'],
  ];
  for (const [text, why] of invalid) {
    it(`refuses ${JSON.stringify(text)}: ${why}`, () => {
      assertInvalid(text, why);
    });
  }

  it('reads back any IPv4 address and port it formats', () => {
    fc.assert(
      fc.property(fc.ipV4(), fc.integer({ min: 1, max: 65_535 }), (host, port) => {
        assert.deepEqual(parseHostPort(formatHostPort({ host, port })), { host, port });
      }),
    );
  });

  it('reads back any IPv6 address and port it formats', () => {
    fc.assert(
      fc.property(fc.ipV6(), fc.integer({ min: 1, max: 65_535 }), (host, port) => {
        assert.deepEqual(parseHostPort(formatHostPort({ host, port })), { host, port });
      }),
    );
  });

  it('reads back any host name and port it formats', () => {
    fc.assert(
      fc.property(fc.domain(), fc.integer({ min: 1, max: 65_535 }), (host, port) => {
        assert.deepEqual(parseHostPort(formatHostPort({ host, port })), { host, port });
      }),
    );
  });
});

describe('formatHostPort', () => {
  it('writes a host name or IPv4 address without brackets', () => {
    assert.equal(formatHostPort({ host: 'localhost', port: 80 }), 'localhost:80');
    assert.equal(formatHostPort({ host: '203.0.113.10', port: 9000 }), '203.0.113.10:9000');
  });

  it('writes an IPv6 address in brackets', () => {
    assert.equal(formatHostPort({ host: '::1', port: 9000 }), '[::1]:9000');
    assert.equal(formatHostPort({ host: '2001:db8::10', port: 0 }), '[2001:db8::10]:0');
  });
});
