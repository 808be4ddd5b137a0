package bfd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// ErrClosed is returned by every method called after Close.
var ErrClosed = errors.New("bfd: server closed")

// Event is one state change of a session.
type Event struct {
	Peer  netip.Addr
	State State
	Diag  Diag
	// RemoteState is the peer's state from its last packet (Down after a detection
	// timeout). See PeerAdminDown.
	RemoteState State
	Time        time.Time
}

// PeerAdminDown reports a Down caused by the peer shutting the session administratively
// rather than by a failure; RFC 5882 says not to tear down the client protocol for it.
func (e Event) PeerAdminDown() bool {
	return e.State == Down && e.Diag == DiagNeighborDown && e.RemoteState == AdminDown
}

// SessionState is a snapshot of one session.
type SessionState struct {
	Peer, Local         netip.Addr
	State, RemoteState  State
	Diag                Diag
	Since               time.Time
	LocalDiscriminator  uint32
	RemoteDiscriminator uint32
	Config              Config
	// TxInterval is the negotiated transmit interval before jitter; DetectTime how long
	// silence from the peer is tolerated (0 until it is heard from).
	TxInterval, DetectTime time.Duration
	RemoteMultiplier       uint8
	Polling                bool
	Counters               Counters
}

// eventBuffer is the capacity of the Events channel.
const eventBuffer = 128

// goodbyes is how many AdminDown packets Remove sends before forgetting the session.
const goodbyes = 3

// sender transmits one encoded packet; a seam so the loop can be tested without sockets.
type sender interface {
	send(b, oob []byte, dst netip.AddrPort) error
}

// rxMsg is a validated packet handed from a reader to the loop by value (no allocation).
type rxMsg struct {
	p       packet
	src     netip.Addr
	ifindex int // arrival interface, 0 = unknown
	at      time.Time
}

// Server runs BFD sessions over one set of sockets. All session state belongs to a
// single loop goroutine; the methods talk to it over channels, so there is no lock and
// nothing on the packet path allocates.
type Server struct {
	log    *slog.Logger
	out    sender
	conns  []*net.UDPConn // receive sockets (port 3784) and send sockets, for Close
	fams   [2]bool        // [0] IPv4 served, [1] IPv6 served
	rxCh   chan rxMsg
	reqCh  chan func()
	events chan Event
	// iface returns the ifindex of the route to a peer (0 = unknown); nil turns the
	// arrival interface check off (tests without sockets). Called on the loop only.
	iface  func(netip.Addr) int
	routes *routeIfaces // behind iface; closed by Close once the loop has ended
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	// Owned by the loop goroutine.
	byDisc  map[uint32]*session
	byPeer  map[netip.Addr]*session // keyed without zone
	buf     [headerLen]byte
	dropped uint64 // events dropped from a full Events channel
	// independent sets the C bit (RFC 5880 4.1): this BFD does not share fate with the
	// control plane, so the peer may read our Down as a forwarding failure even while
	// BGP restarts.
	independent bool
}

// Option tunes a Server at Listen.
type Option func(*Server)

// ControlPlaneIndependent sets the C bit on every packet: for a BFD that runs apart from
// the BGP speaker (hostroute-node bfd) and keeps its sessions while the speaker restarts.
func ControlPlaneIndependent() Option {
	return func(s *Server) { s.independent = true }
}

func newServer(log *slog.Logger, out sender) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		log:    log.With("component", "bfd"),
		out:    out,
		rxCh:   make(chan rxMsg, 64),
		reqCh:  make(chan func()),
		events: make(chan Event, eventBuffer),
		done:   make(chan struct{}),
		byDisc: map[uint32]*session{},
		byPeer: map[netip.Addr]*session{},
	}
}

// Listen opens the sockets in the calling thread's network namespace and starts the
// protocol. local is the address to receive and send on; the zero Addr means every
// address of both families (IPv6 is skipped with a warning where the namespace has
// none), 0.0.0.0 or :: every address of one family. Only one Server per namespace
// and address can own port 3784.
func Listen(log *slog.Logger, local netip.Addr, opts ...Option) (*Server, error) {
	sk := &sockets{}
	s := newServer(log, sk)
	for _, o := range opts {
		o(s)
	}
	ri, err := newRouteIfaces()
	if err != nil {
		return nil, err
	}
	s.iface, s.routes = ri.lookup, ri
	var rxs []*net.UDPConn
	fams := []bool{true, true}
	if local.IsValid() {
		local = local.Unmap()
		fams = []bool{local.Is4(), local.Is6()}
	}
	for i, want := range fams {
		if !want {
			continue
		}
		v6 := i == 1
		rx, tx, err := openFamily(local, v6)
		if err != nil {
			if v6 && !local.IsValid() && isNoIPv6(err) {
				s.log.Warn("IPv6 unavailable, serving IPv4 only", "err", err)
				continue
			}
			for _, c := range s.conns {
				c.Close()
			}
			ri.close()
			return nil, err
		}
		s.conns = append(s.conns, rx, tx)
		s.fams[i] = true
		sk.tx[i] = tx
		rxs = append(rxs, rx)
	}
	for _, rx := range rxs {
		s.wg.Add(1)
		go s.read(rx)
	}
	s.wg.Add(1)
	go s.loop()
	return s, nil
}

