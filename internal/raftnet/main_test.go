package raftnet

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that Network.Close and Transport.Close leave no goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
