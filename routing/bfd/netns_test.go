//go:build linux

package bfd

import (
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// TestTwoServers runs our implementation against itself across a veth between two
// namespaces: bring-up over IPv4 and IPv6, detection of a dead link, recovery, a
// restarted peer, and Remove's AdminDown.
func TestTwoServers(t *testing.T) {
	l := newLab(t)
	a := listenIn(t, l.a, netip.Addr{}) // both families
	b := listenIn(t, l.b, netip.Addr{})

	start := time.Now()
	for _, c := range []struct {
		s           *Server
		peer, local netip.Addr
	}{{a, addrB, addrA}, {b, addrA, addrB}, {a, addrB6, addrA6}, {b, addrA6, addrB6}} {
		if err := c.s.Add(c.peer, c.local, Config{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, peer := range []netip.Addr{addrB, addrB6} {
		x := waitNegotiated(t, a, peer, 100*time.Millisecond, 300*time.Millisecond)
		t.Logf("%v Up %v after Add", peer, x.Since.Sub(start).Round(time.Microsecond))
	}
	for _, c := range []struct {
		s    *Server
		peer netip.Addr
	}{{a, addrB}, {b, addrA}, {a, addrB6}, {b, addrA6}} {
		x := waitNegotiated(t, c.s, c.peer, 100*time.Millisecond, 300*time.Millisecond)
		if x.RemoteDiscriminator == 0 || x.LocalDiscriminator == 0 || x.Counters.PollsAnswered == 0 {
			t.Fatalf("session %+v", x)
		}
	}
	if err := a.Add(addrB, addrA, Config{}); err != nil { // idempotent
		t.Fatal(err)
	}

	// A new Config on an Up session polls: b then sends at a's new RequiredMinRx and
	// a detects at 3 × 250 ms; a sends at 200 ms and b detects at 3 × 200 ms.
	slower := Config{DesiredMinTx: 200 * time.Millisecond, RequiredMinRx: 250 * time.Millisecond, Multiplier: 3}
	if err := a.Add(addrB, addrA, slower); err != nil {
		t.Fatal(err)
	}
	waitNegotiated(t, a, addrB, 200*time.Millisecond, 750*time.Millisecond)
	waitNegotiated(t, b, addrA, 250*time.Millisecond, 600*time.Millisecond)
	if err := a.Add(addrB, addrA, Config{}); err != nil {
		t.Fatal(err)
	}
	waitNegotiated(t, a, addrB, 100*time.Millisecond, 300*time.Millisecond)
	waitNegotiated(t, b, addrA, 100*time.Millisecond, 300*time.Millisecond)

	// Steady state: count the process's allocations per packet over a second.
	packets := func() (n uint64) {
		for _, s := range []*Server{a, b} {
			for _, x := range s.Sessions() {
				n += x.Counters.RxPackets + x.Counters.TxPackets
			}
		}
		return n
	}
	p0 := packets()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	time.Sleep(time.Second)
	runtime.ReadMemStats(&m1)
	p1 := packets()
	t.Logf("steady state: %d packets sent+received, %d allocations in the whole process", p1-p0, m1.Mallocs-m0.Mallocs)

	t.Run("link down detected", func(t *testing.T) {
		for round := range 3 {
			drain(a)
			t0 := time.Now()
			ipCmd(t, "-n", l.b, "link", "set", l.ifB, "down")
			ev := waitFor(t, a, addrB, Down, 5*time.Second)
			d := ev.Time.Sub(t0)
			t.Logf("round %d: link down -> Down after %v (diag %v)", round, d.Round(time.Millisecond), ev.Diag)
			if ev.Diag != DiagDetectionExpired || d >= time.Second || d <= 0 {
				t.Fatalf("round %d: Down %v after %v, want diag 1 within 1 s", round, ev.Diag, d)
			}
			t1 := time.Now()
			ipCmd(t, "-n", l.b, "link", "set", l.ifB, "up")
			waitFor(t, a, addrB, Up, 10*time.Second)
			t.Logf("round %d: link up -> Up after %v", round, time.Since(t1).Round(time.Millisecond))
			waitNegotiated(t, a, addrB, 100*time.Millisecond, 300*time.Millisecond)
			waitNegotiated(t, a, addrB6, 100*time.Millisecond, 300*time.Millisecond)
		}
		if x, _ := sessionOf(b, addrA); x.Counters.TxErrors == 0 {
			t.Logf("note: no send errors counted on b while its link was down: %+v", x.Counters)
		}
	})

	t.Run("peer restarts", func(t *testing.T) {
		drain(a)
		t0 := time.Now()
		b.Close()
		b2 := listenIn(t, l.b, addrB)
		if err := b2.Add(addrA, addrB, Config{}); err != nil {
			t.Fatal(err)
		}
		ev := waitFor(t, a, addrB, Down, 5*time.Second)
		t.Logf("peer restart -> Down after %v, diag %v (3 = followed the restarted peer, 1 = timed out)",
			ev.Time.Sub(t0).Round(time.Microsecond), ev.Diag)
		ev = waitFor(t, a, addrB, Up, 10*time.Second)
		t.Logf("peer restart -> Up again after %v", ev.Time.Sub(t0).Round(time.Microsecond))
		x, _ := sessionOf(b2, addrA)
		if y, _ := sessionOf(a, addrB); y.RemoteDiscriminator != x.LocalDiscriminator {
			t.Fatalf("a follows discriminator %d, b2 has %d", y.RemoteDiscriminator, x.LocalDiscriminator)
		}

		drain(a)
		if err := b2.Remove(addrA); err != nil {
			t.Fatal(err)
		}
		ev = waitFor(t, a, addrB, Down, 2*time.Second)
		if !ev.PeerAdminDown() {
			t.Fatalf("Remove on b: a got %+v, want Down flagged PeerAdminDown", ev)
		}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if _, ok := sessionOf(b2, addrA); !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("removed session still present after 5 s")
			}
		}
	})
}
