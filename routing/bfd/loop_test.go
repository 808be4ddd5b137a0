package bfd

import (
	"net/netip"
	"testing"
	"time"
)

// recorder is a sender that keeps what it was asked to send.
type recorder struct {
	sent []packet
	dst  []netip.AddrPort
	keep bool
}

func (r *recorder) send(b, oob []byte, dst netip.AddrPort) error {
	if !r.keep {
		return nil
	}
	var p packet
	if err := decode(b, &p); err != nil {
		return err
	}
	r.sent, r.dst = append(r.sent, p), append(r.dst, dst)
	return nil
}

func (r *recorder) last(t *testing.T) packet {
	t.Helper()
	if len(r.sent) == 0 {
		t.Fatal("nothing sent")
	}
	return r.sent[len(r.sent)-1]
}

// testServer is a Server without sockets or goroutines: the test plays the loop.
func testServer(t *testing.T) (*Server, *recorder) {
	r := &recorder{keep: true}
	s := newServer(nil, r)
	s.fams = [2]bool{true, true}
	s.add(peerAddr, ourAddr, nil, defCfg, t0)
	return s, r
}

func msg(p *packet, src netip.Addr, at time.Time) *rxMsg {
	return &rxMsg{p: *p, src: src, at: at}
}

func TestDemux(t *testing.T) {
	s, r := testServer(t)
	s.tick(t0) // first hello
	x := s.byPeer[peerAddr]
	if len(r.sent) != 1 || r.dst[0] != netip.AddrPortFrom(peerAddr, 3784) || r.sent[0].State != Down || r.sent[0].MyDisc != x.localDisc || x.localDisc == 0 {
		t.Fatalf("hello: %+v to %v", r.sent, r.dst)
	}
	down := &packet{State: Down, DetectMult: 3, Length: headerLen, MyDisc: 55, DesiredMinTx: 1000000, RequiredMinRx: 100000}

	s.handleRx(msg(down, netip.MustParseAddr("192.0.2.9"), t0), t0) // unknown source, Your Discriminator 0
	if x.state != Down || x.stats.RxPackets != 0 {
		t.Fatal("packet from an unconfigured address was accepted")
	}
	wrong := *down
	wrong.YourDisc = x.localDisc + 1
	s.handleRx(msg(&wrong, peerAddr, t0), t0)
	if x.stats.RxPackets != 0 {
		t.Fatal("packet with someone else's discriminator accepted")
	}
	spoof := *down
	spoof.YourDisc = x.localDisc
	s.handleRx(msg(&spoof, netip.MustParseAddr("192.0.2.9"), t0), t0)
	if x.stats.RxPackets != 0 || x.stats.Discarded != 1 {
		t.Fatal("our discriminator from another address accepted")
	}

	s.handleRx(msg(down, peerAddr, t0), t0) // matched by address
	if x.state != Init || r.last(t).State != Init || r.last(t).YourDisc != 55 {
		t.Fatalf("Down+Down: %v, sent %+v", x.state, r.last(t))
	}
	if ev := <-s.events; ev.State != Init || ev.Peer != peerAddr {
		t.Fatalf("event %+v", ev)
	}

	// Poll is answered at once with Final, and the schedule is left alone.
	up := &packet{State: Up, Poll: true, DetectMult: 3, Length: headerLen, MyDisc: 55, YourDisc: x.localDisc, DesiredMinTx: 100000, RequiredMinRx: 100000}
	n := len(r.sent)
	s.handleRx(msg(up, peerAddr, t0), t0)
	if x.state != Up || len(r.sent) != n+1 || !r.last(t).Final || r.last(t).Poll || r.last(t).State != Up {
		t.Fatalf("Poll: state %v, sent %+v", x.state, r.sent[n:])
	}
	<-s.events
}

// TestPeerRestart: a Down with a new discriminator and Your Discriminator 0 while Up is
// the peer starting over; we follow it down and up again with the new discriminator.
func TestPeerRestart(t *testing.T) {
	s, _ := testServer(t)
	x := s.byPeer[peerAddr]
	x.remoteDisc, x.remoteMult, x.lastRx = 55, 3, t0
	x.setState(Up, DiagNone, t0)
	restarted := &packet{State: Down, DetectMult: 5, Length: headerLen, MyDisc: 99, DesiredMinTx: 1000000, RequiredMinRx: 10000}
	s.handleRx(msg(restarted, peerAddr, t0), t0)
	if x.state != Down || x.diag != DiagNeighborDown || x.remoteDisc != 99 {
		t.Fatalf("restart: %v diag %v remote %d", x.state, x.diag, x.remoteDisc)
	}
	s.handleRx(msg(restarted, peerAddr, t0), t0)
	initPkt := &packet{State: Init, DetectMult: 5, Length: headerLen, MyDisc: 99, YourDisc: x.localDisc, DesiredMinTx: 1000000, RequiredMinRx: 10000}
	s.handleRx(msg(initPkt, peerAddr, t0), t0)
	if x.state != Up {
		t.Fatalf("did not come back up: %v", x.state)
	}
	var evs []Event
	for len(s.events) > 0 {
		evs = append(evs, <-s.events)
	}
	if len(evs) != 3 || evs[0].State != Down || evs[0].PeerAdminDown() || evs[1].State != Init || evs[2].State != Up {
		t.Fatalf("events %+v", evs)
	}
}

