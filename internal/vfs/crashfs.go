package vfs

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// ErrCrashed is returned (wrapped in an *os.PathError or *os.LinkError; test with errors.Is) by
// every method of a CrashFS, and of the Files it opened, once Crash has been called: until
// Revive for the FS methods, and forever for Files opened before the crash.
var ErrCrashed = errors.New("vfs: filesystem crashed")

// CrashFS wraps a base FS (normally OS, rooted in a real temporary directory, so that files
// are real and can be mmapped through Fd) and simulates what a power loss would leave on disk.
// It is meant for crash and fault-injection tests of the commitlog and other stores.
//
// # Crash model
//
// CrashFS tracks, for every file it has touched, two states: the current one (what the real
// file holds now, what reads see) and the durable one (what a crash would leave). Crash rewrites
// the real files to their durable state.
//
// File data. A file's durable size and bytes are those it had when its last successful File.Sync
// returned (File.Sync is fdatasync: it covers the data and the size, not the directory entry).
// A file never synced has empty durable content. Everything written, truncated or extended
// after the last sync is undone by a crash: unsynced appended bytes vanish (unless
// CrashOptions.KeepUnsynced keeps a torn prefix of them, see below), overwritten durable bytes
// get their old value back, and a truncation that was not followed by a sync is undone (the cut
// bytes come back). To undo overwrites and truncations, CrashFS keeps in memory a copy of the
// durable bytes of every range of [0, durable size) that was overwritten or cut since the last
// sync, and only those: appending costs nothing, a sync drops the copies. (A test that truncates a
// large synced file to zero and does not sync pays for a copy of the cut bytes.)
//
// Directory entries. Creating a file (OpenFile with O_CREATE), removing it (Remove) and renaming
// it (Rename) change the directory entries, which become durable only at the next successful
// SyncDir of the parent directory. Until then a crash undoes them: a created file vanishes
// (even if its data was synced), a removed file comes back with its durable content, a renamed
// file goes back to its old name, and a file replaced by a rename comes back. Files that existed
// on disk before the CrashFS first touched them are durable as they are. Removed files whose
// removal is not yet durable are kept on disk under a hidden name (".crashfs-trash-N", in the same
// directory) that ReadDir does not list; they are deleted when the removal becomes durable. A
// rename across two directories becomes durable (both halves at once) when either directory is
// synced; that commit may also make durable other pending changes of the names it involves,
// which is legal (a filesystem may always persist more than it promised).
//
// Directories themselves are simplified: MkdirAll, the removal of an (empty) directory by Remove,
// RemoveAll and the rename of a directory are durable at once, as if the parent had been synced
// immediately. RemoveAll and the removal of a directory also make durable the removal of every
// file under it (a crash never brings back a file from a removed tree).
//
// Torn writes. By default a crash drops every unsynced byte. CrashOptions.KeepUnsynced may
// instead keep, per file, a prefix of the bytes past the durable size (the unsynced tail: appends,
// or bytes re-grown after a truncation), modelling a filesystem that wrote part of the tail
// before power failed; CrashOptions.Fill replaces that kept prefix with zeros or garbage instead,
// modelling a filesystem that persisted the new size but not the data (ext4 data=writeback, XFS).
// Overwrites of durable bytes are never torn: they are undone entirely.
//
// After Crash, every mutating call on the FS or on any File returns ErrCrashed, and so do the
// reads (ReadAt, Size, Stat, ReadDir, OpenFile): the process that owned the files is dead. Close
// still releases the descriptor (and returns nil). Crash does not modify a real file in place:
// a file whose content must change is rebuilt in a new file renamed over its durable name, so
// the old owner's mmaps keep their (stale) pages and never fault; the price is a copy of the
// durable bytes of each such file (copy_file_range over OS). Revive ends the crash: the FS
// works again and tracking starts afresh from what is on disk (every file is then durable as it
// is); Files opened before the crash stay dead, the new owner opens its own.
//
// # Fault injection
//
// SetOnOp installs a callback that sees every mutating operation, in order, with a sequence
// number, before it runs. It may return an error to fail the operation (which then has no effect),
// or call Crash (crash "at this write point": the operation then fails with ErrCrashed). Inject
// adds a Fault: fail the Nth, or every, operation of a kind (say the 3rd File.Sync of a path) with
// an error (EIO by default). A failed File.Sync may, like Linux after a failed fsync, lose the
// file's unsynced data (Fault.DropUnsynced). SetSpaceBudget models a full disk: once WriteAt has
// grown files by the budget, the write that crosses it writes a short prefix and fails with
// ENOSPC, and later writes that grow a file fail at once.
//
// # What is not simulated
//
// Writes made through a writable mmap of Fd bypass CrashFS and are not tracked (map files
// read-only). Metadata other than sizes and names (mode, times) is not tracked. Sector- or
// page-granular tearing inside an overwrite is not simulated, nor is reordering of unsynced
// writes other than through KeepUnsynced, nor read errors. All mutations of the files must go
// through the CrashFS (or its Files); paths are tracked by their cleaned absolute form, so the
// working directory must not change and the same file must not be reached through symlinks.
// Hard links are not supported.
//
// # Concurrency
//
// CrashFS and its Files are safe for concurrent use. Writes, truncates and syncs of different
// files run in parallel; those of one file are serialized (a File.Sync blocks writes to its file
// while the real fdatasync runs). Namespace operations (OpenFile, Remove, Rename, SyncDir...) are
// serialized with everything else. Reads (ReadAt) are not serialized.
type CrashFS struct {
	base FS

	// gen counts crashes; Files remember the generation they were opened in. down is true from
	// Crash to Revive. Both are written under mu (exclusive) and read lock-free.
	gen  atomic.Uint64
	down atomic.Bool

	// mu guards the namespace (cur, dur, nodes, the names of nodes, id). Operations on file data
	// hold it shared (and the node's own mutex); namespace operations, Crash and Revive hold it
	// exclusively.
	mu    sync.RWMutex
	cur   map[string]*node // current name -> node
	dur   map[string]*node // durable name -> node
	nodes map[*node]struct{}
	id    uint64 // for hidden file names

	// hookMu serializes the OnOp callback and the fault decisions, so the callback sees the
	// operations one at a time, in order. It is never held together with mu.
	hookMu sync.Mutex
	seq    atomic.Int64

	// cfgMu guards the hooks' configuration (it is never held while the callback runs, so the
	// callback may reconfigure).
	cfgMu  sync.Mutex
	onOp   func(Op) error
	faults []*faultState

	spaceMu sync.Mutex
	space   int64 // bytes by which writes may still grow files; < 0: unlimited
}

