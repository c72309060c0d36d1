#!/usr/bin/env bash
# bench-peer-openloop.sh: NATS JetStream measured at a fixed rate in an open loop, as
# `runnel bench produce --rate` measures Runnel (issue 3's latency goal). It starts the peer's
# nats-server (installed by ../shared/peers/nats-bench) with nats-bench's configuration for one
# replica (file storage; --sync always unless SYNC=default), then runs scripts/peer-openloop.
#
#   scripts/bench-peer-openloop.sh [--rate 5000] [--msgs 25000] [--size 100]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
peers=${RUNNEL_PEERS_DIR:-$HOME/.cache/runnel-peers}
shared=${RUNNEL_SHARED:-$here/../../shared}
[ -x "$peers/bin/nats-server" ] || "$shared/peers/nats-bench" install
work=$(mktemp -d -t peer-openloop.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
(cd "$here/peer-openloop" && GOFLAGS=-mod=mod go build -o "$work/peer-openloop" .)
port=$((20000 + RANDOM % 20000))
syncline=", sync_interval: always"; [ "${SYNC:-always}" = default ] && syncline=""
echo "listen: 127.0.0.1:$port
jetstream { store_dir: $work/store, max_file_store: 30GB, max_memory_store: 1GB $syncline }" >"$work/n.conf"
"$peers/bin/nats-server" -c "$work/n.conf" >"$work/n.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do "$peers/bin/nats" -s "nats://127.0.0.1:$port" --no-context server check jetstream >/dev/null 2>&1 && break; sleep 0.2; done
"$work/peer-openloop" -url "nats://127.0.0.1:$port" "$@"
