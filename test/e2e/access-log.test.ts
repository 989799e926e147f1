import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigError, validateResponderConfig, parseConfigText } from '../../src/config/load.ts';
import type { ResponderConfigInput } from '../../src/config/schema.ts';
import type { Initiator } from '../../src/initiator/initiator.ts';
import type { Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { connectH2, h2Request } from '../helpers/h2-client.ts';
import { request, startService, type TestService } from '../helpers/http.ts';
import { connectedInitiator, responderOnFreePorts } from '../helpers/tunnels.ts';

type JsonRecord = Record<string, string | number | null>;

/** The file's lines once it has `count` of them (records are written asynchronously). */
async function linesOf(path: string, count: number): Promise<string[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const text = await readFile(path, 'utf8').catch(() => '');
    const lines = text.split('\n').filter((line) => line !== '');
    if (lines.length >= count) return lines;
    if (Date.now() > deadline)
      assert.fail(`${path} has ${lines.length} lines, expected ${count}:\n${text}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** A JSON record with its varying fields (times, the caller's port) checked and taken out. */
function stable(line: string, since: number): JsonRecord {
  const record = JSON.parse(line) as JsonRecord;
  const start = Date.parse(String(record['start_time']));
  assert.ok(start >= since - 1 && start <= Date.now(), `start_time ${record['start_time']}`);
  assert.equal(typeof record['duration_ms'], 'number');
  assert.ok((record['duration_ms'] as number) >= 0);
  assert.equal(typeof record['downstream_remote_port'], 'number');
  const rest = { ...record };
  for (const varying of ['start_time', 'duration_ms', 'downstream_remote_port']) {
    delete rest[varying];
  }
  return rest;
}

const textFormat =
  '%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %HOST_ID% ' +
  '%HOST_ID_HEADER% %NODE_ID% %TENANT_ID% %BYTES_RECEIVED% %BYTES_SENT% "%REQ(X-REQUEST-ID)%" ' +
  '"%REQ(USER-AGENT):4%" %RESP(CONTENT-TYPE)% %CALLER% 100%%';

describe('the egress access log', () => {
  let directory: string;
  let responder: Responder;
  let initiator: Initiator;
  let service: TestService;
  let egress: HostPort;
  let jsonPath: string;
  let textPath: string;
  let count = 0;
  const since = Date.now();

  /** The next record of both logs, once written. */
  async function next(): Promise<{ json: JsonRecord; text: string }> {
    count += 1;
    const [json, text] = await Promise.all([linesOf(jsonPath, count), linesOf(textPath, count)]);
    return { json: stable(json[count - 1]!, since), text: text[count - 1]! };
  }

  const base = {
    protocol: 'HTTP/1.1',
    authority: null as string | null,
    host_id: 'n1',
    host_id_header: 'x-node-id',
    node_id: 'n1',
    tenant_id: 't1',
    response_flags: null,
    bytes_received: 0,
    downstream_remote_address: '127.0.0.1',
    caller: null,
    request_id: null,
    user_agent: null,
  };

  before(async () => {
    directory = await mkdtemp(join(tmpdir(), 'revtun-access-log-'));
    jsonPath = join(directory, 'access.json');
    textPath = join(directory, 'access.txt');
    service = await startService((req, res) => {
      if (req.url === '/ok') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('hello');
      } else if (req.url === '/echo') {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => res.writeHead(200).end(Buffer.concat(chunks)));
      } else if (req.url === '/stream') {
        // Half a response, then nothing until the caller has gone.
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('part');
        res.on('close', () => res.destroy());
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('nope');
      }
    });
    responder = await responderOnFreePorts({
      egress_listeners: [
        {
          address: '127.0.0.1:0',
          access_log: [
            { path: jsonPath },
            { path: textPath, format: 'text', text_format: textFormat },
          ],
        },
      ],
    });
    egress = responder.addresses.egress[0]!;
    initiator = await connectedInitiator(responder, {
      node: 'n1',
      routes: [{ prefix: '/', target: service.target }],
    });
  });

  after(async () => {
    await initiator.close();
    await responder.close();
    await service.close();
    await rm(directory, { recursive: true, force: true });
  });

  it('logs a 200 through the tunnel with its host id, node, bytes and request id', async () => {
    const reply = await request(egress, '/ok', {
      headers: { 'x-node-id': 'n1', 'x-request-id': 'r-1', 'user-agent': 'probe/1.0' },
    });
    assert.equal(reply.status, 200);
    const { json, text } = await next();
    assert.deepEqual(json, {
      ...base,
      method: 'GET',
      path: '/ok',
      authority: `127.0.0.1:${egress.port}`,
      response_code: 200,
      bytes_sent: 5,
      request_id: 'r-1',
      user_agent: 'probe/1.0',
    });
    assert.equal(
      text,
      'GET /ok HTTP/1.1 200 - n1 x-node-id n1 t1 0 5 "r-1" "prob" text/plain - 100%',
    );
  });

  it('counts the bytes received from the caller', async () => {
    const reply = await request(egress, '/echo', {
      method: 'POST',
      headers: { 'x-cluster-id': 'c1', 'content-length': '3' },
      body: 'abc',
    });
    assert.equal(reply.text, 'abc');
    const { json } = await next();
    assert.deepEqual(json, {
      ...base,
      method: 'POST',
      path: '/echo',
      authority: `127.0.0.1:${egress.port}`,
      host_id: 'c1',
      host_id_header: 'x-cluster-id',
      response_code: 200,
      bytes_received: 3,
      bytes_sent: 3,
    });
  });

  it("logs the local service's 404 as the status, with no flag", async () => {
    const reply = await request(egress, '/missing', { headers: { 'x-node-id': 'n1' } });
    assert.equal(reply.status, 404);
    const { json, text } = await next();
    assert.equal(json['response_code'], 404);
    assert.equal(json['response_flags'], null);
    assert.equal(json['bytes_sent'], 4);
    assert.equal(
      text,
      'GET /missing HTTP/1.1 404 - n1 x-node-id n1 t1 0 4 "-" "-" text/plain - 100%',
    );
  });

  it('logs a 503 for a host id with no tunnel as UH, with no node', async () => {
    const reply = await request(egress, '/ok', { headers: { 'x-node-id': 'ghost' } });
    assert.equal(reply.status, 503);
    const { json, text } = await next();
    assert.deepEqual(json, {
      ...base,
      method: 'GET',
      path: '/ok',
      authority: `127.0.0.1:${egress.port}`,
      host_id: 'ghost',
      node_id: null,
      tenant_id: null,
      response_code: 503,
      response_flags: 'UH',
      bytes_sent: Buffer.byteLength(reply.text),
    });
    assert.match(text, /^GET \/ok HTTP\/1\.1 503 UH ghost x-node-id - - 0 \d+ /);
  });

  it('logs a 400 for a request without a routing header, with no host id', async () => {
    const reply = await request(egress, '/ok');
    assert.equal(reply.status, 400);
    const { json } = await next();
    assert.deepEqual(json, {
      ...base,
      method: 'GET',
      path: '/ok',
      authority: `127.0.0.1:${egress.port}`,
      host_id: null,
      host_id_header: null,
      node_id: null,
      tenant_id: null,
      response_code: 400,
      bytes_sent: Buffer.byteLength(reply.text),
    });
  });

  it('logs a caller that goes away mid-response as DC, with what it was sent', async () => {
    await new Promise<void>((resolve, reject) => {
      const outgoing = http.get(
        { host: egress.host, port: egress.port, path: '/stream', headers: { 'x-node-id': 'n1' } },
        (response) => {
          response.once('data', () => {
            outgoing.destroy();
            resolve();
          });
        },
      );
      outgoing.on('error', (error: NodeJS.ErrnoException) => {
        if (error.code !== 'ECONNRESET') reject(error);
      });
    });
    const { json } = await next();
    assert.deepEqual(json, {
      ...base,
      method: 'GET',
      path: '/stream',
      authority: `127.0.0.1:${egress.port}`,
      response_code: 200,
      response_flags: 'DC',
      bytes_sent: 4,
    });
  });

  it('logs the 501 to an Upgrade it does not offer, sent with a body', async () => {
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(egress.port, egress.host);
      let received = '';
      socket.on('error', reject);
      socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
      socket.on('close', () => resolve(received));
      socket.write(
        'POST /ok HTTP/1.1\r\nhost: x\r\nx-node-id: n1\r\nupgrade: foo\r\nconnection: upgrade\r\n' +
          'content-length: 2\r\n\r\nhi',
      );
    });
    assert.match(answer, /^HTTP\/1\.1 501 /);
    const { json } = await next();
    assert.equal(json.response_code, 501);
    assert.equal(json.protocol, 'HTTP/1.1');
    assert.equal(json.method, 'POST');
  });

  it('logs an HTTP/2 caller as HTTP/2', async () => {
    const session = await connectH2(egress);
    try {
      const reply = await h2Request(session, {
        ':path': '/ok',
        ':authority': 'svc.example',
        'x-node-id': 'n1',
      });
      assert.equal(reply.status, 200);
    } finally {
      session.close();
    }
    const { json, text } = await next();
    assert.deepEqual(json, {
      ...base,
      method: 'GET',
      path: '/ok',
      protocol: 'HTTP/2',
      authority: 'svc.example',
      response_code: 200,
      bytes_sent: 5,
    });
    assert.equal(text, 'GET /ok HTTP/2 200 - n1 x-node-id n1 t1 0 5 "-" "-" text/plain - 100%');
  });

  it('observes downstream_rq_time once per answered request', () => {
    assert.equal(responder.stats.value('http.egress.downstream_rq_time'), count);
    assert.equal(responder.stats.value('http.egress.access_log.dropped') ?? 0, 0);
  });

  it('counts every request in downstream_rq_total and each status in its class, as the log shows', async () => {
    const statuses = (await linesOf(jsonPath, count)).map(
      (line) => (JSON.parse(line) as { response_code: number }).response_code,
    );
    assert.equal(responder.stats.value('http.egress.downstream_rq_total'), statuses.length);
    for (const n of [1, 2, 3, 4, 5]) {
      assert.equal(
        responder.stats.value(`http.egress.downstream_rq_${n}xx`),
        statuses.filter((status) => Math.floor(status / 100) === n).length,
        `downstream_rq_${n}xx`,
      );
    }
    assert.ok(statuses.some((status) => status >= 500) && statuses.some((status) => status < 300));
  });
});

describe('access_log config', () => {
  type Entry = NonNullable<
    NonNullable<ResponderConfigInput['egress_listeners']>[number]['access_log']
  >[number];
  const listener = (entry: Entry): ResponderConfigInput => ({
    tunnel_listener: { address: '127.0.0.1:0' },
    egress_listeners: [{ address: '127.0.0.1:0', access_log: [entry] }],
  });

  it('refuses an unknown operator at load, naming the key', () => {
    assert.throws(
      () =>
        validateResponderConfig(
          listener({ path: '/dev/stdout', format: 'text', text_format: '%START_TIME% %BOGUS%' }),
        ),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.equal(error.problems.length, 1);
        assert.equal(error.problems[0]!.path, 'egress_listeners[0].access_log[0].text_format');
        assert.match(error.problems[0]!.message, /^unknown operator %BOGUS%; known: START_TIME/);
        return true;
      },
    );
  });

  it('gives the line and column of a bad text_format in a file', () => {
    const yaml = [
      'tunnel_listener: { address: 127.0.0.1:0 }',
      'egress_listeners:',
      '  - address: 127.0.0.1:0',
      '    access_log:',
      '      - path: /dev/stdout',
      '        format: text',
      '        text_format: "%REQ()%"',
      '',
    ].join('\n');
    assert.throws(
      () => parseConfigText(yaml, 'responder', 'r.yaml'),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.equal(error.problems[0]!.line, 7);
        assert.match(error.message, /r\.yaml:7:\d+: .*needs a header name/);
        return true;
      },
    );
  });

  it('refuses text_format without format: text', () => {
    assert.throws(
      () => validateResponderConfig(listener({ path: '/dev/stdout', text_format: '%PROTOCOL%' })),
      /text_format needs format: text/,
    );
  });

  it('defaults to JSON lines', () => {
    const config = validateResponderConfig(listener({ path: '/dev/stdout' }));
    assert.deepEqual(config.egress_listeners[0]!.access_log, [
      { path: '/dev/stdout', format: 'json' },
    ]);
  });
});
