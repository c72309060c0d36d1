package broker

import (
	bolt "go.etcd.io/bbolt"
)

// groupOffset is one group's live committed offset of one partition.
type groupOffset struct {
	group string
	key   offsetKey
	off   int64
}

// allCommitted returns every group's committed offsets of partitions that exist (topics):
// from the metadata on a clustered broker (its replica: every broker exports the lag), from
// the local store on a single node.
func (o *offsetService) allCommitted(topics map[string]TopicInfo) ([]groupOffset, error) {
	live := liveFunc(topics)
	var out []groupOffset
	if cl := o.s.reg.Cluster(); cl != nil {
		groups, err := cl.Groups()
		if err != nil {
			return nil, err
		}
		for _, g := range groups {
			cos, err := cl.FetchOffsets(g)
			if err != nil {
				continue // deleted meanwhile
			}
			for _, co := range cos {
				k := offsetKey{topic: co.Topic, partition: co.Partition}
				if live(k, offsetEntry{TopicID: co.TopicID}) {
					out = append(out, groupOffset{group: g, key: k, off: co.Offset})
				}
			}
		}
		return out, nil
	}
	if o.openErr != nil || o.store == nil {
		return nil, o.openErr
	}
	err := o.store.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketGroups).ForEachBucket(func(name []byte) error {
			keys, entries, err := groupEntries(tx.Bucket(bucketGroups).Bucket(name))
			if err != nil {
				return err
			}
			for _, k := range keys {
				if e := entries[k]; live(k, e) {
					out = append(out, groupOffset{group: string(name), key: k, off: e.Offset})
				}
			}
			return nil
		})
	})
	return out, err
}