// OpKind is the kind of a mutating operation.
type OpKind uint8

const (
	// OpAny is the zero OpKind; in a Fault it matches every kind.
	OpAny OpKind = iota
	// OpCreate is an FS.OpenFile with O_CREATE or O_TRUNC (whether or not the file existed).
	OpCreate
	// OpWrite is a File.WriteAt (Off, Len).
	OpWrite
	// OpSync is a File.Sync.
	OpSync
	// OpTruncate is a File.Truncate (Off is the new size).
	OpTruncate
	// OpRemove is an FS.Remove.
	OpRemove
	// OpRemoveAll is an FS.RemoveAll.
	OpRemoveAll
	// OpRename is an FS.Rename (Path to NewPath).
	OpRename
	// OpMkdirAll is an FS.MkdirAll.
	OpMkdirAll
	// OpSyncDir is an FS.SyncDir.
	OpSyncDir
	// OpAllocate is a File.Allocate (Off, Len).
	OpAllocate
)

var opNames = [...]string{"any", "create", "write", "sync", "truncate", "remove", "removeall", "rename", "mkdirall", "syncdir", "allocate"}

func (k OpKind) String() string {
	if int(k) < len(opNames) {
		return opNames[k]
	}
	return fmt.Sprintf("OpKind(%d)", k)
}

// Op describes a mutating operation, as seen by the OnOp callback and matched by Faults.
type Op struct {
	// Seq numbers the operations of a CrashFS from 1, in the order the callback sees them. It is
	// not reset by Revive. An operation refused because of a crash gets no number.
	Seq  int64
	Kind OpKind
	// Path is the cleaned absolute path of the file or directory. For a File operation it is the
	// file's current name (after renames), or the name it was opened with if it has been removed.
	Path string
	// NewPath is the target of a rename.
	NewPath string
	// Off is the offset of a write or an allocation, or the new size of a truncate.
	Off int64
	// Len is the length of a write or an allocation.
	Len int64
}

func (o Op) String() string {
	s := fmt.Sprintf("#%d %s %s", o.Seq, o.Kind, o.Path)
	switch o.Kind {
	case OpWrite, OpAllocate:
		s += fmt.Sprintf(" [%d,+%d)", o.Off, o.Len)
	case OpTruncate:
		s += fmt.Sprintf(" to %d", o.Off)
	case OpRename:
		s += " -> " + o.NewPath
	}
	return s
}

// Fault makes matching operations fail. The operations a Fault matches are counted from when it
// is injected; the first After of them succeed, the next Times fail (Times 0: all the later ones).
// A failed operation has no effect (except the loss of DropUnsynced), and its error is Err
// wrapped in an *os.PathError (*os.LinkError for a rename).
type Fault struct {
	// Kind is the kind of operation to fail; OpAny matches every kind.
	Kind OpKind
	// Path, if set, restricts the fault to operations on that path (compared cleaned and
	// absolute; a rename matches on either of its paths).
	Path string
	// After is the number of matching operations to let through first.
	After int
	// Times is the number of operations to fail after those; 0 fails every later one.
	Times int
	// Err is the error to fail with; nil means syscall.EIO.
	Err error
	// DropUnsynced applies to OpSync: the failed sync also loses the file's unsynced data, as on
	// Linux, where a failed writeback marks the dirty pages clean (the error is reported once, and
	// a later fsync succeeds without writing them). The file's content as read is unchanged, but
	// the bytes written since the last successful sync (including the unsynced tail) will never
	// become durable unless written again: after a later successful sync and a crash, they read
	// as their old durable value (zeros past the old durable size).
	DropUnsynced bool
}

type faultState struct {
	Fault
	seen int
}

// Fill says what the kept unsynced bytes of a crash contain.
type Fill uint8

const (
	// FillData keeps the bytes that were written.
	FillData Fill = iota
	// FillZeros replaces them with zeros (the size was persisted, the data was not).
	FillZeros
	// FillGarbage replaces them with pseudo-random bytes (seeded by CrashOptions.Seed).
	FillGarbage
)

