package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/runnel-io/runnel/internal/vfs"
)

// StableFileName is the StableStore's file in the partition directory.
const StableFileName = "raft-stable"

const stableMagic = "RNLSTBL1"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errNotFound is what raft expects from Get for a missing key: it compares the message.
var errNotFound = errors.New("not found")

// StableStore is raft.StableStore (CurrentTerm, LastVoteTerm, LastVoteCand) as one small file,
// rewritten whole and atomically on every Set: a temporary file, fsync, rename, directory
// fsync. Format: "RNLSTBL1", u32 count, then per key u16 length, key, u32 length, value, and a
// CRC32C of everything before it (big-endian).
type StableStore struct {
	fs   vfs.FS
	dir  string
	path string

	mu sync.Mutex
	kv map[string][]byte
}

// OpenStableStore opens (or creates, empty) the stable store file in dir. fs nil means vfs.OS.
func OpenStableStore(fs vfs.FS, dir string) (*StableStore, error) {
	if fs == nil {
		fs = vfs.OS
	}
	s := &StableStore{fs: fs, dir: dir, path: filepath.Join(dir, StableFileName), kv: map[string][]byte{}}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	fs.Remove(s.path + vfs.TempSuffix) // a write cut short; the file itself is intact
	f, err := fs.OpenFile(s.path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil && size > 0 {
		return nil, err
	}
	if err := s.decode(b); err != nil {
		return nil, fmt.Errorf("raftstore: %s: %w", s.path, err)
	}
	return s, nil
}

func (s *StableStore) decode(b []byte) error {
	if len(b) < len(stableMagic)+8 || string(b[:len(stableMagic)]) != stableMagic {
		return errors.New("not a stable store file")
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return errors.New("checksum mismatch")
	}
	p := body[len(stableMagic):]
	n := binary.BigEndian.Uint32(p)
	p = p[4:]
	for i := uint32(0); i < n; i++ {
		if len(p) < 2 {
			return errors.New("truncated")
		}
		kl := int(binary.BigEndian.Uint16(p))
		if len(p) < 2+kl+4 {
			return errors.New("truncated")
		}
		k := string(p[2 : 2+kl])
		p = p[2+kl:]
		vl := int(binary.BigEndian.Uint32(p))
		if len(p) < 4+vl {
			return errors.New("truncated")
		}
		s.kv[k] = append([]byte(nil), p[4:4+vl]...)
		p = p[4+vl:]
	}
	return nil
}

func (s *StableStore) encode() []byte {
	keys := make([]string, 0, len(s.kv))
	for k := range s.kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b := append([]byte(nil), stableMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = binary.BigEndian.AppendUint16(b, uint16(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(s.kv[k])))
		b = append(b, s.kv[k]...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// Set stores a value durably.
func (s *StableStore) Set(key, val []byte) error {
	if len(key) > 0xffff {
		return fmt.Errorf("raftstore: stable key of %d bytes", len(key))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.kv[string(key)]
	s.kv[string(key)] = append([]byte{}, val...)
	if err := vfs.WriteFileAtomic(s.fs, s.path, s.encode()); err != nil {
		if had {
			s.kv[string(key)] = old
		} else {
			delete(s.kv, string(key))
		}
		return err
	}
	return nil
}

// Get returns a value, or an error whose message is "not found" (raft's convention).
func (s *StableStore) Get(key []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.kv[string(key)]
	if !ok {
		return nil, errNotFound
	}
	return append([]byte(nil), v...), nil
}

// SetUint64 stores a number durably.
func (s *StableStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns a number, 0 for a missing key.
func (s *StableStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if errors.Is(err, errNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raftstore: stable key %q holds %d bytes, not a uint64", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

var _ raft.StableStore = (*StableStore)(nil)
