package broker

import (
	"io"
	"net"
	"sync"
)

// trackingListener remembers every connection it accepted until the connection is closed, so
// that Shutdown can close the ones nobody else will: connections still being sniffed by cmux
// (cmux's Serve waits for them) and connections handed to a Config.Mux listener.
type trackingListener struct {
	net.Listener

	mu    sync.Mutex
	conns map[*trackedConn]struct{} // guarded by mu
	done  bool                      // guarded by mu: closeConns ran; new conns are closed at once
}

func newTrackingListener(l net.Listener) *trackingListener {
	return &trackingListener{Listener: l, conns: make(map[*trackedConn]struct{})}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	if l.done {
		l.mu.Unlock()
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	return tc, nil
}

// closeConns closes every connection still open and any accepted later.
func (l *trackingListener) closeConns() {
	l.mu.Lock()
	l.done = true
	conns := make([]io.Closer, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c.Conn)
	}
	clear(l.conns)
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l *trackingListener
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}
