#!/usr/bin/env bash
# diskbench.sh: measure the raw disk under a directory, so that commitlog benchmark figures can be
# compared with what the machine itself can do. Prints one JSON object per line, one per figure.
#
#   scripts/diskbench.sh [DIR]        (default: a temporary directory inside the repository)
#
# Environment: WRITE_MIB (buffered write size, default 2048), SYNC_MIB (fsynced write size,
# default 512), SYNC4K_COUNT (number of 4 KiB fsynced writes, default 2000), REPEAT (runs of each
# dd figure, default 5; the median is reported), NO_FIO=1 to skip fio.
#
# MB/s here means 10^6 bytes per second, the unit `go test -bench` reports with b.SetBytes.
#
# Figures:
#   buffered_seq_write  dd bs=128k, no sync. This measures the write path into the page cache
#                       (write(2) copying into dirty pages, with writeback throttling once the
#                       dirty limits are reached), not the device. That is the figure a commitlog
#                       append with no per-append fsync competes with, and the one the commitlog
#                       issue's "70% of raw buffered bandwidth" target refers to.
#   dsync_seq_write     dd bs=1M oflag=dsync: every 1 MiB write is durable before the next starts
#                       (O_DSYNC, the same guarantee as write + fdatasync).
#   dsync_4k_write      dd bs=4k oflag=dsync: small durable writes; gives the latency of one
#                       fdatasync, the floor under a produce acknowledged with sync=always.
#   fio_*               the same three measured by fio, when fio (and jq, to read its JSON) are
#                       installed (Debian: apt-get install fio jq). The script works without them.
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WRITE_MIB=${WRITE_MIB:-2048}
SYNC_MIB=${SYNC_MIB:-512}
SYNC4K_COUNT=${SYNC4K_COUNT:-2000}
REPEAT=${REPEAT:-5}

