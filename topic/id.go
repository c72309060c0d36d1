package topic

import (
	"crypto/rand"
	"fmt"
)

// NewID returns a random version-4 UUID: a topic's id (which tells a topic from an earlier
// one of the same name), and the broker's other random identities (cluster id, a data
// directory's incarnation).
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
