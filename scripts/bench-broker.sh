#!/usr/bin/env bash
# bench-broker.sh: the broker figures of docs/benchmarks.md (issue 3: produce, latency at a fixed
# rate, consume), measured through the real binaries (runneld and `runnel bench`), with the peer
# (NATS JetStream via ../shared/peers/nats-bench, and at a fixed rate in an open loop via
# scripts/bench-peer-openloop.sh) and the disk measured in the same run, interleaved
# ROUNDS times so that the VM's drifting disk and memory speed affect both sides alike.
#
#   scripts/bench-broker.sh            (ROUNDS=3; NATS_BENCH=path to nats-bench; OUT=raw output file;
#                                       LATENCY_ONLY=1: only the latency measurements at 5,000/s)
#
# Every measurement prints the command that made it, then its JSON line; a summary table (median
# of the rounds, and the ratios the issue's goals are stated in) comes last.
set -euo pipefail
export LC_ALL=C
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
ROUNDS=${ROUNDS:-3}
NATS=${NATS_BENCH:-$repo/../shared/peers/nats-bench}
GO=${GO:-go}

dir=$(mktemp -d "$repo/.bench.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

$GO build -o "$dir/runneld" ./cmd/runneld
$GO build -o "$dir/runnel" ./cmd/runnel
$GO test -c -o "$dir/commitlog.test" ./commitlog
"$NATS" install >/dev/null

port=$((30000 + RANDOM % 20000))
addr=127.0.0.1:$port
"$dir/runneld" --data-dir "$dir/data" --addr "$addr" --log-format json >"$dir/runneld.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -sf "http://$addr/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

raw=$dir/raw.jsonl
: >"$raw"
# m TAG CMD...: run a measurement; its last stdout line (JSON) is kept, tagged.
m() {
	local tag=$1; shift
	echo "\$ $*" | sed "s#$dir/##g; s#$repo/##g"
	local line
	line=$("$@" 2>/dev/null | tail -1)
	echo "$line"
	echo "{\"tag\":\"$tag\",\"round\":$round,\"result\":$line}" >>"$raw"
}
dd_dsync() {
	local out mbs
	out=$(dd if=/dev/zero of="$dir/dd" bs=1M count=512 oflag=dsync 2>&1 | tail -1)
	rm -f "$dir/dd"
	mbs=$(echo "$out" | awk '{ for (i = 1; i < NF; i++) if ($(i+1) ~ /^s,$/) secs = $i; print 536870912 / secs / 1e6 }')
	echo '$ dd if=/dev/zero of=FILE bs=1M count=512 oflag=dsync   # 1 MiB writes, each durable (O_DSYNC = write + fdatasync)'
	echo "$out"
	echo "{\"tag\":\"dd-dsync-1M\",\"round\":$round,\"result\":{\"mb_per_sec\":$mbs}}" >>"$raw"
}

# raw_fsync_floor: 100-byte writes to a plain file at 5,000/s, each waiting until an fdatasync that
# started after it has ended (one at a time, each covering every write before it), latency from each
# write's due time: the disk's own open-loop p99 at the goal's rate, without the log, the broker or
# the network.
raw_fsync_floor() {
	(cd "$dir" && TMPDIR=$dir ./commitlog.test -test.run '^$' -test.bench 'BenchmarkRawFsyncPaced/fsync=serial$' -test.benchtime 15000x) |
		awk '/^Benchmark/ { for (i = 2; i <= NF; i++) { if ($i == "p50-ms") p50 = $(i-1); if ($i == "p99-ms") p99 = $(i-1) }
			printf "{\"op\":\"raw-fsync-open-loop\",\"latency_ms\":{\"p50\":%s,\"p99\":%s}}\n", p50, p99 }'
}

