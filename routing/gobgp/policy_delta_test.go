package gobgp

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hostroute/hostroute/routing"
)

// resetLog records the soft resets a speaker's policy code asks for.
type resetLog struct {
	mu   sync.Mutex
	seen []string
}

func (r *resetLog) note(a string) { r.mu.Lock(); r.seen = append(r.seen, a); r.mu.Unlock() }

func (r *resetLog) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.seen
	r.seen = nil
	return out
}

// A block change touches no neighbour it does not concern: with c meshed to a, b and an
// external neighbour e, a second block for a (announced by a before c knew of it) is
// accepted after one soft reset in of a alone; releasing it while a still announces it
// resets only a, after removalGrace, and drops the route; a block nobody has announced yet, or a new block of c's own, resets
// nobody. A node's first block (a new statement) still re-installs the policy and
// resets everyone.
func TestBlockChangeTouchesOnlyItsOwner(t *testing.T) {
	port := gbFreePort(t)
	a := gbStart(t, "a", "127.0.9.11", gbAS, port, true)
	b := gbStart(t, "b", "127.0.9.12", gbAS, port, true)
	c := gbStart(t, "c", "127.0.9.13", gbAS, port, true)
	e := gbStart(t, "e", "127.0.9.21", 65001, port, false)
	log := &resetLog{}
	c.s.onReset = log.note
	const a1, a2, b1, b2, c1, c2, d1 = "10.244.1.0/26", "10.244.1.64/26", "10.244.2.0/26", "10.244.2.64/26", "10.244.3.0/26", "10.244.3.64/26", "10.244.4.0/26"
	pol := routing.Policy{
		OwnBlocks:       []netip.Prefix{gbPfx(c1)},
		BlockOwners:     map[netip.Prefix]netip.Addr{gbPfx(a1): a.addr, gbPfx(b1): b.addr, gbPfx(c1): c.addr},
		Pools:           []netip.Prefix{gbPfx("10.244.0.0/16")},
		ExternalImports: map[netip.Addr][]routing.PrefixRange{e.addr: {{Prefix: gbPfx("198.51.100.0/24")}}},
	}
	c.setPolicy(pol)
	c.advertise(c1, c.addr)
	a.advertise(a1, a.addr)
	a.advertise(a2, a.addr) // not assigned yet, as far as c knows
	b.advertise(b1, b.addr)
	a.setPeers(a.peerOf(c, routing.KindMesh))
	b.setPeers(b.peerOf(c, routing.KindMesh))
	e.setPeers(e.peerOf(c, routing.KindExternal))
	c.setPeers(c.peerOf(a, routing.KindMesh), c.peerOf(b, routing.KindMesh), c.peerOf(e, routing.KindExternal))
	c.waitBest(a1, 10*time.Second, a.addr)
	c.waitBest(b1, 10*time.Second, b.addr)
	if hops := c.best(a2); hops != nil {
		t.Fatalf("c took the unassigned %s via %v", a2, hops)
	}
	log.take()

	step := func(what string, change func(p *routing.Policy), want []string) {
		t.Helper()
		next := pol.Clone()
		change(&next)
		applied := c.s.applied
		c.setPolicy(next)
		pol = next
		if got := log.take(); !slices.Equal(got, want) {
			t.Fatalf("%s: soft resets %q, want %q", what, got, want)
		}
		if len(want) == 0 || want[0] != "" {
			if c.s.applied == applied {
				t.Fatalf("%s: the installed policy was not updated", what)
			}
		}
	}
	step("a second block for a", func(p *routing.Policy) { p.BlockOwners[gbPfx(a2)] = a.addr }, []string{a.addr.String()})
	c.waitBest(a2, 5*time.Second, a.addr)
	// Released while a still announces it: judged again after removalGrace (a sender
	// normally withdraws a released block long before), then dropped.
	step("a's second block released", func(p *routing.Policy) { delete(p.BlockOwners, gbPfx(a2)) }, nil)
	var late []string
	gbWaitFor(t, removalGrace+3*time.Second, "the deferred reset of a", func() bool {
		late = append(late, log.take()...)
		return len(late) > 0
	})
	if !slices.Equal(late, []string{a.addr.String()}) {
		t.Fatalf("deferred resets %q, want only a", late)
	}
	c.waitBest(a2, 5*time.Second)
	// The common order: the block is in the API before its route arrives. Nobody has
	// sent it, so nobody is reset, and the route is accepted when it comes.
	step("a second block for b, not announced yet", func(p *routing.Policy) { p.BlockOwners[gbPfx(b2)] = b.addr }, nil)
	b.advertise(b2, b.addr)
	c.waitBest(b2, 5*time.Second, b.addr)
	step("a new block of c's own", func(p *routing.Policy) {
		p.OwnBlocks = append(p.OwnBlocks, gbPfx(c2))
		p.BlockOwners[gbPfx(c2)] = c.addr
	}, nil) // e (whose import list could have let it in) never sent it
	c.advertise(c2, c.addr)
	a.waitBest(c2, 5*time.Second, c.addr) // exported without any reset out
	c.waitBest(b1, time.Second, b.addr)   // b untouched
	step("the first block of a new node d", func(p *routing.Policy) {
		p.BlockOwners[gbPfx(d1)] = netip.MustParseAddr("127.0.9.14")
	}, []string{""})
	checkAgreement(t, c, pol)
}

