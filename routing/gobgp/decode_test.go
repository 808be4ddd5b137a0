package gobgp

import (
	"net/netip"
	"testing"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// gbPathForms builds one received path as GoBGP gives it to the API: with protobuf NLRI
// and attributes (watch, ListPath) and with their binary forms (ListPath with
// EnableNlriBinary and EnableAttributeBinary), both from the same native path.
func gbPathForms(t *testing.T, nlri bgp.AddrPrefixInterface, attrs []bgp.PathAttributeInterface, neighbor string) *api.Path {
	t.Helper()
	anyNlri, err := apiutil.MarshalNLRI(nlri)
	if err != nil {
		t.Fatal(err)
	}
	anyAttrs, err := apiutil.MarshalPathAttributes(attrs)
	if err != nil {
		t.Fatal(err)
	}
	binNlri, err := nlri.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	var binAttrs [][]byte
	for _, a := range attrs {
		b, err := a.Serialize()
		if err != nil {
			t.Fatal(err)
		}
		binAttrs = append(binAttrs, b)
	}
	return &api.Path{
		Nlri: anyNlri, Pattrs: anyAttrs, NlriBinary: binNlri, PattrsBinary: binAttrs, NeighborIp: neighbor,
		Family: &api.Family{Afi: api.Family_Afi(nlri.AFI()), Safi: api.Family_Safi(nlri.SAFI())},
	}
}

// The fast decoders (decodeWatchPath on the best-path watch, decodeBinaryPath in the
// rejected-route scan) read the same prefix and next hop as decodePath.
func TestDecodePathForms(t *testing.T) {
	origin := bgp.NewPathAttributeOrigin(0)
	asPath := bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65000})})
	v6 := bgp.NewIPv6AddrPrefix(64, "2001:db8:1:2::")

	// An IPv6 next hop with a link-local one after it, as on the wire.
	ll := []byte{0x90, 14, 0, 0, 0, 2, 1, 32}
	ll = append(ll, netip.MustParseAddr("2001:db8::7").AsSlice()...)
	ll = append(ll, netip.MustParseAddr("fe80::7").AsSlice()...)
	ll = append(ll, 0)
	nb, _ := v6.Serialize()
	ll = append(ll, nb...)
	ll[2], ll[3] = byte((len(ll)-4)>>8), byte(len(ll)-4)
	mpLL := &bgp.PathAttributeMpReachNLRI{}
	if err := mpLL.DecodeFromBytes(ll); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name     string
		nlri     bgp.AddrPrefixInterface
		attrs    []bgp.PathAttributeInterface
		neighbor string
		prefix   string
		nextHop  string
		local    bool
	}{
		{"IPv4", bgp.NewIPAddrPrefix(25, "203.0.1.128"),
			[]bgp.PathAttributeInterface{origin, asPath, bgp.NewPathAttributeNextHop("192.0.2.254")},
			"192.0.2.254", "203.0.1.128/25", "192.0.2.254", false},
		{"IPv4 own route", bgp.NewIPAddrPrefix(26, "10.244.1.0"),
			[]bgp.PathAttributeInterface{origin, bgp.NewPathAttributeNextHop("192.0.2.1")},
			"<nil>", "10.244.1.0/26", "192.0.2.1", true},
		{"IPv4 default", bgp.NewIPAddrPrefix(0, "0.0.0.0"),
			[]bgp.PathAttributeInterface{origin, bgp.NewPathAttributeNextHop("192.0.2.254"), bgp.NewPathAttributeLocalPref(200)},
			"192.0.2.254", "0.0.0.0/0", "192.0.2.254", false},
		{"IPv6", v6,
			[]bgp.PathAttributeInterface{origin, bgp.NewPathAttributeMpReachNLRI("2001:db8::9", []bgp.AddrPrefixInterface{v6})},
			"2001:db8::9", "2001:db8:1:2::/64", "2001:db8::9", false},
		{"IPv6 with link-local", v6, []bgp.PathAttributeInterface{origin, mpLL},
			"fe80::7", "2001:db8:1:2::/64", "2001:db8::7", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := gbPathForms(t, c.nlri, c.attrs, c.neighbor)
			want, wantNH := netip.MustParsePrefix(c.prefix), netip.MustParseAddr(c.nextHop)
			d, err := decodePath(p)
			if err != nil || d.prefix != want || d.nextHop != wantNH || d.local != c.local {
				t.Errorf("decodePath = %+v, %v", d, err)
			}
			pfx, nh, local, err := decodeWatchPath(p)
			if err != nil || pfx != want || nh != wantNH || local != c.local {
				t.Errorf("decodeWatchPath = %v via %v local=%v, %v", pfx, nh, local, err)
			}
			pfx, nh, err = decodeBinaryPath(p)
			if err != nil || pfx != want || nh != wantNH {
				t.Errorf("decodeBinaryPath = %v via %v, %v", pfx, nh, err)
			}
		})
	}

	// Withdrawals carry no next hop; paths without one are errors otherwise.
	w := gbPathForms(t, bgp.NewIPAddrPrefix(24, "198.51.100.0"), []bgp.PathAttributeInterface{origin}, "192.0.2.254")
	if _, _, _, err := decodeWatchPath(w); err == nil {
		t.Error("decodeWatchPath accepted a path without a next hop")
	}
	if _, _, err := decodeBinaryPath(w); err == nil {
		t.Error("decodeBinaryPath accepted a path without a next hop")
	}
	w.IsWithdraw = true
	if pfx, _, _, err := decodeWatchPath(w); err != nil || pfx != netip.MustParsePrefix("198.51.100.0/24") {
		t.Errorf("withdrawal: %v, %v", pfx, err)
	}
}

func BenchmarkDecodeWatchPath(b *testing.B) {
	t := &testing.T{}
	p := gbPathForms(t, bgp.NewIPAddrPrefix(25, "203.0.1.128"), []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(0),
		bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65000})}),
		bgp.NewPathAttributeNextHop("192.0.2.254"),
	}, "192.0.2.254")
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, _, err := decodeWatchPath(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decodePath", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodePath(p); err != nil {
				b.Fatal(err)
			}
		}
	})
}
