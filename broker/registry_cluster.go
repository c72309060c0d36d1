package broker

import "github.com/runnel-io/runnel/internal/cluster"

// Cluster returns the cluster this registry runs under, nil on a single node (or before
// StartCluster).
func (r *Registry) Cluster() *cluster.Cluster {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cm == nil {
		return nil
	}
	return r.cm.cl
}
