package bfd

import (
	"net/netip"
	"time"
)

// idle is how long the loop sleeps when no session has anything due.
const idle = time.Minute

// loop is the only goroutine that touches sessions. Every wake-up (packet, timer or
// request) ends with a pass over all sessions for due timers and a re-arm of the one
// timer: O(sessions) per packet, which is fine for a node's tens of BGP neighbours.
func (s *Server) loop() {
	defer s.wg.Done()
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		select {
		case m := <-s.rxCh:
			s.handleRx(&m, time.Now())
		case <-t.C:
		case f := <-s.reqCh:
			f()
		case <-s.done:
			return
		}
		now := time.Now()
		next := s.tick(now)
		d := idle
		if !next.IsZero() {
			d = max(next.Sub(now), 0)
		}
		t.Reset(d) // Go ≥ 1.23: no stale tick can be left in t.C
	}
}

// handleRx demultiplexes a validated packet (RFC 5880 6.8.6) and runs it through its
// session: Your Discriminator when set, else the source address (decode has already
// insisted on Down/AdminDown in that case).
func (s *Server) handleRx(m *rxMsg, now time.Time) {
	var x *session
	if m.p.YourDisc != 0 {
		if x = s.byDisc[m.p.YourDisc]; x == nil {
			return // not ours (any more): stale or spoofed
		}
		if x.peer.WithZone("") != m.src.WithZone("") {
			x.stats.Discarded++ // our discriminator from the wrong address: spoofed
			return
		}
	} else if x = s.byPeer[m.src.WithZone("")]; x == nil {
		return
	}
	if !s.onRoute(x, m.ifindex, now) {
		x.stats.Discarded++ // the peer's address from elsewhere: spoofed (a pod, say)
		return
	}
	old := x.receive(&m.p, m.at)
	changed := x.state != old
	if changed {
		s.emit(x, now)
	}
	if m.p.Poll {
		x.stats.PollsAnswered++
	}
	if m.p.Poll || changed {
		s.transmit(x, m.p.Poll, now) // a Final goes at once, outside the schedule (6.8.7)
	}
	if changed {
		x.schedule(now)
	} else {
		x.hurry()
	}
}

// tick runs due detection timers and transmissions and returns the earliest deadline.
func (s *Server) tick(now time.Time) time.Time {
	var next time.Time
	for key, x := range s.byPeer {
		if old := x.expire(now); x.state != old {
			s.emit(x, now)
			s.transmit(x, false, now)
			x.schedule(now)
		}
		if x.txDue(now) {
			s.transmit(x, false, now)
			x.schedule(now)
			if x.removing > 0 {
				x.removing--
			}
		}
		if x.state == AdminDown && (x.removing == 0 || x.nextTx.IsZero()) {
			delete(s.byPeer, key)
			delete(s.byDisc, x.localDisc)
			continue
		}
		if d := x.deadline(); !d.IsZero() && (next.IsZero() || d.Before(next)) {
			next = d
		}
	}
	return next
}

func (s *Server) add(peer, local netip.Addr, oob []byte, cfg Config, now time.Time) {
	key := peer.WithZone("")
	x := s.byPeer[key]
	if x == nil {
		x = newSession(peer, local, cfg, s.newDisc(), now)
		x.oob = oob
		s.lookupIface(x, now)
		s.byPeer[key], s.byDisc[x.localDisc] = x, x
		s.log.Info("session added", "peer", peer, "local", local, "discriminator", x.localDisc,
			"tx", cfg.DesiredMinTx, "rx", cfg.RequiredMinRx, "multiplier", cfg.Multiplier)
		return // nextTx is now: the loop's tick sends the first packet
	}
	x.peer, x.local, x.oob = peer, local, oob
	x.dst = netip.AddrPortFrom(peer, port)
	s.lookupIface(x, now)
	if x.state == AdminDown {
		x.removing = 0
		x.cfg = cfg
		x.setState(Down, DiagNone, now)
		s.emit(x, now)
		x.nextTx, x.earlyTx = now, time.Time{}
		return
	}
	if x.configure(cfg) {
		s.log.Info("session reconfigured, polling", "peer", peer,
			"tx", cfg.DesiredMinTx, "rx", cfg.RequiredMinRx, "multiplier", cfg.Multiplier)
		s.transmit(x, false, now) // the Poll carries the new values
		x.schedule(now)
	}
}

func (s *Server) remove(key netip.Addr, now time.Time) {
	x := s.byPeer[key]
	if x == nil || x.state == AdminDown {
		return
	}
	x.setState(AdminDown, DiagAdminDown, now)
	s.emit(x, now)
	x.removing = goodbyes - 1
	s.transmit(x, false, now)
	x.schedule(now)
}

// transmit encodes and sends the session's current packet. A failure (link down, no
// route) is counted and logged once per outage: BFD's job is to notice, not to retry.
func (s *Server) transmit(x *session, final bool, now time.Time) {
	p := x.pkt(final)
	p.CPI = s.independent
	err := s.out.send(p.encode(s.buf[:]), x.oob, x.dst)
	x.sent(now, false)
	if err != nil {
		x.stats.TxErrors++
		if !x.txFailing {
			x.txFailing = true
			s.log.Warn("send failing", "peer", x.peer, "err", err)
		}
		return
	}
	x.stats.TxPackets++
	if x.txFailing {
		x.txFailing = false
		s.log.Info("send recovered", "peer", x.peer, "failed", x.stats.TxErrors)
	}
}

// emit reports x's new state without ever blocking the loop: when the channel is full
// the oldest event is dropped. The loop is the only sender, so after one receive there
// is room.
func (s *Server) emit(x *session, now time.Time) {
	ev := Event{Peer: x.peer, State: x.state, Diag: x.diag, RemoteState: x.remoteState, Time: now}
	s.log.Info("session state", "peer", x.peer, "state", x.state, "diag", x.diag,
		"remote", x.remoteState, "detect", x.detectTime())
	for {
		select {
		case s.events <- ev:
			return
		default:
		}
		select {
		case <-s.events:
			s.dropped++
			s.log.Warn("event consumer too slow, dropped oldest event", "dropped", s.dropped)
		default:
		}
	}
}

// ifaceRecheck is how often at most a packet on another interface than the cached one
// makes the route to the peer be looked up again: a route that moved to another
// interface is followed within this time, and a flood of spoofed packets costs at most
// one lookup per session and interval.
const ifaceRecheck = time.Second

// lookupIface caches the interface of the route to the session's peer.
func (s *Server) lookupIface(x *session, now time.Time) {
	if s.iface != nil {
		x.ifindex, x.ifCheckedAt = s.iface(x.peer), now
	}
}

// onRoute reports whether a packet that arrived on ifindex may be the session's peer's:
// single-hop BFD (RFC 5881) comes in on the interface of the route to the peer. The TTL
// 255 rule alone does not prove that: a local process or a pod on this node sends with
// TTL 255 too, and its packets are delivered without a hop. Unknown interfaces (no
// control message, no route) are let through; without a route there is no session to
// disturb, since nothing of ours reaches the peer.
func (s *Server) onRoute(x *session, ifindex int, now time.Time) bool {
	if s.iface == nil || ifindex == 0 || ifindex == x.ifindex {
		return true
	}
	if now.Sub(x.ifCheckedAt) >= ifaceRecheck {
		s.lookupIface(x, now)
	}
	return x.ifindex == 0 || x.ifindex == ifindex
}