if [[ $# -ge 1 ]]; then
	mkdir -p "$1"
	dir=$(mktemp -d "$(cd "$1" && pwd)/diskbench.XXXXXX")
else
	# Not /tmp: it may be a tmpfs, which would measure memory, not the disk.
	dir=$(mktemp -d "$repo/.diskbench.XXXXXX")
fi
trap 'rm -rf "$dir"' EXIT

fstype=$(df -PT "$dir" | awk 'NR==2 {print $2}')
device=$(df -PT "$dir" | awk 'NR==2 {print $1}')
if [[ $fstype == tmpfs || $fstype == ramfs ]]; then
	echo "diskbench: warning: $dir is on $fstype: these figures measure memory, not a disk" >&2
fi
free_mib=$(df -Pm "$dir" | awk 'NR==2 {print $4}')
need_mib=$((WRITE_MIB > SYNC_MIB ? WRITE_MIB : SYNC_MIB))
if ((free_mib < need_mib + 1024)); then
	echo "diskbench: only ${free_mib} MiB free in $dir; need $((need_mib + 1024))" >&2
	exit 1
fi

file="$dir/file"
now() { date +%s.%N; }

# dd_once BS COUNT [DD_FLAGS...]: run dd once on a new file, print "BYTES SECONDS". The seconds come
# from dd's own summary line ("N bytes (...) copied, S s, R MB/s"); if that cannot be parsed, from
# our own clock around dd.
dd_once() {
	local bs=$1 count=$2
	shift 2
	sync
	local t0 t1 out secs bytes
	t0=$(now)
	if ! out=$(dd if=/dev/zero of="$file" bs="$bs" count="$count" "$@" 2>&1); then
		echo "diskbench: dd failed: $out" >&2
		return 1
	fi
	t1=$(now)
	bytes=$(sed -n 's/^\([0-9][0-9]*\) bytes.* copied.*/\1/p' <<<"$out" | tail -n1)
	secs=$(sed -n 's/.* copied, \([0-9.eE+-][0-9.eE+-]*\) s.*/\1/p' <<<"$out" | tail -n1)
	if [[ -z $bytes ]]; then
		bytes=$(($(numfmt --from=iec "${bs^^}") * count))
	fi
	if [[ -z $secs ]] || ! awk -v s="$secs" 'BEGIN {exit !(s > 0)}'; then
		secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.6f", b - a}')
	fi
	rm -f "$file"
	sync
	echo "$bytes $secs"
}

# dd_run FIGURE BS COUNT [DD_FLAGS...]: REPEAT runs of dd_once, one JSON line with the median run's
# figures and every run's MB/s in the order they ran. Repeats matter on a VM: writing into guest
# memory that the host has not backed yet (first touch, or memory the guest handed back to the
# host through the balloon's free page reporting after a few idle seconds) is several times slower
# than writing into memory already backed. On the 2-core Firecracker VM this was written on, 2 GiB
# buffered writes ran at 0.7-1.0 GB/s when cold and 4.5-6.3 GB/s back to back.
dd_run() {
	local figure=$1 bs=$2 count=$3
	shift 3
	local runs="" i r
	for ((i = 0; i < REPEAT; i++)); do
		r=$(dd_once "$bs" "$count" "$@")
		runs+="$r"$'\n'
	done
	local chrono
	chrono=$(awk '{printf "%s%.1f", (NR > 1 ? "," : ""), $1 / $2 / 1e6}' <<<"${runs%$'\n'}")
	sort -k2,2g <<<"${runs%$'\n'}" | awk -v all="$chrono" -v f="$figure" -v bs="$bs" -v n="$count" -v flags="$*" \
		-v d="$dir" -v fs="$fstype" -v dev="$device" -v rep="$REPEAT" '
		{ by[NR] = $1; s[NR] = $2 }
		END {
			m = int((NR + 1) / 2) # median by time
			printf "{\"figure\":\"%s\",\"tool\":\"dd\",\"cmd\":\"dd if=/dev/zero of=FILE bs=%s count=%s%s\",", f, bs, n, (flags == "" ? "" : " " flags)
			printf "\"repeats\":%d,\"bytes\":%.0f,\"seconds\":%.3f,\"mb_per_s\":%.1f,\"writes_per_s\":%.0f,\"us_per_write\":%.1f,", rep, by[m], s[m], by[m] / s[m] / 1e6, n / s[m], s[m] * 1e6 / n
			printf "\"runs_mb_per_s\":[%s],\"dir\":\"%s\",\"fstype\":\"%s\",\"device\":\"%s\"}\n", all, d, fs, dev
		}'
}

dd_run buffered_seq_write 128k $((WRITE_MIB * 8))
dd_run dsync_seq_write 1M "$SYNC_MIB" oflag=dsync
dd_run dsync_4k_write 4k "$SYNC4K_COUNT" oflag=dsync

if [[ ${NO_FIO:-0} == 1 ]]; then
	exit 0
fi
if ! command -v fio >/dev/null || ! command -v jq >/dev/null; then
	echo "diskbench: fio or jq not installed; skipping the fio figures (apt-get install fio jq)" >&2
	exit 0
fi

# fio_run FIGURE FIO_ARGS...: one job, psync engine, its JSON summary reduced to one line.
# --fallocate=none: like dd and like a log appending to its segment, the file grows as it is
# written (fio's default preallocates it with fallocate, sparing the writes block allocation).
fio_run() {
	local figure=$1
	shift
	sync
	local json
	json=$(fio --name="$figure" --filename="$file" --ioengine=psync --rw=write --fallocate=none \
		--output-format=json "$@") || {
		echo "diskbench: fio failed" >&2
		return 1
	}
	rm -f "$file"
	sync
	jq -c --arg f "$figure" --arg cmd "fio --ioengine=psync --rw=write --fallocate=none $*" \
		--arg d "$dir" --arg fs "$fstype" --arg dev "$device" '
		.jobs[0] as $j | {
			figure: $f, tool: "fio", cmd: $cmd,
			bytes: $j.write.io_bytes, seconds: ($j.write.runtime / 1000),
			mb_per_s: (($j.write.bw_bytes / 1e5 | round) / 10),
			writes_per_s: ($j.write.iops | round),
			sync_p50_us: (if ($j.sync.lat_ns.N // 0) > 0 then ($j.sync.lat_ns.percentile["50.000000"] / 1000 | round) else null end),
			sync_p99_us: (if ($j.sync.lat_ns.N // 0) > 0 then ($j.sync.lat_ns.percentile["99.000000"] / 1000 | round) else null end),
			dir: $d, fstype: $fs, device: $dev
		}' <<<"$json"
}

fio_run fio_buffered_seq_write --bs=128k --size="${WRITE_MIB}m"
fio_run fio_fdatasync_seq_write --bs=1m --size="${SYNC_MIB}m" --fdatasync=1
fio_run fio_fdatasync_4k_write --bs=4k --size=$((SYNC4K_COUNT * 4))k --fdatasync=1
