/**
 * gRPC methods whose messages are raw bytes, for tests with `@grpc/grpc-js` on both ends: the
 * serializers pass Buffers through, which is all the transport sees anyway, so no .proto is needed.
 */
import type * as grpc from '@grpc/grpc-js';

const asIs = (buffer: Buffer): Buffer => buffer;

/** The method `name` of the service `service` (its path is `/<service>/<name>`). */
export function bytesMethod(
  service: string,
  name: string,
  streams: { readonly request?: boolean; readonly response?: boolean } = {},
): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path: `/${service}/${name}`,
    requestStream: streams.request ?? false,
    responseStream: streams.response ?? false,
    requestSerialize: asIs,
    requestDeserialize: asIs,
    responseSerialize: asIs,
    responseDeserialize: asIs,
  };
}

/** The echo service the gRPC tests share: one method of each kind, and two that end early. */
export function echoServiceOf(service: string) {
  return {
    unary: bytesMethod(service, 'Unary'),
    fail: bytesMethod(service, 'Fail'),
    slow: bytesMethod(service, 'Slow'),
    serverStream: bytesMethod(service, 'ServerStream', { response: true }),
    clientStream: bytesMethod(service, 'ClientStream', { request: true }),
    bidi: bytesMethod(service, 'Bidi', { request: true, response: true }),
  } satisfies grpc.ServiceDefinition;
}
