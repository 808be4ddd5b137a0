package routing

import (
	"net/netip"
	"testing"
)

func TestHopSets(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	var h HopSets
	x := h.Get([]netip.Addr{a, b})
	y := h.Get([]netip.Addr{a, b})
	if &x[0] != &y[0] {
		t.Error("equal sets are not shared")
	}
	if z := h.Get([]netip.Addr{a}); len(z) != 1 || &z[0] == &x[0] {
		t.Errorf("a different set: %v", z)
	}
	if cap(x) != len(x) {
		t.Error("a shared slice has room to append in place")
	}
	in := []netip.Addr{a, b}
	s := h.Get(in)
	in[0] = b // the caller's slice is its own
	if s[0] != a {
		t.Error("Get kept the caller's slice")
	}
	if h.Get(nil) != nil {
		t.Error("no hops: want nil")
	}
	wide := make([]netip.Addr, maxSharedHops+1)
	if got := h.Get(wide); &got[0] != &wide[0] {
		t.Error("a set larger than maxSharedHops is kept as it comes")
	}
	for i := range maxHopSets + 10 { // bounded: the map starts over
		h.Get([]netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})})
	}
	if len(h.m) > maxHopSets {
		t.Errorf("%d sets remembered, bound %d", len(h.m), maxHopSets)
	}
}
