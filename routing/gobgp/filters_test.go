package gobgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/hostroute/hostroute/routing"
)

const (
	ftBlackhole = routing.Community(65000<<16 | 666)
	ftOther     = routing.Community(65000<<16 | 1)
)

// advertiseTagged makes n originate prefix with communities and, when originAS is not
// 0, an AS path [originAS] (n prepends its own AS on the way out over eBGP).
func (n *gbNode) advertiseTagged(prefix string, nextHop netip.Addr, originAS uint32, cs ...routing.Community) {
	n.t.Helper()
	p, err := localPath(gbPfx(prefix), nextHop)
	if err != nil {
		n.t.Fatal(err)
	}
	var attrs []*anypb.Any
	if originAS != 0 {
		a, err := anypb.New(&api.AsPathAttribute{Segments: []*api.AsSegment{{Type: 2, Numbers: []uint32{originAS}}}})
		if err != nil {
			n.t.Fatal(err)
		}
		attrs = append(attrs, a)
	}
	if len(cs) > 0 {
		vs := make([]uint32, len(cs))
		for i, c := range cs {
			vs[i] = uint32(c)
		}
		a, err := anypb.New(&api.CommunitiesAttribute{Communities: vs})
		if err != nil {
			n.t.Fatal(err)
		}
		attrs = append(attrs, a)
	}
	p.Pattrs = append(p.Pattrs, attrs...)
	if _, err := n.s.srv.AddPath(context.Background(), &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p}); err != nil {
		n.t.Fatalf("%s: add path %s: %v", n.name, prefix, err)
	}
}

// ftRoute is a route n received from one neighbour, as it arrived.
type ftRoute struct {
	prefix   netip.Prefix
	nextHop  netip.Addr
	originAS uint32
	attrs    routing.Attrs // HasLocalPref: the path carries LOCAL_PREF
	accepted bool          // in the Loc-RIB (passed the import policy)
}

// received lists the routes n's Adj-RIB-In holds from neighbour from, by prefix.
func (n *gbNode) received(from netip.Addr) map[netip.Prefix]ftRoute {
	n.t.Helper()
	inRIB := map[netip.Prefix]bool{}
	out := map[netip.Prefix]ftRoute{}
	for _, fam := range []*api.Family{familyIPv4, familyIPv6} {
		err := n.s.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: fam},
			func(d *api.Destination) {
				for _, path := range d.GetPaths() {
					if dp, err := decodePath(path); err == nil && !dp.local && dp.neighbor == from {
						inRIB[dp.prefix] = true
					}
				}
			})
		if err != nil {
			n.t.Fatal(err)
		}
		err = n.s.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_ADJ_IN, Name: from.String(), Family: fam},
			func(d *api.Destination) {
				for _, path := range d.GetPaths() {
					dp, err := decodePath(path)
					if err != nil {
						n.t.Error(err)
						continue
					}
					r := ftRoute{prefix: dp.prefix, nextHop: dp.nextHop, originAS: dp.originAS}
					for _, at := range path.GetPattrs() {
						m, err := at.UnmarshalNew()
						if err != nil {
							n.t.Error(err)
							continue
						}
						switch v := m.(type) {
						case *api.CommunitiesAttribute:
							for _, c := range v.GetCommunities() {
								r.attrs.Communities = append(r.attrs.Communities, routing.Community(c))
							}
						case *api.LargeCommunitiesAttribute:
							for _, c := range v.GetCommunities() {
								r.attrs.LargeCommunities = append(r.attrs.LargeCommunities,
									routing.LargeCommunity{ASN: c.GetGlobalAdmin(), Data1: c.GetLocalData1(), Data2: c.GetLocalData2()})
							}
						case *api.LocalPrefAttribute:
							r.attrs.LocalPref, r.attrs.HasLocalPref = v.GetLocalPref(), true
						}
					}
					out[dp.prefix] = r
				}
			})
		if err != nil {
			n.t.Fatal(err)
		}
	}
	for p, r := range out {
		r.accepted = inRIB[p]
		out[p] = r
	}
	return out
}