// CrashOptions tunes Crash. The zero value drops every unsynced byte.
type CrashOptions struct {
	// KeepUnsynced, if set, is called for every durable file whose current size exceeds its
	// durable size, with its durable name and both sizes, and returns how many of the bytes past
	// the durable size survive the crash (clamped to [0, current-durable]). It is called while
	// Crash holds the CrashFS's lock, in the order of the paths: it must not call the CrashFS.
	KeepUnsynced func(path string, durable, current int64) int64
	// Fill says what the kept bytes contain.
	Fill Fill
	// Seed seeds FillGarbage.
	Seed uint64
}

const hiddenPrefix = ".crashfs-"

// NewCrashFS returns a CrashFS over base (OS if nil). Every file already on disk is durable as
// it is.
func NewCrashFS(base FS) *CrashFS {
	if base == nil {
		base = OS
	}
	c := &CrashFS{base: base, space: -1}
	c.reset()
	return c
}

var _ FS = (*CrashFS)(nil)

func (c *CrashFS) reset() {
	c.cur = make(map[string]*node)
	c.dur = make(map[string]*node)
	c.nodes = make(map[*node]struct{})
}

// SetOnOp installs fn (nil removes it). fn is called for every mutating operation, one at a time
// and in order (Op.Seq), before it runs. A non-nil error fails the operation, which then has no
// effect; the error is returned wrapped in an *os.PathError (or *os.LinkError). fn may call
// Crash, Revive, SetOnOp, Inject, ClearFaults, SetSpaceBudget, Ops and the read-only methods;
// it must not call mutating methods of the CrashFS or its Files (that would deadlock). When
// several goroutines use the FS, Seq orders the callbacks; operations of different goroutines
// may then run in another order, and an operation whose callback returned may still fail with
// ErrCrashed if another callback crashed the FS before it ran.
func (c *CrashFS) SetOnOp(fn func(op Op) error) {
	c.cfgMu.Lock()
	c.onOp = fn
	c.cfgMu.Unlock()
}

// Inject adds a fault. Faults are checked after the OnOp callback, in the order they were
// injected; every matching fault counts the operation, the first that fires fails it.
func (c *CrashFS) Inject(f Fault) {
	if f.Path != "" {
		f.Path = absPath(f.Path)
	}
	c.cfgMu.Lock()
	c.faults = append(c.faults, &faultState{Fault: f})
	c.cfgMu.Unlock()
}

// ClearFaults removes every injected fault.
func (c *CrashFS) ClearFaults() {
	c.cfgMu.Lock()
	c.faults = nil
	c.cfgMu.Unlock()
}

// SetSpaceBudget sets the number of bytes by which WriteAt may still grow files (n < 0: no
// limit, the default). Only the bytes a write adds past a file's current size count: overwrites
// and Truncate are free, and nothing is given back by truncation or removal. The write that
// crosses the budget writes what fits and fails with ENOSPC (n < len(p), like a real full disk).
func (c *CrashFS) SetSpaceBudget(n int64) {
	c.spaceMu.Lock()
	c.space = n
	c.spaceMu.Unlock()
}

// Ops returns the number of mutating operations seen so far (the Seq of the last one).
func (c *CrashFS) Ops() int64 { return c.seq.Load() }

// reserve takes up to want bytes of the space budget and returns how many it got.
func (c *CrashFS) reserve(want int64) int64 {
	c.spaceMu.Lock()
	defer c.spaceMu.Unlock()
	if c.space < 0 {
		return want
	}
	got := min(want, c.space)
	c.space -= got
	return got
}

// live reports whether an operation of generation gen may run.
func (c *CrashFS) live(gen uint64) bool {
	return !c.down.Load() && c.gen.Load() == gen
}

// before runs the hooks for op. It returns ErrCrashed if the FS crashed (gen is stale), the
// callback's error, or a fault's; drop is set when a failing fault asks for DropUnsynced.
func (c *CrashFS) before(gen uint64, op Op) (drop bool, err error) {
	c.hookMu.Lock()
	defer c.hookMu.Unlock()
	if !c.live(gen) {
		return false, ErrCrashed
	}
	op.Seq = c.seq.Add(1)
	c.cfgMu.Lock()
	fn := c.onOp
	c.cfgMu.Unlock()
	if fn != nil {
		if err := fn(op); err != nil {
			return false, err
		}
		if !c.live(gen) {
			return false, ErrCrashed
		}
	}
	c.cfgMu.Lock()
	defer c.cfgMu.Unlock()
	for _, f := range c.faults {
		if f.Kind != OpAny && f.Kind != op.Kind {
			continue
		}
		if f.Path != "" && f.Path != op.Path && f.Path != op.NewPath {
			continue
		}
		f.seen++
		if err == nil && f.seen > f.After && (f.Times == 0 || f.seen <= f.After+f.Times) {
			err = f.Err
			if err == nil {
				err = syscall.EIO
			}
			drop = f.DropUnsynced && op.Kind == OpSync
		}
	}
	return drop, err
}

func absPath(name string) string {
	if p, err := filepath.Abs(name); err == nil {
		return p
	}
	return filepath.Clean(name)
}

// under reports whether p is dir or inside it.
func under(p, dir string) bool {
	return p != "" && (p == dir || strings.HasPrefix(p, dir+string(filepath.Separator)) || dir == string(filepath.Separator))
}

func pathErr(op, path string, err error) error {
	return &os.PathError{Op: op, Path: path, Err: err}
}

