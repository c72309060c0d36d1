package node

import (
	"context"
	"errors"
	"net"
	"sync"
)

// netsplit cuts the Raft links between brokers of a testCluster: a cut pair's connections
// are closed and new ones refused, both ways. Client (gRPC) and Serf traffic is untouched,
// as when a network partition cuts only the brokers' replication links.
type netsplit struct {
	mu    sync.Mutex
	addrs map[string]int32 // broker port -> id
	cut   map[[2]int32]bool
	conns map[[2]int32][]net.Conn
}

func newNetsplit() *netsplit {
	return &netsplit{addrs: map[string]int32{}, cut: map[[2]int32]bool{}, conns: map[[2]int32][]net.Conn{}}
}

// register names the broker at addr.
func (s *netsplit) register(id int32, addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addrs[addr] = id
}

var errCut = errors.New("netsplit: link cut")

func (s *netsplit) idOf(addr string) int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.addrs[addr]; ok {
		return id
	}
	return -1
}

// dialer returns broker from's Raft dialer.
func (s *netsplit) dialer(from int32) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		to := s.idOf(addr)
		s.mu.Lock()
		cut := s.cut[[2]int32{from, to}]
		s.mu.Unlock()
		if cut {
			return nil, errCut
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.cut[[2]int32{from, to}] {
			_ = conn.Close()
			return nil, errCut
		}
		k := [2]int32{from, to}
		s.conns[k] = append(s.conns[k], conn)
		return conn, nil
	}
}

// isolate cuts every link between id and the other brokers.
func (s *netsplit) isolate(id int32, others ...int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range others {
		for _, k := range [][2]int32{{id, o}, {o, id}} {
			s.cut[k] = true
			for _, c := range s.conns[k] {
				_ = c.Close()
			}
			delete(s.conns, k)
		}
	}
}

// heal restores every link.
func (s *netsplit) heal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.cut)
}

// cutOneWay cuts only the connections broker from dials to broker to (what from sends as
// requests: a leader's appends to that follower), leaving to's own connections to from
// (its probes of from) working.
func (s *netsplit) cutOneWay(from, to int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := [2]int32{from, to}
	s.cut[k] = true
	for _, c := range s.conns[k] {
		_ = c.Close()
	}
	delete(s.conns, k)
}
