#!/usr/bin/env bash
# fuzz.sh: run every fuzz target in the tree for a short while.
#
# Targets are found by grepping `func FuzzXxx(` in *_test.go files, so a new target is picked up
# without editing anything. `go test -fuzz` accepts one target in one package per run, hence a run
# per target. Their seed corpora (f.Add and testdata/fuzz/FuzzXxx/) already run as ordinary tests
# in `go test ./...`; this adds FUZZTIME of new inputs per target. A failing input is written to
# the package's testdata/fuzz/FuzzXxx/ directory: commit it with the fix, and it becomes a
# regression test.
#
#   FUZZTIME   how much each target runs (default 3000x, a count of inputs; any -fuzztime value).
#              Prefer counts: a duration can fail a target with a bare "context deadline exceeded"
#              and no crasher under go1.26 (golang/go#75804, a race in the fuzz coordinator).
#   FUZZ       only targets whose name matches this regexp, unanchored (default: all)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-3000x}
FUZZ=${FUZZ:-.}

# Directories the go tool ignores (testdata, vendor, names starting with . or _) are skipped too.
targets=$(
	find . \( -name testdata -o -name vendor -o -name '.?*' -o -name '_*' \) -prune -o \
		-type f -name '*_test.go' -print0 |
		xargs -0 -r grep -H -o -E '^func Fuzz[A-Za-z0-9_]*\(' |
		sed -E 's#^\./##; s#^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($#\1 \2#; s#^[^/ ]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($#. \1#' |
		awk -v re="$FUZZ" '$2 ~ re' || true
)
targets=$(sort -u <<<"$targets" | sed '/^$/d')

if [[ -z $targets ]]; then
	echo "fuzz: no fuzz targets found"
	exit 0
fi

n=$(wc -l <<<"$targets")
echo "fuzz: $n target(s), $FUZZTIME each"
failed=()
while read -r dir name; do
	echo "--- fuzz $name in ./$dir"
	if ! "$GO" test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" "./$dir" </dev/null; then
		failed+=("./$dir $name")
	fi
done <<<"$targets"

if ((${#failed[@]} > 0)); then
	echo "fuzz: FAIL: ${#failed[@]} of $n target(s):" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: ok: $n target(s)"
