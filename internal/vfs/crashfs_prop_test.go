package vfs

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// mfile is the model of one file (inode): its current bytes, its durable bytes, which
// positions below the durable size were overwritten or cut since the last sync (dirty), and
// which positions lost their writeback to a failed sync (lost).
type mfile struct {
	cur, dur    []byte
	dirty, lost []bool // indexed by position, long enough for any position
}

const propMax = 4096

func newMfile() *mfile {
	return &mfile{dirty: make([]bool, propMax*2), lost: make([]bool, propMax*2)}
}

func (m *mfile) write(off int, p []byte) {
	if end := off + len(p); end > len(m.cur) {
		m.cur = append(m.cur, make([]byte, end-len(m.cur))...)
	}
	copy(m.cur[off:], p)
	for i := off; i < off+len(p); i++ {
		m.lost[i] = false
		if i < len(m.dur) {
			m.dirty[i] = true
		}
	}
}

func (m *mfile) truncate(t int) {
	if t < len(m.cur) {
		for i := t; i < len(m.cur); i++ {
			m.lost[i] = false
		}
		m.cur = m.cur[:t]
	} else {
		m.cur = append(m.cur, make([]byte, t-len(m.cur))...)
	}
	for i := t; i < len(m.dur); i++ {
		m.dirty[i] = true
	}
}

// durableAt is the durable value of a lost position.
func (m *mfile) durableAt(i int) byte {
	if i < len(m.dur) {
		return m.dur[i]
	}
	return 0
}

func (m *mfile) sync() {
	d := make([]byte, len(m.cur))
	for i := range d {
		if m.lost[i] {
			d[i] = m.durableAt(i)
		} else {
			d[i] = m.cur[i]
		}
	}
	m.dur = d
	clear(m.dirty)
}

func (m *mfile) syncFailedDrop() {
	for i := range m.cur {
		if i >= len(m.dur) || m.dirty[i] {
			m.lost[i] = true
		}
	}
}

// afterCrash is the content a crash leaves, keeping keep unsynced bytes.
func (m *mfile) afterCrash(keep int, fill Fill) []byte {
	out := slices.Clone(m.dur)
	for i := len(m.dur); i < len(m.dur)+keep; i++ {
		switch {
		case fill == FillZeros || m.lost[i]:
			out = append(out, 0)
		default:
			out = append(out, m.cur[i])
		}
	}
	return out
}

// TestCrashProperty runs random sequences of writes, truncates, syncs (some failing and losing
// data), creations, removals, renames and directory syncs on a few files, crashing now and
// then, and checks after every crash that the disk holds exactly the durable state of a simple
// byte-level model.
func TestCrashProperty(t *testing.T) {
	seeds := 100
	if testing.Short() {
		seeds = 20
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { propRun(t, uint64(seed)) })
	}
}

func propRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	dir := t.TempDir()
	c := NewCrashFS(fastOS)
	names := []string{"a", "b", "c"}

	files := map[int]*mfile{} // by inode id
	handles := map[int]File{} // open handles, by id
	curNS := map[string]int{} // name -> id
	durNS := map[string]int{}
	nextID := 0
	var trace []string
	logf := func(format string, args ...any) { trace = append(trace, fmt.Sprintf(format, args...)) }
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: %s\ntrace:\n%s", seed, fmt.Sprintf(format, args...), strings.Join(trace, "\n"))
	}
	ids := func() []int { return slices.Sorted(maps.Keys(handles)) }

	for step := 0; step < 300; step++ {
		r := rng.IntN(100)
		switch {
		case r < 8: // create
			name := names[rng.IntN(len(names))]
			if _, ok := curNS[name]; ok {
				continue
			}
			f, err := c.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				fail("create: %v", err)
			}
			id := nextID
			nextID++
			files[id], handles[id], curNS[name] = newMfile(), f, id
			logf("create %s -> #%d", name, id)
		case r < 40: // write
			if len(handles) == 0 {
				continue
			}
			id := ids()[rng.IntN(len(handles))]
			m := files[id]
			off := rng.IntN(min(len(m.cur)+64, propMax-256))
			p := make([]byte, 1+rng.IntN(200))
			for i := range p {
				p[i] = byte('A' + rng.IntN(26))
			}
			if _, err := handles[id].WriteAt(p, int64(off)); err != nil {
				fail("write: %v", err)
			}
			m.write(off, p)
			logf("write #%d [%d,+%d)", id, off, len(p))
		case r < 50: // truncate
			if len(handles) == 0 {
				continue
			}
			id := ids()[rng.IntN(len(handles))]
			m := files[id]
			size := rng.IntN(min(len(m.cur)+100, propMax))
			if err := handles[id].Truncate(int64(size)); err != nil {
				fail("truncate: %v", err)
			}
			m.truncate(size)
			logf("truncate #%d to %d", id, size)
		case r < 68: // sync
			if len(handles) == 0 {
				continue
			}
			id := ids()[rng.IntN(len(handles))]
			if err := handles[id].Sync(); err != nil {
				fail("sync: %v", err)
			}
			files[id].sync()
			logf("sync #%d", id)
		case r < 73: // failed sync that loses the unsynced data
			if len(handles) == 0 {
				continue
			}
			id := ids()[rng.IntN(len(handles))]
			c.Inject(Fault{Kind: OpSync, Times: 1, DropUnsynced: true})
			if err := handles[id].Sync(); err == nil {
				fail("injected sync failure did not fail")
			}
			c.ClearFaults()
			files[id].syncFailedDrop()
			logf("sync #%d FAILED (drop)", id)
		case r < 81: // syncdir
			if err := c.SyncDir(dir); err != nil {
				fail("syncdir: %v", err)
			}
			durNS = maps.Clone(curNS)
			logf("syncdir")
		case r < 85: // remove
			name := names[rng.IntN(len(names))]
			id, ok := curNS[name]
			if !ok {
				continue
			}
			if err := c.Remove(filepath.Join(dir, name)); err != nil {
				fail("remove: %v", err)
			}
			delete(curNS, name)
			if rng.IntN(2) == 0 { // sometimes keep writing to the removed file
				handles[id].Close()
				delete(handles, id)
			}
			logf("remove %s (#%d)", name, id)
		case r < 90: // rename
			from, to := names[rng.IntN(len(names))], names[rng.IntN(len(names))]
			id, ok := curNS[from]
			if !ok || from == to {
				continue
			}
			if err := c.Rename(filepath.Join(dir, from), filepath.Join(dir, to)); err != nil {
				fail("rename: %v", err)
			}
			if old, ok := curNS[to]; ok {
				handles[old].Close()
				delete(handles, old)
			}
			curNS[to] = id
			delete(curNS, from)
			logf("rename %s -> %s (#%d)", from, to, id)
		case r < 95: // crash
			fill := FillData
			if rng.IntN(4) == 0 {
				fill = FillZeros
			}
			keeps := map[string]int{}
			keepRng := rand.New(rand.NewPCG(seed, uint64(step)))
			opts := CrashOptions{Fill: fill}
			if rng.IntN(2) == 0 {
				opts.KeepUnsynced = func(path string, durable, current int64) int64 {
					name := filepath.Base(path)
					m := files[durNS[name]]
					if int(durable) != len(m.dur) || int(current) != len(m.cur) {
						fail("KeepUnsynced(%s, %d, %d), model %d, %d", name, durable, current, len(m.dur), len(m.cur))
					}
					k := keepRng.IntN(int(current-durable) + 1)
					keeps[name] = k
					return int64(k)
				}
			}
			if err := c.Crash(opts); err != nil {
				fail("crash: %v", err)
			}
			logf("crash (fill %d, keeps %v)", fill, keeps)
			// The disk holds exactly the durable namespace, with the durable contents.
			got := realNames(t, dir)
			want := slices.Sorted(maps.Keys(durNS))
			if !slices.Equal(got, want) {
				fail("after crash, dir = %v, want %v", got, want)
			}
			newFiles := map[int]*mfile{}
			for name, id := range durNS {
				exp := files[id].afterCrash(keeps[name], fill)
				b, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					fail("%v", err)
				}
				if !bytes.Equal(b, exp) {
					fail("after crash, %s (#%d) = %q\nwant %q", name, id, b, exp)
				}
				m := newMfile()
				m.cur, m.dur = exp, slices.Clone(exp)
				newFiles[id] = m
			}
			for _, f := range handles {
				if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, ErrCrashed) {
					fail("write after crash: %v", err)
				}
				f.Close()
			}
			if err := c.Revive(); err != nil {
				fail("revive: %v", err)
			}
			files, handles, curNS = newFiles, map[int]File{}, maps.Clone(durNS)
			for name, id := range curNS {
				f, err := c.OpenFile(filepath.Join(dir, name), os.O_RDWR, 0)
				if err != nil {
					fail("reopen: %v", err)
				}
				handles[id] = f
			}
		}
		// The current state is always what the model says (checked now and then: it is slow).
		if rng.IntN(8) != 0 {
			continue
		}
		for name, id := range curNS {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				fail("%v", err)
			}
			if !bytes.Equal(b, files[id].cur) {
				fail("current %s (#%d) = %q\nwant %q", name, id, b, files[id].cur)
			}
		}
	}
	for _, f := range handles {
		f.Close()
	}
}
