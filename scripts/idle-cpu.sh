#!/usr/bin/env bash
# The idle cost of a cluster: three runneld (binaries from BINDIR) on loopback, a topic of 500
# partitions x RF 3, nothing produced; prints the three processes' CPU (utime+stime from
# /proc) over SECS as a percentage of one core. The brokers are left running (ports 9520,
# 9530, 9540, with --pprof) for a profile or /metrics; stop them with
# pkill -f 'runneld --node-id'. Data dirs under ${IDLE_DIR:-/tmp/runnel-idle}.
#
#   scripts/idle-cpu.sh BINDIR [SECS]
set -euo pipefail
B=$(cd "${1:?usage: $0 BINDIR [SECS]}" && pwd)
S=${2:-30}
dir=${IDLE_DIR:-/tmp/runnel-idle}
pkill -f 'runneld --node-id' || true
while pgrep -f 'runneld --node-id' >/dev/null; do sleep 0.2; done
rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
export RUNNEL_BROKERS=127.0.0.1:9520
"$B/runneld" --node-id 1 --data-dir d1 --addr 127.0.0.1:9520 --serf-addr 127.0.0.1:9521 --pprof >l1 2>&1 &
sleep 1
"$B/runneld" --node-id 2 --data-dir d2 --addr 127.0.0.1:9530 --serf-addr 127.0.0.1:9531 --join 127.0.0.1:9521 --pprof >l2 2>&1 &
"$B/runneld" --node-id 3 --data-dir d3 --addr 127.0.0.1:9540 --serf-addr 127.0.0.1:9541 --join 127.0.0.1:9521 --pprof >l3 2>&1 &
for _ in $(seq 60); do "$B/runnel" topic create idle -p 500 -r 3 >/dev/null 2>&1 && break; sleep 1; done
sleep 10
n=-1
for i in $(seq 90); do
	n=$("$B/runnel" topic describe idle | awk '$1 ~ /^[0-9]+$/ && $2 == -1' | wc -l)
	[ "$n" = 0 ] && break
	sleep 1
done
echo "partitions without a leader: $n (after $((i + 10)) s)"
sleep 10
cpu() { for p in $(pgrep -f 'runneld --node-id'); do awk '{print $14+$15}' "/proc/$p/stat"; done | paste -sd+ | bc; }
hz=$(getconf CLK_TCK)
a=$(cpu); sleep "$S"; b=$(cpu)
echo "idle, 3 runneld, 500 partitions x RF 3: $(echo "scale=2; ($b - $a) * 100 / $hz / $S" | bc) % of one core over ${S}s (load $(cut -d' ' -f1 /proc/loadavg))"
