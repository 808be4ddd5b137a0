package routes

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// kernelNS makes a namespace with an uplink on 192.0.2.1/24, runs the extra commands in
// it and returns its kernel (the handle closes at the end of the test) and its name.
func kernelNS(t testing.TB, extra ...[]string) (Netlink, string) {
	t.Helper()
	ns := netns.ForTest(t, "hrtest-rtab-")
	cmds := [][]string{
		{"ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"},
		{"ip", "link", "set", "v0", "up"}, {"ip", "link", "set", "v1", "up"},
		{"ip", "addr", "add", "192.0.2.1/24", "dev", "v0"},
	}
	for _, c := range append(cmds, extra...) {
		if err := netns.Exec(ns, c...); err != nil {
			t.Fatal(err)
		}
	}
	h, err := netns.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return Netlink{H: h, Protocol: Protocol, Legacy: LegacyProtocol}, ns
}

// Withdrawals, BFD deaths and revivals and full passes, all at once from several
// goroutines, against a real kernel: after each quiet point the kernel holds exactly the
// routes the table's sources describe, no more and no fewer.
func TestTableConcurrentChangesRealKernel(t *testing.T) {
	k, _ := kernelNS(t)
	tb := runTable(t, k, nil)
	hops := addrs("192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5")
	own := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/26")}
	tb.SetBlocks(own)
	const prefixes = 300
	for round := range 5 {
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Add(1)
			go func() { // best-path events: new paths, ECMP changes, withdrawals
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				for range 400 {
					p := pfx(r.IntN(prefixes))
					if r.IntN(4) == 0 {
						tb.SetLearned(p, nil)
						continue
					}
					a, b := r.IntN(len(hops)), r.IntN(len(hops))
					tb.SetLearned(p, []netip.Addr{hops[a], hops[b]})
				}
			}()
		}
		wg.Add(2)
		go func() { // BFD: next hops die and come back
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(round), 99))
			for range 40 {
				tb.SetDead(hops[r.IntN(len(hops))], r.IntN(2) == 0)
				time.Sleep(200 * time.Microsecond)
			}
		}()
		go func() { // periodic full passes
			defer wg.Done()
			for range 20 {
				tb.Resync()
				time.Sleep(500 * time.Microsecond)
			}
		}()
		wg.Wait()
		settle(t, tb)
		if err := tb.Err(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		got, err := k.List()
		if err != nil {
			t.Fatal(err)
		}
		if g, w := routeStrings(got), routeStrings(tb.Desired()); !slices.Equal(g, w) {
			t.Fatalf("round %d: kernel holds %d routes, the sources want %d\nkernel-only: %v\nwanted-only: %v",
				round, len(g), len(w), minus(g, w), minus(w, g))
		}
		t.Logf("round %d: kernel = desired (%d routes)", round, len(got))
	}
}

func minus(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

// A foreign route with the same prefix and metric (here a static route, protocol 4, and
// FRR-style protocol 196's neighbour 186) is left exactly as it was, and reported.
func TestTableForeignRouteRealKernel(t *testing.T) {
	k, ns := kernelNS(t,
		[]string{"ip", "route", "add", "10.50.0.0/24", "via", "192.0.2.9", "proto", "static"},
		[]string{"ip", "route", "add", "10.51.0.0/24", "via", "192.0.2.9", "proto", "186"})
	tb := runTable(t, k, nil)
	tb.SetLearned(netip.MustParsePrefix("10.50.0.0/24"), addrs("192.0.2.2"))
	tb.SetLearned(netip.MustParsePrefix("10.51.0.0/24"), addrs("192.0.2.2"))
	tb.SetLearned(netip.MustParsePrefix("10.52.0.0/24"), addrs("192.0.2.2"))
	settle(t, tb)
	for _, c := range []struct {
		dst   string
		proto netlink.RouteProtocol
		gw    string
	}{{"10.50.0.0/24", 4, "192.0.2.9"}, {"10.51.0.0/24", 186, "192.0.2.9"}, {"10.52.0.0/24", Protocol, "192.0.2.2"}} {
		rs := routesTo(t, k, c.dst)
		if len(rs) != 1 || rs[0].Protocol != c.proto || rs[0].Gw.String() != c.gw {
			t.Errorf("%s: kernel has %v, want one route of protocol %d via %s", c.dst, rs, c.proto, c.gw)
		}
	}
	cs := tb.Conflicts()
	if len(cs) != 2 || cs[0].Protocol != 4 || cs[1].Protocol != 186 {
		t.Fatalf("conflicts = %v, want 10.50.0.0/24 (4) and 10.51.0.0/24 (186)", cs)
	}
	for _, c := range cs {
		t.Logf("reported: %s", c)
	}
	out, _ := netns.Output(ns, "ip", "-N", "route", "show")
	t.Logf("kernel:\n%s", out)
}

// A next hop on no connected subnet (a node in another subnet behind the fabric) is
// installed through the gateway that reaches it.
func TestTableRecursiveNextHopRealKernel(t *testing.T) {
	k, _ := kernelNS(t, []string{"ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.254"})
	tb := runTable(t, k, nil)
	tb.SetLearned(netip.MustParsePrefix("10.244.8.0/26"), addrs("198.51.100.7"))
	settle(t, tb)
	if err := tb.Err(); err != nil {
		t.Fatal(err)
	}
	rs := routesTo(t, k, "10.244.8.0/26")
	if len(rs) != 1 || rs[0].Gw.String() != "192.0.2.254" || rs[0].Protocol != Protocol {
		t.Fatalf("kernel has %v, want 10.244.8.0/26 via 192.0.2.254 proto %d", rs, Protocol)
	}
}

func routesTo(t *testing.T, k Netlink, dst string) []netlink.Route {
	t.Helper()
	p := netip.MustParsePrefix(dst)
	rs, err := k.H.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: prefixNet(p)}, netlink.RT_FILTER_DST)
	if err != nil {
		t.Fatal(fmt.Errorf("list %s: %w", dst, err))
	}
	return rs
}