// Add starts a session with peer, or updates it: Add is idempotent, and a changed
// Config on an Up session starts a Poll Sequence. local is our source address (the
// zero or unspecified Addr lets the routing table choose). Add during Remove's goodbyes
// revives the session.
func (s *Server) Add(peer, local netip.Addr, cfg Config) error {
	peer = peer.Unmap()
	if !peer.IsValid() || peer.IsUnspecified() || peer.IsMulticast() {
		return fmt.Errorf("bfd: add %v: not a unicast peer address", peer)
	}
	if local = local.Unmap(); local.IsValid() && local.Is4() != peer.Is4() {
		return fmt.Errorf("bfd: add %v: local address %v is of the other family", peer, local)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return fmt.Errorf("add %v: %w", peer, err)
	}
	fam := 0
	if peer.Is6() {
		fam = 1
	}
	if !s.fams[fam] {
		return fmt.Errorf("bfd: add %v: this server does not serve the address family", peer)
	}
	oob := pktinfo(local)
	return s.do(func() { s.add(peer, local, oob, cfg, time.Now()) })
}

// Remove sends AdminDown to the peer a few times at the negotiated interval, then
// forgets the session. Removing an unknown peer is not an error.
func (s *Server) Remove(peer netip.Addr) error {
	return s.do(func() { s.remove(peer.Unmap().WithZone(""), time.Now()) })
}

// Events delivers state changes. It never blocks the protocol: when the consumer falls
// eventBuffer events behind, the oldest is dropped (and counted in a log line), so the
// newest state of every session still arrives; Sessions is the authoritative view. The
// channel is closed by Close.
func (s *Server) Events() <-chan Event { return s.events }

// Sessions returns a snapshot of every session, ordered by peer address.
func (s *Server) Sessions() []SessionState {
	var out []SessionState
	_ = s.do(func() {
		for _, x := range s.byPeer {
			out = append(out, SessionState{
				Peer: x.peer, Local: x.local, State: x.state, RemoteState: x.remoteState,
				Diag: x.diag, Since: x.since, LocalDiscriminator: x.localDisc,
				RemoteDiscriminator: x.remoteDisc, Config: x.cfg, TxInterval: x.txInterval(),
				DetectTime: x.detectTime(), RemoteMultiplier: x.remoteMult,
				Polling: x.polling, Counters: x.stats,
			})
		}
	})
	slices.SortFunc(out, func(a, b SessionState) int { return a.Peer.Compare(b.Peer) })
	return out
}

// Shutdown tells every peer the sessions are going down administratively (AdminDown,
// goodbyes times at the negotiated interval), waits for that to be sent or for timeout,
// then closes. A peer that follows RFC 5882 3.2 then does not treat our going away as a
// forwarding failure: the way for a restarting agent whose node keeps forwarding.
func (s *Server) Shutdown(timeout time.Duration) error {
	now := time.Now()
	if err := s.do(func() {
		for key := range s.byPeer {
			s.remove(key, now)
		}
	}); err != nil {
		return err
	}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		left := 0
		if err := s.do(func() { left = len(s.byPeer) }); err != nil || left == 0 {
			break
		}
	}
	return s.Close()
}

// Close stops the protocol without telling peers (see the package doc), closes the
// sockets and then the Events channel. It is safe to call more than once.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		for _, c := range s.conns {
			err = errors.Join(err, c.Close())
		}
		s.wg.Wait()
		if s.routes != nil {
			s.routes.close()
		}
		close(s.events)
	})
	return err
}

// do runs f on the loop goroutine and waits for it.
func (s *Server) do(f func()) error {
	fin := make(chan struct{})
	select {
	case s.reqCh <- func() { f(); close(fin) }:
	case <-s.done:
		return ErrClosed
	}
	<-fin // the loop runs a request as soon as it has received it
	return nil
}

// read feeds valid packets from one receive socket to the loop. Validation is
// stateless, so it happens here, off the loop.
func (s *Server) read(c *net.UDPConn) {
	defer s.wg.Done()
	var b [512]byte
	var oob [128]byte
	for {
		n, oobn, _, from, err := c.ReadMsgUDPAddrPort(b[:], oob[:])
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("receive failed", "err", err)
			select {
			case <-s.done:
				return
			case <-time.After(10 * time.Millisecond): // don't spin on a persistent error
			}
			continue
		}
		var m rxMsg
		if err := s.check(b[:n], oob[:oobn], &m.p); err != nil {
			if s.log.Enabled(context.Background(), slog.LevelDebug) {
				s.log.Debug("packet discarded", "from", from, "err", err)
			}
			continue
		}
		m.src, m.ifindex, m.at = from.Addr().Unmap(), arrivalIface(oob[:oobn]), time.Now()
		select {
		case s.rxCh <- m:
		case <-s.done:
			return
		}
	}
}

// check applies the single-hop TTL rule (RFC 5881 5) and the packet rules.
func (s *Server) check(b, oob []byte, p *packet) error {
	if ttl, ok := hopLimit(oob); !ok || ttl != ttlSingle {
		return errTTL
	}
	return decode(b, p)
}

// newDisc picks a random, non-zero local discriminator not in use (RFC 5880 6.8.1: random
// makes a spoofed Your Discriminator hard to guess).
func (s *Server) newDisc() uint32 {
	for {
		d := rand.Uint32()
		if _, used := s.byDisc[d]; d != 0 && !used {
			return d
		}
	}
}
