package routes

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func runTable(t *testing.T, k Kernel, onConflict func(Conflict)) *Table {
	t.Helper()
	tb := NewTable(k, slog.New(slog.DiscardHandler), onConflict)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tb.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return tb
}

// settle waits until the writer has nothing left to do.
func settle(t *testing.T, tb *Table) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !tb.Settled() {
		if time.Now().After(deadline) {
			t.Fatal("route table did not settle within 10s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func pfx(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 245, byte(i >> 8), byte(i)}), 32)
}

// Many changes against a slow kernel: callers never wait for netlink, one writer writes,
// a prefix changed many times while queued is written far fewer times, the latest state
// wins, the own block stays a blackhole whatever BGP says, and a dead next hop is left
// out of every route.
func TestTableLatestStateWinsOneWriter(t *testing.T) {
	k := newFakeKernel(t)
	k.delay = 200 * time.Microsecond
	tb := runTable(t, k, nil)
	own := netip.MustParsePrefix("10.244.0.0/26")
	tb.SetBlocks([]netip.Prefix{own})
	nh := addrs("192.0.2.2", "192.0.2.3", "192.0.2.4")
	const n, rounds = 200, 20
	start := time.Now()
	for r := range rounds {
		for i := range n {
			if r == rounds-1 && i%10 == 0 {
				tb.SetLearned(pfx(i), nil) // withdrawn at the end
				continue
			}
			tb.SetLearned(pfx(i), nh[:1+(i+r)%3])
		}
		tb.SetLearned(own, nh[:1])
	}
	if d := time.Since(start); d > time.Duration(n*rounds)*k.delay/2 {
		t.Errorf("SetLearned took %v for %d changes: it waits for the kernel", d, n*rounds)
	}
	tb.SetDead(nh[2], true)
	settle(t, tb)
	want := []string{"blackhole " + own.String()}
	for i := range n {
		if i%10 != 0 {
			hops := slices.DeleteFunc(slices.Clone(nh[:1+(i+rounds-1)%3]), func(a netip.Addr) bool { return a == nh[2] })
			want = append(want, Route{Dst: pfx(i), NextHops: hops}.String())
		}
	}
	slices.Sort(want)
	got := k.ours()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("kernel:\n%v\nwant:\n%v", got, want)
	}
	if k.writes >= n*rounds {
		t.Errorf("%d writes for %d changes: nothing coalesced", k.writes, n*rounds)
	}
	t.Logf("%d changes, %d kernel writes", n*rounds, k.writes)
}

// A route someone else holds at a destination hostroute wants is neither replaced nor
// deleted; it is reported once, and hostroute's route goes in when the other one leaves.
func TestTableLeavesForeignRoutes(t *testing.T) {
	k := newFakeKernel(t)
	def := netip.MustParsePrefix("0.0.0.0/0")
	k.foreign(Route{Dst: def, NextHops: addrs("192.0.2.254")}, 4) // a static default route
	var reported []Conflict
	tb := runTable(t, k, func(c Conflict) { reported = append(reported, c) })
	tb.SetLearned(def, addrs("192.0.2.9"))
	settle(t, tb)
	tb.Resync()
	settle(t, tb)
	if fr := k.routes[def]; fr.proto != 4 || fr.r.NextHops[0] != netip.MustParseAddr("192.0.2.254") {
		t.Fatalf("the foreign default route was taken over: %+v", fr)
	}
	cs := tb.Conflicts()
	if len(cs) != 1 || cs[0].Dst != def || cs[0].Protocol != 4 || len(reported) != 1 {
		t.Fatalf("conflicts %v, reported %v; want one for %s (protocol 4), reported once", cs, reported, def)
	}
	t.Logf("reported: %s", cs[0])
	tb.SetLearned(def, nil) // hostroute no longer wants it: the foreign route stays
	settle(t, tb)
	if fr, ok := k.routes[def]; !ok || fr.proto != 4 {
		t.Fatal("the foreign route was deleted")
	}
	if cs := tb.Conflicts(); len(cs) != 0 {
		t.Fatalf("conflict still reported after the route is no longer wanted: %v", cs)
	}
	tb.SetLearned(def, addrs("192.0.2.9"))
	k.mu.Lock()
	delete(k.routes, def) // the operator removes the static route
	k.mu.Unlock()
	tb.Resync()
	settle(t, tb)
	if got := k.ours(); !slices.Equal(got, []string{"0.0.0.0/0 via 192.0.2.9"}) || len(tb.Conflicts()) != 0 {
		t.Fatalf("after the foreign route left: kernel %v, conflicts %v", got, tb.Conflicts())
	}
}

// A best path whose event was missed is put in by the next repair from the RIB; an event
// that arrives while the RIB is read is newer than the read and wins.
func TestTableRepairFromRIB(t *testing.T) {
	k := newFakeKernel(t)
	tb := runTable(t, k, nil)
	a, b, c := netip.MustParsePrefix("10.1.0.0/26"), netip.MustParsePrefix("10.1.0.64/26"), netip.MustParsePrefix("10.1.0.128/26")
	tb.SetLearned(a, addrs("192.0.2.2"))
	tb.SetLearned(c, addrs("192.0.2.4"))
	settle(t, tb)

	since := tb.Seq()
	rib := map[netip.Prefix][]netip.Addr{a: addrs("192.0.2.2"), b: addrs("192.0.2.3"), c: addrs("192.0.2.4")} // read now
	tb.SetLearned(c, nil)                                                                                     // withdrawn while the read was on its way
	fixed := tb.RepairLearned(rib, since)
	settle(t, tb)
	if !slices.Equal(fixed, []netip.Prefix{b}) {
		t.Errorf("repaired %v, want only the missed %s", fixed, b)
	}
	want := []string{"10.1.0.0/26 via 192.0.2.2", "10.1.0.64/26 via 192.0.2.3"}
	if got := k.ours(); !slices.Equal(got, want) {
		t.Fatalf("kernel %v, want %v", got, want)
	}
	// A withdrawal the watch missed: the next read no longer has a.
	fixed = tb.RepairLearned(map[netip.Prefix][]netip.Addr{b: addrs("192.0.2.3")}, tb.Seq())
	settle(t, tb)
	if got := k.ours(); !slices.Equal(fixed, []netip.Prefix{a}) || !slices.Equal(got, []string{"10.1.0.64/26 via 192.0.2.3"}) {
		t.Fatalf("after a missed withdrawal: repaired %v, kernel %v", fixed, got)
	}
	// Nothing is remembered of events older than the last read: a prefix learned and
	// withdrawn leaves no trace.
	tb.mu.Lock()
	n := len(tb.lastEvent)
	tb.mu.Unlock()
	if n != 0 {
		t.Errorf("%d event sequence numbers kept after a repair from a newer read", n)
	}
}

// Prefixes with the same next hops share one slice, in the RIB copy and in the kernel
// copy (100k prefixes from one ToR hold one slice each side, not 100k).
func TestTableSharesNextHops(t *testing.T) {
	k := newFakeKernel(t)
	tb := runTable(t, k, nil)
	a, b := netip.MustParsePrefix("10.1.0.0/26"), netip.MustParsePrefix("10.1.0.64/26")
	tb.SetLearned(a, addrs("192.0.2.2", "192.0.2.3"))
	tb.SetLearned(b, addrs("192.0.2.3", "192.0.2.2"))
	settle(t, tb)
	tb.mu.Lock()
	la, lb := tb.learned[a], tb.learned[b]
	tb.mu.Unlock()
	if &la[0] != &lb[0] {
		t.Error("learned next hops not shared")
	}
	ka, kb := tb.inKernel[a].NextHops, tb.inKernel[b].NextHops // the writer is idle: settled
	if len(ka) != 2 || &ka[0] != &kb[0] {
		t.Errorf("kernel next hops not shared: %v %v", ka, kb)
	}
}

// Next hops off every connected subnet are installed through the gateway that reaches
// them; Wanted shows the kernel form, so a full pass finds nothing to change.
func TestTableResolvesNextHops(t *testing.T) {
	k := newFakeKernel(t)
	k.gws[netip.MustParseAddr("10.1.2.3")] = netip.MustParseAddr("192.0.2.254")
	tb := runTable(t, k, nil)
	p := netip.MustParsePrefix("10.244.7.0/26")
	tb.SetLearned(p, addrs("10.1.2.3", "192.0.2.5"))
	settle(t, tb)
	want := []string{"10.244.7.0/26 via 192.0.2.5,192.0.2.254"}
	if got := k.ours(); !slices.Equal(got, want) {
		t.Fatalf("kernel %v, want %v", got, want)
	}
	if got := routeStrings(tb.Wanted()); !slices.Equal(got, want) {
		t.Fatalf("Wanted %v, want %v", got, want)
	}
	before := k.writes
	tb.Resync()
	settle(t, tb)
	if k.writes != before {
		t.Fatalf("a full pass rewrote a resolved route (%d writes)", k.writes-before)
	}
}

// After a restart, learned routes found in the kernel stay while BGP re-learns them, and
// leave once the grace is over; a stale blackhole is never kept.
func TestTableKeepsRoutesAfterRestart(t *testing.T) {
	k := newFakeKernel(t)
	learned := Route{Dst: netip.MustParsePrefix("10.1.0.0/26"), NextHops: addrs("192.0.2.2")}
	stale := Route{Dst: netip.MustParsePrefix("10.244.9.0/26"), Blackhole: true}
	k.routes[learned.Dst] = fakeRoute{Protocol, learned}
	k.routes[stale.Dst] = fakeRoute{Protocol, stale}
	tb := NewTable(k, slog.New(slog.DiscardHandler), nil)
	tb.KeepUntil(time.Now().Add(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tb.Run(ctx)
	settle(t, tb)
	if got := k.ours(); !slices.Equal(got, []string{learned.String()}) || !tb.Keeping() {
		t.Fatalf("during the grace: kernel %v (keeping %v), want only %s", got, tb.Keeping(), learned)
	}
	tb.KeepUntil(time.Now().Add(-time.Second))
	settle(t, tb)
	if got := k.ours(); len(got) != 0 {
		t.Fatalf("after the grace: kernel %v, want nothing", got)
	}
}

// Running a full pass twice changes nothing the second time.
func TestTableFullPassIdempotent(t *testing.T) {
	k := newFakeKernel(t)
	tb := runTable(t, k, nil)
	tb.SetBlocks([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/26")})
	tb.SetLearned(netip.MustParsePrefix("10.244.0.64/26"), addrs("192.0.2.2", "192.0.2.3"))
	settle(t, tb)
	tb.Resync()
	settle(t, tb)
	before := k.writes
	tb.Resync()
	settle(t, tb)
	if k.writes != before {
		t.Fatalf("second full pass wrote %d routes", k.writes-before)
	}
}