func TestResetTargets(t *testing.T) {
	n1, n2, rr, ext := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("192.0.2.254")
	mesh := map[netip.Addr]routing.PeerKind{n1: routing.KindMesh, n2: routing.KindMesh, ext: routing.KindExternal}
	client := map[netip.Addr]routing.PeerKind{rr: routing.KindReflector, ext: routing.KindExternal}
	reflector := map[netip.Addr]routing.PeerKind{n1: routing.KindReflectorClient, n2: routing.KindReflectorClient, rr: routing.KindMesh}
	d := func(names ...string) []setDelta {
		var out []setDelta
		for _, n := range names {
			out = append(out, setDelta{name: n})
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		deltas []setDelta
		kinds  map[netip.Addr]routing.PeerKind
		want   []netip.Addr
		all    bool
	}{
		{"mesh: the owner only", d("hr-owner-v4-192.0.2.2"), mesh, []netip.Addr{n2}, false},
		{"client: its reflector", d("hr-owner-v4-192.0.2.2"), client, []netip.Addr{rr}, false},
		{"reflector: the owner and the other reflectors", d("hr-owner-v4-192.0.2.2"), reflector, []netip.Addr{n2, rr}, false},
		{"own block: the externals", d("hr-own-v4"), mesh, []netip.Addr{ext}, false},
		{"origin set: the externals", d("hr-origin-v4-192.0.2.254-as64512"), mesh, []netip.Addr{ext}, false},
		{"export set: nobody", d("hr-export-v4"), mesh, nil, false},
		{"pools: everyone", d("hr-pools-v4"), mesh, nil, true},
	} {
		got, all := resetTargets(tc.deltas, tc.kinds)
		if !slices.Equal(got, tc.want) || all != tc.all {
			t.Errorf("%s: %v all=%v, want %v all=%v", tc.name, got, all, tc.want, tc.all)
		}
	}
}

// BenchmarkPolicyChange is what one block change costs the policy code before GoBGP: the
// policy built again and compared with the installed one, at 25 and 100 nodes.
func BenchmarkPolicyChange(b *testing.B) {
	for _, n := range []int{25, 100} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			pol := routing.Policy{BlockOwners: map[netip.Prefix]netip.Addr{}, Pools: []netip.Prefix{gbPfx("10.200.0.0/16")}}
			kinds := map[netip.Addr]routing.PeerKind{}
			for i := 1; i <= n; i++ {
				a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
				pol.BlockOwners[gbPfx(fmt.Sprintf("10.200.%d.%d/26", (i-1)/4, (i-1)%4*64))] = a
				kinds[a] = routing.KindMesh
			}
			prev := buildPolicy(pol, kinds)
			pol.BlockOwners[gbPfx("10.200.200.0/26")] = netip.AddrFrom4([4]byte{192, 0, 2, byte(n)})
			b.ReportAllocs()
			for b.Loop() {
				next := buildPolicy(pol, kinds)
				if _, ok := diffPolicy(prev, next); !ok {
					b.Fatal("a second block of an existing owner should be a set change")
				}
			}
		})
	}
}

// TestScanDue: a neighbour's Adj-RIB-In is listed once after it stops sending, not every
// interval while it sends; again after a policy change once it is quiet; and at least
// every refresh.
func TestScanDue(t *testing.T) {
	now := time.Unix(1000, 0)
	const refresh = time.Minute
	for _, c := range []struct {
		name string
		sp   scanPeer
		gen  uint64
		want bool
	}{
		{"first seen, sending", scanPeer{quiet: 0, scanned: now}, 1, false},
		{"still sending", scanPeer{quiet: 0, gen: 1, scanned: now.Add(-10 * time.Second)}, 1, false},
		{"sending for longer than refresh", scanPeer{quiet: 0, gen: 1, scanned: now.Add(-refresh)}, 1, true},
		{"quiet for an interval", scanPeer{quiet: 1, gen: 1, scanned: now.Add(-10 * time.Second)}, 1, true},
		{"judged since quiet", scanPeer{quiet: 2, gen: 1, scanned: now.Add(-5 * time.Second)}, 1, false},
		{"policy changed", scanPeer{quiet: 2, gen: 1, scanned: now.Add(-5 * time.Second)}, 2, true},
		{"policy changed while sending", scanPeer{quiet: 0, gen: 1, scanned: now.Add(-5 * time.Second)}, 2, false},
		{"refresh", scanPeer{quiet: 2, gen: 1, scanned: now.Add(-refresh)}, 1, true},
	} {
		if got := c.sp.due(c.gen, now, refresh); got != c.want {
			t.Errorf("%s: due = %v, want %v", c.name, got, c.want)
		}
	}
}
