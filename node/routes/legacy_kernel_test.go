package routes

import (
	"net/netip"
	"strconv"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/hostroute/hostroute/internal/testenv/netns"
)

var legacy = strconv.Itoa(LegacyProtocol)

// The upgrade from protocol 196: routes an older agent left with the legacy number are
// ours. The full pass rewrites the wanted ones with the current number (also one whose
// content is already right), deletes the unwanted one, and reports none as a conflict;
// routes of 197 (the plugin's former number) and 198 (FRR's srte) stay untouched, and 197
// holding a wanted destination is a conflict like any foreign route.
func TestTableLegacyRoutesRealKernel(t *testing.T) {
	k, ns := kernelNS(t,
		[]string{"ip", "route", "add", "10.60.0.0/24", "via", "192.0.2.2", "proto", legacy}, // wanted as it is
		[]string{"ip", "route", "add", "10.61.0.0/24", "via", "192.0.2.9", "proto", legacy}, // wanted via .2
		[]string{"ip", "route", "add", "blackhole", "10.62.0.0/26", "proto", legacy},        // a released block
		[]string{"ip", "route", "add", "10.63.0.7/32", "dev", "v0", "proto", strconv.Itoa(LegacyCNIProtocol)},
		[]string{"ip", "route", "add", "10.64.0.0/24", "via", "192.0.2.9", "proto", "198"},
	)
	tb := runTable(t, k, nil)
	tb.SetPools([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	tb.SetBlocks([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/26")})
	for _, p := range []string{"10.60.0.0/24", "10.61.0.0/24", "10.63.0.7/32"} {
		tb.SetLearned(netip.MustParsePrefix(p), addrs("192.0.2.2"))
	}
	tb.Resync()
	settle(t, tb)
	out, _ := netns.Output(ns, "ip", "-N", "route", "show")
	t.Logf("kernel:\n%s", out)
	if err := tb.Err(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dst   string
		proto netlink.RouteProtocol
		gw    string
	}{
		{"10.60.0.0/24", Protocol, "192.0.2.2"}, {"10.61.0.0/24", Protocol, "192.0.2.2"},
		{"10.63.0.7/32", LegacyCNIProtocol, "<nil>"}, {"10.64.0.0/24", 198, "192.0.2.9"},
	} {
		rs := routesTo(t, k, c.dst)
		if len(rs) != 1 || rs[0].Protocol != c.proto || rs[0].Gw.String() != c.gw {
			t.Errorf("%s: kernel has %v, want one route of protocol %d via %s", c.dst, rs, c.proto, c.gw)
		}
	}
	if rs := routesTo(t, k, "10.62.0.0/26"); len(rs) != 0 {
		t.Errorf("the legacy blackhole nothing wants is still there: %v", rs)
	}
	if cs := tb.Conflicts(); len(cs) != 1 || cs[0].Dst.String() != "10.63.0.7/32" || cs[0].Protocol != LegacyCNIProtocol {
		t.Errorf("conflicts = %v, want only 10.63.0.7/32 (protocol %d)", cs, LegacyCNIProtocol)
	}
	if got, _ := k.List(); len(got) != 3 || got[0].Legacy || got[1].Legacy || got[2].Legacy {
		t.Errorf("List after the pass = %+v, want 3 routes, none legacy", got)
	}

	// Between full passes: a legacy route at a destination the table did not read is
	// found by Add's EEXIST; Occupant's 196 is ours, so it is replaced, not a conflict.
	if err := netns.Exec(ns, "ip", "route", "add", "10.65.0.0/24", "via", "192.0.2.9", "proto", legacy); err != nil {
		t.Fatal(err)
	}
	tb.SetLearned(netip.MustParsePrefix("10.65.0.0/24"), addrs("192.0.2.2"))
	settle(t, tb)
	if rs := routesTo(t, k, "10.65.0.0/24"); len(rs) != 1 || rs[0].Protocol != Protocol || rs[0].Gw.String() != "192.0.2.2" {
		t.Errorf("10.65.0.0/24: kernel has %v, want one route of protocol %d via 192.0.2.2", rs, Protocol)
	}
	if cs := tb.Conflicts(); len(cs) != 1 {
		t.Errorf("conflicts = %v, want only 10.63.0.7/32", cs)
	}
}

// The kernel view itself: List marks legacy routes, Owns knows both numbers, Delete of a
// legacy route removes it by its number, and without Legacy the old routes are foreign.
func TestNetlinkLegacyRealKernel(t *testing.T) {
	k, _ := kernelNS(t,
		[]string{"ip", "route", "add", "10.70.0.0/24", "via", "192.0.2.2", "proto", legacy},
		[]string{"ip", "route", "add", "10.71.0.0/24", "via", "192.0.2.2", "proto", strconv.Itoa(Protocol)},
	)
	rs, err := k.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Dst.String() != "10.71.0.0/24" || rs[0].Legacy || rs[1].Dst.String() != "10.70.0.0/24" || !rs[1].Legacy {
		t.Fatalf("List = %+v, want 10.71.0.0/24 then 10.70.0.0/24 (legacy)", rs)
	}
	for p, want := range map[int]bool{Protocol: true, LegacyProtocol: true, CNIProtocol: false, LegacyCNIProtocol: false, 0: false, 186: false} {
		if k.Owns(p) != want {
			t.Errorf("Owns(%d) = %v, want %v", p, !want, want)
		}
	}
	if proto, found, err := k.Occupant(netip.MustParsePrefix("10.70.0.0/24")); err != nil || !found || proto != LegacyProtocol {
		t.Errorf("Occupant(10.70.0.0/24) = %d, %v, %v; want %d", proto, found, err, LegacyProtocol)
	}
	plain := Netlink{H: k.H, Protocol: Protocol}
	if rs, _ := plain.List(); len(rs) != 1 || plain.Owns(LegacyProtocol) {
		t.Errorf("without Legacy: List = %v, Owns(%d) = %v; want only 10.71.0.0/24 and false", rs, LegacyProtocol, plain.Owns(LegacyProtocol))
	}
	if err := k.Delete(rs[1]); err != nil {
		t.Fatal(err)
	}
	if left := routesTo(t, k, "10.70.0.0/24"); len(left) != 0 {
		t.Errorf("Delete of the legacy route left %v", left)
	}
	other := Netlink{H: k.H, Protocol: 230}
	if err := other.Replace(r("10.71.0.0/24", "192.0.2.3")); err != nil {
		t.Fatal(err)
	}
	if got := routesTo(t, k, "10.71.0.0/24"); len(got) != 1 || got[0].Protocol != 230 {
		t.Errorf("a kernel configured with protocol 230 wrote %v", got)
	}
}

// The legacy number is FRR's "static": outside the pools a route of 196 is someone else's.
// It is neither deleted nor taken over; wanting its destination is a conflict.
func TestTableLegacyOutsidePoolsIsForeign(t *testing.T) {
	k, _ := kernelNS(t,
		[]string{"ip", "route", "add", "172.31.0.0/24", "via", "192.0.2.9", "proto", legacy},
		[]string{"ip", "route", "add", "172.30.0.0/24", "via", "192.0.2.9", "proto", legacy})
	tb := runTable(t, k, nil)
	tb.SetPools([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")})
	tb.SetLearned(netip.MustParsePrefix("172.30.0.0/24"), addrs("192.0.2.2"))
	tb.Resync()
	settle(t, tb)
	for _, dst := range []string{"172.31.0.0/24", "172.30.0.0/24"} {
		rs := routesTo(t, k, dst)
		if len(rs) != 1 || int(rs[0].Protocol) != LegacyProtocol || rs[0].Gw.String() != "192.0.2.9" {
			t.Errorf("%s: kernel has %v, want the untouched route of protocol %d via 192.0.2.9", dst, rs, LegacyProtocol)
		}
	}
	if cs := tb.Conflicts(); len(cs) != 1 || cs[0].Dst != netip.MustParsePrefix("172.30.0.0/24") {
		t.Fatalf("conflicts = %v, want 172.30.0.0/24 (protocol %d)", cs, LegacyProtocol)
	}
}
