package client_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine of the clients, consumers and brokers of the tests ends with them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