func (c *CrashFS) hidden(dir, kind string) string {
	c.id++
	return filepath.Join(dir, fmt.Sprintf("%s%s-%d", hiddenPrefix, kind, c.id))
}

// node is a tracked file (an inode).
type node struct {
	// Guarded by CrashFS.mu.
	curName  string // current name; "" once unlinked
	durName  string // name under which the file exists durably; "" if none
	realPath string // where the real file is now: curName, or a hidden trash name
	gone     bool   // unlinked and not durable: no longer tracked

	// Guarded by mu.
	mu      sync.Mutex
	size    int64  // current size
	durSize int64  // durable size
	spans   []span // sorted, disjoint: durable bytes where the current content may differ
	anyLost bool   // some span is lost
	rd      File   // reader of the real file, opened on demand
}

// span is a range whose durable content is recorded because the file's current content may
// differ there. Non-lost spans lie in [0, durSize): durable bytes overwritten or cut since the
// last sync. Lost spans lie in [0, size): ranges whose writeback failed (Fault.DropUnsynced); they
// keep their durable content across syncs until written again.
type span struct {
	off, n int64
	data   []byte // nil: zeros
	lost   bool
}

func (s span) end() int64 { return s.off + s.n }

func (s span) sub(lo, hi int64) span {
	t := span{off: lo, n: hi - lo, lost: s.lost}
	if s.data != nil {
		t.data = s.data[lo-s.off : hi-s.off]
	}
	return t
}

func (n *node) reader(c *CrashFS) (File, error) {
	if n.rd == nil {
		rd, err := c.base.OpenFile(n.realPath, os.O_RDONLY, 0)
		if err != nil {
			return nil, err
		}
		n.rd = rd
	}
	return n.rd, nil
}

// cover adds spans for the parts of [lo, hi) no span covers: with the file's current bytes
// (which are durable there), or, if lostZeros, lost zero spans.
func (n *node) cover(c *CrashFS, lo, hi int64, lostZeros bool) error {
	if lo >= hi {
		return nil
	}
	i := sort.Search(len(n.spans), func(i int) bool { return n.spans[i].end() > lo })
	j := i
	var gaps []span
	pos := lo
	for ; j < len(n.spans) && n.spans[j].off < hi; j++ {
		s := n.spans[j]
		if s.off > pos {
			gaps = append(gaps, span{off: pos, n: s.off - pos})
		}
		pos = max(pos, s.end())
	}
	if pos < hi {
		gaps = append(gaps, span{off: pos, n: hi - pos})
	}
	if len(gaps) == 0 {
		return nil
	}
	for k := range gaps {
		g := &gaps[k]
		if lostZeros {
			g.lost = true
			continue
		}
		g.data = make([]byte, g.n)
		if readable := min(g.end(), n.size) - g.off; readable > 0 {
			rd, err := n.reader(c)
			if err != nil {
				return err
			}
			if _, err := rd.ReadAt(g.data[:readable], g.off); err != nil && err != io.EOF {
				return err
			}
		}
	}
	out := make([]span, 0, len(n.spans)+len(gaps))
	out = append(out, n.spans[:i]...)
	mid := append(slices.Clone(n.spans[i:j]), gaps...)
	sort.Slice(mid, func(a, b int) bool { return mid[a].off < mid[b].off })
	out = append(out, mid...)
	out = append(out, n.spans[j:]...)
	n.spans = out
	return nil
}

// unlose marks [lo, hi) as no longer lost (it was written or cut again). Parts that become
// non-lost past the durable size are dropped: there the durable content is "absent".
func (n *node) unlose(lo, hi int64) {
	if !n.anyLost || lo >= hi {
		return
	}
	out := make([]span, 0, len(n.spans)+2)
	anyLost := false
	for _, s := range n.spans {
		if !s.lost || s.end() <= lo || s.off >= hi {
			out = append(out, s)
			anyLost = anyLost || s.lost
			continue
		}
		if s.off < lo {
			out = append(out, s.sub(s.off, lo))
			anyLost = true
		}
		a, b := max(s.off, lo), min(s.end(), hi, n.durSize)
		if a < b {
			m := s.sub(a, b)
			m.lost = false
			out = append(out, m)
		}
		if s.end() > hi {
			out = append(out, s.sub(hi, s.end()))
			anyLost = true
		}
	}
	n.spans, n.anyLost = out, anyLost
}

// synced records a successful sync: the current content is durable, except lost spans.
func (n *node) synced() {
	n.durSize = n.size
	out := n.spans[:0:0]
	for _, s := range n.spans {
		if s.lost && s.off < n.size {
			out = append(out, s.sub(s.off, min(s.end(), n.size)))
		}
	}
	n.spans, n.anyLost = out, len(out) > 0
}

// dropUnsynced records a failed writeback: everything written since the last sync, within the
// current size, is lost.
func (n *node) dropUnsynced(c *CrashFS) error {
	out := make([]span, 0, len(n.spans)+1)
	for _, s := range n.spans {
		switch {
		case s.end() <= n.size:
			s.lost = true
			out = append(out, s)
		case s.off >= n.size:
			out = append(out, s)
		default:
			l := s.sub(s.off, n.size)
			l.lost = true
			out = append(out, l, s.sub(n.size, s.end()))
		}
	}
	n.spans = out
	n.anyLost = true
	return n.cover(c, n.durSize, n.size, true)
}

func (n *node) closeReader() {
	if n.rd != nil {
		n.rd.Close()
		n.rd = nil
	}
}