// waitReceived waits until n holds exactly count routes from neighbour from.
func (n *gbNode) waitReceived(from netip.Addr, count int, timeout time.Duration) {
	n.t.Helper()
	gbWaitFor(n.t, timeout, fmt.Sprintf("%s: %d routes from %s", n.name, count, from), func() bool {
		return len(n.received(from)) == count
	})
}

// eventually retries check until it reports nothing (GoBGP applies a policy change and
// its soft reset asynchronously), then fails with what it last reported.
func eventually(t *testing.T, timeout time.Duration, check func() []string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		bad := check()
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, b := range bad {
				t.Error(b)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// importMismatches compares, for every route c received from neighbour, GoBGP's import
// verdict with routing.Policy.Accepts given the route's communities.
func importMismatches(c *gbNode, neighbor netip.Addr, p routing.Policy, want map[string]bool) []string {
	var bad []string
	got := c.received(neighbor)
	for pfx, r := range got {
		ok, why := p.Accepts(routing.KindExternal, neighbor, pfx, r.nextHop, r.originAS, r.attrs.Communities...)
		if ok != r.accepted {
			bad = append(bad, fmt.Sprintf("%v %v (origin AS %d): GoBGP accepted=%v, Accepts=%v (%s)",
				pfx, r.attrs.Communities, r.originAS, r.accepted, ok, why))
		}
	}
	// The cases must mean what the test says they do.
	for s, accept := range want {
		r, found := got[gbPfx(s)]
		switch {
		case !found:
			bad = append(bad, fmt.Sprintf("%s never arrived", s))
		case r.accepted != accept:
			bad = append(bad, fmt.Sprintf("%s %v: accepted=%v, the test expects %v", s, r.attrs.Communities, r.accepted, accept))
		}
	}
	return bad
}

// rejectedMismatches compares c's rejected-route count for neighbour with the routes
// routing.Policy.Accepts refuses given their communities; with logs, also that every
// refused route was logged with its reason and no accepted one was.
func rejectedMismatches(c *gbNode, neighbor netip.Addr, p routing.Policy, logs bool) []string {
	var bad []string
	refused := 0
	for pfx, r := range c.received(neighbor) {
		ok, why := p.Accepts(routing.KindExternal, neighbor, pfx, r.nextHop, r.originAS, r.attrs.Communities...)
		if !ok {
			refused++
		}
		if !logs {
			continue
		}
		logged := c.logs.count("route rejected", "prefix="+pfx.String()+" ")
		switch {
		case ok && logged > 0:
			bad = append(bad, fmt.Sprintf("%v %v logged as rejected, Accepts says %s", pfx, r.attrs.Communities, why))
		case !ok && c.logs.count("route rejected", "prefix="+pfx.String()+" ", why) != 1:
			bad = append(bad, fmt.Sprintf("%v %v not logged once with %q", pfx, r.attrs.Communities, why))
		}
	}
	if got := c.s.Rejected()[neighbor]; got != refused {
		bad = append(bad, fmt.Sprintf("Rejected() counts %d routes from %v, Accepts refuses %d", got, neighbor, refused))
	}
	return bad
}

// A ToR announces routes with communities; node c's import filters for it (first match,
// community conditions, an Accept before a Reject, an Accept of what the import list
// lacks, blocks under BlockOwnerAS) give the same verdicts in GoBGP as
// routing.Policy.Accepts, before and after the policy changes; the rejected-route log and
// counts say the same.
func TestGoBGPImportFiltersAgree(t *testing.T) {
	port := gbFreePort(t)
	c := gbStart(t, "c", "127.0.21.13", gbAS, port, true)
	tor := gbStart(t, "tor", "127.0.21.254", 65001, port, false)
	hop6 := netip.MustParseAddr("fd00::254")
	pol := routing.Policy{
		OwnBlocks:    []netip.Prefix{gbPfx("10.244.0.0/26")},
		BlockOwners:  map[netip.Prefix]netip.Addr{gbPfx("10.244.0.0/26"): c.addr, gbPfx("10.244.0.64/26"): netip.MustParseAddr("127.0.21.11"), gbPfx("10.244.0.128/26"): netip.MustParseAddr("127.0.21.12")},
		BlockOwnerAS: map[netip.Prefix]uint32{gbPfx("10.244.0.0/26"): gbAS, gbPfx("10.244.0.64/26"): 64601, gbPfx("10.244.0.128/26"): 64602},
		Pools:        []netip.Prefix{gbPfx("10.244.0.0/16")},
		ExternalImports: map[netip.Addr][]routing.PrefixRange{tor.addr: {
			{Prefix: gbPfx("0.0.0.0/0")}, {Prefix: gbPfx("198.51.100.0/24"), MaxLen: 28}, {Prefix: gbPfx("192.0.2.0/24"), MaxLen: 28},
			{Prefix: gbPfx("10.244.0.0/16"), MaxLen: 26}, {Prefix: gbPfx("2001:db8::/32"), MaxLen: 48},
		}},
		ImportFilters: map[netip.Addr][]routing.Filter{tor.addr: {
			{Prefix: gbPfx("198.51.100.0/26"), MinLen: 26, MaxLen: 26, Accept: true},                                       // 1
			{Prefix: gbPfx("198.51.100.0/24"), MinLen: 24, MaxLen: 32},                                                     // 2
			{Prefix: gbPfx("0.0.0.0/0"), MinLen: 0, MaxLen: 32, Community: ftBlackhole, HasCommunity: true},                // 3
			{Prefix: gbPfx("203.0.113.0/24"), MinLen: 24, MaxLen: 24, Accept: true},                                        // 4
			{Prefix: gbPfx("10.244.0.64/26"), MinLen: 26, MaxLen: 26},                                                      // 5
			{Prefix: gbPfx("10.244.0.0/16"), MinLen: 16, MaxLen: 32, Community: ftOther, HasCommunity: true, Accept: true}, // 6
			{Prefix: gbPfx("2001:db8::/32"), MinLen: 40, MaxLen: 48, Community: ftOther, HasCommunity: true},               // 7
			{Prefix: gbPfx("192.0.2.0/24"), MinLen: 24, MaxLen: 32, Community: ftOther, HasCommunity: true, Accept: true},  // 8
			{Prefix: gbPfx("192.0.2.0/24"), MinLen: 26, MaxLen: 32},                                                        // 9
		}},
	}
	c.setPolicy(pol)
	routes := []struct {
		prefix string
		origin uint32
		cs     []routing.Community
		accept bool // under pol
	}{
		{"198.51.100.0/26", 0, []routing.Community{ftBlackhole}, true}, // rule 1 shields it from 2 and 3
		{"198.51.100.64/26", 0, nil, false},                            // rule 2
		{"198.51.100.128/25", 0, []routing.Community{ftOther}, false},  // rule 2
		{"198.51.100.0/24", 0, nil, false},                             // rule 2
		{"0.0.0.0/0", 0, []routing.Community{ftOther}, true},           // import list
		{"192.0.2.0/24", 0, nil, true},                                 // import list
		{"192.0.2.0/25", 0, []routing.Community{ftBlackhole}, false},   // rule 3
		{"192.0.2.128/26", 0, []routing.Community{ftOther}, true},      // rule 8 shields it from 9
		{"192.0.2.192/26", 0, nil, false},                              // rule 9
		{"192.0.2.192/27", 0, []routing.Community{ftOther}, true},      // rule 8, in the import list (le 28)
		{"192.0.2.192/29", 0, []routing.Community{ftOther}, false},     // rule 8, beyond the import list's le 28
		{"203.0.113.0/24", 0, nil, false},                              // rule 4, not in the import list
		{"10.244.0.128/26", 64602, []routing.Community{ftBlackhole}, true},
		{"10.244.0.64/26", 64601, nil, false},                         // rule 5
		{"10.244.1.0/26", 64601, []routing.Community{ftOther}, false}, // not an assigned block
		{"10.244.2.0/27", 64601, []routing.Community{ftOther}, false}, // beyond the import list's le 26
		{"2001:db8:1::/48", 0, []routing.Community{ftOther}, false},   // rule 7
		{"2001:db8:2::/48", 0, nil, true},
		{"2001:db8::/32", 0, []routing.Community{ftOther}, true}, // shorter than rule 7's 40
		{"2001:db8:3::/64", 0, nil, false},                       // beyond the import list's le 48
	}
	want := map[string]bool{}
	for _, r := range routes {
		hop := tor.addr
		if gbPfx(r.prefix).Addr().Is6() {
			hop = hop6
		}
		tor.advertiseTagged(r.prefix, hop, r.origin, r.cs...)
		want[r.prefix] = r.accept
	}
	pt, pc := tor.peerOf(c, routing.KindExternal), c.peerOf(tor, routing.KindExternal)
	pt.IPv4, pt.IPv6, pc.IPv4, pc.IPv6 = true, true, true, true
	tor.setPeers(pt)
	c.setPeers(pc)
	c.waitReceived(tor.addr, len(routes), 10*time.Second)
	eventually(t, 3*time.Second, func() []string { return importMismatches(c, tor.addr, pol, want) })
	// The rejected-route log and counts judge the routes with their communities too.
	eventually(t, 3*time.Second, func() []string { return rejectedMismatches(c, tor.addr, pol, true) })

	// Without owner ASes the community rules count for blocks too; the soft reset after
	// the change judges the routes already received again.
	pol2 := pol.Clone()
	pol2.BlockOwnerAS = nil
	c.setPolicy(pol2)
	want2 := map[string]bool{"10.244.0.128/26": false, "10.244.1.0/26": true, "10.244.0.64/26": false, "10.244.2.0/27": false}
	eventually(t, 5*time.Second, func() []string { return importMismatches(c, tor.addr, pol2, want2) })
	eventually(t, 3*time.Second, func() []string { return rejectedMismatches(c, tor.addr, pol2, false) })

	// Rules reordered: the Reject of the /24's more specifics now comes first.
	pol3 := pol.Clone()
	fs := pol3.ImportFilters[tor.addr]
	fs[7], fs[8] = fs[8], fs[7]
	want3 := map[string]bool{"192.0.2.128/26": false, "192.0.2.192/27": false, "192.0.2.0/24": true}
	c.setPolicy(pol3)
	eventually(t, 5*time.Second, func() []string { return importMismatches(c, tor.addr, pol3, want3) })
	eventually(t, 3*time.Second, func() []string { return rejectedMismatches(c, tor.addr, pol3, false) })

	// No filters: the import list alone (with the owner ASes) decides.
	pol4 := pol.Clone()
	pol4.ImportFilters = nil
	c.setPolicy(pol4)
	want4 := map[string]bool{"198.51.100.64/26": true, "192.0.2.0/25": true, "203.0.113.0/24": false, "10.244.0.64/26": true, "2001:db8:1::/48": true}
	eventually(t, 5*time.Second, func() []string { return importMismatches(c, tor.addr, pol4, want4) })
}

// exportMismatches compares what r received from c with what c's policy exports to r
// (routing.Policy.Exports) and the attributes it gives them (ExportAttrs); local
// preference only over iBGP, where a route without it carries GoBGP's default 100.
func exportMismatches(c, r *gbNode, kind routing.PeerKind, p routing.Policy, ours []netip.Prefix) []string {
	var bad []string
	got := r.received(c.addr)
	for _, pfx := range ours {
		ok, why := p.Exports(kind, r.addr, pfx, false, false)
		rt, found := got[pfx]
		if ok != found {
			bad = append(bad, fmt.Sprintf("%s: %v arrived=%v, Exports=%v (%s)", r.name, pfx, found, ok, why))
			continue
		}
		if !found {
			continue
		}
		want := p.ExportAttrs(r.addr, pfx)
		have := rt.attrs
		slices.Sort(have.Communities)
		slices.SortFunc(have.LargeCommunities, func(x, y routing.LargeCommunity) int {
			return strings.Compare(fmt.Sprintf("%010d:%010d:%010d", x.ASN, x.Data1, x.Data2), fmt.Sprintf("%010d:%010d:%010d", y.ASN, y.Data1, y.Data2))
		})
		if !slices.Equal(have.Communities, want.Communities) || !slices.Equal(have.LargeCommunities, want.LargeCommunities) {
			bad = append(bad, fmt.Sprintf("%s: %v carries %q, ExportAttrs says %q", r.name, pfx, have, want))
		}
		switch {
		case r.as != c.as && have.HasLocalPref:
			bad = append(bad, fmt.Sprintf("%s (eBGP): %v carries local-pref %d", r.name, pfx, have.LocalPref))
		case r.as == c.as && want.HasLocalPref && (!have.HasLocalPref || have.LocalPref != want.LocalPref):
			bad = append(bad, fmt.Sprintf("%s (iBGP): %v local-pref %d (%v), ExportAttrs says %d", r.name, pfx, have.LocalPref, have.HasLocalPref, want.LocalPref))
		case r.as == c.as && !want.HasLocalPref && have.HasLocalPref && have.LocalPref != 100:
			bad = append(bad, fmt.Sprintf("%s (iBGP): %v local-pref %d, want the default", r.name, pfx, have.LocalPref))
		}
	}
	for pfx := range got {
		if !slices.Contains(ours, pfx) {
			bad = append(bad, fmt.Sprintf("%s: %v arrived, c never originated it", r.name, pfx))
		}
	}
	return bad
}

// Node c exports its blocks, an extra export and Service routes to a mesh neighbour, an
// eBGP ToR and an iBGP route server: what arrives, and with which communities, large
// communities and local preference, is what routing.Policy.Exports and ExportAttrs say,
// before and after the filters change.
func TestGoBGPExportTagsAndFiltersAgree(t *testing.T) {
	port := gbFreePort(t)
	c := gbStart(t, "c", "127.0.22.13", gbAS, port, true)
	b := gbStart(t, "b", "127.0.22.21", gbAS, port, false)
	tor := gbStart(t, "tor", "127.0.22.254", 65001, port, false)
	rs := gbStart(t, "rs", "127.0.22.253", gbAS, port, false) // iBGP, a BGPPeer: external
	c6 := netip.MustParseAddr("fd00::13")
	lc := func(a, d1, d2 uint32) routing.LargeCommunity {
		return routing.LargeCommunity{ASN: a, Data1: d1, Data2: d2}
	}
	cm := func(v uint32) routing.Community { return routing.Community(65000<<16 | v) }
	pol := routing.Policy{
		OwnBlocks:       []netip.Prefix{gbPfx("10.244.0.0/26"), gbPfx("10.244.0.64/26"), gbPfx("fd00:244::/80")},
		ExtraExports:    []netip.Prefix{gbPfx("10.245.0.7/32")},
		BlockOwners:     map[netip.Prefix]netip.Addr{gbPfx("10.244.0.0/26"): c.addr, gbPfx("10.244.0.64/26"): c.addr, gbPfx("fd00:244::/80"): c6},
		Pools:           []netip.Prefix{gbPfx("10.244.0.0/16"), gbPfx("fd00:244::/48")},
		ServiceExports:  []netip.Prefix{gbPfx("10.96.0.0/12"), gbPfx("198.51.100.10/32"), gbPfx("198.51.100.11/32"), gbPfx("2001:db8:100::10/128")},
		ExternalImports: map[netip.Addr][]routing.PrefixRange{},
		// In the order the agent makes them: Services, BGPPeers, pools.
		Tags: []routing.Tag{
			{Source: "Service 198.51.100.10/32", Prefixes: []netip.Prefix{gbPfx("198.51.100.10/32")},
				Attrs: routing.Attrs{Communities: []routing.Community{cm(30)}, LargeCommunities: []routing.LargeCommunity{lc(64512, 3, 0)}}},
			{Source: "Service 2001:db8:100::10/128", Prefixes: []netip.Prefix{gbPfx("2001:db8:100::10/128")},
				Attrs: routing.Attrs{Communities: []routing.Community{cm(31)}}},
			{Source: "BGPPeer tor", Neighbors: []netip.Addr{tor.addr},
				Attrs: routing.Attrs{Communities: []routing.Community{cm(20)}}},
			{Source: "BGPPeer rs", Neighbors: []netip.Addr{rs.addr},
				Attrs: routing.Attrs{Communities: []routing.Community{cm(21)}, LocalPref: 300, HasLocalPref: true}},
			{Source: "BGPPeer rs blackhole", Neighbors: []netip.Addr{rs.addr}, Prefixes: []netip.Prefix{gbPfx("198.51.100.11/32")},
				Attrs: routing.Attrs{Communities: []routing.Community{ftBlackhole}}},
			{Source: "IPPool v4", Prefixes: []netip.Prefix{gbPfx("10.244.0.0/16")},
				Attrs: routing.Attrs{Communities: []routing.Community{cm(10)}, LargeCommunities: []routing.LargeCommunity{lc(64512, 1, 1)}, LocalPref: 150, HasLocalPref: true}},
			{Source: "IPPool v6", Prefixes: []netip.Prefix{gbPfx("fd00:244::/48")},
				Attrs: routing.Attrs{LargeCommunities: []routing.LargeCommunity{lc(64512, 6, 6)}}},
		},
		ExportFilters: map[netip.Addr][]routing.Filter{
			tor.addr: {
				{Prefix: gbPfx("10.244.0.0/26"), MinLen: 26, MaxLen: 26, Accept: true},
				{Prefix: gbPfx("10.244.0.0/16"), MinLen: 16, MaxLen: 32},
				{Prefix: gbPfx("2001:db8:100::/64"), MinLen: 64, MaxLen: 128},
				{Prefix: gbPfx("203.0.113.0/24"), MinLen: 24, MaxLen: 24, Accept: true},
			},
			rs.addr: {
				{Prefix: gbPfx("0.0.0.0/0"), MinLen: 0, MaxLen: 32, Community: ftBlackhole, HasCommunity: true},
				{Prefix: gbPfx("10.96.0.0/12"), MinLen: 12, MaxLen: 12},
			},
		},
	}
	c.setPolicy(pol)
	ours := slices.Concat(pol.OwnBlocks, pol.ExtraExports, pol.ServiceExports, []netip.Prefix{gbPfx("203.0.113.0/24")})
	for _, p := range ours {
		hop := c.addr
		if p.Addr().Is6() {
			hop = c6
		}
		if err := c.s.Advertise(p, hop); err != nil {
			t.Fatal(err)
		}
	}
	var cPeers []routing.PeerConfig
	type recv struct {
		n    *gbNode
		kind routing.PeerKind
	}
	receivers := []recv{{b, routing.KindMesh}, {tor, routing.KindExternal}, {rs, routing.KindExternal}}
	for _, r := range receivers {
		pr, pc := r.n.peerOf(c, r.kind), c.peerOf(r.n, r.kind)
		pr.IPv4, pr.IPv6, pc.IPv4, pc.IPv6 = true, true, true, true
		r.n.setPeers(pr)
		cPeers = append(cPeers, pc)
	}
	c.setPeers(cPeers...)
	check := func(p routing.Policy) {
		t.Helper()
		for _, r := range receivers {
			r.n.waitEstablished(c, 10*time.Second)
			eventually(t, 5*time.Second, func() []string { return exportMismatches(c, r.n, r.kind, p, ours) })
		}
	}
	check(pol)
	// The cases must mean what the test says they do.
	for _, w := range []struct {
		r      *gbNode
		prefix string
		want   bool
	}{
		{tor, "10.244.0.0/26", true}, {tor, "10.244.0.64/26", false}, {tor, "2001:db8:100::10/128", false},
		{tor, "198.51.100.11/32", true}, {rs, "198.51.100.11/32", false}, {rs, "10.96.0.0/12", false},
		{rs, "10.244.0.64/26", true}, {b, "198.51.100.10/32", false}, {b, "10.244.0.64/26", true}, {tor, "203.0.113.0/24", false},
	} {
		if _, got := w.r.received(c.addr)[gbPfx(w.prefix)]; got != w.want {
			t.Errorf("%s has %s: %v, the test expects %v", w.r.name, w.prefix, got, w.want)
		}
	}
	if got := rs.received(c.addr)[gbPfx("10.244.0.64/26")].attrs; !got.HasLocalPref || got.LocalPref != 300 {
		t.Errorf("rs: 10.244.0.64/26 local-pref %d (%v), want 300, the highest of the tags", got.LocalPref, got.HasLocalPref)
	}

	// The ToR's shield goes: its block is withdrawn; the route server's community rule
	// goes: the Service route arrives; the pool's attributes change.
	pol2 := pol.Clone()
	pol2.ExportFilters[tor.addr] = pol2.ExportFilters[tor.addr][1:]
	pol2.ExportFilters[rs.addr] = pol2.ExportFilters[rs.addr][1:]
	pol2.Tags[5].Attrs = routing.Attrs{Communities: []routing.Community{cm(11)}, LocalPref: 400, HasLocalPref: true}
	c.setPolicy(pol2)
	check(pol2)
	if _, got := tor.received(c.addr)[gbPfx("10.244.0.0/26")]; got {
		t.Error("tor still has 10.244.0.0/26")
	}
	if _, got := rs.received(c.addr)[gbPfx("198.51.100.11/32")]; !got {
		t.Error("rs lacks 198.51.100.11/32")
	}
}

func TestIntersect(t *testing.T) {
	f := func(cidr string, lo, hi int) routing.Filter {
		return routing.Filter{Prefix: gbPfx(cidr), MinLen: lo, MaxLen: hi, Accept: true}
	}
	for _, c := range []struct {
		r    routing.Filter
		ir   routing.PrefixRange
		want string // "prefix lo..hi"; "" = nothing
	}{
		{f("10.0.0.0/8", 8, 24), routing.PrefixRange{Prefix: gbPfx("10.1.0.0/16"), MaxLen: 20}, "10.1.0.0/16 16..20"},
		{f("10.1.0.0/16", 16, 32), routing.PrefixRange{Prefix: gbPfx("10.0.0.0/8"), MaxLen: 24}, "10.1.0.0/16 16..24"},
		{f("10.1.0.0/16", 20, 28), routing.PrefixRange{Prefix: gbPfx("10.0.0.0/8"), MaxLen: 24}, "10.1.0.0/16 20..24"},
		{f("10.0.0.0/8", 8, 8), routing.PrefixRange{Prefix: gbPfx("10.0.0.0/8")}, "10.0.0.0/8 8..8"},
		{f("10.1.0.0/16", 16, 16), routing.PrefixRange{Prefix: gbPfx("0.0.0.0/0")}, ""}, // exact /0 only
		{f("0.0.0.0/0", 0, 0), routing.PrefixRange{Prefix: gbPfx("0.0.0.0/0")}, "0.0.0.0/0 0..0"},
		{f("10.0.0.0/8", 8, 32), routing.PrefixRange{Prefix: gbPfx("11.0.0.0/8"), MaxLen: 32}, ""},
		{f("10.0.0.0/8", 28, 32), routing.PrefixRange{Prefix: gbPfx("10.0.0.0/8"), MaxLen: 24}, ""},
		{f("10.0.0.0/8", 8, 16), routing.PrefixRange{Prefix: gbPfx("10.1.2.0/24"), MaxLen: 32}, ""},
		{f("198.51.100.0/24", 24, 32), routing.PrefixRange{Prefix: gbPfx("198.51.100.0/24"), MaxLen: 64}, "198.51.100.0/24 24..32"},
		{f("10.1.0.0/16", 16, 32), routing.PrefixRange{Prefix: gbPfx("10.1.2.3/16"), MaxLen: 24}, "10.1.0.0/16 16..24"},
		{f("10.0.0.0/8", 8, 32), routing.PrefixRange{Prefix: gbPfx("2001:db8::/32"), MaxLen: 48}, ""},
		{f("2001:db8::/32", 40, 48), routing.PrefixRange{Prefix: gbPfx("2001:db8:1::/48")}, "2001:db8:1::/48 48..48"},
		{f("2001:db8::/32", 32, 64), routing.PrefixRange{Prefix: gbPfx("2001:db8::/29"), MaxLen: 48}, "2001:db8::/32 32..48"},
	} {
		got := ""
		if e, ok := intersect(c.r, c.ir); ok {
			got = fmt.Sprintf("%s %d..%d", e.IpPrefix, e.MaskLengthMin, e.MaskLengthMax)
		} else if e != nil {
			t.Errorf("intersect(%s, %s) returned %v with ok false", c.r, c.ir, e)
		}
		if got != c.want {
			t.Errorf("intersect(%s, %s) = %q, want %q", c.r, c.ir, got, c.want)
		}
	}
}

// intersect's entry matches exactly what both the rule and the import range match, over
// every prefix of a small address space and every rule and range in it.
func TestIntersectExhaustive(t *testing.T) {
	// Every prefix of 8.0.0.0/6 from /6 to /12; rules and ranges start at /6 to /10.
	var all []netip.Prefix
	for bits := 6; bits <= 12; bits++ {
		for a := 0; a < 1<<(bits-6); a++ {
			v := uint32(8)<<24 | uint32(a)<<(32-bits)
			all = append(all, netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), bits).Masked())
		}
	}
	var candidates []netip.Prefix
	for _, p := range all {
		if p.Bits() <= 10 {
			candidates = append(candidates, p)
		}
	}
	matches := func(e *api.Prefix, p netip.Prefix) bool {
		base := gbPfx(e.IpPrefix)
		return base.Bits() <= p.Bits() && base.Contains(p.Addr()) && p.Bits() >= int(e.MaskLengthMin) && p.Bits() <= int(e.MaskLengthMax)
	}
	checked := 0
	for _, rp := range candidates {
		for lo := rp.Bits(); lo <= 12; lo++ {
			for hi := lo; hi <= 12; hi++ {
				r := routing.Filter{Prefix: rp, MinLen: lo, MaxLen: hi, Accept: true}
				for _, ip := range candidates {
					for _, maxLen := range []int{0, ip.Bits() + 1, 11, 12} {
						ir := routing.PrefixRange{Prefix: ip, MaxLen: maxLen}
						e, ok := intersect(r, ir)
						for _, p := range all {
							want := r.Matches(p, nil) && ir.Matches(p)
							if got := ok && matches(e, p); got != want {
								t.Fatalf("intersect(%s, %s) = %v %v: matches %s = %v, want %v", r, ir, e, ok, p, got, want)
							}
						}
						checked++
					}
				}
			}
		}
	}
	t.Logf("%d rule and range pairs", checked)
}