# Both sides write the same records per measurement (N100 of 100 bytes, N1K of 1 KiB), each
# round's topics are deleted at its end (the peer starts each run in a fresh directory), and
# `sync` runs before every measurement, so that no side runs into the other's writeback.
N100=${N100:-2000000}
N1K=${N1K:-500000}
R="$dir/runnel --brokers $addr --format json bench"
for round in $(seq 1 "$ROUNDS"); do
	echo "== round $round"
	if [ -z "${LATENCY_ONLY:-}" ]; then
		sync; dd_dsync
		sync; m runnel-produce-100B $R produce --topic p100-$round --records "$N100" --record-size 100
		sync; m nats-pub-100B "$NATS" pub --size 100 --msgs "$N100"
		sync; m runnel-produce-1KiB $R produce --topic p1k-$round --records "$N1K" --record-size 1024
		sync; m nats-pub-1KiB "$NATS" pub --size 1024 --msgs "$N1K"
	fi
	sync; m runnel-rate5000-100B $R produce --topic lat-$round --records 50000 --record-size 100 --rate 5000
	sync; m nats-openloop-always-100B scripts/bench-peer-openloop.sh -rate 5000 -msgs 50000 -size 100
	sync; m runnel-rate5000-sync-100B $R produce --topic lsync-$round --records 20000 --record-size 100 --rate 5000 --sync
	sync; m nats-pubsync-always-100B "$NATS" pub-sync --size 100 --sync always --msgs 20000
	sync; m raw-fsync-floor-5000 raw_fsync_floor
	if [ -z "${LATENCY_ONLY:-}" ]; then
		sync; m runnel-consume-100B $R consume --topic p100-$round
		sync; m nats-consume-100B "$NATS" consume --size 100 --msgs "$N100"
		sync; m runnel-consume-1KiB $R consume --topic p1k-$round
		sync; m nats-consume-1KiB "$NATS" consume --size 1024 --msgs "$N1K"
		"$dir/runnel" --brokers "$addr" topic delete p100-$round >/dev/null
		"$dir/runnel" --brokers "$addr" topic delete p1k-$round >/dev/null
	fi
	"$dir/runnel" --brokers "$addr" topic delete lat-$round >/dev/null
	"$dir/runnel" --brokers "$addr" topic delete lsync-$round >/dev/null
done
[ -n "${OUT:-}" ] && cp "$raw" "$OUT"

python3 - "$raw" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def vals(tag, key, sub=None):
    out = []
    for r in rows:
        if r["tag"] == tag:
            v = r["result"][key] if sub is None else r["result"][key][sub]
            out.append(v)
    return out
med = lambda xs: statistics.median(xs) if xs else float("nan")
print("\n== summary (median of %d rounds; per-round ratios in brackets)" % max(r["round"] for r in rows))
def ratio(a, ka, b, kb, goal, sa=None, sb=None, lower_better=False):
    xa, xb = vals(a, ka, sa), vals(b, kb, sb)
    if not xa or not xb:
        return
    rs = [x / y if y else float("nan") for x, y in zip(xa, xb)]
    if lower_better:
        rs = [y / x if x else float("nan") for x, y in zip(xa, xb)]
    print("%-28s %12.1f vs %-26s %12.1f  ratio %.2f [%s]  goal %s" % (a, med(xa), b, med(xb), med(rs), ", ".join("%.2f" % r for r in rs), goal))
ratio("runnel-produce-100B", "records_per_sec", "nats-pub-100B", "records_per_sec", ">= 5")
ratio("runnel-produce-1KiB", "records_per_sec", "nats-pub-1KiB", "records_per_sec", ">= 3")
ratio("runnel-produce-1KiB", "mb_per_sec", "dd-dsync-1M", "mb_per_sec", ">= 0.60")
def p99s(a, ka, sa, b, kb, sb, what):
    xa, xb = vals(a, ka, sa), vals(b, kb, sb)
    print("%-28s p99 %.3f ms [%s] vs %-26s p99 %.3f ms [%s]  %s" % (a, med(xa), ", ".join("%.3f" % x for x in xa), b, med(xb), ", ".join("%.3f" % x for x in xb), what))
# The latency goal (p99 at 5,000 records/s <= JetStream's synchronous publish, --sync always),
# three ways: as nats-bench measures the peer (a closed loop, one message at a time as fast as
# acknowledgements return) against Runnel's open loop at the goal's rate; both in an open loop
# at 5,000/s; both in a closed loop (Runnel's capped at 5,000/s; records/s reached printed).
p99s("runnel-rate5000-100B", "latency_ms", "p99", "nats-pubsync-always-100B", "p99_ms", None, "open loop vs the peer's closed loop")
p99s("runnel-rate5000-100B", "latency_ms", "p99", "nats-openloop-always-100B", "latency_ms", "p99", "both open loops at 5,000/s")
p99s("runnel-rate5000-sync-100B", "latency_ms", "p99", "nats-pubsync-always-100B", "p99_ms", None, "both closed loops")
p99s("raw-fsync-floor-5000", "latency_ms", "p99", "nats-pubsync-always-100B", "p99_ms", None, "the disk alone, open loop (no log, no broker)")
print("%-28s records/s [%s] vs %-26s [%s]" % ("  closed loops reached", ", ".join("%.0f" % x for x in vals("runnel-rate5000-sync-100B", "records_per_sec")), "", ", ".join("%.0f" % x for x in vals("nats-pubsync-always-100B", "records_per_sec"))))
ratio("runnel-consume-100B", "records_per_sec", "nats-consume-100B", "records_per_sec", ">= 3")
ratio("runnel-consume-1KiB", "records_per_sec", "nats-consume-1KiB", "records_per_sec", ">= 3")
PY
