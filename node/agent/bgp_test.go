package agent

import (
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hostroute/hostroute/node/routes"
	"github.com/hostroute/hostroute/routing"
)

// bgpFakeKernel records route writes; each write takes delay (netlink is slower than
// GoBGP's events), and at most one may run at a time.
type bgpFakeKernel struct {
	t      *testing.T
	delay  time.Duration
	mu     sync.Mutex
	busy   bool
	routes map[netip.Prefix][]netip.Addr
	writes map[netip.Prefix]int
}

func (k *bgpFakeKernel) List() ([]routes.Route, error) { return nil, nil }

func (k *bgpFakeKernel) write(p netip.Prefix, hops []netip.Addr) {
	k.mu.Lock()
	if k.busy {
		k.t.Error("concurrent kernel writes")
	}
	k.busy = true
	k.mu.Unlock()
	time.Sleep(k.delay)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.busy = false
	k.writes[p]++
	if hops == nil {
		delete(k.routes, p)
	} else {
		k.routes[p] = slices.Clone(hops)
	}
}

func (k *bgpFakeKernel) Replace(r routes.Route) error { k.write(r.Dst, r.NextHops); return nil }
func (k *bgpFakeKernel) Delete(r routes.Route) error  { k.write(r.Dst, nil); return nil }

func (k *bgpFakeKernel) snapshot() (map[netip.Prefix][]netip.Addr, map[netip.Prefix]int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	r := make(map[netip.Prefix][]netip.Addr, len(k.routes))
	for p, h := range k.routes {
		r[p] = h
	}
	w := make(map[netip.Prefix]int, len(k.writes))
	for p, n := range k.writes {
		w[p] = n
	}
	return r, w
}

// onBestPath returns before the kernel write; the kernel ends with the latest state of
// every prefix (a prefix changed many times while queued is written far fewer times),
// never our own block, and no next hop BFD declared dead.
func TestOnBestPathQueuedWrites(t *testing.T) {
	k := &bgpFakeKernel{t: t, delay: 200 * time.Microsecond, routes: map[netip.Prefix][]netip.Addr{}, writes: map[netip.Prefix]int{}}
	b := &bgp{log: slog.New(slog.DiscardHandler), kernel: k, learned: map[netip.Prefix][]netip.Addr{}, dead: map[netip.Addr]bool{}}
	ownBlock := netip.MustParsePrefix("10.244.0.0/26")
	own := func() []netip.Prefix { return []netip.Prefix{ownBlock} }
	nh := []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("192.0.2.4")}
	pfx := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 245, byte(i >> 8), byte(i)}), 32)
	}

	const n, rounds = 200, 20
	start := time.Now()
	for r := range rounds {
		for i := range n {
			switch {
			case r == rounds-1 && i%10 == 0:
				b.onBestPath(routing.BestPath{Prefix: pfx(i)}, own) // withdrawn at the end
			default:
				b.onBestPath(routing.BestPath{Prefix: pfx(i), NextHops: nh[:1+(i+r)%3]}, own)
			}
		}
		b.onBestPath(routing.BestPath{Prefix: ownBlock, NextHops: nh[:1]}, own)
	}
	if d := time.Since(start); d > time.Duration(n*rounds)*k.delay/2 {
		t.Errorf("onBestPath took %v for %d changes: it waits for the kernel", d, n*rounds)
	}
	b.setDead(nh[2], true, own())

	want := map[netip.Prefix][]netip.Addr{}
	for i := range n {
		if i%10 != 0 {
			want[pfx(i)] = slices.DeleteFunc(slices.Clone(nh[:1+(i+rounds-1)%3]), func(a netip.Addr) bool { return a == nh[2] })
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, writes := k.snapshot()
		b.mu.Lock()
		idle := !b.writing
		b.mu.Unlock()
		ok := idle && len(got) == len(want)
		for p, h := range want {
			ok = ok && slices.Equal(got[p], h)
		}
		if ok {
			if _, routed := got[ownBlock]; routed || writes[ownBlock] > 0 {
				t.Error("own block written")
			}
			total := 0
			for _, w := range writes {
				total += w
			}
			t.Logf("%d changes, %d kernel writes", n*rounds, total)
			if total >= n*rounds {
				t.Errorf("%d writes for %d changes: nothing coalesced", total, n*rounds)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kernel %v, want %v (writer idle %v)", got, want, idle)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
