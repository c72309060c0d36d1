package raftnet

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// snapshotTimeoutScale: an InstallSnapshot gets Config.Timeout per this many bytes (as
// NetworkTransport's TimeoutScale).
const snapshotTimeoutScale = 256 << 10

// InstallSnapshot implements raft.Transport. The snapshot goes over a connection of its own
// (dialed for it, closed after), so that it never delays other groups' traffic: the request
// frame, the data in chunk frames of up to 64 KiB, an empty chunk, then the peer's response.
func (t *Transport) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	select {
	case <-t.closed:
		return raft.ErrTransportShutdown
	default:
	}
	payload, err := encodeMsgCopy(args)
	if err != nil {
		return err
	}
	nc, err := t.n.dialRaw(target, connSnapshot, t.n.timeout)
	if err != nil {
		return fmt.Errorf("raftnet: dial %s: %w", target, err)
	}
	defer nc.Close()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-t.closed:
			_ = nc.Close()
		case <-t.n.done:
			_ = nc.Close()
		case <-finished:
		}
	}()
	timeout := t.n.timeout * time.Duration(max(1, args.Size/snapshotTimeoutScale))
	_ = nc.SetDeadline(time.Now().Add(timeout))

	bw := bufio.NewWriterSize(nc, 4+frameHeaderLen+len(t.group)+snapshotChunk)
	const id = 1
	if _, err := bw.Write(appendFrame(nil, kindInstallSnapshot, id, t.group, payload)); err != nil {
		return err
	}
	buf := make([]byte, snapshotChunk)
	hdr := make([]byte, 0, 4+frameHeaderLen+len(t.group))
	for {
		k, rerr := io.ReadFull(data, buf)
		if k > 0 {
			if err := writeChunk(bw, hdr, t.group, buf[:k]); err != nil {
				return err
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("raftnet: reading snapshot: %w", rerr)
		}
	}
	if err := writeChunk(bw, hdr, t.group, nil); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	fr := frameReader{r: bufio.NewReaderSize(nc, 4096), max: t.n.maxFrame}
	f, err := fr.next()
	if err != nil {
		return fmt.Errorf("raftnet: reading snapshot response: %w", err)
	}
	if f.id != id || (f.kind != kindResponse && f.kind != kindError) {
		return fmt.Errorf("raftnet: unexpected frame kind %d id %d in reply to a snapshot", f.kind, f.id)
	}
	return decodeResult(result{kind: f.kind, payload: f.payload}, resp)
}

// writeChunk writes a chunk frame's header then its data (no copy of the data).
func writeChunk(w io.Writer, hdr []byte, group string, data []byte) error {
	h := appendFrame(hdr[:0], kindSnapshotChunk, 1, group, nil)
	// appendFrame wrote the length of an empty payload: patch in the data's length.
	n := frameHeaderLen + len(group) + len(data)
	h[0], h[1], h[2], h[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	if _, err := w.Write(h); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// serveSnapshot serves an inbound snapshot connection: one InstallSnapshot request whose data
// raft reads straight from the connection's chunk frames (memory: the connection's buffers).
func (n *Network) serveSnapshot(nc net.Conn, br *bufio.Reader) {
	fr := &frameReader{r: br, max: n.maxFrame}
	_ = nc.SetReadDeadline(time.Now().Add(n.timeout))
	f, err := fr.next()
	if err != nil {
		n.log.Debug().Err(err).Msg("raft snapshot request not read")
		return
	}
	if f.kind != kindInstallSnapshot {
		n.log.Warn().Uint8("kind", f.kind).Msg("raft snapshot connection without a snapshot request")
		return
	}
	id, group := f.id, f.group
	reply := func(frame []byte) {
		_ = nc.SetWriteDeadline(time.Now().Add(n.timeout))
		_, _ = nc.Write(frame)
	}
	t := n.group(group)
	if t == nil {
		reply(errorFrame(id, group, fmt.Sprintf("raftnet: no raft group %q on %s", group, n.cfg.Advertise)))
		return
	}
	req := new(raft.InstallSnapshotRequest)
	if err := decodeMsg(f.payload, req); err != nil {
		reply(errorFrame(id, group, "raftnet: decoding snapshot request: "+err.Error()))
		return
	}
	respCh := make(chan raft.RPCResponse, 1)
	got := make(chan raft.RPCResponse, 1)
	in := &inbound{
		rpc:    raft.RPC{Command: req, Reader: &chunkReader{fr: fr, nc: nc, id: id, timeout: n.timeout}, RespChan: respCh},
		respCh: respCh,
		reply:  func(r raft.RPCResponse) { got <- r },
	}
	select {
	case t.inbox <- in:
	case <-t.closed:
		return
	case <-n.done:
		return
	}
	select {
	case r := <-got:
		reply(responseFrame(id, group, r))
	case <-t.closed:
	case <-n.done:
	}
}

// chunkReader is the snapshot data raft reads: the payloads of the chunk frames that follow the
// request, up to the empty one.
type chunkReader struct {
	fr      *frameReader
	nc      net.Conn
	id      uint64
	timeout time.Duration
	cur     []byte
	err     error
}

var errBadChunk = errors.New("raftnet: snapshot stream interrupted by a frame that is not a chunk")

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		_ = r.nc.SetReadDeadline(time.Now().Add(r.timeout))
		f, err := r.fr.next()
		if err != nil {
			r.err = noEOF(err)
			return 0, r.err
		}
		if f.kind != kindSnapshotChunk || f.id != r.id {
			r.err = errBadChunk
			return 0, r.err
		}
		if len(f.payload) == 0 {
			r.err = io.EOF
			return 0, io.EOF
		}
		r.cur = f.payload
	}
	k := copy(p, r.cur)
	r.cur = r.cur[k:]
	return k, nil
}
