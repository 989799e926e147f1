/** The CLI's help texts. Every flag lists its default. */

export const mainHelp = `revtun — reverse tunnels that speak Envoy's reverse-tunnel protocol

Usage:
  revtun sandbox [options]          run the sandbox: demo service, initiator and responder
  revtun initiator --config FILE    run an initiator (or see "revtun initiator --help" for flags)
  revtun responder --config FILE    run a responder (or see "revtun responder --help" for flags)
  revtun envoy --config FILE        run what an Envoy reverse-tunnel bootstrap config describes
  revtun demo-service [options]     run the sandbox's demo HTTP service alone
  revtun check-config FILE          validate a config file without starting anything
  revtun status --admin URL         list the tunnels of a running initiator or responder
  revtun --version

Exit codes:
  0     a clean stop (first Ctrl-C or SIGTERM), or a one-shot command that succeeded
  1     a failure at start or run time, an invalid config, or status that got no tunnel list
  2     a usage error: unknown command or flag, missing argument, unreadable file
  130   a second Ctrl-C or SIGTERM while stopping (stops at once)

Examples:
  revtun sandbox
  revtun check-config examples/sandbox/responder.yaml
  revtun responder --config examples/sandbox/responder.yaml
  revtun status --admin http://127.0.0.1:8889

Every command takes --help, --log-level LEVEL (fatal, error, warn, info, debug, trace or
silent; default info, warn for the sandbox) and --log-format json|pretty (default: pretty on a
terminal, else JSON lines). Logs go to stderr (docs/logging.md).
`;

export const checkConfigHelp = `revtun check-config — validate a config file without starting anything

Usage:
  revtun check-config FILE [--role initiator|responder|envoy]

Reads FILE as the role would at start (schema, every problem with its file:line:col, and the
settings the role would refuse as insecure), binds and dials nothing, and prints what it would
run: ids, listeners and their addresses, remote clusters and hosts, routes, TLS and auth on or
off, the admin address. Problems go to stderr, each with a hint where a common mistake has an
obvious fix (a misspelt key, a duration without a unit, a bare port...).

Options:
  --role ROLE   initiator, responder or envoy (an Envoy bootstrap); default: told by the file's
                top-level keys (node_id, remote_clusters... → initiator; tunnel_listener,
                egress_listeners... → responder; static_resources... → envoy)

Insecure settings are errors for a revtun config (its role would refuse to start unless the file
sets allow_insecure: true), and warnings for an Envoy bootstrap (revtun envoy --allow-insecure
runs it).

Exit codes: 0 valid, 1 invalid (or refused as insecure), 2 usage error (no FILE, unreadable FILE,
role not given and not told by the file).

Examples:
  revtun check-config examples/sandbox/initiator.yaml
  revtun check-config --role responder responder.yaml
  revtun check-config --role envoy responder-envoy.yaml
  for f in /etc/revtun/*.yaml; do revtun check-config "$f" || exit 1; done
`;

export const statusHelp = `revtun status — list the tunnels of a running initiator or responder

Usage:
  revtun status --admin URL [--token-file FILE] [--json]

Asks the role's admin server (GET URL/tunnels) and prints one line per tunnel: node, cluster,
tenant, state (idle, in_use, connecting, draining), remote address, responder, age, streams in
flight, bytes sent/received (↑/↓) and the last ping round trip; then a total.

Options:
  --admin URL         the admin server, http://HOST:PORT (http:// may be left out; required)
  --token-file FILE   a file holding the admin token (admin.token_file of the role), sent as
                      authorization: Bearer …
  --json              print the admin server's JSON instead of the table

Exit codes: 0 listed (also with no tunnels), 1 admin server unreachable, no answer within 5 s,
token refused (401/403) or not a tunnel list, 2 usage error.

Examples:
  revtun status --admin http://127.0.0.1:8889
  revtun status --admin 127.0.0.1:8888 --token-file /etc/revtun/admin.token
  revtun status --admin http://127.0.0.1:8889 --json | jq '.tunnels[] | select(.state == "in_use")'
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

Examples:
  revtun sandbox
  revtun sandbox --initiator-admin-port 0 --responder-admin-port 0 --tunnel-port 0 --egress-port 0
  revtun sandbox --log-level info
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

Examples:
  revtun initiator --config examples/sandbox/initiator.yaml
  revtun initiator --rc rc://n1:c1:t1@upstream-cluster:2 --responder 127.0.0.1:9000 \\
    --route /=http://127.0.0.1:8080
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

Examples:
  revtun responder --config examples/sandbox/responder.yaml
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

Examples, Envoy's reverse-tunnel sandbox (its listeners and admin bind 0.0.0.0, and the initiator
dials upstream-envoy in cleartext, so on a network you trust):
  revtun envoy -c responder-envoy.yaml --allow-insecure
  revtun envoy -c initiator-envoy.yaml --allow-insecure
Check one first, without starting it:
  revtun check-config --role envoy responder-envoy.yaml
`;

export const demoServiceHelp = `revtun demo-service — an HTTP service that answers like nginxdemos/hello:plain-text

Options:
  --listen ADDRESS   [HOST:]PORT (default 127.0.0.1:8080; HOST defaults to 127.0.0.1)

Examples:
  revtun demo-service
  revtun demo-service --listen 0   (any free port; the address is printed)
`;
