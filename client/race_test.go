//go:build race

package client_test

// raceEnabled tells whether the tests run under the race detector.
const raceEnabled = true
