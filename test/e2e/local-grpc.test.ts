/**
 * gRPC through the initiator to an HTTP/2 local service (docs/streams.md §1, a route with
 * `protocol: http2`), with grpc-js at both ends: the client talks h2c to a relay that plays the
 * responder's egress (test/helpers/local-harness.ts `h2Relay`), whose tunnel streams go through the
 * local router to a grpc-js server. Messages are Buffers with passthrough serializers: no protoc.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import {
  h2Relay,
  localRoute,
  routerHarness,
  type Relay,
  type RouterHarness,
} from '../helpers/local-harness.ts';
import { echoServiceOf } from '../helpers/grpc-bytes.ts';

const echoService = echoServiceOf('test.Echo');

type EchoClient = grpc.Client & {
  unary: (
    request: Buffer,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, response?: Buffer) => void,
  ) => grpc.ClientUnaryCall;
  fail: EchoClient['unary'];
  slow: EchoClient['unary'];
  serverStream: (request: Buffer) => grpc.ClientReadableStream<Buffer>;
  clientStream: (
    callback: (error: grpc.ServiceError | null, response?: Buffer) => void,
  ) => grpc.ClientWritableStream<Buffer>;
  bidi: () => grpc.ClientDuplexStream<Buffer, Buffer>;
};

/** Resolves with the value of a unary call, or its error. */
function unary(
  call: (callback: (error: grpc.ServiceError | null, response?: Buffer) => void) => unknown,
): Promise<{ error: grpc.ServiceError | null; response: Buffer | undefined }> {
  return new Promise((resolve) => {
    call((error, response) => resolve({ error, response }));
  });
}

describe('gRPC through the initiator to an HTTP/2 local service', () => {
  let server: grpc.Server;
  let harness: RouterHarness;
  let relay: Relay;
  let client: EchoClient;
  /** Resolved when the server sees a call cancelled, by its path. */
  const cancelled = new Map<string, () => void>();
  const seenCancel = (name: string) =>
    new Promise<void>((resolve) => {
      cancelled.set(name, resolve);
    });

  before(async () => {
    server = new grpc.Server();
    server.addService(echoService, {
      unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        const tag = call.metadata.get('x-tag')[0];
        const response = new grpc.Metadata();
        response.set('x-echo-tag', String(tag));
        call.sendMetadata(response);
        callback(null, Buffer.concat([Buffer.from('echo:'), call.request]));
      },
      fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        const metadata = new grpc.Metadata();
        metadata.set('x-detail-bin', Buffer.from([0, 1, 2, 255]));
        callback({ code: grpc.status.PERMISSION_DENIED, details: 'not for you: ü', metadata });
      },
      slow: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        // Answers only if nobody gave up on it first; the call is cancelled at the deadline.
        const timer = setTimeout(() => callback(null, Buffer.from('late')), 5_000);
        call.on('cancelled', () => {
          clearTimeout(timer);
          cancelled.get('slow')?.();
        });
      },
      serverStream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        const count = call.request.readUInt8(0);
        for (let i = 0; i < count; i++) call.write(Buffer.from([i]));
        if (count < 100) {
          call.end();
          return;
        }
        // A stream that only ends when the client cancels it.
        call.on('cancelled', () => cancelled.get('serverStream')?.());
      },
      clientStream: (
        call: grpc.ServerReadableStream<Buffer, Buffer>,
        callback: grpc.sendUnaryData<Buffer>,
      ) => {
        const chunks: Buffer[] = [];
        call.on('data', (chunk: Buffer) => chunks.push(chunk));
        call.on('end', () => callback(null, Buffer.from(String(Buffer.concat(chunks).length))));
      },
      bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        call.on('data', (chunk: Buffer) => call.write(Buffer.concat([Buffer.from('re:'), chunk])));
        call.on('end', () => call.end());
      },
    });
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
        error === null ? resolve(bound) : reject(error),
      );
    });
    harness = await routerHarness([
      localRoute({ target: `http://127.0.0.1:${port}`, protocol: 'http2' }),
    ]);
    relay = await h2Relay(harness.client);
    const Client = grpc.makeGenericClientConstructor(echoService, 'Echo');
    client = new Client(
      `127.0.0.1:${relay.port}`,
      grpc.credentials.createInsecure(),
    ) as unknown as EchoClient;
  });

  after(async () => {
    client.close();
    await relay.close();
    await harness.close();
    server.forceShutdown();
  });

  it('makes a unary call, metadata both ways', async () => {
    const metadata = new grpc.Metadata();
    metadata.set('x-tag', 'abc');
    let headers: grpc.Metadata | undefined;
    const { error, response } = await unary((callback) => {
      const call = client.unary(Buffer.from('hi'), metadata, {}, callback);
      call.on('metadata', (received: grpc.Metadata) => (headers = received));
    });
    assert.equal(error, null);
    assert.equal(response?.toString(), 'echo:hi');
    assert.deepEqual(headers?.get('x-echo-tag'), ['abc']);
  });

  it('streams a server-streaming call to its end', async () => {
    const received: number[] = [];
    const call = client.serverStream(Buffer.from([5]));
    call.on('data', (chunk: Buffer) => received.push(chunk.readUInt8(0)));
    const status = await new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    assert.equal(status.code, grpc.status.OK);
    assert.deepEqual(received, [0, 1, 2, 3, 4]);
  });

  it('sends a client-streaming call of 4 MiB and gets its answer', async () => {
    const { error, response } = await unary((callback) => {
      const call = client.clientStream(callback);
      for (let i = 0; i < 64; i++) call.write(Buffer.alloc(64 * 1024, i));
      call.end();
    });
    assert.equal(error, null);
    assert.equal(response?.toString(), String(4 * 1024 * 1024));
  });

  it('runs a bidirectional call message by message', async () => {
    const call = client.bidi();
    const replies: string[] = [];
    for (const word of ['one', 'two', 'three']) {
      const reply = new Promise<Buffer>((resolve) => call.once('data', resolve));
      call.write(Buffer.from(word));
      replies.push((await reply).toString());
    }
    call.end();
    const status = await new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    assert.equal(status.code, grpc.status.OK);
    assert.deepEqual(replies, ['re:one', 're:two', 're:three']);
  });

  it('passes an error status on, its message and binary metadata intact (trailers-only)', async () => {
    const { error } = await unary((callback) =>
      client.fail(Buffer.from('x'), new grpc.Metadata(), {}, callback),
    );
    assert.equal(error?.code, grpc.status.PERMISSION_DENIED);
    assert.equal(error.details, 'not for you: ü');
    assert.deepEqual(error.metadata.get('x-detail-bin'), [Buffer.from([0, 1, 2, 255])]);
  });

  it('fails a call past its deadline and cancels it on the server', async () => {
    const serverCancelled = seenCancel('slow');
    const { error } = await unary((callback) =>
      client.slow(Buffer.from('x'), new grpc.Metadata(), { deadline: Date.now() + 300 }, callback),
    );
    assert.equal(error?.code, grpc.status.DEADLINE_EXCEEDED);
    await serverCancelled;
  });

  it("carries the client's cancellation to the server", async () => {
    const serverCancelled = seenCancel('serverStream');
    const call = client.serverStream(Buffer.from([100]));
    call.on('error', () => {});
    const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    await new Promise((resolve) => call.once('data', resolve));
    call.cancel();
    await serverCancelled;
    assert.equal((await status).code, grpc.status.CANCELLED);
  });
});
