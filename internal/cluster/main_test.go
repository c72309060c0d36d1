package cluster

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that Close stops every goroutine the package starts (Raft's, Serf's and
// memberlist's included).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
