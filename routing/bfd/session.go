package bfd

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"
)

// Config is what one session asks of the link. Zero fields take the defaults.
type Config struct {
	// DesiredMinTx is how often we would like to send once Up (default 100 ms). While
	// the session is not Up we advertise and use at least 1 s (RFC 5880 6.8.3).
	DesiredMinTx time.Duration
	// RequiredMinRx is the fastest we accept packets (default 100 ms). With the peer's
	// multiplier and its DesiredMinTx it sets how fast we notice the peer going silent.
	RequiredMinRx time.Duration
	// Multiplier is how many of our packets the peer may miss (default 3).
	Multiplier uint8
}

// Defaults and limits.
const (
	DefaultInterval   = 100 * time.Millisecond
	DefaultMultiplier = 3
	// MinInterval is the smallest interval accepted: below it Go's scheduler and GC
	// pauses on a busy node would be indistinguishable from a dead link and flap BGP.
	MinInterval = 10 * time.Millisecond
	// slowTx is the floor of our transmit interval while not Up (RFC 5880 6.8.3).
	slowTx = time.Second
)

// withDefaults fills zero fields and rejects intervals we cannot honour.
func (c Config) withDefaults() (Config, error) {
	if c.DesiredMinTx == 0 {
		c.DesiredMinTx = DefaultInterval
	}
	if c.RequiredMinRx == 0 {
		c.RequiredMinRx = DefaultInterval
	}
	if c.Multiplier == 0 {
		c.Multiplier = DefaultMultiplier
	}
	for _, d := range []time.Duration{c.DesiredMinTx, c.RequiredMinRx} {
		if d < MinInterval || d > time.Hour {
			return c, fmt.Errorf("bfd: interval %v outside [%v, 1h]", d, MinInterval)
		}
	}
	return c, nil
}

// detectionTime is how long we wait for a packet before declaring the peer gone in
// asynchronous mode (RFC 5880 6.8.4): the peer's multiplier times the slower of the
// rate we allow and the rate it wants to send at.
func detectionTime(remoteMult uint8, localRequiredMinRx, remoteDesiredMinTx time.Duration) time.Duration {
	return time.Duration(remoteMult) * max(localRequiredMinRx, remoteDesiredMinTx)
}

// jittered returns d reduced by a random 0–25 % (RFC 5880 6.8.7), or by 10–25 % when our
// multiplier is 1, so that a single packet is never late by jitter alone.
func jittered(d time.Duration, mult uint8) time.Duration {
	hi := int64(100)
	if mult == 1 {
		hi = 90
	}
	lo := int64(d) * 75 / 100
	span := int64(d) * (hi - 75) / 100
	return time.Duration(lo + rand.Int64N(span+1))
}

// Counters of one session, reported by Sessions.
type Counters struct {
	RxPackets, TxPackets uint64
	TxErrors             uint64 // send failed (e.g. link down): counted, logged once per outage
	Discarded            uint64 // matched this session but discarded (wrong source or arrival interface, AdminDown)
	Ups, Downs           uint64 // transitions into Up and out of Up
	PollsAnswered        uint64
}

// session is the RFC 5880 state of one peer. It is pure: it neither reads the clock nor
// touches sockets, so the state machine can be tested in a table; the Server's loop owns
// every session and is the only goroutine that touches one.
type session struct {
	peer, local netip.Addr
	dst         netip.AddrPort
	oob         []byte // IP_PKTINFO/IPV6_PKTINFO selecting local as the source, or nil
	cfg         Config

	state, remoteState State
	diag               Diag
	localDisc          uint32
	remoteDisc         uint32
	remoteMinRx        time.Duration // bfd.RemoteMinRxInterval; 0 = peer wants no periodic packets
	remoteDesiredTx    time.Duration
	remoteMult         uint8 // 0 = nothing heard within a detection time: no detection timer

	// desiredTx is bfd.DesiredMinTxInterval as advertised: ≥ 1 s unless Up. txInUse and
	// rxInUse are the values in force, which during a Poll Sequence lag the advertised
	// ones in the safe direction (6.8.3: send no slower, detect no sooner, until Final).
	desiredTx        time.Duration
	txInUse, rxInUse time.Duration
	polling          bool
	removing         int // AdminDown packets still to send before the session is dropped

	since, lastRx, lastTx, nextTx time.Time
	// earlyTx is the earliest the next periodic packet may go (75 % of the interval after
	// the last: RFC 5880 6.8.7's jitter range); zero for "not before nextTx". The loop
	// sends a packet that is due within its window whenever it is awake anyway, so that
	// many sessions need few wake-ups.
	earlyTx   time.Time
	txIval    time.Duration // the interval nextTx was scheduled with
	txFailing bool
	stats     Counters

	// ifindex is the interface of the route to the peer, where its packets must
	// arrive (0 = unknown, not checked), looked up at ifCheckedAt.
	ifindex     int
	ifCheckedAt time.Time
}

