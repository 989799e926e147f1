/**
 * gRPC end to end (issue 7): a `@grpc/grpc-js` client calls the responder's egress listener over
 * h2c, naming the node in its metadata; the call crosses the tunnel and the initiator sends it to a
 * `@grpc/grpc-js` server on an HTTP/2 local route. All four call kinds, status and binary metadata
 * in trailers, deadlines and cancellation. Messages are raw bytes (no protobuf): the service's
 * serializers pass Buffers through, which is all the transport sees anyway.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { Initiator } from '../../src/initiator/initiator.ts';
import type { Responder } from '../../src/responder/responder.ts';
import { echoServiceOf } from '../helpers/grpc-bytes.ts';
import { connectedInitiator, responderOnFreePorts } from '../helpers/tunnels.ts';

const node = 'grpc-node';
const mebibyte = 1024 * 1024;
/** Above grpc-js's default 4 MiB, so both ends are told to take it. */
const largeMessageBytes = 8 * mebibyte;
const maxMessageBytes = 16 * mebibyte;

const echoService = echoServiceOf('revtun.test.Echo');

/** What the server saw of calls that ended early, for the deadline and cancellation tests. */
const serverSaw = {
  cancelled: [] as string[],
  metadata: [] as grpc.Metadata[],
};

let cancelledWaiter: (() => void) | undefined;

function noteCancelled(
  call: grpc.ServerUnaryCall<Buffer, Buffer> | grpc.ServerWritableStream<Buffer, Buffer>,
  name: string,
) {
  call.on('cancelled', () => {
    serverSaw.cancelled.push(name);
    cancelledWaiter?.();
  });
}

const handlers: grpc.UntypedServiceImplementation = {
  unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
    serverSaw.metadata.push(call.metadata);
    const reply = new grpc.Metadata();
    reply.set('x-echo-header', 'yes');
    call.sendMetadata(reply);
    callback(null, call.request);
  },
  fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
    const trailers = new grpc.Metadata();
    trailers.set('x-detail-bin', Buffer.from([0, 1, 2, 254, 255]));
    callback({
      code: grpc.status.FAILED_PRECONDITION,
      details: 'no such thing: é',
      metadata: trailers,
    });
  },
  slow: (call: grpc.ServerUnaryCall<Buffer, Buffer>) => {
    // Never answers: the client's deadline or cancellation ends the call.
    noteCancelled(call, 'slow');
  },
  serverStream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
    const count = call.request.readUInt32BE(0);
    if (count === 0) {
      // Never ends: the client cancels it.
      noteCancelled(call, 'serverStream');
      call.write(Buffer.from('first'));
      return;
    }
    for (let i = 0; i < count; i += 1) call.write(Buffer.from(`message ${i}`));
    call.end();
  },
  clientStream: (
    call: grpc.ServerReadableStream<Buffer, Buffer>,
    callback: grpc.sendUnaryData<Buffer>,
  ) => {
    let total = 0;
    let messages = 0;
    call.on('data', (message: Buffer) => {
      total += message.length;
      messages += 1;
    });
    call.on('end', () => callback(null, Buffer.from(`${messages} messages, ${total} bytes`)));
  },
  bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
    call.on('data', (message: Buffer) =>
      call.write(Buffer.concat([Buffer.from('echo:'), message])),
    );
    call.on('end', () => call.end());
  },
};

// A client constructor for the service, typed loosely: grpc-js's generic clients are untyped.
const EchoClient = grpc.makeGenericClientConstructor(echoService, 'Echo');
type Client = InstanceType<typeof EchoClient> & Record<string, (...args: unknown[]) => unknown>;

function routed(extra: Record<string, string | Buffer> = {}): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set('x-node-id', node);
  for (const [key, value] of Object.entries(extra)) metadata.set(key, value);
  return metadata;
}

function unary(
  client: Client,
  name: string,
  request: Buffer,
  options: grpc.CallOptions = {},
  metadata = routed(),
): Promise<{ reply: Buffer; headers: grpc.Metadata }> {
  return new Promise((resolve, reject) => {
    let headers = new grpc.Metadata();
    const call = client[name]!(
      request,
      metadata,
      options,
      (error: grpc.ServiceError | null, reply: Buffer) => {
        if (error !== null) reject(error);
        else resolve({ reply, headers });
      },
    ) as grpc.ClientUnaryCall;
    call.on('metadata', (received: grpc.Metadata) => (headers = received));
  });
}

