/**
 * Per-call cost of a request script: the Envoy sandbox's Lua script and an empty one, on a
 * request with four headers. Prints the minimum and the median of 15 rounds in µs per call.
 *
 *   node --import tsx bench/request-script.ts
 */
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { parse } from 'yaml';
import { RequestHeaders } from '../src/responder/request-headers.ts';
import { loadRequestScript } from '../src/responder/request-script.ts';

const responder = parse(
  readFileSync(
    new URL('../test/fixtures/envoy/sandbox/responder-envoy.yaml', import.meta.url),
    'utf8',
  ),
) as {
  static_resources: {
    listeners: Array<{
      filter_chains: Array<{
        filters: Array<{
          typed_config: { http_filters?: Array<{ typed_config: { inline_code?: string } }> };
        }>;
      }>;
    }>;
  };
};
const sandbox =
  responder.static_resources.listeners[1]?.filter_chains[0]?.filters[0]?.typed_config
    .http_filters?.[0]?.typed_config.inline_code;
if (sandbox === undefined) throw new Error("the sandbox responder's Lua script was not found");

const scripts: Record<string, string> = {
  'empty envoy_on_request': 'function envoy_on_request(request_handle) end',
  'sandbox script (x-cluster-id)': sandbox,
};
const callsPerRound = 20_000;
const request = () =>
  new RequestHeaders({
    'x-cluster-id': 'downstream-cluster',
    host: '127.0.0.1:8085',
    'user-agent': 'curl/8.5.0',
    accept: '*/*',
  });

for (const [name, inlineCode] of Object.entries(scripts)) {
  const script = await loadRequestScript({
    inlineCode,
    maxInstructions: 10_000_000,
    logger: pino({ level: 'silent' }),
  });
  for (let i = 0; i < callsPerRound; i += 1) script.onRequest(request());
  const rounds: number[] = [];
  for (let round = 0; round < 15; round += 1) {
    const start = performance.now();
    for (let i = 0; i < callsPerRound; i += 1) script.onRequest(request());
    rounds.push(((performance.now() - start) * 1000) / callsPerRound);
  }
  rounds.sort((a, b) => a - b);
  console.log(
    `${name.padEnd(30)} min ${rounds[0]?.toFixed(1)} µs  median ${rounds[7]?.toFixed(1)} µs per call`,
  );
  script.close();
}