func newSession(peer, local netip.Addr, cfg Config, disc uint32, now time.Time) *session {
	s := &session{
		peer: peer, local: local, cfg: cfg,
		dst:   netip.AddrPortFrom(peer, port),
		state: Down, remoteState: Down,
		localDisc:   disc,
		remoteMinRx: time.Microsecond, // RFC 5880 6.8.1 initial value
		since:       now,
		nextTx:      now, // say hello at once
	}
	s.slow()
	return s
}

// slow returns to the not-Up intervals: at least 1 s out, no poll in progress.
func (s *session) slow() {
	s.polling = false
	s.desiredTx = max(s.cfg.DesiredMinTx, slowTx)
	s.txInUse, s.rxInUse = s.desiredTx, s.cfg.RequiredMinRx
}

func (s *session) startPoll() {
	s.polling = true
	s.txInUse = min(s.txInUse, s.desiredTx)
	s.rxInUse = max(s.rxInUse, s.cfg.RequiredMinRx)
}

func (s *session) finishPoll() {
	s.polling = false
	s.txInUse, s.rxInUse = s.desiredTx, s.cfg.RequiredMinRx
}

// setState moves to st with diag d and adjusts the intervals that depend on being Up.
func (s *session) setState(st State, d Diag, now time.Time) {
	old := s.state
	s.state, s.diag, s.since = st, d, now
	switch {
	case st == Up:
		s.stats.Ups++
		s.desiredTx = s.cfg.DesiredMinTx
		s.startPoll() // tell the peer we now want the fast rate (6.8.3)
	case st == AdminDown:
		s.polling = false // keep the rate the peer expects for the few goodbyes
	default:
		s.slow()
	}
	if old == Up {
		s.stats.Downs++
	}
}

// configure applies a new Config and reports whether it started a Poll Sequence.
func (s *session) configure(cfg Config) bool {
	if cfg == s.cfg {
		return false
	}
	s.cfg = cfg
	switch s.state {
	case Up:
		s.desiredTx = cfg.DesiredMinTx
		s.startPoll()
		return true
	case AdminDown:
		return false
	}
	s.slow()
	return false
}

// receive applies a validated packet that demultiplexed to this session (the part of
// RFC 5880 6.8.6 after session selection) and reports the state before it. The caller
// answers a Poll with a Final and, if the state changed, transmits at once.
func (s *session) receive(p *packet, now time.Time) (old State) {
	old = s.state
	s.stats.RxPackets++
	s.lastRx = now
	// A new My Discriminator is taken as is: a restarted peer (BIRD rebuilds its session
	// on every BGP restart) announces itself with Down and a fresh one, and must not be
	// discarded, or the two sides never meet again.
	s.remoteDisc = p.MyDisc
	s.remoteState = p.State
	s.remoteMinRx = dur(p.RequiredMinRx)
	s.remoteDesiredTx = dur(p.DesiredMinTx)
	s.remoteMult = p.DetectMult
	if p.Final && s.polling {
		s.finishPoll()
	}
	if s.state == AdminDown {
		s.stats.Discarded++
		return old
	}
	if p.State == AdminDown {
		// RFC 5882 3.2: not a path failure. Reported as Down with diag 3 and
		// RemoteState AdminDown so the caller can tell it apart.
		if s.state != Down {
			s.setState(Down, DiagNeighborDown, now)
		}
		return old
	}
	switch s.state {
	case Down:
		switch p.State {
		case Down:
			s.setState(Init, DiagNone, now)
		case Init:
			s.setState(Up, DiagNone, now)
		}
	case Init:
		if p.State == Init || p.State == Up {
			s.setState(Up, DiagNone, now)
		}
	case Up:
		if p.State == Down {
			s.setState(Down, DiagNeighborDown, now)
		}
	}
	return old
}

