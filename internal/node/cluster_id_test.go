package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// TestClusterID: in cluster mode every broker reports the same non-empty cluster id, in
// DescribeCluster and GetMetadata, the one the metadata holds; a restarted broker reports it
// again, and a broker that joins later learns it.
func TestClusterID(t *testing.T) {
	c := newTestCluster(t)
	c.start(1)
	if _, ok := any(c.nodes[1].Cluster()).(interface{ ClusterID() string }); !ok {
		t.Skip("internal/cluster keeps no cluster id yet (issue #4: the set-cluster-id command)")
	}
	c.start(2)
	c.start(3)
	c.waitBrokers(3)

	// same waits until every running broker reports one id, and returns it.
	same := func() string {
		t.Helper()
		var id string
		waitFor(t, 20*time.Second, "one cluster id on every broker", func() error {
			id = ""
			for bid, n := range c.nodes {
				if n == nil {
					continue
				}
				admin := runnelv1.NewAdminServiceClient(c.conn(n.Addr()))
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				dc, err := admin.DescribeCluster(ctx, &runnelv1.DescribeClusterRequest{})
				if err != nil {
					cancel()
					return err
				}
				md, err := admin.GetMetadata(ctx, &runnelv1.GetMetadataRequest{})
				cancel()
				if err != nil {
					return err
				}
				got := dc.GetClusterId()
				switch {
				case got == "":
					return fmt.Errorf("broker %d: empty cluster id", bid)
				case md.GetClusterId() != got:
					return fmt.Errorf("broker %d: GetMetadata says %q, DescribeCluster %q", bid, md.GetClusterId(), got)
				case id != "" && got != id:
					return fmt.Errorf("broker %d says %q, another %q", bid, got, id)
				}
				id = got
			}
			if id == "" {
				return errors.New("no broker running")
			}
			return nil
		})
		return id
	}
	id := same()
	t.Logf("cluster id %s", id)

	c.stop(2)
	c.start(2)
	if got := same(); got != id {
		t.Fatalf("after broker 2 restarted: %q, want %q", got, id)
	}
	c.start(4)
	c.waitBrokers(4)
	if got := same(); got != id {
		t.Fatalf("with broker 4: %q, want %q", got, id)
	}
}
