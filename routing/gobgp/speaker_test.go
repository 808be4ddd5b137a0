package gobgp

import (
	"bytes"
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hostroute/hostroute/routing"
)

// Our routes advertised before the session exists arrive with our next hop, IPv4 and
// IPv6 over one IPv4 session; a route advertised on a live session arrives within
// milliseconds; withdrawing reaches the watcher as an empty set; counters and state show
// in Peers; advertising again is a no-op.
func TestGoBGPAdvertiseBeforePeer(t *testing.T) {
	port := gbFreePort(t)
	a := gbStart(t, "a", "127.0.1.11", gbAS, port, true)
	b := gbStart(t, "b", "127.0.1.12", gbAS, port, false) // ListenPort -1: dials only
	v6hop := netip.MustParseAddr("fd00::11")
	a.advertise("10.244.1.0/26", a.addr)
	a.advertise("fd00:244:0:1::/80", v6hop)
	w := b.watch()

	pa, pb := a.peerOf(b, routing.KindMesh), b.peerOf(a, routing.KindMesh)
	pa.IPv4, pa.IPv6, pb.IPv4, pb.IPv6 = true, true, true, true
	start := time.Now()
	a.setPeers(pa)
	b.setPeers(pb)
	up := b.waitEstablished(a, 10*time.Second)
	b.waitBest("10.244.1.0/26", 5*time.Second, a.addr)
	b.waitBest("fd00:244:0:1::/80", 5*time.Second, v6hop)
	t.Logf("session up %v after SetPeers; both routes at b %v after SetPeers", up, time.Since(start))

	// Propagation on a live session.
	sent := time.Now()
	a.advertise("10.244.9.0/26", a.addr)
	t.Logf("propagation a→b (Advertise to b's watcher): %v", w.waitSet(t, sent, "10.244.9.0/26", 5*time.Second, a.addr).Sub(sent))

	uuid := a.s.adv[gbPfx("10.244.1.0/26")].uuid
	a.advertise("10.244.1.0/26", a.addr) // same next hop: nothing happens
	if !bytes.Equal(uuid, a.s.adv[gbPfx("10.244.1.0/26")].uuid) {
		t.Error("advertising the same route again re-added it")
	}

	sent = time.Now()
	if err := a.s.Withdraw(gbPfx("10.244.9.0/26")); err != nil {
		t.Fatal(err)
	}
	t.Logf("withdrawal a→b: %v", w.waitSet(t, sent, "10.244.9.0/26", 5*time.Second).Sub(sent))
	if err := a.s.Withdraw(gbPfx("10.244.9.0/26")); err != nil {
		t.Errorf("withdrawing twice: %v", err)
	}
	if hops := b.best("10.244.9.0/26"); hops != nil {
		t.Errorf("withdrawn route still at b: %v", hops)
	}

	sa, sb := a.peerState(b.addr), b.peerState(a.addr)
	if sb.State != "Established" || sb.Received != 2 || sb.Accepted != 2 || sa.Advertised != 2 {
		t.Errorf("counters: a→b advertised %d; b: %s received %d accepted %d", sa.Advertised, sb.State, sb.Received, sb.Accepted)
	}
	if since := time.Since(sb.Since); since < 0 || since > time.Minute || sb.Config.Name != "a" {
		t.Errorf("b's view of a: since %v, name %q", sb.Since, sb.Config.Name)
	}
}

// Two nodes advertise the same prefix; a third sees both next hops (ECMP) in BestPaths
// and in its watch; when one withdraws, the set shrinks to the other.
func TestGoBGPECMP(t *testing.T) {
	port := gbFreePort(t)
	a := gbStart(t, "a", "127.0.2.11", gbAS, port, true)
	b := gbStart(t, "b", "127.0.2.12", gbAS, port, true)
	c := gbStart(t, "c", "127.0.2.13", gbAS, port, false)
	const anycast = "10.96.0.10/32"
	a.advertise(anycast, a.addr)
	b.advertise(anycast, b.addr)
	w := c.watch()
	a.setPeers(a.peerOf(c, routing.KindMesh))
	b.setPeers(b.peerOf(c, routing.KindMesh))
	c.setPeers(c.peerOf(a, routing.KindMesh), c.peerOf(b, routing.KindMesh))
	c.waitBest(anycast, 10*time.Second, a.addr, b.addr)
	w.waitSet(t, time.Time{}, anycast, 5*time.Second, a.addr, b.addr)

	sent := time.Now()
	if err := b.s.Withdraw(gbPfx(anycast)); err != nil {
		t.Fatal(err)
	}
	t.Logf("ECMP set shrank at c's watcher %v after b's Withdraw", w.waitSet(t, sent, anycast, 5*time.Second, a.addr).Sub(sent))
	c.waitBest(anycast, 5*time.Second, a.addr)
	for _, e := range w.of(anycast) {
		if len(e.bp.NextHops) == 0 {
			t.Errorf("the prefix looked gone meanwhile: %v", w.of(anycast))
		}
	}
}

