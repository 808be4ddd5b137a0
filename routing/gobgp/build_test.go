package gobgp

import (
	"net/netip"
	"strings"
	"testing"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"

	"github.com/hostroute/hostroute/routing"
)

var (
	ptA   = netip.MustParseAddr("192.0.2.11") // this node
	ptB   = netip.MustParseAddr("192.0.2.12")
	ptC   = netip.MustParseAddr("192.0.2.13")
	ptToR = netip.MustParseAddr("192.0.2.1")
	ptV6  = netip.MustParseAddr("fd00::12")
)

// ptPolicy is node A's policy, with the odd cases the builder must cope with.
func ptPolicy() routing.Policy {
	return routing.Policy{
		OwnBlocks:    []netip.Prefix{gbPfx("10.244.0.0/26")},
		ExtraExports: []netip.Prefix{gbPfx("10.245.0.7/32"), gbPfx("203.0.113.5/32")},
		BlockOwners: map[netip.Prefix]netip.Addr{
			gbPfx("10.244.0.0/26"):        ptA,
			gbPfx("10.244.1.0/26"):        ptB,
			gbPfx("10.244.2.0/26"):        ptC,
			gbPfx("10.244.3.7/32"):        ptC, // an address borrowed from B's... block, owned by C
			gbPfx("fd00:244:0:1::/80"):    ptV6,
			gbPfx("172.16.0.0/26"):        ptB, // outside every pool
			gbPfx("fd00:244:0:2::/80"):    ptC, // an IPv4 owner for an IPv6 block: never matches
			gbPfx("10.244.128.0/26"):      ptB,
			gbPfx("10.244.0.0/16"):        ptB, // the pool itself as a "block"
			gbPfx("10.244.255.192/26"):    ptC,
			gbPfx("fd00:244:0:ffff::/80"): ptV6,
		},
		Pools:              []netip.Prefix{gbPfx("10.244.0.0/16"), gbPfx("fd00:244::/48")},
		ExternalImports:    map[netip.Addr][]routing.PrefixRange{ptToR: {{Prefix: gbPfx("0.0.0.0/0")}, {Prefix: gbPfx("198.51.100.0/24"), MaxLen: 28}}},
		NoExportToExternal: []netip.Prefix{gbPfx("10.245.0.0/16")},
	}
}

// The GoBGP policy is deterministic (installing it twice is a no-op) and has the
// hazards of GoBGP's policy engine handled: explicit mask ranges, one family per prefix
// set, no empty neighbour sets.
func TestBuildPolicy(t *testing.T) {
	kinds := map[netip.Addr]routing.PeerKind{ptB: routing.KindMesh, ptC: routing.KindReflectorClient, ptToR: routing.KindExternal}
	a := buildPolicy(ptPolicy(), kinds)
	for range 20 { // map iteration order must not matter
		if b := buildPolicy(ptPolicy(), kinds); !proto.Equal(a, b) {
			t.Fatal("buildPolicy is not deterministic")
		}
	}
	names := map[string]bool{}
	for _, s := range a.DefinedSets {
		if names[s.Name] {
			t.Errorf("defined set %s twice", s.Name)
		}
		names[s.Name] = true
		if s.DefinedType == api.DefinedType_NEIGHBOR && len(s.List) == 0 {
			t.Errorf("empty neighbour set %s", s.Name)
		}
		for i, e := range s.Prefixes {
			q := gbPfx(e.IpPrefix)
			if q.Addr().Is4() != gbPfx(s.Prefixes[0].IpPrefix).Addr().Is4() {
				t.Errorf("set %s mixes families", s.Name)
			}
			if int(e.MaskLengthMin) != q.Bits() || e.MaskLengthMax < e.MaskLengthMin {
				t.Errorf("set %s entry %d: %s %d..%d", s.Name, i, e.IpPrefix, e.MaskLengthMin, e.MaskLengthMax)
			}
		}
	}
	var stmts []string
	for _, pol := range a.Policies {
		for _, s := range pol.Statements {
			stmts = append(stmts, s.Name)
		}
	}
	got := strings.Join(stmts, " ")
	for _, want := range []string{
		"hr-im-local hr-im-own-v4 hr-im-owner-v4-192.0.2.12 hr-im-owner-v4-192.0.2.13 hr-im-owner-v6-192.0.2.13",
		"hr-im-owner-v6-fd00::12 hr-im-import-v4-192.0.2.1 hr-ex-noexport-v4",
		"hr-ex-noexport-v4 hr-ex-own-v4 hr-ex-reflect-v4 hr-ex-reflect-v6",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("statements %q\nmissing %q", got, want)
		}
	}
	// Without nodes or reflector clients the rules that need them are left out.
	b := buildPolicy(ptPolicy(), map[netip.Addr]routing.PeerKind{ptToR: routing.KindExternal})
	for _, pol := range b.Policies {
		for _, s := range pol.Statements {
			if strings.Contains(s.Name, "owner") || strings.Contains(s.Name, "reflect") {
				t.Errorf("statement %s without node neighbours", s.Name)
			}
		}
	}
}