describe('gRPC through the tunnel (grpc-js client → h2c egress → tunnel → grpc-js server)', () => {
  let server: grpc.Server;
  let responder: Responder;
  let initiator: Initiator;
  let client: Client;

  before(async () => {
    server = new grpc.Server({ 'grpc.max_receive_message_length': maxMessageBytes });
    server.addService(echoService, handlers);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
        error === null ? resolve(bound) : reject(error),
      ),
    );
    responder = await responderOnFreePorts();
    initiator = await connectedInitiator(responder, {
      node,
      routes: [{ prefix: '/', target: `http://127.0.0.1:${port}`, protocol: 'http2' }],
    });
    const egress = responder.addresses.egress[0]!;
    client = new EchoClient(`127.0.0.1:${egress.port}`, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': maxMessageBytes,
      'grpc.max_send_message_length': maxMessageBytes,
    }) as Client;
  });

  after(async () => {
    client.close();
    await initiator.close();
    await responder.close();
    server.forceShutdown();
  });

  it('answers a unary call, with the metadata both ways', async () => {
    const { reply, headers } = await unary(
      client,
      'unary',
      Buffer.from('hello'),
      {},
      routed({ 'x-trace-bin': Buffer.from([9, 8, 7]), 'x-plain': 'text' }),
    );
    assert.equal(reply.toString(), 'hello');
    assert.deepEqual(headers.get('x-echo-header'), ['yes']);
    const seen = serverSaw.metadata.at(-1)!;
    assert.deepEqual(seen.get('x-trace-bin'), [Buffer.from([9, 8, 7])]);
    assert.deepEqual(seen.get('x-plain'), ['text']);
    // The routing header is the responder's, not the service's.
    assert.deepEqual(seen.get('x-node-id'), []);
  });

  it(`carries a ${largeMessageBytes / mebibyte} MiB message each way`, async () => {
    const large = Buffer.alloc(largeMessageBytes, 'g');
    const { reply } = await unary(client, 'unary', large);
    assert.equal(reply.length, large.length);
    assert.ok(reply.equals(large));
  });

  it('passes a status, its message and binary metadata in the trailers', async () => {
    await assert.rejects(unary(client, 'fail', Buffer.alloc(0)), (error: grpc.ServiceError) => {
      assert.equal(error.code, grpc.status.FAILED_PRECONDITION);
      assert.equal(error.details, 'no such thing: é');
      assert.deepEqual(error.metadata.get('x-detail-bin'), [Buffer.from([0, 1, 2, 254, 255])]);
      return true;
    });
  });

  it('streams a server-streaming call message by message', async () => {
    const count = Buffer.alloc(4);
    count.writeUInt32BE(100);
    const call = client['serverStream']!(count, routed()) as grpc.ClientReadableStream<Buffer>;
    const received: string[] = [];
    for await (const message of call) received.push((message as Buffer).toString());
    assert.equal(received.length, 100);
    assert.equal(received[0], 'message 0');
    assert.equal(received[99], 'message 99');
  });

  it('takes a client-streaming call to its end', async () => {
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const call = client['clientStream']!(
        routed(),
        (error: grpc.ServiceError | null, value: Buffer) =>
          error === null ? resolve(value) : reject(error),
      ) as grpc.ClientWritableStream<Buffer>;
      for (let i = 0; i < 50; i += 1) call.write(Buffer.alloc(1000, i));
      call.end();
    });
    assert.equal(reply.toString(), '50 messages, 50000 bytes');
  });

  it('echoes a bidirectional call turn by turn', async () => {
    const call = client['bidi']!(routed()) as grpc.ClientDuplexStream<Buffer, Buffer>;
    for (let i = 0; i < 20; i += 1) {
      call.write(Buffer.from(`turn ${i}`));
      // Each answer comes before the next question: nothing waits for the end of the call.
      const [message] = (await once(call, 'data')) as [Buffer];
      assert.equal(message.toString(), `echo:turn ${i}`);
    }
    call.end();
    await once(call, 'status');
  });

  it('ends a call past its deadline with DEADLINE_EXCEEDED, and the server sees it cancelled', async () => {
    const cancelled = new Promise<void>((resolve) => (cancelledWaiter = resolve));
    await assert.rejects(
      unary(client, 'slow', Buffer.from('x'), { deadline: Date.now() + 300 }),
      (error: grpc.ServiceError) => error.code === grpc.status.DEADLINE_EXCEEDED,
    );
    await cancelled;
    assert.ok(serverSaw.cancelled.includes('slow'));
  });

  it('cancels the call at the server when the client cancels it', async () => {
    serverSaw.cancelled.length = 0;
    const cancelled = new Promise<void>((resolve) => (cancelledWaiter = resolve));
    const call = client['serverStream']!(
      Buffer.alloc(4),
      routed(),
    ) as grpc.ClientReadableStream<Buffer>;
    call.on('error', () => {});
    await once(call, 'data');
    call.cancel();
    await cancelled;
    assert.deepEqual(serverSaw.cancelled, ['serverStream']);
  });
});