// Stop sends a Cease: the neighbour withdraws our routes at once, although graceful
// restart is negotiated (a crash would leave them stale for the restart time).
func TestGoBGPStopSendsCease(t *testing.T) {
	port := gbFreePort(t)
	a := gbStart(t, "a", "127.0.3.11", gbAS, port, true)
	b := gbStart(t, "b", "127.0.3.12", gbAS, port, false)
	a.advertise("10.244.1.0/26", a.addr)
	pa, pb := a.peerOf(b, routing.KindMesh), b.peerOf(a, routing.KindMesh)
	for _, p := range []*routing.PeerConfig{&pa, &pb} {
		p.GracefulRestart, p.RestartTime = true, 30*time.Second
	}
	w := b.watch()
	a.setPeers(pa)
	b.setPeers(pb)
	w.waitSet(t, time.Time{}, "10.244.1.0/26", 10*time.Second, a.addr)

	stop := time.Now()
	if err := a.s.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Since(stop)
	if n := a.logs.count("sessions still ending"); n != 0 || stopped > time.Second {
		t.Errorf("Stop took %v and did not see the session end (%d warnings)", stopped, n)
	}
	gone := w.waitSet(t, stop, "10.244.1.0/26", 2*time.Second).Sub(stop)
	t.Logf("Stop took %v; b dropped a's route %v after Stop began", stopped, gone)
	gbWaitFor(t, 2*time.Second, "b sees the Cease", func() bool {
		s := b.peerState(a.addr)
		return s.State != "Established" && strings.Contains(s.LastError, "notification-received")
	})
	t.Logf("b's LastError for a: %q", b.peerState(a.addr).LastError)

	// A stopped speaker starts again from scratch; a watch can begin before Start.
	if err := a.s.WatchBestPaths(t.Context(), func(routing.BestPath) {}); err != nil {
		t.Errorf("watch before Start: %v", err)
	}
	if err := a.s.Start(context.Background(), routing.GlobalConfig{AS: gbAS, RouterID: a.addr, ListenPort: -1}); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if ps, err := a.s.Peers(); err != nil || len(ps) != 0 || len(a.s.adv) != 0 {
		t.Errorf("after restart: peers %v (%v), %d routes", ps, err, len(a.s.adv))
	}
	a.advertise("10.244.1.0/26", a.addr)
}

// ShutdownPeer drops the session and the neighbour's routes at once and keeps it down
// with the reason; EnablePeer brings it back.
func TestGoBGPShutdownPeer(t *testing.T) {
	port := gbFreePort(t)
	a := gbStart(t, "a", "127.0.4.11", gbAS, port, true)
	b := gbStart(t, "b", "127.0.4.12", gbAS, port, false)
	b.advertise("10.244.2.0/26", b.addr)
	w := a.watch()
	a.setPeers(a.peerOf(b, routing.KindMesh)) // passive: b dials
	b.setPeers(b.peerOf(a, routing.KindMesh))
	w.waitSet(t, time.Time{}, "10.244.2.0/26", 10*time.Second, b.addr)

	start := time.Now()
	if err := a.s.ShutdownPeer(b.addr, "bfd: neighbour down"); err != nil {
		t.Fatal(err)
	}
	t.Logf("ShutdownPeer: b's route gone at a's watcher after %v", w.waitSet(t, start, "10.244.2.0/26", 2*time.Second).Sub(start))
	if s := a.peerState(b.addr); s.State == "Established" || s.LastError != "shut down: bfd: neighbour down" {
		t.Errorf("a's view of b after shutdown: %+v", s)
	}
	gbWaitFor(t, 3*time.Second, "b hears why", func() bool {
		return strings.Contains(b.peerState(a.addr).LastError, "administrative shutdown")
	})
	if err := a.s.ShutdownPeer(b.addr, "again"); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
	time.Sleep(1500 * time.Millisecond) // b retries every second: it must stay down
	if s := a.peerState(b.addr); s.State == "Established" {
		t.Fatal("the session came back while shut down")
	}

	start = time.Now()
	if err := a.s.EnablePeer(b.addr); err != nil {
		t.Fatal(err)
	}
	w.waitSet(t, start, "10.244.2.0/26", 15*time.Second, b.addr)
	t.Logf("EnablePeer: route back after %v", time.Since(start))
	if err := a.s.EnablePeer(b.addr); err != nil {
		t.Errorf("enabling an enabled peer: %v", err)
	}
}

