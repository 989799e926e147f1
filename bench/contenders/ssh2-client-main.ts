/**
 * The pure-JS `ssh2` client doing `ssh -R`, in a process of its own:
 *   node --import tsx bench/contenders/ssh2-client-main.ts SSH_PORT USER KEY_FILE REMOTE_PORT ORIGIN_PORT
 * It asks sshd to listen on 127.0.0.1:REMOTE_PORT and pipes each forwarded connection to the origin
 * on 127.0.0.1:ORIGIN_PORT, with TCP_NODELAY on the sockets it owns; prints `forwarding` when the
 * forward is in place, exits when the connection ends or on SIGTERM.
 *
 * It also runs `sleep 3600` in a session with a pty, as `ssh -tt` does: sshd sets TCP_NODELAY on
 * its side only for an interactive session, and without it Nagle's algorithm holds small writes
 * back (the ssh -N -R case). This is the ssh2 client at its best.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { Client } from 'ssh2';

const [sshPort, username, keyFile, remotePort, originPort] = process.argv.slice(2);
if (
  originPort === undefined ||
  remotePort === undefined ||
  keyFile === undefined ||
  username === undefined ||
  sshPort === undefined
) {
  process.stderr.write(
    'usage: ssh2-client-main.ts SSH_PORT USER KEY_FILE REMOTE_PORT ORIGIN_PORT\n',
  );
  process.exit(2);
}

const client = new Client();
client.on('ready', () => {
  client.forwardIn('127.0.0.1', Number(remotePort), (error) => {
    if (error) {
      process.stderr.write(`forwardIn: ${error.message}\n`);
      process.exit(1);
    }
    client.exec('sleep 3600', { pty: true }, (execError, stream) => {
      if (execError) {
        process.stderr.write(`exec with pty: ${execError.message}\n`);
        process.exit(1);
      }
      stream.on('data', () => {});
      stream.stderr.on('data', () => {});
      process.stdout.write('forwarding\n');
    });
  });
});
client.on('tcp connection', (_info, accept) => {
  const channel = accept();
  const upstream = net.connect(Number(originPort), '127.0.0.1');
  upstream.setNoDelay(true);
  upstream.on('error', () => channel.destroy());
  channel.on('error', () => upstream.destroy());
  channel.pipe(upstream).pipe(channel);
});
client.on('error', (error) => {
  process.stderr.write(`ssh2: ${error.message}\n`);
  process.exit(1);
});
client.on('close', () => process.exit(0));
process.on('SIGTERM', () => {
  client.end();
  setTimeout(() => process.exit(0), 500).unref();
});
client.connect({
  host: '127.0.0.1',
  port: Number(sshPort),
  username,
  privateKey: readFileSync(keyFile),
  readyTimeout: 10_000,
});
client.on('handshake', () => {
  // The transport socket is ssh2's; Nagle off on it as OpenSSH does for a tty.
  const socket = (client as unknown as { _sock?: net.Socket })._sock;
  socket?.setNoDelay?.(true);
});