func TestPeerAdminDownEvent(t *testing.T) {
	s, _ := testServer(t)
	x := s.byPeer[peerAddr]
	x.remoteDisc, x.remoteMult, x.lastRx = 55, 3, t0
	x.setState(Up, DiagNone, t0)
	ad := &packet{State: AdminDown, Diag: DiagAdminDown, DetectMult: 3, Length: headerLen, MyDisc: 55, YourDisc: x.localDisc}
	s.handleRx(msg(ad, peerAddr, t0), t0)
	if ev := <-s.events; ev.State != Down || ev.Diag != DiagNeighborDown || !ev.PeerAdminDown() {
		t.Fatalf("event %+v, want Down diag 3 flagged as the peer's AdminDown", ev)
	}
}

func TestRemoveSendsGoodbyes(t *testing.T) {
	s, r := testServer(t)
	s.tick(t0)
	s.remove(peerAddr, t0)
	if ev := <-s.events; ev.State != AdminDown || ev.Diag != DiagAdminDown {
		t.Fatalf("event %+v", ev)
	}
	for now := t0; now.Before(t0.Add(5 * time.Second)); now = now.Add(10 * time.Millisecond) {
		s.tick(now)
	}
	var ad int
	for _, p := range r.sent {
		if p.State == AdminDown {
			ad++
			if p.Diag != DiagAdminDown {
				t.Fatalf("AdminDown with diag %v", p.Diag)
			}
		}
	}
	if ad != goodbyes || len(s.byPeer) != 0 || len(s.byDisc) != 0 {
		t.Fatalf("%d AdminDown packets, %d sessions left", ad, len(s.byPeer))
	}
	s.remove(peerAddr, t0) // unknown: no-op
}

func TestAddIdempotentAndPolls(t *testing.T) {
	s, r := testServer(t)
	x := s.byPeer[peerAddr]
	disc := x.localDisc
	s.add(peerAddr, ourAddr, nil, defCfg, t0)
	if s.byPeer[peerAddr] != x || x.localDisc != disc || len(r.sent) != 0 {
		t.Fatal("second Add with the same config changed something")
	}
	x.remoteDisc, x.remoteMult, x.lastRx = 55, 3, t0
	x.setState(Up, DiagNone, t0)
	x.finishPoll()
	s.add(peerAddr, ourAddr, nil, Config{DesiredMinTx: 200 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond, Multiplier: 3}, t0)
	if p := r.last(t); !p.Poll || p.DesiredMinTx != 200000 {
		t.Fatalf("reconfigure sent %+v, want a Poll with 200 ms", p)
	}
}

func TestEventsDropOldest(t *testing.T) {
	s, _ := testServer(t)
	x := s.byPeer[peerAddr]
	for i := range eventBuffer + 10 {
		x.state = State(i % 4)
		s.emit(x, t0.Add(time.Duration(i)))
	}
	if len(s.events) != eventBuffer || s.dropped != 10 {
		t.Fatalf("len %d dropped %d", len(s.events), s.dropped)
	}
	if first := <-s.events; first.Time != t0.Add(10) {
		t.Fatalf("oldest kept is %v", first.Time)
	}
}

// TestSteadyStateDoesNotAllocate: an Up session receiving, answering a Poll and
// transmitting allocates nothing.
func TestSteadyStateDoesNotAllocate(t *testing.T) {
	r := &recorder{}
	s := newServer(nil, r)
	s.add(peerAddr, ourAddr, pktinfo(ourAddr), defCfg, t0)
	x := s.byPeer[peerAddr]
	x.remoteDisc, x.remoteMult, x.lastRx = 55, 3, t0
	x.setState(Up, DiagNone, t0)
	x.finishPoll()
	up := &packet{State: Up, DetectMult: 3, Length: headerLen, MyDisc: 55, YourDisc: x.localDisc, DesiredMinTx: 100000, RequiredMinRx: 100000}
	poll := *up
	poll.Poll = true
	now := t0
	n := testing.AllocsPerRun(1000, func() {
		now = now.Add(50 * time.Millisecond)
		s.handleRx(msg(up, peerAddr, now), now)
		s.handleRx(msg(&poll, peerAddr, now), now)
		s.tick(now)
	})
	if n != 0 || x.state != Up {
		t.Fatalf("%v allocations per packet (state %v)", n, x.state)
	}
}

// TestControlPlaneIndependent: only a Server made with ControlPlaneIndependent sets the C
// bit, and it sets it on every packet.
func TestControlPlaneIndependent(t *testing.T) {
	for _, independent := range []bool{false, true} {
		s, r := testServer(t)
		if independent {
			ControlPlaneIndependent()(s)
		}
		s.tick(t0)
		s.remove(peerAddr, t0) // AdminDown goodbye
		for i, p := range r.sent {
			if p.CPI != independent {
				t.Fatalf("independent=%v: packet %d (%v) has C bit %v", independent, i, p.State, p.CPI)
			}
		}
		if len(r.sent) < 2 {
			t.Fatalf("sent %d packets, want a hello and a goodbye", len(r.sent))
		}
	}
}
