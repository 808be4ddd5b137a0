package bfd

import (
	"net/netip"
	"testing"
	"time"
)

var (
	t0       = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	peerAddr = netip.MustParseAddr("192.0.2.2")
	ourAddr  = netip.MustParseAddr("192.0.2.1")
	defCfg   = Config{DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond, Multiplier: 3}
)

// sessionIn returns a session forced into st, as if it had got there with a peer
// whose discriminator is 77 and which sends at 100 ms × 3.
func sessionIn(st State) *session {
	s := newSession(peerAddr, ourAddr, defCfg, 1000, t0)
	s.remoteDisc, s.remoteMult, s.remoteDesiredTx, s.remoteMinRx = 77, 3, 100*time.Millisecond, 100*time.Millisecond
	s.lastRx = t0
	if st != Down {
		s.setState(st, DiagNone, t0)
	}
	return s
}

func from(st State) *packet {
	return &packet{State: st, DetectMult: 3, Length: headerLen, MyDisc: 77, YourDisc: 1000,
		DesiredMinTx: 100000, RequiredMinRx: 100000}
}

func TestStateMachine(t *testing.T) {
	cases := []struct {
		local, remote State
		want          State
		diag          Diag
	}{
		{Down, Down, Init, DiagNone},
		{Down, Init, Up, DiagNone},
		{Down, Up, Down, DiagNone},
		{Down, AdminDown, Down, DiagNone},
		{Init, Down, Init, DiagNone},
		{Init, Init, Up, DiagNone},
		{Init, Up, Up, DiagNone},
		{Init, AdminDown, Down, DiagNeighborDown},
		{Up, Down, Down, DiagNeighborDown},
		{Up, AdminDown, Down, DiagNeighborDown},
		{Up, Init, Up, DiagNone},
		{Up, Up, Up, DiagNone},
		{AdminDown, Up, AdminDown, DiagNone},
		{AdminDown, Down, AdminDown, DiagNone},
	}
	for _, c := range cases {
		s := sessionIn(c.local)
		old := s.receive(from(c.remote), t0.Add(time.Millisecond))
		if old != c.local || s.state != c.want || s.diag != c.diag {
			t.Errorf("%v + received %v: got %v (diag %v), want %v (diag %v)", c.local, c.remote, s.state, s.diag, c.want, c.diag)
		}
		if s.remoteState != c.remote {
			t.Errorf("%v + received %v: remote state %v", c.local, c.remote, s.remoteState)
		}
	}
}

func TestDetectionTimeout(t *testing.T) {
	for _, st := range []State{Init, Up} {
		s := sessionIn(st)
		if d := s.detectTime(); d != 300*time.Millisecond {
			t.Fatalf("detect time %v", d)
		}
		s.expire(t0.Add(299 * time.Millisecond))
		if s.state != st {
			t.Fatalf("%v: down before the detection time", st)
		}
		s.expire(t0.Add(300 * time.Millisecond))
		if s.state != Down || s.diag != DiagDetectionExpired {
			t.Fatalf("%v: after detection time got %v diag %v", st, s.state, s.diag)
		}
		if s.remoteDisc != 0 || s.detectTime() != 0 {
			t.Fatalf("remote discriminator %d / detect %v not reset", s.remoteDisc, s.detectTime())
		}
	}
	// Down: no state change, but the stale discriminator is forgotten.
	s := sessionIn(Down)
	s.expire(t0.Add(time.Second))
	if s.state != Down || s.diag != DiagNone || s.remoteDisc != 0 {
		t.Fatalf("down session: %v %v disc %d", s.state, s.diag, s.remoteDisc)
	}
}

func TestDetectionTime(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		mult   uint8
		rx, tx time.Duration
		want   time.Duration
	}{
		{3, 100 * ms, 100 * ms, 300 * ms},
		{5, 100 * ms, 100 * ms, 500 * ms}, // BIRD's default multiplier
		{3, 100 * ms, time.Second, 3 * time.Second},
		{3, 300 * ms, 100 * ms, 900 * ms},
		{1, 10 * ms, 50 * ms, 50 * ms},
		{255, time.Second, time.Second, 255 * time.Second},
	}
	for _, c := range cases {
		if got := detectionTime(c.mult, c.rx, c.tx); got != c.want {
			t.Errorf("detectionTime(%d, %v, %v) = %v, want %v", c.mult, c.rx, c.tx, got, c.want)
		}
	}
}

func TestJitter(t *testing.T) {
	d := 100 * time.Millisecond
	for _, c := range []struct {
		mult   uint8
		lo, hi time.Duration
	}{{3, 75 * time.Millisecond, d}, {1, 75 * time.Millisecond, 90 * time.Millisecond}} {
		seenLo, seenHi := d, time.Duration(0)
		for range 10000 {
			j := jittered(d, c.mult)
			if j < c.lo || j > c.hi {
				t.Fatalf("mult %d: %v outside [%v, %v]", c.mult, j, c.lo, c.hi)
			}
			seenLo, seenHi = min(seenLo, j), max(seenHi, j)
		}
		if seenLo > c.lo+2*time.Millisecond || seenHi < c.hi-2*time.Millisecond {
			t.Errorf("mult %d: jitter spans only [%v, %v]", c.mult, seenLo, seenHi)
		}
	}
}