// SetPeers with the same set (or a change of name only) touches no session; a change
// of session settings re-creates it.
func TestGoBGPSetPeersIdempotent(t *testing.T) {
	port := gbFreePort(t)
	a := gbStart(t, "a", "127.0.5.11", gbAS, port, true)
	b := gbStart(t, "b", "127.0.5.12", gbAS, port, false)
	pa, pb := a.peerOf(b, routing.KindMesh), b.peerOf(a, routing.KindMesh)
	a.setPeers(pa)
	b.setPeers(pb)
	b.waitEstablished(a, 10*time.Second)
	time.Sleep(1100 * time.Millisecond) // uptime has one-second resolution
	before := b.peerState(a.addr).Since
	added := b.s.apiPeers[a.addr]

	b.setPeers(pb)
	renamed := pb
	renamed.Name = "a-renamed"
	b.setPeers(renamed)
	if got := b.peerState(a.addr); got.Since != before || got.State != "Established" || got.Config.Name != "a-renamed" {
		t.Errorf("after SetPeers with the same session: since %v (was %v), %s, name %q", got.Since, before, got.State, got.Config.Name)
	}
	if b.s.apiPeers[a.addr] != added {
		t.Error("the peer was re-created")
	}

	// A new hold time needs a new session: a hears the Cease at once. (It comes back
	// only after a's FSM idles 5s, GoBGP's fixed hold-down after any drop.)
	changed := renamed
	changed.HoldTime = 6 * time.Second
	b.setPeers(changed)
	gbWaitFor(t, 3*time.Second, "a sees the session reset", func() bool {
		return strings.Contains(a.peerState(b.addr).LastError, "peer deconfigured")
	})
	if b.s.apiPeers[a.addr] == added || b.s.apiPeers[a.addr].Timers.Config.HoldTime != 6 {
		t.Error("the peer was not re-created with the new hold time")
	}
}

// Moving from one neighbour to another: SetPeers brings the new session up before it
// drops the old one, so the prefix never disappears.
func TestGoBGPSetPeersMakeBeforeBreak(t *testing.T) {
	port := gbFreePort(t)
	a := gbStart(t, "a", "127.0.6.11", gbAS, port, true)
	b := gbStart(t, "b", "127.0.6.12", gbAS, port, true)
	c := gbStart(t, "c", "127.0.6.13", gbAS, port, false)
	const anycast = "10.96.0.10/32"
	a.advertise(anycast, a.addr)
	b.advertise(anycast, b.addr)
	a.setPeers(a.peerOf(c, routing.KindMesh))
	b.setPeers(b.peerOf(c, routing.KindMesh))
	w := c.watch()
	c.setPeers(c.peerOf(a, routing.KindMesh))
	w.waitSet(t, time.Time{}, anycast, 10*time.Second, a.addr)

	start := time.Now()
	c.setPeers(c.peerOf(b, routing.KindMesh))
	took := time.Since(start)
	w.waitSet(t, start, anycast, 5*time.Second, b.addr)
	var seen [][]netip.Addr
	for _, e := range w.of(anycast) {
		seen = append(seen, e.bp.NextHops)
	}
	t.Logf("SetPeers(a→b) took %v (waiting for b); c saw %v", took, seen)
	for _, hops := range seen {
		if len(hops) == 0 {
			t.Fatalf("the prefix disappeared during the switch: %v", seen)
		}
	}
	if !slices.ContainsFunc(seen, func(h []netip.Addr) bool { return len(h) == 2 }) {
		t.Errorf("never had both paths at once: %v", seen)
	}
	if ps, _ := c.s.Peers(); len(ps) != 1 || ps[0].Config.Address != b.addr {
		t.Errorf("peers after the switch: %+v", ps)
	}
}
