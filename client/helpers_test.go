package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/runnel-io/runnel/client"
	"github.com/runnel-io/runnel/internal/brokertest"
)

const testTimeout = 60 * time.Second

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newClient starts a broker and returns a client of it, closed at cleanup.
func newClient(t testing.TB, opts ...client.Option) (*client.Client, *brokertest.Broker) {
	t.Helper()
	b := brokertest.Start(t)
	return clientOf(t, b, opts...), b
}

func clientOf(t testing.TB, b interface{ Addr() string }, opts ...client.Option) *client.Client {
	t.Helper()
	cl, err := client.New(ctxT(t), append([]client.Option{client.WithBrokers(b.Addr())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cl.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return cl
}

func createTopic(t testing.TB, cl *client.Client, name string, partitions int32, configs map[string]string) {
	t.Helper()
	if err := cl.CreateTopic(ctxT(t), name, partitions, 0, configs); err != nil {
		t.Fatal(err)
	}
}

// consumeN reads n records from partitions of topic from start.
func consumeN(t testing.TB, cl *client.Client, topicName string, parts []int32, start client.Position, n int) []*client.Record {
	t.Helper()
	c := cl.NewConsumer()
	defer c.Close()
	for _, p := range parts {
		if err := c.Assign(topicName, p, start); err != nil {
			t.Fatal(err)
		}
	}
	ctx := ctxT(t)
	var out []*client.Record
	for len(out) < n {
		recs, err := c.Poll(ctx)
		if err != nil {
			t.Fatalf("poll after %d records: %v", len(out), err)
		}
		out = append(out, recs...)
	}
	if len(out) > n {
		t.Fatalf("got %d records, want %d", len(out), n)
	}
	return out
}

// tLogger sends the client's log to the test's.
type tLogger struct{ t testing.TB }

func (l tLogger) Printf(format string, args ...any) { l.t.Logf(format, args...) }

func brokertestStart(t testing.TB) *brokertest.Broker { return brokertest.Start(t) }