// crashFile is a File of a CrashFS.
type crashFile struct {
	c    *CrashFS
	f    File
	n    *node // nil for a directory or other untracked file
	name string
	key  string
	gen  uint64
}

// path returns the file's current absolute name, for Op.Path.
func (f *crashFile) path() string {
	if f.n == nil {
		return f.key
	}
	f.c.mu.RLock()
	defer f.c.mu.RUnlock()
	if f.n.curName != "" {
		return f.n.curName
	}
	return f.key
}

func (f *crashFile) err(op string, err error) error { return pathErr(op, f.name, err) }

// ReadAt reads from the real file. It fails with ErrCrashed once the FS has crashed.
func (f *crashFile) ReadAt(p []byte, off int64) (int, error) {
	if !f.c.live(f.gen) {
		return 0, f.err("read", ErrCrashed)
	}
	return f.f.ReadAt(p, off)
}

// WriteAt writes to the real file, keeping the durable bytes it overwrites.
func (f *crashFile) WriteAt(p []byte, off int64) (int, error) {
	c := f.c
	if _, err := c.before(f.gen, Op{Kind: OpWrite, Path: f.path(), Off: off, Len: int64(len(p))}); err != nil {
		return 0, f.err("write", err)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.live(f.gen) {
		return 0, f.err("write", ErrCrashed)
	}
	n := f.n
	if n == nil || n.gone || off < 0 {
		return f.f.WriteAt(p, off)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	want := p
	var spaceErr error
	start := max(n.size, off)
	if growth := off + int64(len(p)) - start; growth > 0 {
		if got := c.reserve(growth); got < growth {
			want = p[:start-off+got]
			spaceErr = syscall.ENOSPC
		}
	}
	end := off + int64(len(want))
	if off < n.durSize && len(want) > 0 {
		if err := n.cover(c, off, min(end, n.durSize), false); err != nil {
			return 0, f.err("write", err)
		}
	}
	w, err := f.f.WriteAt(want, off)
	if w > 0 {
		n.size = max(n.size, off+int64(w))
		n.unlose(off, off+int64(w))
	}
	if err == nil && spaceErr != nil {
		err = f.err("write", spaceErr)
	}
	return w, err
}

// Sync fdatasyncs the real file and makes its current content durable.
func (f *crashFile) Sync() error {
	c := f.c
	drop, herr := c.before(f.gen, Op{Kind: OpSync, Path: f.path()})
	if herr != nil && !drop {
		return f.err("sync", herr)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.live(f.gen) {
		return f.err("sync", ErrCrashed)
	}
	n := f.n
	if n == nil || n.gone {
		if herr != nil {
			return f.err("sync", herr)
		}
		return f.f.Sync()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if herr != nil {
		if err := n.dropUnsynced(c); err != nil {
			return errors.Join(f.err("sync", herr), err)
		}
		return f.err("sync", herr)
	}
	if err := f.f.Sync(); err != nil {
		return err
	}
	n.synced()
	return nil
}

// Allocate checks the hooks and the space left; it changes neither the content nor the size, so
// it reserves nothing on the real file. With a space limit, a range larger than the space left
// fails with ENOSPC (and takes none of it).
func (f *crashFile) Allocate(off, n int64) error {
	c := f.c
	if _, err := c.before(f.gen, Op{Kind: OpAllocate, Path: f.path(), Off: off, Len: n}); err != nil {
		return f.err("allocate", err)
	}
	c.spaceMu.Lock()
	defer c.spaceMu.Unlock()
	if c.space >= 0 && c.space < n {
		return f.err("allocate", syscall.ENOSPC)
	}
	return nil
}

// Truncate changes the size of the real file, keeping the durable bytes it cuts.
func (f *crashFile) Truncate(size int64) error {
	c := f.c
	if _, err := c.before(f.gen, Op{Kind: OpTruncate, Path: f.path(), Off: size}); err != nil {
		return f.err("truncate", err)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.live(f.gen) {
		return f.err("truncate", ErrCrashed)
	}
	n := f.n
	if n == nil || n.gone || size < 0 {
		return f.f.Truncate(size)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return f.truncateLocked(size)
}

// truncateLocked truncates; n.mu is held.
func (f *crashFile) truncateLocked(size int64) error {
	n := f.n
	if size < n.durSize {
		if err := n.cover(f.c, size, n.durSize, false); err != nil {
			return f.err("truncate", err)
		}
	}
	if err := f.f.Truncate(size); err != nil {
		return err
	}
	if size < n.size {
		n.unlose(size, n.size)
	}
	n.size = size
	return nil
}

// Size returns the real file's size.
func (f *crashFile) Size() (int64, error) {
	if !f.c.live(f.gen) {
		return 0, f.err("stat", ErrCrashed)
	}
	return f.f.Size()
}

// Close closes the real file; it works after a crash too.
func (f *crashFile) Close() error { return f.f.Close() }

// Fd returns the real file's descriptor.
func (f *crashFile) Fd() uintptr { return f.f.Fd() }

// Name returns the name the file was opened with.
func (f *crashFile) Name() string { return f.name }

type entryKind int

const (
	kindNone entryKind = iota
	kindFile
	kindDir
	kindOther
)

// lookup returns the node currently named k, adopting an untracked regular file found on disk
// (durable as it is). mu is held exclusively.
func (c *CrashFS) lookup(k string) (*node, entryKind) {
	if n := c.cur[k]; n != nil {
		return n, kindFile
	}
	st, err := c.base.Stat(k)
	switch {
	case err != nil:
		return nil, kindNone
	case st.IsDir():
		return nil, kindDir
	case !st.Mode().IsRegular() || strings.HasPrefix(filepath.Base(k), hiddenPrefix):
		return nil, kindOther
	}
	n := &node{curName: k, realPath: k, size: st.Size()}
	if c.dur[k] == nil {
		// A file that is there and that we never saw: it predates us, it is durable.
		n.durName, n.durSize = k, st.Size()
		c.dur[k] = n
	}
	c.cur[k] = n
	c.nodes[n] = struct{}{}
	return n, kindFile
}

// drop forgets n if it is neither named nor durable, deleting its hidden copy. mu is held
// exclusively.
func (c *CrashFS) drop(n *node) {
	if n.curName != "" || n.durName != "" {
		return
	}
	if n.realPath != "" {
		c.base.Remove(n.realPath) // a trash copy
		n.realPath = ""
	}
	n.gone = true
	n.closeReader()
	delete(c.nodes, n)
}

// OpenFile opens or creates a file. With O_TRUNC, the truncation is undone by a crash until
// the file is synced. A created file exists durably only after SyncDir of its directory.
func (c *CrashFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	k := absPath(name)
	gen := c.gen.Load()
	if flag&(os.O_CREATE|os.O_TRUNC) != 0 {
		if _, err := c.before(gen, Op{Kind: OpCreate, Path: k}); err != nil {
			return nil, pathErr("open", name, err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live(gen) {
		return nil, pathErr("open", name, ErrCrashed)
	}
	n, kind := c.lookup(k)
	bf, err := c.base.OpenFile(name, flag&^os.O_TRUNC, perm)
	if err != nil {
		return nil, err
	}
	if kind == kindNone {
		// We created it.
		n = &node{curName: k, realPath: k}
		c.cur[k] = n
		c.nodes[n] = struct{}{}
	}
	f := &crashFile{c: c, f: bf, n: n, name: name, key: k, gen: gen}
	if flag&os.O_TRUNC != 0 {
		if n == nil {
			err = bf.Truncate(0)
		} else {
			n.mu.Lock()
			err = f.truncateLocked(0)
			n.mu.Unlock()
		}
		if err != nil {
			bf.Close()
			return nil, err
		}
	}
	return f, nil
}

// Remove removes a file (durably after SyncDir of its directory; until then a crash brings it
// back) or an empty directory (durably at once).
func (c *CrashFS) Remove(name string) error {
	k := absPath(name)
	gen := c.gen.Load()
	if _, err := c.before(gen, Op{Kind: OpRemove, Path: k}); err != nil {
		return pathErr("remove", name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live(gen) {
		return pathErr("remove", name, ErrCrashed)
	}
	n, kind := c.lookup(k)
	switch kind {
	case kindFile:
		return c.unlink(n, name)
	case kindDir:
		return c.removeDir(k, name)
	}
	return c.base.Remove(name)
}

// unlink removes n's current name: for good if it is not durable, else into the trash.
func (c *CrashFS) unlink(n *node, name string) error {
	if n.durName == "" {
		if err := c.base.Remove(n.realPath); err != nil {
			return err
		}
		delete(c.cur, n.curName)
		n.curName, n.realPath = "", ""
		c.drop(n)
		return nil
	}
	tp := c.hidden(filepath.Dir(n.realPath), "trash")
	if err := c.base.Rename(n.realPath, tp); err != nil {
		var le *os.LinkError
		if errors.As(err, &le) {
			err = le.Err
		}
		return pathErr("remove", name, err)
	}
	delete(c.cur, n.curName)
	n.curName, n.realPath = "", tp
	return nil
}

// removeDir removes an empty directory, durably; removals pending inside it become durable.
func (c *CrashFS) removeDir(k, name string) error {
	names, err := c.base.ReadDir(k)
	if err == nil && !slices.ContainsFunc(names, func(s string) bool { return !strings.HasPrefix(s, hiddenPrefix) }) {
		for n := range c.nodes {
			if n.curName == "" && n.realPath != "" && filepath.Dir(n.realPath) == k {
				c.base.Remove(n.realPath)
			}
		}
	}
	err = c.base.Remove(name)
	c.forget(k, err == nil)
	return err
}

// forget records the removal of the tree at k (all: it is entirely gone; else only what no
// longer exists on disk). Such removals are durable.
func (c *CrashFS) forget(k string, all bool) {
	for n := range c.nodes {
		if n.realPath != "" && under(n.realPath, k) {
			if !all {
				if _, err := c.base.Stat(n.realPath); err == nil {
					continue
				}
			}
			if n.curName != "" {
				delete(c.cur, n.curName)
			}
			if n.durName != "" {
				delete(c.dur, n.durName)
			}
			n.curName, n.durName, n.realPath = "", "", ""
			c.drop(n)
		} else if all && under(n.durName, k) {
			delete(c.dur, n.durName)
			n.durName = ""
			c.drop(n)
		}
	}
}

// RemoveAll removes a tree, durably at once.
func (c *CrashFS) RemoveAll(name string) error {
	k := absPath(name)
	gen := c.gen.Load()
	if _, err := c.before(gen, Op{Kind: OpRemoveAll, Path: k}); err != nil {
		return pathErr("removeall", name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live(gen) {
		return pathErr("removeall", name, ErrCrashed)
	}
	err := c.base.RemoveAll(name)
	c.forget(k, err == nil)
	return err
}

// Rename renames a file (durably after SyncDir of either directory; until then a crash undoes
// it, bringing back a replaced target) or a directory (durably at once).
func (c *CrashFS) Rename(oldname, newname string) error {
	ok, nk := absPath(oldname), absPath(newname)
	gen := c.gen.Load()
	if _, err := c.before(gen, Op{Kind: OpRename, Path: ok, NewPath: nk}); err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live(gen) {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: ErrCrashed}
	}
	src, kind := c.lookup(ok)
	if kind == kindDir {
		if err := c.base.Rename(oldname, newname); err != nil {
			return err
		}
		c.moveTree(ok, nk)
		return nil
	}
	if kind != kindFile || ok == nk {
		return c.base.Rename(oldname, newname)
	}
	dst, dkind := c.lookup(nk)
	trashed := ""
	if dkind == kindFile && dst.durName != "" {
		// Keep the durable target's content, to bring it back on a crash.
		trashed = c.hidden(filepath.Dir(nk), "trash")
		if err := c.base.Rename(nk, trashed); err != nil {
			return err
		}
	}
	if err := c.base.Rename(oldname, newname); err != nil {
		if trashed != "" {
			c.base.Rename(trashed, nk)
		}
		return err
	}
	if dst != nil {
		delete(c.cur, nk)
		dst.curName = ""
		if trashed != "" {
			dst.realPath = trashed
		} else {
			dst.realPath = ""
			c.drop(dst)
		}
	}
	delete(c.cur, ok)
	src.curName, src.realPath = nk, nk
	c.cur[nk] = src
	return nil
}

// moveTree records the (durable) rename of directory ok to nk.
func (c *CrashFS) moveTree(ok, nk string) {
	c.forget(nk, true) // entries of a directory nk replaced (it was empty)
	re := func(p string) string {
		if under(p, ok) {
			return nk + p[len(ok):]
		}
		return p
	}
	c.cur = make(map[string]*node)
	c.dur = make(map[string]*node)
	for n := range c.nodes {
		n.curName, n.durName, n.realPath = re(n.curName), re(n.durName), re(n.realPath)
		if n.curName != "" {
			c.cur[n.curName] = n
		}
		if n.durName != "" {
			c.dur[n.durName] = n
		}
	}
}

// MkdirAll creates a directory and its parents, durably at once.
func (c *CrashFS) MkdirAll(name string, perm os.FileMode) error {
	gen := c.gen.Load()
	if _, err := c.before(gen, Op{Kind: OpMkdirAll, Path: absPath(name)}); err != nil {
		return pathErr("mkdir", name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live(gen) {
		return pathErr("mkdir", name, ErrCrashed)
	}
	return c.base.MkdirAll(name, perm)
}

// ReadDir lists a directory, sorted, without CrashFS's hidden files.
func (c *CrashFS) ReadDir(name string) ([]string, error) {
	gen := c.gen.Load()
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.live(gen) {
		return nil, pathErr("readdir", name, ErrCrashed)
	}
	names, err := c.base.ReadDir(name)
	return slices.DeleteFunc(names, func(s string) bool { return strings.HasPrefix(s, hiddenPrefix) }), err
}

// Stat stats the real file.
func (c *CrashFS) Stat(name string) (os.FileInfo, error) {
	if c.down.Load() {
		return nil, pathErr("stat", name, ErrCrashed)
	}
	return c.base.Stat(name)
}

// SyncDir syncs the real directory and makes its entries durable: the files created, removed
// and renamed in it since its last sync now exist, or are gone, durably.
func (c *CrashFS) SyncDir(name string) error {
	k := absPath(name)
	gen := c.gen.Load()
	if _, err := c.before(gen, Op{Kind: OpSyncDir, Path: k}); err != nil {
		return pathErr("syncdir", name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live(gen) {
		return pathErr("syncdir", name, ErrCrashed)
	}
	if err := c.base.SyncDir(name); err != nil {
		return err
	}
	var work []string
	for p := range c.cur {
		if filepath.Dir(p) == k {
			work = append(work, p)
		}
	}
	for p := range c.dur {
		if filepath.Dir(p) == k {
			work = append(work, p)
		}
	}
	// Make dur[p] = cur[p] for every name of the directory; a rename from or to another
	// directory commits the other name too (a rename is atomic).
	for len(work) > 0 {
		p := work[len(work)-1]
		work = work[:len(work)-1]
		n, o := c.cur[p], c.dur[p]
		if n == o {
			continue
		}
		if o != nil {
			delete(c.dur, p)
			o.durName = ""
			if o.curName != "" {
				work = append(work, o.curName) // o was renamed away from p
			}
		}
		if n != nil {
			if q := n.durName; q != "" {
				delete(c.dur, q) // n was renamed from q
				work = append(work, q)
			}
			c.dur[p] = n
			n.durName = p
		}
		if o != nil {
			c.drop(o)
		}
	}
	return nil
}

// Crash simulates a power loss: from now on every operation of the FS and its Files fails with
// ErrCrashed (see the type's doc), and the real files are rewritten to their durable state:
// files not durably created are removed, removed files not durably removed come back, renames
// not durable are undone, and every file gets its durable content, plus the torn prefix opts
// keeps. Crash is idempotent (a second call, before Revive, does nothing) and safe to call from
// the OnOp callback. The error reports the real I/O that failed while restoring (best effort).
func (c *CrashFS) Crash(opts CrashOptions) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down.Load() {
		return nil
	}
	c.down.Store(true)
	c.gen.Add(1)

	nodes := make([]*node, 0, len(c.nodes))
	for n := range c.nodes {
		nodes = append(nodes, n)
	}
	slices.SortFunc(nodes, func(a, b *node) int {
		if a.durName != b.durName {
			return strings.Compare(a.durName, b.durName)
		}
		return strings.Compare(a.realPath, b.realPath)
	})
	rng := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))
	var errs []error
	var remove []string
	type move struct{ from, to string }
	var moves []move
	for _, n := range nodes {
		n.closeReader()
		if n.durName == "" {
			if n.realPath != "" {
				remove = append(remove, n.realPath)
			}
			continue
		}
		if n.realPath == "" {
			errs = append(errs, fmt.Errorf("vfs: crash: content of %s lost", n.durName))
			continue
		}
		target := n.durSize
		if n.size > n.durSize && opts.KeepUnsynced != nil {
			target += min(max(opts.KeepUnsynced(n.durName, n.durSize, n.size), 0), n.size-n.durSize)
		}
		var spans []span
		for _, s := range n.spans {
			if s.off < target {
				spans = append(spans, s.sub(s.off, min(s.end(), target)))
			}
		}
		rewrite := target != n.size || len(spans) > 0 || (opts.Fill != FillData && target > n.durSize)
		if !rewrite && n.realPath == n.durName {
			continue
		}
		tmp := c.hidden(filepath.Dir(n.durName), "tmp")
		if rewrite {
			if err := c.rebuild(n, tmp, target, spans, opts.Fill, rng); err != nil {
				errs = append(errs, err)
				c.base.Remove(tmp)
				continue
			}
			if n.realPath != n.durName {
				remove = append(remove, n.realPath)
			}
		} else if err := c.base.Rename(n.realPath, tmp); err != nil {
			errs = append(errs, err)
			continue
		}
		moves = append(moves, move{tmp, n.durName})
	}
	for _, p := range remove {
		if err := c.base.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, m := range moves {
		if err := c.base.Rename(m.from, m.to); err != nil {
			errs = append(errs, err)
		}
	}
	c.reset()
	return errors.Join(errs...)
}

// rebuild writes n's durable content (plus the kept prefix up to target) to a new file tmp.
func (c *CrashFS) rebuild(n *node, tmp string, target int64, spans []span, fill Fill, rng *rand.Rand) (err error) {
	perm := os.FileMode(0o644)
	if st, err := c.base.Stat(n.realPath); err == nil {
		perm = st.Mode().Perm()
	}
	src, err := c.base.OpenFile(n.realPath, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := c.base.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
	}()
	size, err := src.Size()
	if err != nil {
		return err
	}
	if err := copyPrefix(dst, src, min(size, target)); err != nil {
		return err
	}
	if err := dst.Truncate(target); err != nil {
		return err
	}
	if fill != FillData && target > n.durSize {
		buf := make([]byte, min(target-n.durSize, 1<<20))
		for off := n.durSize; off < target; {
			b := buf[:min(int64(len(buf)), target-off)]
			if fill == FillGarbage {
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
			} else {
				clear(b)
			}
			if _, err := dst.WriteAt(b, off); err != nil {
				return err
			}
			off += int64(len(b))
		}
	}
	var zeros []byte
	for _, s := range spans {
		if s.data != nil {
			if _, err := dst.WriteAt(s.data, s.off); err != nil {
				return err
			}
			continue
		}
		for off := s.off; off < s.end(); {
			if zeros == nil {
				zeros = make([]byte, 64<<10)
			}
			z := zeros[:min(int64(len(zeros)), s.end()-off)]
			if _, err := dst.WriteAt(z, off); err != nil {
				return err
			}
			off += int64(len(z))
		}
	}
	return nil
}

// copyPrefix copies the first n bytes of src to dst (both at offset 0).
func copyPrefix(dst, src File, n int64) error {
	if n <= 0 {
		return nil
	}
	if d, ok := dst.(*osFile); ok {
		if s, ok := src.(*osFile); ok {
			// Fresh descriptors, at offset 0: io.Copy uses copy_file_range.
			_, err := io.Copy(d.f, &io.LimitedReader{R: s.f, N: n})
			return err
		}
	}
	buf := make([]byte, min(n, 1<<20))
	for off := int64(0); off < n; {
		b := buf[:min(int64(len(buf)), n-off)]
		r, err := src.ReadAt(b, off)
		if r > 0 {
			if _, werr := dst.WriteAt(b[:r], off); werr != nil {
				return werr
			}
			off += int64(r)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Revive ends a crash: the FS works again, and tracking starts afresh from the files on disk,
// which are all durable as they are. The hooks (OnOp, faults, space budget) are cleared. Files
// opened before the crash keep failing with ErrCrashed. Revive fails if the FS has not crashed.
func (c *CrashFS) Revive() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.down.Load() {
		return errors.New("vfs: Revive without Crash")
	}
	c.reset()
	c.cfgMu.Lock()
	c.onOp, c.faults = nil, nil
	c.cfgMu.Unlock()
	c.SetSpaceBudget(-1)
	c.down.Store(false)
	return nil
}
