/** The CLI's help texts. Every flag lists its default. */

export const mainHelp = `revtun — reverse tunnels that speak Envoy's reverse-tunnel protocol

Usage:
  revtun sandbox [options]          run the sandbox: demo service, initiator and responder
  revtun initiator --config FILE    run an initiator (or see "revtun initiator --help" for flags)
  revtun responder --config FILE    run a responder (or see "revtun responder --help" for flags)
  revtun envoy --config FILE        run what an Envoy reverse-tunnel bootstrap config describes
  revtun demo-service [options]     run the sandbox's demo HTTP service alone
  revtun --version

Every command takes --help, --log-level LEVEL (fatal, error, warn, info, debug, trace or
silent; default info, warn for the sandbox) and --log-format json|pretty (default: pretty on a
terminal, else JSON lines). Logs go to stderr (docs/logging.md).
`;

export const sandboxHelp = `revtun sandbox — Envoy's reverse-tunnel sandbox on one machine

Starts the demo service, a responder and an initiator on loopback, with the configs in
examples/sandbox/, prints the commands to try, and runs until Ctrl-C.

Options:
  --initiator-admin-port PORT   initiator admin server (default 8888)
  --responder-admin-port PORT   responder admin server (default 8889)
  --tunnel-port PORT            responder tunnel listener (default 9000)
  --egress-port PORT            responder egress listener (default 8085)
  --service-port PORT           demo service (default 0: any free port)
  --log-level LEVEL             default warn

Port 0 picks a free port; the addresses printed are the ones bound. Everything listens on
127.0.0.1 only, so the sandbox needs no credentials (and no --allow-insecure).
`;

export const initiatorHelp = `revtun initiator — dial responders and serve their requests from local services

Usage:
  revtun initiator --config FILE
  revtun initiator --node-id ID --cluster-id ID --tenant-id ID --responder HOST:PORT
                   --route PREFIX=URL [options]

Options (without --config):
  --node-id ID            this node's id ([A-Za-z0-9._-], required)
  --cluster-id ID         this node's cluster id (required)
  --tenant-id ID          this node's tenant id (required)
  --rc ADDRESS            instead of the three ids, --remote-cluster and --tunnels: an Envoy
                          address rc://NODE:CLUSTER:TENANT@REMOTE_CLUSTER:COUNT
  --responder HOST:PORT   a responder's tunnel listener; repeat for several (required)
  --remote-cluster NAME   name of the responders' cluster (default upstream-cluster)
  --tunnels N             tunnels kept open to each responder (default 1)
  --route PREFIX=URL      serve paths starting with PREFIX from the local service URL
                          (http://host:port); repeat for several, first match wins (required)
  --admin-listen ADDRESS  admin server, [HOST:]PORT (default: none; HOST defaults to 127.0.0.1)
  --stat-prefix PREFIX    stat prefix (default reverse_tunnel_initiator)
  --allow-insecure        start even though a responder beyond loopback is dialled without TLS,
                          or the admin server is reachable from other hosts without a token
                          (default: refuse; the flags cannot set TLS, a --config FILE can)

Example:
  revtun initiator --node-id n1 --cluster-id c1 --tenant-id t1 \\
    --responder 127.0.0.1:9000 --route /app=http://127.0.0.1:8080 --admin-listen 8888

A responder on another host is dialled with TLS (remote_clusters[].tls in a --config FILE); in
cleartext only with --allow-insecure, on a network you trust. See docs/security.md.
`;

export const responderHelp = `revtun responder — accept tunnels and send callers' requests through them

Usage:
  revtun responder --config FILE
  revtun responder --tunnel-listen [HOST:]PORT --egress-listen [HOST:]PORT [options]

Options (without --config):
  --tunnel-listen ADDRESS   where initiators dial in (required; HOST defaults to 0.0.0.0)
  --egress-listen ADDRESS   where callers send requests (required; HOST defaults to 127.0.0.1)
  --admin-listen ADDRESS    admin server (default: none; HOST defaults to 127.0.0.1)
  --route PREFIX            path prefix sent through tunnels; repeat for several (default /)
  --host-id-header NAME     request header naming the node or cluster, tried in order; repeat
                            for several (default x-node-id, x-remote-node-id, x-cluster-id,
                            x-dst-cluster-uuid)
  --stat-prefix PREFIX      stat prefix (default reverse_tunnel_acceptor)
  --allow-insecure          start even though a listener is reachable from other hosts and takes
                            no credentials (default: refuse; the flags cannot set TLS, initiator
                            auth, callers or an admin token, a --config FILE can)

Callers name a node or a cluster in a host-id header; a cluster picks one of its nodes round robin.
No routing header → 400, no tunnel → 503.

Example:
  revtun responder --tunnel-listen 127.0.0.1:9000 --egress-listen 8085 --admin-listen 8889
  curl -H "x-node-id: n1" http://127.0.0.1:8085/app

A tunnel listener beyond loopback (the default host 0.0.0.0 among them) needs tunnel_listener.tls
or .auth in a --config FILE, or --allow-insecure on a network you trust. See docs/security.md.
`;

export const envoyHelp = `revtun envoy — run an Envoy reverse-tunnel bootstrap config

Usage:
  revtun envoy --config FILE

Reads an Envoy bootstrap (YAML) and runs the roles it defines, until Ctrl-C:
  an initiator   for a listener with an rc:// address
                 (bootstrap extension envoy.bootstrap.reverse_tunnel.downstream_socket_interface)
  a responder    for a listener with envoy.filters.network.reverse_tunnel, and its egress listeners
                 (bootstrap extension envoy.bootstrap.reverse_tunnel.upstream_socket_interface)
or both. Every field revtun does not support is reported with its file:line:col, all at once.

Options:
  -c, --config FILE   the Envoy bootstrap (required)
  --allow-insecure    start even though a listener beyond loopback takes no credentials, a
                      responder beyond loopback is dialled without TLS, or the admin server is
                      reachable from other hosts without a token (default: refuse; revtun
                      translates no TLS, JWT or admin token from a bootstrap yet)
  --log-level LEVEL   default info

Example, Envoy's reverse-tunnel sandbox (its listeners and admin bind 0.0.0.0, and the initiator
dials upstream-envoy in cleartext, so on a network you trust):
  revtun envoy -c responder-envoy.yaml --allow-insecure
  revtun envoy -c initiator-envoy.yaml --allow-insecure
`;

export const demoServiceHelp = `revtun demo-service — an HTTP service that answers like nginxdemos/hello:plain-text

Options:
  --listen ADDRESS   [HOST:]PORT (default 127.0.0.1:8080; HOST defaults to 127.0.0.1)
`;
