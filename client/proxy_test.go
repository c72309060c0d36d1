package client_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/runnel-io/runnel/client"
)

// proxy forwards TCP connections to a broker, so that a test can cut them (Break) or make the
// broker unreachable (Close) without stopping the broker.
type proxy struct {
	ln      net.Listener
	backend string

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	// held, while set, keeps what the broker sends from reaching the client (HoldResponses).
	holdMu sync.Mutex
	held   chan struct{} // closed on release; nil when not held
}

func newProxy(t testing.TB, backend string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, backend: backend, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

// viaProxy makes a client connect through px whatever the address: the broker's metadata
// names its own address, which would bypass the proxy.
func viaProxy(px *proxy) client.Option {
	return client.WithDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", px.Addr())
	})
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.backend)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, b) {
			return
		}
		p.wg.Add(2)
		go p.pipeDown(c, b)
		go p.pipe(b, c)
	}
}

func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// pipeDown copies the broker's bytes to the client, waiting while responses are held.
func (p *proxy) pipeDown(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.holdMu.Lock()
			held := p.held
			p.holdMu.Unlock()
			if held != nil {
				<-held
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// HoldResponses keeps what brokers send from reaching the clients (requests still reach the
// brokers) until the returned function is called.
func (p *proxy) HoldResponses() (release func()) {
	ch := make(chan struct{})
	p.holdMu.Lock()
	p.held = ch
	p.holdMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.holdMu.Lock()
			p.held = nil
			p.holdMu.Unlock()
			close(ch)
		})
	}
}

// Break cuts every open connection; new ones are still accepted.
func (p *proxy) Break() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// Close stops accepting and cuts every connection.
func (p *proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.Break()
	p.wg.Wait()
}
