/**
 * A local service that answers before the request body has all arrived (RFC 9113 §8.1 allows it):
 * the initiator sends the whole response, then asks the responder to stop the upload with
 * RST_STREAM(NO_ERROR). That reset must follow the response's END_STREAM on the wire: a reset
 * that overtakes it cuts the response off (Node 22 even drops its HEADERS), and the caller of a
 * complete answer gets a 502.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import type { Initiator } from '../../src/initiator/initiator.ts';
import type { Responder } from '../../src/responder/responder.ts';
import { request, startService, type TestService } from '../helpers/http.ts';
import { connectedInitiator, responderOnFreePorts } from '../helpers/tunnels.ts';

const iterations = 50;
const answer = (size: number) => 'e'.repeat(size);

describe('a response that completes before its upload', () => {
  let responder: Responder;
  let initiator: Initiator;
  let service: TestService;
  /** Resolved by the local service each time it has answered, for the caller's next chunk. */
  let answered: () => void = () => {};

  before(async () => {
    // Answers at once, never reading the body: the size of the answer is in the path.
    service = await startService((incoming: IncomingMessage, response: ServerResponse) => {
      incoming.on('error', () => {});
      response.end(answer(Number(incoming.url?.slice('/a/'.length))), () => answered());
    });
    responder = await responderOnFreePorts();
    initiator = await connectedInitiator(responder, {
      node: 'early',
      routes: [{ prefix: '/a/', target: service.target }],
    });
  });

  after(async () => {
    await initiator?.close({ graceMs: 0 });
    await responder?.close({ graceMs: 0 });
    await service?.close();
  });

  /** POSTs `path` `iterations` times with a body that goes on after the answer; the failures. */
  async function uploadsAnswered(
    path: string,
    expected: { status: number; text: string },
    served: () => Promise<void>,
  ): Promise<string[]> {
    const failures: string[] = [];
    for (let i = 0; i < iterations; i += 1) {
      const answeredNow = served();
      async function* upload() {
        yield Buffer.alloc(1024, 1);
        // The rest of the body is sent only once the answer is out.
        await answeredNow;
        yield Buffer.alloc(1024, 2);
      }
      try {
        const reply = await request(responder.addresses.egress[0]!, path, {
          method: 'POST',
          headers: { 'x-node-id': 'early' },
          body: upload(),
          timeoutMs: 10_000,
        });
        if (reply.status !== expected.status || reply.text !== expected.text) {
          failures.push(`${reply.status} ${reply.text.slice(0, 120)}`);
        }
      } catch (error) {
        failures.push((error as Error).message);
      }
    }
    return failures;
  }

  for (const size of [0, 10, 100_000]) {
    it(`gets the whole ${size}-byte answer every time, with the upload still open (${iterations} times)`, async () => {
      const failures = await uploadsAnswered(
        `/a/${size}`,
        { status: 200, text: answer(size) },
        () => new Promise<void>((resolve) => (answered = resolve)),
      );
      assert.deepEqual(failures, []);
    });
  }

  it(`gets the initiator's own 404 every time, with the upload still open (${iterations} times)`, async () => {
    // The initiator answers an unrouted path itself; the caller sends the rest of its body at once,
    // racing the answer.
    const failures = await uploadsAnswered(
      '/unrouted',
      { status: 404, text: 'no local route for path /unrouted\n' },
      () => Promise.resolve(),
    );
    assert.deepEqual(failures, []);
  });
});