// detectTime is the current detection time, 0 while there is nothing to detect.
func (s *session) detectTime() time.Duration {
	if s.remoteMult == 0 {
		return 0
	}
	return detectionTime(s.remoteMult, s.rxInUse, s.remoteDesiredTx)
}

// expire runs the detection timer and reports the state before it. After a detection
// time of silence the peer's discriminator is forgotten (6.8.1), so that a restarted
// peer is matched by address again.
func (s *session) expire(now time.Time) (old State) {
	old = s.state
	d := s.detectTime()
	if d == 0 || now.Sub(s.lastRx) < d {
		return old
	}
	if s.state == Init || s.state == Up {
		s.setState(Down, DiagDetectionExpired, now)
	}
	s.remoteDisc, s.remoteState, s.remoteMult = 0, Down, 0
	return old
}

// txInterval is the negotiated transmit interval before jitter; 0 means the peer asked
// for no periodic packets (RequiredMinRx 0).
func (s *session) txInterval() time.Duration {
	if s.remoteMinRx == 0 {
		return 0
	}
	return max(s.txInUse, s.remoteMinRx)
}

// sent records a transmission at now; periodic ones schedule the next.
func (s *session) sent(now time.Time, periodic bool) {
	s.lastTx = now
	if periodic {
		s.schedule(now)
	}
}

func (s *session) schedule(from time.Time) {
	s.txIval = s.txInterval()
	if s.txIval == 0 {
		s.nextTx, s.earlyTx = time.Time{}, time.Time{}
		return
	}
	s.nextTx = from.Add(jittered(s.txIval, s.cfg.Multiplier))
	s.earlyTx = from.Add(s.txIval * 75 / 100)
}

// txDue reports whether a periodic packet may go at now: its window has opened (see
// earlyTx). The loop only sleeps until nextTx, so a packet goes at nextTx at the latest.
func (s *session) txDue(now time.Time) bool {
	if s.nextTx.IsZero() {
		return false
	}
	return !now.Before(s.nextTx) || !s.earlyTx.IsZero() && !now.Before(s.earlyTx)
}

// hurry brings the next transmission forward when the interval shrank (Final
// received, peer lowered its RequiredMinRx, state change) so the peer's new, shorter
// detection time is never outrun by a packet scheduled at the old rate.
func (s *session) hurry() {
	if iv := s.txInterval(); iv != 0 && (s.txIval == 0 || iv < s.txIval) {
		s.schedule(s.lastTx)
	}
}

// deadline is the next instant expire or a transmission is due; zero if none.
func (s *session) deadline() time.Time {
	t := s.nextTx
	if d := s.detectTime(); d > 0 {
		if e := s.lastRx.Add(d); t.IsZero() || e.Before(t) {
			t = e
		}
	}
	return t
}

// pkt builds the packet to send; final answers a Poll (and then carries no P bit: 4.1).
func (s *session) pkt(final bool) packet {
	return packet{
		Diag:          s.diag,
		State:         s.state,
		Poll:          s.polling && !final,
		Final:         final,
		DetectMult:    s.cfg.Multiplier,
		Length:        headerLen,
		MyDisc:        s.localDisc,
		YourDisc:      s.remoteDisc,
		DesiredMinTx:  micros(s.desiredTx),
		RequiredMinRx: micros(s.cfg.RequiredMinRx),
		RequiredEcho:  0, // no echo function
	}
}
