package cluster

import bolt "go.etcd.io/bbolt"

// Groups returns the names of the groups that have committed offsets, sorted (this broker's
// replica of the metadata: current on the leader).
func (c *Cluster) Groups() ([]string, error) {
	var out []string
	err := c.fsm.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketGroups).ForEachBucket(func(k []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out, err
}
