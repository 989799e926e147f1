/**
 * The Envoy reverse-tunnel sandbox's own bootstrap files (test/fixtures/envoy/sandbox/, byte for
 * byte), with only their host names and ports rewritten so that they run on loopback, on free
 * ports, next to anything else on this machine.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from './process.ts';

const sandboxDirectory = path.join(repoRoot, 'test', 'fixtures', 'envoy', 'sandbox');

export const readSandboxFile = (name: 'initiator-envoy.yaml' | 'responder-envoy.yaml'): string =>
  readFileSync(path.join(sandboxDirectory, name), 'utf8');

/** Replaces `from` with `to`, which must occur exactly `count` times. */
function replaceExactly(text: string, from: string, to: string, count: number): string {
  const parts = text.split(from);
  assert.equal(parts.length - 1, count, `"${from}" occurs ${parts.length - 1} times, not ${count}`);
  return parts.join(to);
}

/**
 * responder-envoy.yaml on 127.0.0.1: the tunnel listener (9000), the egress listener (8085) and
 * the admin server (8888) on port 0.
 */
export function rewriteSandboxResponder(text = readSandboxFile('responder-envoy.yaml')): string {
  let rewritten = replaceExactly(text, 'address: 0.0.0.0', 'address: 127.0.0.1', 3);
  for (const port of [9000, 8085, 8888]) {
    rewritten = replaceExactly(rewritten, `port_value: ${port}\n`, 'port_value: 0\n', 1);
  }
  return rewritten;
}

/**
 * initiator-envoy.yaml with upstream-envoy → 127.0.0.1:`tunnelPort`, downstream-service →
 * 127.0.0.1:`servicePort` and its admin server on 127.0.0.1, port 0.
 */
export function rewriteSandboxInitiator(
  ports: { readonly tunnelPort: number; readonly servicePort: number },
  text = readSandboxFile('initiator-envoy.yaml'),
): string {
  let rewritten = replaceExactly(
    text,
    'address: upstream-envoy  # Address of upstream-envoy\n                port_value: 9000  # Port for rev_conn_api_listener',
    `address: 127.0.0.1\n                port_value: ${ports.tunnelPort}`,
    1,
  );
  rewritten = replaceExactly(
    rewritten,
    'address: downstream-service\n                port_value: 80\n',
    `address: 127.0.0.1\n                port_value: ${ports.servicePort}\n`,
    1,
  );
  rewritten = replaceExactly(rewritten, 'address: 0.0.0.0', 'address: 127.0.0.1', 1);
  return replaceExactly(rewritten, 'port_value: 8888\n', 'port_value: 0\n', 1);
}
