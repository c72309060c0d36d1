#!/usr/bin/env bash
# bench-commitlog.sh: the commitlog figures of docs/benchmarks.md, with the raw disk measured in
# the same run. Each benchmark is sized so that the bytes it writes match what the disk figure it
# is compared with writes (1 GiB), so neither runs into the kernel's dirty-page throttling while
# the other does not.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GO=${GO:-go}
dir=$(mktemp -d "$PWD/.bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
export TMPDIR=$dir # benchmarks write their logs on the same disk as dd

run() { echo "\$ $*"; "$@"; }
dd_buffered() { # bs count
	dd if=/dev/zero of="$dir/dd" bs="$1" count="$2" 2>&1 | tail -1
	rm -f "$dir/dd"
}

$GO test -c -o "$dir/commitlog.test" ./commitlog
t="$dir/commitlog.test -test.run ^\$ -test.benchmem"

echo "== raw disk: buffered sequential writes, 1 GiB, before"
for i in 1 2 3; do echo "\$ dd if=/dev/zero of=FILE bs=128k count=8192"; dd_buffered 128k 8192; done
echo "\$ dd if=/dev/zero of=FILE bs=102436 count=10482   # the size of one 100 x 1 KiB append frame"
dd_buffered 102436 10482

echo "== append, no fsync, 1 GiB each"
run $t -test.bench 'BenchmarkAppend/^record=1KiB$/^batch=100$/^sync=none$' -test.benchtime 10000x -test.count 3
run $t -test.bench 'BenchmarkAppend/^record=100B$/^batch=100$/^sync=none$' -test.benchtime 100000x -test.count 3
run $t -test.bench 'BenchmarkAppend/^record=1KiB$/^batch=1$/^sync=none$' -test.benchtime 1000000x -test.count 3

echo "== raw disk: buffered sequential writes, 1 GiB, after"
for i in 1 2 3; do echo "\$ dd if=/dev/zero of=FILE bs=128k count=8192"; dd_buffered 128k 8192; done

echo "== raw disk: 1 MiB writes, each followed by fdatasync (O_DSYNC)"
echo "\$ dd if=/dev/zero of=FILE bs=1M count=256 oflag=dsync"
dd if=/dev/zero of="$dir/dd" bs=1M count=256 oflag=dsync 2>&1 | tail -1; rm -f "$dir/dd"
echo "\$ dd if=/dev/zero of=FILE bs=4k count=1000 oflag=dsync"
dd if=/dev/zero of="$dir/dd" bs=4k count=1000 oflag=dsync 2>&1 | tail -1; rm -f "$dir/dd"

echo "== append, durable"
run $t -test.bench 'BenchmarkAppend/^record=1KiB$/^batch=100$/^sync=(always|group)$' -test.benchtime 2s
for i in 1 2 3; do
	run $t -test.bench 'BenchmarkAppendConcurrent' -test.benchtime 3s
done

echo "== read (1 GiB log in the page cache)"
run $t -test.bench 'BenchmarkRead' -test.benchtime 2s

echo "== recovery after a crash of a 1 GiB log"
run $t -test.bench 'BenchmarkRecovery' -test.benchtime 1x
run $t -test.bench 'BenchmarkRecovery' -test.benchtime 5x

echo "== batch validation"
run $GO test -run '^$' -bench 'BenchmarkValidate' -benchmem ./internal/recordbatch
