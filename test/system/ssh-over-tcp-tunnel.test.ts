/**
 * A real protocol over the raw TCP path (issue 7): Debian's OpenSSH client reaches a throwaway
 * sshd behind an initiator through a responder's TCP listener, as a user reaches SSH behind NAT.
 * The sshd is the benchmark's (own config, host and user keys in a temp dir, key authentication
 * only, 127.0.0.1 on a free port); the responder and the initiator run in this process. Needs
 * `sshd`, `ssh` and `ssh-keygen` (openssh-server, openssh-client) and root for sshd's privilege
 * separation directory.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sshClientOptions, startSshd, type Sshd } from '../../bench/contenders/sshd.ts';
import type { Initiator } from '../../src/initiator/initiator.ts';
import type { Responder } from '../../src/responder/responder.ts';
import { connectedInitiator, responderOnFreePorts } from '../helpers/tunnels.ts';

const node = 'ssh-node';
/** Bytes sent through ssh's stdin and hashed by the remote `sha256sum`. */
const transferBytes = 16 * 1024 * 1024;
const sshDeadlineMs = 60_000;

interface SshResult {
  readonly code: number | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/** Runs `ssh … command` with `input` on its stdin; killed by its PID past the deadline. */
function ssh(sshd: Sshd, port: number, command: string, input?: Buffer): Promise<SshResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      'ssh',
      [...sshClientOptions(sshd, port), `${sshd.user}@127.0.0.1`, command],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.stdin.on('error', () => {
      // ssh exiting early closes its stdin; the exit code tells why.
    });
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    }, sshDeadlineMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(stdout), stderr });
    });
    child.stdin.end(input);
  });
}

describe('ssh through a TCP listener and an initiator TCP target', () => {
  let workDir: string;
  let sshd: Sshd | undefined;
  let responder: Responder | undefined;
  let initiator: Initiator | undefined;
  let sshPort: number;

  before(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'revtun-ssh-'));
    sshd = await startSshd({ workDir, tools: new Map() }, 'tcp-tunnel');
    responder = await responderOnFreePorts({
      tcp_listeners: [{ address: '127.0.0.1:0', host_id: node, target: 'ssh', stat_prefix: 'ssh' }],
    });
    initiator = await connectedInitiator(responder, {
      node,
      routes: [],
      config: { tcp_targets: [{ name: 'ssh', address: `127.0.0.1:${sshd.port}` }] },
    });
    const [listener] = responder.addresses.tcp;
    assert.ok(listener !== undefined, 'the responder reports its TCP listener');
    sshPort = listener.port;
  });

  after(async () => {
    await initiator?.close({ graceMs: 1000 });
    await responder?.close({ graceMs: 1000 });
    await sshd?.process.stop();
    await rm(workDir, { recursive: true, force: true });
  });

  it('logs in with a key and runs a command', async () => {
    const result = await ssh(sshd!, sshPort, 'echo revtun-over-ssh; whoami');
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.toString(), `revtun-over-ssh\n${sshd!.user}\n`);
  });

  it('carries 16 MiB to the remote side intact', async () => {
    const data = randomBytes(transferBytes);
    const result = await ssh(sshd!, sshPort, 'sha256sum', data);
    assert.equal(result.code, 0, result.stderr);
    const [digest] = result.stdout.toString().split(' ');
    assert.equal(digest, createHash('sha256').update(data).digest('hex'));
  });

  it('carries 16 MiB back from the remote side intact', async () => {
    // The remote side writes random bytes to a file, prints their hash on stderr, then sends them.
    const result = await ssh(
      sshd!,
      sshPort,
      `f=$(mktemp) && head -c ${transferBytes} /dev/urandom > "$f" && sha256sum "$f" >&2 && cat "$f"; rm -f "$f"`,
    );
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.length, transferBytes);
    const [digest] = result.stderr.split(' ');
    assert.equal(createHash('sha256').update(result.stdout).digest('hex'), digest);
  });
});
