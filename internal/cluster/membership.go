// Membership: Serf gossip among the brokers. A failure detector and an address book, nothing
// more: what Serf reports is a proposal the metadata leader commits (or not) through Raft.

package cluster

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
	"github.com/rs/zerolog"
)

// Serf tags a broker gossips.
const (
	tagID          = "id"   // broker id, decimal
	tagAddr        = "addr" // advertised gRPC address
	tagRaftAddr    = "raft" // Raft transport address (the same cmux port in runneld)
	tagIncarnation = "inc"  // the data directory's incarnation id
	tagApplied     = "ap"   // a non-voter's applied metadata index: how far it has caught up
)

// MemberStatus is Serf's view of a member.
type MemberStatus string

// Member statuses.
const (
	MemberAlive   MemberStatus = "alive"
	MemberLeaving MemberStatus = "leaving"
	MemberLeft    MemberStatus = "left"
	MemberFailed  MemberStatus = "failed"
)

// Member is a broker as Serf sees it.
type Member struct {
	ID          int32
	Addr        string // advertised gRPC address
	RaftAddr    string
	Incarnation string
	Status      MemberStatus
	Applied     uint64 // a non-voter's applied metadata index (0 if not reported)
}

// MemberEventType says what happened to a member.
type MemberEventType string

// Member events, as Serf names them.
const (
	MemberJoin   MemberEventType = "join"
	MemberLeave  MemberEventType = "leave"
	MemberFail   MemberEventType = "failed"
	MemberUpdate MemberEventType = "update"
	MemberReap   MemberEventType = "reap"
)

// MemberEvent is one Serf membership event about one broker.
type MemberEvent struct {
	Type   MemberEventType
	Member Member
}

// MembershipConfig configures Membership.
type MembershipConfig struct {
	BrokerID    int32
	Addr        string // advertised gRPC address
	RaftAddr    string
	Incarnation string
	// Bind is the Serf address, host:port (port 0: any free port; Addr reports it).
	Bind string
	// Advertise is the Serf address others dial, if not Bind's.
	Advertise string
	Logger    zerolog.Logger
	// Tune, if set, adjusts Serf's configuration (tests shorten the gossip intervals).
	Tune func(*serf.Config)
}

// Membership runs Serf and translates its events.
//
// Events go to Events(), a buffered channel: when it is full (nobody reading, or a burst)
// events are dropped, counted by Dropped. Consumers treat events as hints and read Members
// for the truth, as the metadata leader does.
type Membership struct {
	serf   *serf.Serf
	events chan MemberEvent
	log    zerolog.Logger

	mu          sync.Mutex
	tags        map[string]string // under mu
	dropped     uint64            // under mu
	wantApplied uint64            // under mu: the applied index to gossip
	tagKick     chan struct{}     // wakes tagger (cap 1)

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// NewMembership starts Serf on cfg.Bind; Join then contacts seeds.
func NewMembership(cfg MembershipConfig) (*Membership, error) {
	host, portStr, err := net.SplitHostPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: serf bind address %q: %w", cfg.Bind, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("cluster: serf bind address %q: %w", cfg.Bind, err)
	}
	m := &Membership{
		events: make(chan MemberEvent, 1024),
		log:    cfg.Logger.With().Str("component", "serf").Logger(),
		tags: map[string]string{
			tagID:          strconv.Itoa(int(cfg.BrokerID)),
			tagAddr:        cfg.Addr,
			tagRaftAddr:    cfg.RaftAddr,
			tagIncarnation: cfg.Incarnation,
		},
		done:    make(chan struct{}),
		tagKick: make(chan struct{}, 1),
	}
	sc := serf.DefaultConfig()
	sc.NodeName = "broker-" + strconv.Itoa(int(cfg.BrokerID))
	sc.Tags = cloneTags(m.tags)
	ml := memberlist.DefaultLANConfig()
	ml.BindAddr, ml.BindPort = host, port
	ml.AdvertisePort = port
	if cfg.Advertise != "" {
		ah, ap, err := net.SplitHostPort(cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("cluster: serf advertise address %q: %w", cfg.Advertise, err)
		}
		if net.ParseIP(ah) == nil {
			// memberlist takes an IP address only: resolve a name (a container's hostname).
			ips, err := net.LookupIP(ah)
			if err != nil || len(ips) == 0 {
				return nil, fmt.Errorf("cluster: serf advertise address %q: cannot resolve %q: %v", cfg.Advertise, ah, err)
			}
			ah = ips[0].String()
		}
		ml.AdvertiseAddr = ah
		if ml.AdvertisePort, err = strconv.Atoi(ap); err != nil {
			return nil, fmt.Errorf("cluster: serf advertise address %q: %w", cfg.Advertise, err)
		}
	}
	// A broker restarted at another address under its id may take its name over once the
	// old one is dead for this long (broker ids are unique, so no one else claims it).
	ml.DeadNodeReclaimTime = 10 * time.Second
	logw := log.New(serfLogWriter{m.log}, "", 0)
	ml.Logger = logw
	sc.Logger = logw
	sc.MemberlistConfig = ml
	serfEvents := make(chan serf.Event, 256)
	sc.EventCh = serfEvents
	if cfg.Tune != nil {
		cfg.Tune(sc)
	}
	s, err := serf.Create(sc)
	if err != nil {
		return nil, fmt.Errorf("cluster: start serf on %s: %w", cfg.Bind, err)
	}
	m.serf = s
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		m.translate(serfEvents)
	}()
	go func() {
		defer m.wg.Done()
		m.tagger()
	}()
	return m, nil
}

