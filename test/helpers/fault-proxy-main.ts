/**
 * The fault-injecting proxy (test/helpers/fault-proxy.ts) as a process, for a network namespace:
 *
 *   node --import tsx test/helpers/fault-proxy-main.ts LISTEN_HOST:PORT TARGET_HOST:PORT \
 *     [DELAY_MS [BYTES_PER_SECOND]]
 *
 * The delay and the throttle apply to both directions (0 is none). Prints
 * `fault proxy listening HOST:PORT` once bound; on SIGUSR2 prints one JSON line of figures
 * (`{"peakQueuedBytes","accepted","open"}`); SIGTERM closes it and exits 0.
 */
import { FaultProxy, type DirectionOptions } from './fault-proxy.ts';

const hostPort = (text = '') => {
  const colon = text.lastIndexOf(':');
  return { host: text.slice(0, colon), port: Number(text.slice(colon + 1)) };
};
const [listen, target, delayMs = '0', bytesPerSecond = '0'] = process.argv.slice(2);
if (listen === undefined || target === undefined) {
  process.stderr.write(
    'usage: fault-proxy-main.ts LISTEN_HOST:PORT TARGET_HOST:PORT [DELAY_MS [BYTES_PER_SECOND]]\n',
  );
  process.exit(2);
}
const direction: DirectionOptions = {
  ...(Number(delayMs) > 0 ? { delayMs: Number(delayMs) } : {}),
  ...(Number(bytesPerSecond) > 0 ? { bytesPerSecond: Number(bytesPerSecond) } : {}),
};
const proxy = await FaultProxy.start({
  listen: hostPort(listen),
  target: hostPort(target),
  upstream: direction,
  downstream: direction,
});
const figures = () =>
  JSON.stringify({ peakQueuedBytes: proxy.peakQueuedBytes, ...proxy.connections });
process.on('SIGUSR2', () => process.stdout.write(`${figures()}\n`));
process.on('SIGTERM', () => {
  void proxy.close().then(() => process.exit(0));
});
process.stdout.write(`fault proxy listening ${listen}\n`);