// GoBGP's local preference action sets the value, so the tag statements go in ascending
// local preference (the tags without one first, in their order): the highest wins, as
// routing.Attrs.Merge says.
func TestTagStatementsOrder(t *testing.T) {
	lp := func(v uint32) routing.Attrs {
		return routing.Attrs{Communities: []routing.Community{routing.Community(v)}, LocalPref: v, HasLocalPref: true}
	}
	cs := routing.Attrs{Communities: []routing.Community{1}}
	p := routing.Policy{Tags: []routing.Tag{
		{Attrs: lp(300)}, {Attrs: cs}, {Attrs: lp(100)}, {Attrs: routing.Attrs{}}, {Attrs: lp(200)}, {Attrs: cs}, {Attrs: lp(100)},
	}}
	var names []string
	for _, s := range tagStatements(&policyBuilder{}, p) {
		names = append(names, s.GetName())
	}
	want := []string{"hr-ex-tag-2", "hr-ex-tag-6", "hr-ex-tag-3", "hr-ex-tag-7", "hr-ex-tag-5", "hr-ex-tag-1"}
	if !slices.Equal(names, want) {
		t.Errorf("tag statements %v, want %v", names, want)
	}
}

// The rejected-route scan reads a path's communities from its binary attributes, as the
// import filters see them.
func TestBinaryCommunities(t *testing.T) {
	nlri := bgp.NewIPAddrPrefix(24, "198.51.100.0")
	base := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0), bgp.NewPathAttributeNextHop("192.0.2.1"),
		bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65000})})}
	for _, c := range []struct {
		name  string
		attrs []bgp.PathAttributeInterface
		want  []routing.Community
	}{
		{"none", base, nil},
		{"two", append(slices.Clone(base), bgp.NewPathAttributeCommunities([]uint32{uint32(ftBlackhole), uint32(ftOther)})), []routing.Community{ftBlackhole, ftOther}},
		{"large only", append(slices.Clone(base), bgp.NewPathAttributeLargeCommunities([]*bgp.LargeCommunity{bgp.NewLargeCommunity(64512, 1, 2)})), nil},
		{"before the AS path", append([]bgp.PathAttributeInterface{bgp.NewPathAttributeCommunities([]uint32{0xffffffff})}, base...), []routing.Community{0xffffffff}},
	} {
		p := gbPathForms(t, nlri, c.attrs, "192.0.2.1")
		if got := binaryCommunities(p); !slices.Equal(got, c.want) {
			t.Errorf("%s: binaryCommunities = %v, want %v", c.name, got, c.want)
		}
	}
}