// serfLogWriter sends Serf's and memberlist's log lines to zerolog at debug level
// ([ERR] and [WARN] lines at their level).
type serfLogWriter struct{ log zerolog.Logger }

func (w serfLogWriter) Write(p []byte) (int, error) {
	s := string(p)
	for len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	switch {
	case strings.Contains(s, "[ERR]"):
		w.log.Error().Msg(s)
	case strings.Contains(s, "[WARN]"):
		w.log.Warn().Msg(s)
	default:
		w.log.Debug().Msg(s)
	}
	return len(p), nil
}

var _ io.Writer = serfLogWriter{}

func (m *Membership) translate(in <-chan serf.Event) {
	for {
		select {
		case <-m.done:
			return
		case <-m.serf.ShutdownCh():
			return
		case e := <-in:
			me, ok := e.(serf.MemberEvent)
			if !ok {
				continue
			}
			var t MemberEventType
			switch me.Type {
			case serf.EventMemberJoin:
				t = MemberJoin
			case serf.EventMemberLeave:
				t = MemberLeave
			case serf.EventMemberFailed:
				t = MemberFail
			case serf.EventMemberUpdate:
				t = MemberUpdate
			case serf.EventMemberReap:
				t = MemberReap
			default:
				continue
			}
			for _, sm := range me.Members {
				mem, ok := memberOf(sm)
				if !ok {
					continue
				}
				select {
				case m.events <- MemberEvent{Type: t, Member: mem}:
				default:
					m.mu.Lock()
					m.dropped++
					m.mu.Unlock()
				}
			}
		}
	}
}

// memberOf reads a Serf member's tags; ok is false for a member that is not a broker.
func memberOf(sm serf.Member) (Member, bool) {
	id, err := strconv.ParseInt(sm.Tags[tagID], 10, 32)
	if err != nil || id < 0 || sm.Tags[tagIncarnation] == "" {
		return Member{}, false
	}
	mem := Member{
		ID: int32(id), Addr: sm.Tags[tagAddr], RaftAddr: sm.Tags[tagRaftAddr],
		Incarnation: sm.Tags[tagIncarnation],
	}
	if ap, err := strconv.ParseUint(sm.Tags[tagApplied], 10, 64); err == nil {
		mem.Applied = ap
	}
	switch sm.Status {
	case serf.StatusAlive:
		mem.Status = MemberAlive
	case serf.StatusLeaving:
		mem.Status = MemberLeaving
	case serf.StatusLeft:
		mem.Status = MemberLeft
	case serf.StatusFailed:
		mem.Status = MemberFailed
	default:
		return Member{}, false
	}
	return mem, true
}

// Events returns the channel of membership events (see the type's doc on drops).
func (m *Membership) Events() <-chan MemberEvent { return m.events }

// Dropped returns how many events were dropped because Events was full.
func (m *Membership) Dropped() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dropped
}

// Addr returns the Serf address this broker gossips on (with the port chosen for port 0).
func (m *Membership) Addr() string {
	lm := m.serf.LocalMember()
	return net.JoinHostPort(lm.Addr.String(), strconv.Itoa(int(lm.Port)))
}

// Join contacts the seeds; it succeeds if at least one answered.
func (m *Membership) Join(seeds []string) error {
	if len(seeds) == 0 {
		return nil
	}
	n, err := m.serf.Join(seeds, true)
	if n == 0 {
		if err == nil {
			err = errors.New("no seed answered")
		}
		return fmt.Errorf("cluster: join %v: %w", seeds, err)
	}
	return nil
}

// Members returns every broker Serf knows, including failed and left ones not yet reaped.
func (m *Membership) Members() []Member {
	var out []Member
	for _, sm := range m.serf.Members() {
		if mem, ok := memberOf(sm); ok {
			out = append(out, mem)
		}
	}
	return out
}

// SetApplied gossips this broker's applied metadata index (a non-voter reports how far it
// has caught up), or removes the tag for 0. It does not wait: Serf's SetTags waits for
// the broadcast (up to its BroadcastTimeout), so a goroutine applies the latest value.
func (m *Membership) SetApplied(index uint64) {
	m.mu.Lock()
	m.wantApplied = index
	m.mu.Unlock()
	select {
	case m.tagKick <- struct{}{}:
	default:
	}
}

// tagger applies SetApplied's latest value to the Serf tags.
func (m *Membership) tagger() {
	for {
		select {
		case <-m.done:
			return
		case <-m.tagKick:
		}
		m.mu.Lock()
		v := strconv.FormatUint(m.wantApplied, 10)
		if m.wantApplied == 0 {
			v = ""
		}
		if m.tags[tagApplied] == v {
			m.mu.Unlock()
			continue
		}
		if v == "" {
			delete(m.tags, tagApplied)
		} else {
			m.tags[tagApplied] = v
		}
		tags := cloneTags(m.tags)
		m.mu.Unlock()
		if err := m.serf.SetTags(tags); err != nil {
			m.log.Debug().Err(err).Msg("gossip applied index")
		}
	}
}

// Leave announces a graceful departure (the metadata leader moves this broker's replicas).
func (m *Membership) Leave() error { return m.serf.Leave() }

// Close stops Serf without leaving (others see a failure) and waits for its goroutine.
func (m *Membership) Close() error {
	var err error
	m.closeOnce.Do(func() {
		err = m.serf.Shutdown()
		close(m.done)
		m.wg.Wait()
	})
	return err
}

func cloneTags(t map[string]string) map[string]string {
	out := make(map[string]string, len(t))
	for k, v := range t {
		out[k] = v
	}
	return out
}
