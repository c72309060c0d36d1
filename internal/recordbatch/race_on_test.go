//go:build race

package recordbatch

// raceEnabled: under the race detector sync.Pool drops a random share of what is put in it
// (on purpose, to expose misuse), so code that takes its scratch from a pool allocates now and
// then. Allocation counts are asserted only without -race; `make test` runs them that way too.
const raceEnabled = true
