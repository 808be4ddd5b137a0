package routes

import (
	"net/netip"
	"slices"
	"testing"
)

func TestCheckProtocols(t *testing.T) {
	for _, tc := range []struct {
		agent, cni, legacy int
		ok                 bool
	}{
		{Protocol, CNIProtocol, LegacyProtocol, true},
		{Protocol, CNIProtocol, 0, true},
		{LegacyProtocol, LegacyCNIProtocol, LegacyProtocol, true}, // the old numbers, kept
		{230, 231, LegacyProtocol, true},
		{Protocol, Protocol, LegacyProtocol, false},             // the agent would delete pod routes
		{LegacyCNIProtocol, CNIProtocol, LegacyProtocol, false}, // ... of older plugins
		{Protocol, LegacyProtocol, LegacyProtocol, false},       // legacy adoption would delete them
		{Protocol, CNIProtocol, LegacyCNIProtocol, false},
		{Protocol, CNIProtocol, 256, false},
		{4, CNIProtocol, 0, false}, {Protocol, 0, 0, false}, {256, CNIProtocol, 0, false}, {Protocol, -1, 0, false},
	} {
		err := CheckProtocols(tc.agent, tc.cni, tc.legacy)
		if (err == nil) != tc.ok {
			t.Errorf("CheckProtocols(%d, %d, %d) = %v, want ok=%v", tc.agent, tc.cni, tc.legacy, err, tc.ok)
		}
	}
}

// In the fake kernel: a legacy route with the wanted content is still rewritten (it must
// not stay looking like FRR's), a legacy one nobody wants is deleted, neither is a
// conflict, and Compute treats a legacy kernel route as one to replace.
func TestTableLegacyRoutes(t *testing.T) {
	k := newFakeKernel(t)
	want := r("10.80.0.0/24", "192.0.2.2")
	k.foreign(want, LegacyProtocol)
	k.foreign(Route{Dst: netip.MustParsePrefix("10.81.0.0/26"), Blackhole: true}, LegacyProtocol)
	tb := runTable(t, k, nil)
	tb.SetPools([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	tb.SetLearned(want.Dst, want.NextHops)
	tb.Resync()
	settle(t, tb)
	if cs := tb.Conflicts(); len(cs) != 0 {
		t.Fatalf("conflicts = %v, want none", cs)
	}
	if len(k.routes) != 1 || k.routes[want.Dst].proto != Protocol {
		t.Fatalf("kernel = %v, want only %s with protocol %d", k.routes, want, Protocol)
	}
	old := want
	old.Legacy = true
	d := Compute([]Route{want}, []Route{old})
	if len(d.Replace) != 1 || len(d.Delete) != 0 || !slices.EqualFunc(d.Replace, []Route{want}, func(a, b Route) bool { return a.equal(b) && !a.Legacy }) {
		t.Fatalf("Compute = %+v, want one replace of %s", d, want)
	}
}
