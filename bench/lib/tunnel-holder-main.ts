/**
 * A load-generator initiator process for the revtun scale figures: COUNT initiators (nodes
 * `scale-0` … `scale-<COUNT-1>`) in this one process, each dialling TUNNELS tunnels to the
 * responder's tunnel listener, with the library's startInitiator and default settings.
 *   node --import tsx bench/lib/tunnel-holder-main.ts TUNNEL_PORT COUNT TUNNELS ORIGIN_URL
 * Prints `dialling` just before the first start and `started` once every initiator is started
 * (the tunnels come up after, counted at the responder); SIGTERM closes them all and exits.
 */
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';

const [tunnelPort, countText, tunnelsText, originUrl] = process.argv.slice(2);
if (
  tunnelPort === undefined ||
  countText === undefined ||
  tunnelsText === undefined ||
  originUrl === undefined
) {
  process.stderr.write('usage: tunnel-holder-main.ts TUNNEL_PORT COUNT TUNNELS ORIGIN_URL\n');
  process.exit(2);
}

const initiators: Initiator[] = [];
let closing = false;

async function closeAll(): Promise<void> {
  if (closing) return;
  closing = true;
  await Promise.allSettled(initiators.map((initiator) => initiator.close()));
  process.exit(0);
}
process.on('SIGTERM', () => void closeAll());
process.on('SIGINT', () => void closeAll());

process.stdout.write('dialling\n');
const starts = Array.from({ length: Number(countText) }, (_, index) =>
  startInitiator({
    node_id: `scale-${index}`,
    cluster_id: 'scale-cluster',
    tenant_id: 'scale-tenant',
    stat_prefix: 'downstream_reverse_connection',
    remote_clusters: [
      {
        name: 'responder',
        hosts: [`127.0.0.1:${tunnelPort}`],
        tunnels_per_host: Number(tunnelsText),
      },
    ],
    local_routes: [{ prefix: '/', target: originUrl }],
  }).then((initiator) => {
    initiators.push(initiator);
  }),
);
await Promise.all(starts);
process.stdout.write('started\n');
