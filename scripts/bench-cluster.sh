#!/usr/bin/env bash
# bench-cluster.sh: the cluster figures of docs/benchmarks.md (issue 4), through the real
# binaries: three runneld on this machine form a cluster; NATS JetStream with 3 replicas
# (../shared/peers/nats-bench) is measured in the same run, interleaved ROUNDS times.
#
#   scripts/bench-cluster.sh        (ROUNDS=3; N=records per measurement; IDLE_SECS; OUT=raw file)
#
# Per round: RF=3 acks=all produce of 1 KiB records (one partition per broker, so each broker
# leads one) with the bytes each runneld wrote to disk (/proc/PID/io write_bytes) per byte
# produced; NATS R3 at its default sync and with --sync always. After the rounds: 500
# partitions x RF 3 idle, the CPU time of the three runneld (/proc/PID/stat utime+stime) over
# IDLE_SECS. The failover figure is a Go benchmark: go test -run '^$' -bench Failover ./cmd/runneld/
set -euo pipefail
export LC_ALL=C
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
ROUNDS=${ROUNDS:-3}
N=${N:-300000}
IDLE_SECS=${IDLE_SECS:-60}
NATS=${NATS_BENCH:-$repo/../shared/peers/nats-bench}
GO=${GO:-go}

dir=$(mktemp -d "$repo/.bench.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

$GO build -o "$dir/runneld" ./cmd/runneld
$GO build -o "$dir/runnel" ./cmd/runnel
"$NATS" install >/dev/null

base=$((30000 + RANDOM % 20000))
addrs=() serfs=()
for i in 1 2 3; do
	addrs+=("127.0.0.1:$((base + i))")
	serfs+=("127.0.0.1:$((base + 10 + i))")
done
for i in 0 1 2; do
	join=()
	[ "$i" -gt 0 ] && join=(--join "${serfs[0]}")
	"$dir/runneld" --data-dir "$dir/d$i" --addr "${addrs[$i]}" --serf-addr "${serfs[$i]}" "${join[@]}" \
		--node-id $((i + 1)) --log-format json >"$dir/runneld-$i.log" 2>&1 &
	pids+=($!)
done
brokers=$(IFS=,; echo "${addrs[*]}")
R="$dir/runnel --brokers $brokers"
for _ in $(seq 1 100); do
	[ "$( ($R --format json cluster info 2>/dev/null || true) | grep -c '"state": *"alive"' || true)" -ge 3 ] && break
	sleep 0.2
done
$R cluster info

# leaders_ready TOPIC PARTITIONS: wait until every partition has a leader.
leaders_ready() {
	for _ in $(seq 1 300); do
		local n
		n=$( ($R --format json topic describe "$1" 2>/dev/null || true) | grep -c '"leader": *[0-9]' || true)
		[ "$n" -ge "$2" ] && return 0
		sleep 0.2
	done
	echo "topic $1: leaders not elected" >&2
	return 1
}
write_bytes() { for p in "${pids[@]}"; do awk '/^write_bytes/ { print $2 }' "/proc/$p/io"; done | paste -sd' '; }
cpu_ticks() { for p in "${pids[@]}"; do awk '{ print $14 + $15 }' "/proc/$p/stat"; done | paste -sd+ | bc; }

raw=$dir/raw.jsonl
: >"$raw"
m() {
	local tag=$1; shift
	echo "\$ $*" | sed "s#$dir/##g; s#$repo/##g"
	local line
	line=$("$@" 2>/dev/null | tail -1)
	echo "$line"
	echo "{\"tag\":\"$tag\",\"round\":$round,\"result\":$line}" >>"$raw"
}
for round in $(seq 1 "$ROUNDS"); do
	echo "== round $round"
	t=r3-$round
	$R topic create "$t" -p 3 -r 3 >/dev/null || { echo "topic create $t failed" >&2; exit 1; }
	leaders_ready "$t" 3
	sync
	before=$(write_bytes)
	m runnel-rf3-acks-all-1KiB $R --format json bench produce --topic "$t" --records "$N" --record-size 1024 --acks all
	sync
	after=$(write_bytes)
	echo "{\"tag\":\"write-bytes\",\"round\":$round,\"result\":{\"before\":\"$before\",\"after\":\"$after\",\"produced\":$((N * 1024))}}" >>"$raw"
	echo "write_bytes per runneld before: $before after: $after (record values produced: $((N * 1024)) bytes)"
	sync; m nats-r3-default-1KiB "$NATS" pub --replicas 3 --size 1024 --msgs "$N"
	sync; m nats-r3-always-1KiB "$NATS" pub --replicas 3 --size 1024 --msgs "$((N / 3))" --sync always
	$R topic delete "$t" >/dev/null || { echo "topic delete $t failed" >&2; exit 1; }
done

echo "== idle: 500 partitions x RF 3"
$R topic create idle -p 500 -r 3 >/dev/null
leaders_ready idle 500
sleep 20 # elections, preferred-leader moves, the first commit-timeout rounds
a=$(cpu_ticks)
sleep "$IDLE_SECS"
b=$(cpu_ticks)
hz=$(getconf CLK_TCK)
pct=$(echo "scale=2; ($b - $a) * 100 / $hz / $IDLE_SECS" | bc)
echo "\$ (3 runneld, topic idle: 500 partitions x RF 3, nothing produced) CPU over ${IDLE_SECS}s: $pct % of one core"
echo "{\"tag\":\"idle-500x3\",\"round\":0,\"result\":{\"cpu_pct_one_core\":$pct}}" >>"$raw"
[ -n "${OUT:-}" ] && cp "$raw" "$OUT"

python3 - "$raw" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def vals(tag, key):
    return [r["result"][key] for r in rows if r["tag"] == tag and key in r["result"]]
def med(tag, key="records_per_sec"):
    v = vals(tag, key)
    return statistics.median(v) if v else float("nan")
r3 = med("runnel-rf3-acks-all-1KiB")
nd = med("nats-r3-default-1KiB")
na = med("nats-r3-always-1KiB")
print()
print("| measurement (median of rounds) | records/s |")
print("| --- | --- |")
print(f"| runnel RF=3 acks=all, 1 KiB | {r3:,.0f} |")
print(f"| NATS JetStream R3, default sync, 1 KiB | {nd:,.0f} |")
print(f"| NATS JetStream R3, --sync always, 1 KiB | {na:,.0f} |")
print(f"\nratio vs R3 --sync always: {r3/na:.2f}x (goal >= 3); vs R3 default: {r3/nd:.2f}x (goal >= 1.5)")
print("rounds:", [round(x) for x in vals("runnel-rf3-acks-all-1KiB", "records_per_sec")],
      [round(x) for x in vals("nats-r3-default-1KiB", "records_per_sec")],
      [round(x) for x in vals("nats-r3-always-1KiB", "records_per_sec")])
for r in rows:
    if r["tag"] == "write-bytes":
        b = [int(x) for x in r["result"]["before"].split()]
        a = [int(x) for x in r["result"]["after"].split()]
        p = r["result"]["produced"]
        print(f"round {r['round']}: bytes written per byte produced, per runneld:", [round((y - x) / p, 3) for x, y in zip(b, a)], "(goal <= 1.3)")
for r in rows:
    if r["tag"] == "idle-500x3":
        print(f"idle 500 partitions x RF 3, 3 runneld: {r['result']['cpu_pct_one_core']}% of one core (goal < 10%)")
PY