func TestSlowUntilUpThenPoll(t *testing.T) {
	s := newSession(peerAddr, ourAddr, defCfg, 1000, t0)
	if p := s.pkt(false); p.DesiredMinTx != 1000000 || p.RequiredMinRx != 100000 || p.Poll || p.RequiredEcho != 0 {
		t.Fatalf("down packet %+v: want DesiredMinTx 1 s, RequiredMinRx 100 ms, no poll, no echo", p)
	}
	s.receive(from(Init), t0)
	if s.state != Up || !s.polling {
		t.Fatalf("Up without a poll: %v polling=%v", s.state, s.polling)
	}
	if p := s.pkt(false); !p.Poll || p.DesiredMinTx != 100000 {
		t.Fatalf("up packet %+v: want Poll and 100 ms", p)
	}
	if s.txInterval() != 100*time.Millisecond {
		t.Fatalf("a faster rate applies at once, got %v", s.txInterval())
	}
	if p := s.pkt(true); p.Poll || !p.Final {
		t.Fatalf("final packet %+v must carry F and not P", p)
	}
	fin := from(Up)
	fin.Final = true
	s.receive(fin, t0)
	if s.polling {
		t.Fatal("Final did not end the poll")
	}

	// Slower tx and faster rx: both wait for the Final (RFC 5880 6.8.3).
	slower := Config{DesiredMinTx: 300 * time.Millisecond, RequiredMinRx: 50 * time.Millisecond, Multiplier: 3}
	if !s.configure(slower) || !s.polling {
		t.Fatal("reconfigure while Up must poll")
	}
	if s.configure(slower) {
		t.Fatal("configure is not idempotent")
	}
	if p := s.pkt(false); !p.Poll || p.DesiredMinTx != 300000 || p.RequiredMinRx != 50000 {
		t.Fatalf("poll packet %+v", p)
	}
	if s.txInUse != 100*time.Millisecond || s.rxInUse != 100*time.Millisecond {
		t.Fatalf("in use before Final: tx %v rx %v", s.txInUse, s.rxInUse)
	}
	s.receive(fin, t0)
	if s.polling || s.txInUse != 300*time.Millisecond || s.rxInUse != 50*time.Millisecond {
		t.Fatalf("after Final: polling %v tx %v rx %v", s.polling, s.txInUse, s.rxInUse)
	}
	// Going down returns to 1 s.
	s.receive(from(Down), t0)
	if p := s.pkt(false); s.state != Down || p.DesiredMinTx != 1000000 || p.Poll {
		t.Fatalf("after Down: %v %+v", s.state, p)
	}
}

// TestHandshake runs two sessions against each other through encode/decode, the way
// two systems meet: Down, Init, Up, and both Polls answered.
func TestHandshake(t *testing.T) {
	a := newSession(peerAddr, ourAddr, defCfg, 11, t0)
	b := newSession(ourAddr, peerAddr, defCfg, 22, t0)
	deliver := func(from, to *session, final bool) {
		var buf [headerLen]byte
		var p packet
		q := from.pkt(final)
		if err := decode(q.encode(buf[:]), &p); err != nil {
			t.Fatalf("decode: %v", err)
		}
		to.receive(&p, t0)
		if p.Poll {
			var r packet
			f := to.pkt(true)
			_ = decode(f.encode(buf[:]), &r)
			from.receive(&r, t0)
		}
	}
	deliver(a, b, false) // b: Down -> Init
	deliver(b, a, false) // a: Down -> Up (and polls, answered)
	deliver(a, b, false) // b: Init -> Up
	deliver(b, a, false) // b's poll, answered
	if a.state != Up || b.state != Up || a.polling || b.polling {
		t.Fatalf("a %v polling %v, b %v polling %v", a.state, a.polling, b.state, b.polling)
	}
	if a.remoteDisc != 22 || b.remoteDisc != 11 {
		t.Fatalf("discriminators %d %d", a.remoteDisc, b.remoteDisc)
	}
	if a.txInterval() != 100*time.Millisecond || a.detectTime() != 300*time.Millisecond {
		t.Fatalf("negotiated tx %v detect %v", a.txInterval(), a.detectTime())
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{}.withDefaults()
	if err != nil || c != defCfg {
		t.Fatalf("defaults %+v %v", c, err)
	}
	for _, bad := range []Config{{DesiredMinTx: time.Millisecond}, {RequiredMinRx: -time.Second}, {DesiredMinTx: 2 * time.Hour}} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestPeerRemoteMinRxZeroStopsPeriodic(t *testing.T) {
	s := sessionIn(Up)
	p := from(Up)
	p.RequiredMinRx = 0
	s.receive(p, t0)
	s.schedule(t0)
	if s.txInterval() != 0 || !s.nextTx.IsZero() {
		t.Fatalf("peer asked for no packets, next tx %v", s.nextTx)
	}
}

// A periodic packet may go anywhere in its jitter window (75–100 % of the interval after
// the last one), never before: the loop sends what is in its window whenever it is awake,
// so N sessions need far fewer than 10·N wake-ups a second.
func TestTxWindow(t *testing.T) {
	s := newSession(peerAddr, ourAddr, Config{DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond, Multiplier: 3}, 7, t0)
	s.state, s.remoteMinRx, s.txInUse = Up, 100*time.Millisecond, 100*time.Millisecond
	for i := 0; i < 200; i++ {
		s.schedule(t0)
		if s.txDue(t0.Add(74 * time.Millisecond)) {
			t.Fatal("due before 75 % of the interval")
		}
		if !s.txDue(t0.Add(75 * time.Millisecond)) {
			t.Fatal("not due at 75 % of the interval: its window is open")
		}
		if d := s.nextTx.Sub(t0); d < 75*time.Millisecond || d > 100*time.Millisecond {
			t.Fatalf("latest send %v after the last, want 75–100 ms", d)
		}
	}
	s.remoteMinRx = 0 // the peer wants no periodic packets
	s.schedule(t0)
	if s.txDue(t0.Add(time.Hour)) {
		t.Fatal("due though the peer asked for none")
	}
}
