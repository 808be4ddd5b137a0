package routing

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

const (
	pfBlackhole = Community(65000<<16 | 666)
	pfOther     = Community(65000<<16 | 1)
)

// pfExportPolicy is node A's export side: two own blocks, an extra export, Service
// routes, tags per pool, neighbour and Service, and export filters for the ToRs.
func pfExportPolicy() Policy {
	return Policy{
		OwnBlocks:      []netip.Prefix{gbPfx("10.244.0.0/26"), gbPfx("10.244.0.64/26")},
		ExtraExports:   []netip.Prefix{gbPfx("10.245.0.7/32")},
		Pools:          []netip.Prefix{gbPfx("10.244.0.0/16")},
		ServiceExports: []netip.Prefix{gbPfx("10.96.0.0/12"), gbPfx("198.51.100.10/32"), gbPfx("198.51.100.11/32"), gbPfx("2001:db8:100::10/128")},
		Tags: []Tag{
			{Source: "IPPool default", Prefixes: []netip.Prefix{gbPfx("10.244.0.0/16")},
				Attrs: Attrs{Communities: []Community{65000<<16 | 10}, LocalPref: 100, HasLocalPref: true}},
			{Source: "BGPPeer tor", Neighbors: []netip.Addr{ptToR},
				Attrs: Attrs{Communities: []Community{65000<<16 | 20}, LocalPref: 200, HasLocalPref: true}},
			{Source: "Service 198.51.100.10/32", Prefixes: []netip.Prefix{gbPfx("198.51.100.10/32")},
				Attrs: Attrs{Communities: []Community{65000<<16 | 30}}},
			// Only towards ToR2, 198.51.100.11 carries the community its filter rejects.
			{Source: "BGPPeer tor2 blackhole", Prefixes: []netip.Prefix{gbPfx("198.51.100.11/32")}, Neighbors: []netip.Addr{ptToR2},
				Attrs: Attrs{Communities: []Community{pfBlackhole}}},
		},
		ExportFilters: map[netip.Addr][]Filter{
			ptToR: {
				{Prefix: gbPfx("10.244.0.0/26"), MinLen: 26, MaxLen: 26, Accept: true}, // shields it from the next rule
				{Prefix: gbPfx("10.244.0.0/16"), MinLen: 16, MaxLen: 32},
				{Prefix: gbPfx("203.0.113.0/24"), MinLen: 24, MaxLen: 32, Accept: true}, // cannot send what is not ours
			},
			ptToR2: {
				{Prefix: gbPfx("0.0.0.0/0"), MinLen: 0, MaxLen: 32, Community: pfBlackhole, HasCommunity: true},
				{Prefix: gbPfx("2001:db8:100::/64"), MinLen: 64, MaxLen: 128},
			},
		},
	}
}

func TestPolicyExportsServicesAndFilters(t *testing.T) {
	p := pfExportPolicy()
	other := netip.MustParseAddr("192.0.2.3") // an external neighbour without filters
	for _, c := range []struct {
		kind     PeerKind
		neighbor netip.Addr
		prefix   string
		want     bool
		reason   string
	}{
		// Service routes: to external neighbours only.
		{KindExternal, other, "198.51.100.10/32", true, "is a Service address: exported to external neighbours"},
		{KindExternal, other, "10.96.0.0/12", true, "Service address"},
		{KindExternal, other, "2001:db8:100::10/128", true, "Service address"},
		{KindMesh, ptB, "198.51.100.10/32", false, "is a Service address: exported to external neighbours only"},
		{KindReflector, ptRR, "10.96.0.0/12", false, "exported to external neighbours only"},
		{KindReflectorClient, ptC, "2001:db8:100::10/128", false, "exported to external neighbours only"},
		{KindExternal, other, "198.51.100.12/32", false, "neither our block nor an extra export"},
		{KindExternal, other, "10.244.0.64/26", true, "is exported"},

		// ToR: an Accept before a Reject shields the first block; the second is refused.
		{KindExternal, ptToR, "10.244.0.0/26", true, "is exported"},
		{KindExternal, ptToR, "10.244.0.64/26", false, "10.244.0.64/26 is kept from 192.0.2.1 by export filter rule 2 (reject 10.244.0.0/16 ge 16 le 32)"},
		{KindExternal, netip.MustParseAddr("::ffff:192.0.2.1"), "10.244.0.64/26", false, "export filter rule 2"},
		{KindExternal, ptToR, "10.245.0.7/32", true, "is exported"},
		{KindExternal, ptToR, "198.51.100.10/32", true, "Service address"},
		{KindExternal, ptToR, "203.0.113.0/24", false, "neither our block nor an extra export"},
		// Filters are an external neighbour's: nodes still get the block.
		{KindMesh, ptToR, "10.244.0.64/26", true, "is exported"},
		{KindMesh, ptB, "10.244.0.64/26", true, "is exported"},

		// ToR2: the community condition matches what the Tag adds for ToR2 only.
		{KindExternal, ptToR2, "198.51.100.11/32", false, "198.51.100.11/32 is kept from 192.0.2.2 by export filter rule 1 (reject 0.0.0.0/0 ge 0 le 32 community 65000:666)"},
		{KindExternal, ptToR2, "198.51.100.10/32", true, "Service address"},
		{KindExternal, ptToR, "198.51.100.11/32", true, "Service address"},
		{KindExternal, other, "198.51.100.11/32", true, "Service address"},
		{KindExternal, ptToR2, "2001:db8:100::10/128", false, "export filter rule 2"},
		{KindExternal, ptToR2, "10.244.0.64/26", true, "is exported"},
	} {
		got, why := p.Exports(c.kind, c.neighbor, gbPfx(c.prefix), false, false)
		if got != c.want || !strings.Contains(why, c.reason) {
			t.Errorf("Exports(%s, %s, %s) = %v (%s), want %v (%s)", c.kind, c.neighbor, c.prefix, got, why, c.want, c.reason)
		}
		if c.kind == KindExternal {
			refused, rwhy := p.ExportFilterRefuses(c.neighbor, gbPfx(c.prefix))
			if filtered := strings.Contains(c.reason, "export filter"); refused != filtered || (refused && rwhy != why) {
				t.Errorf("ExportFilterRefuses(%s, %s) = %v (%s)", c.neighbor, c.prefix, refused, rwhy)
			}
		}
	}

	// A learned route is never a Service route, filters or not.
	p.ServiceExports = append(p.ServiceExports, gbPfx("10.244.5.0/26"))
	if ok, why := p.Exports(KindReflectorClient, ptC, gbPfx("10.244.5.0/26"), true, true); !ok {
		t.Errorf("reflected pool prefix refused: %s", why)
	}
	if ok, _ := p.Exports(KindExternal, other, gbPfx("198.51.100.10/32"), true, true); ok {
		t.Error("a learned route went to an external neighbour")
	}

	// No-export wins over a Service route and over an Accept filter.
	p.NoExportToExternal = []netip.Prefix{gbPfx("10.244.0.0/16")}
	if ok, why := p.Exports(KindExternal, ptToR, gbPfx("10.244.0.0/26"), false, false); ok || !strings.Contains(why, "not exported to external neighbours") {
		t.Errorf("no-export block exported to the ToR: %v (%s)", ok, why)
	}
}

func TestPolicyExportAttrs(t *testing.T) {
	p := pfExportPolicy()
	c := func(v ...uint16) []Community {
		var out []Community
		for _, x := range v {
			out = append(out, Community(65000<<16|uint32(x)))
		}
		return out
	}
	for _, tc := range []struct {
		neighbor netip.Addr
		prefix   string
		want     Attrs
	}{
		// The pool's tag and the ToR's merged: both communities, the higher local preference.
		{ptToR, "10.244.0.0/26", Attrs{Communities: c(10, 20), LocalPref: 200, HasLocalPref: true}},
		{ptToR, "10.244.0.64/26", Attrs{Communities: c(10, 20), LocalPref: 200, HasLocalPref: true}},
		{netip.MustParseAddr("::ffff:192.0.2.1"), "10.244.0.0/26", Attrs{Communities: c(10, 20), LocalPref: 200, HasLocalPref: true}},
		{ptToR2, "10.244.0.0/26", Attrs{Communities: c(10), LocalPref: 100, HasLocalPref: true}},
		{ptB, "10.244.0.64/26", Attrs{Communities: c(10), LocalPref: 100, HasLocalPref: true}},
		// A Service route: its range's tag, plus the neighbour's.
		{ptToR, "198.51.100.10/32", Attrs{Communities: c(20, 30), LocalPref: 200, HasLocalPref: true}},
		{ptToR2, "198.51.100.10/32", Attrs{Communities: c(30)}},
		{ptToR2, "198.51.100.11/32", Attrs{Communities: c(666)}},
		{ptB, "198.51.100.11/32", Attrs{}},
		// Outside every tag's prefixes.
		{ptB, "10.245.0.7/32", Attrs{}},
		{ptToR, "10.245.0.7/32", Attrs{Communities: c(20), LocalPref: 200, HasLocalPref: true}},
		// A tag's prefixes cover their more specifics, of their own family only.
		{ptB, "10.244.7.7/32", Attrs{Communities: c(10), LocalPref: 100, HasLocalPref: true}},
		{ptB, "::ffff:10.244.0.0/122", Attrs{}},
	} {
		if got := p.ExportAttrs(tc.neighbor, gbPfx(tc.prefix)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ExportAttrs(%s, %s) = %+v, want %+v", tc.neighbor, tc.prefix, got, tc.want)
		}
	}
	// Order of the tags does not matter for the merge: the highest local preference wins.
	p.Tags[0], p.Tags[1] = p.Tags[1], p.Tags[0]
	if got := p.ExportAttrs(ptToR, gbPfx("10.244.0.0/26")); got.LocalPref != 200 || !got.HasLocalPref {
		t.Errorf("swapped tags: local preference %d (%v), want 200", got.LocalPref, got.HasLocalPref)
	}
	// A tag for no neighbour (an empty, non-nil list) applies to none.
	p.Tags = []Tag{{Neighbors: []netip.Addr{}, Attrs: Attrs{Communities: c(1)}}}
	if got := p.ExportAttrs(ptToR, gbPfx("10.244.0.0/26")); !got.IsZero() {
		t.Errorf("a tag for no neighbour applied: %+v", got)
	}
}

// pfImportPolicy is node A's import side: a ToR with an import list and filter rules,
// blocks whose owners' ASes are known.
func pfImportPolicy() Policy {
	return Policy{
		OwnBlocks:    []netip.Prefix{gbPfx("10.244.0.0/26")},
		BlockOwners:  map[netip.Prefix]netip.Addr{gbPfx("10.244.0.0/26"): ptA, gbPfx("10.244.0.64/26"): ptB, gbPfx("10.244.0.128/26"): ptC},
		BlockOwnerAS: map[netip.Prefix]uint32{gbPfx("10.244.0.0/26"): 64512, gbPfx("10.244.0.64/26"): 64601, gbPfx("10.244.0.128/26"): 64602},
		Pools:        []netip.Prefix{gbPfx("10.244.0.0/16")},
		ExternalImports: map[netip.Addr][]PrefixRange{
			ptToR: {
				{Prefix: gbPfx("0.0.0.0/0")}, {Prefix: gbPfx("198.51.100.0/24"), MaxLen: 28},
				{Prefix: gbPfx("10.244.0.0/16"), MaxLen: 26}, {Prefix: gbPfx("2001:db8::/32"), MaxLen: 48},
			},
			ptToR2: {{Prefix: gbPfx("0.0.0.0/0"), MaxLen: 32}},
		},
		ImportFilters: map[netip.Addr][]Filter{ptToR: {
			{Prefix: gbPfx("198.51.100.0/26"), MinLen: 26, MaxLen: 26, Accept: true},                                       // 1
			{Prefix: gbPfx("198.51.100.0/24"), MinLen: 24, MaxLen: 32},                                                     // 2
			{Prefix: gbPfx("0.0.0.0/0"), MinLen: 0, MaxLen: 32, Community: pfBlackhole, HasCommunity: true},                // 3
			{Prefix: gbPfx("203.0.113.0/24"), MinLen: 24, MaxLen: 24, Accept: true},                                        // 4: not in the import list
			{Prefix: gbPfx("10.244.0.64/26"), MinLen: 26, MaxLen: 26},                                                      // 5: a block
			{Prefix: gbPfx("10.244.0.0/16"), MinLen: 16, MaxLen: 32, Community: pfOther, HasCommunity: true, Accept: true}, // 6
			{Prefix: gbPfx("2001:db8::/32"), MinLen: 40, MaxLen: 48, Community: pfOther, HasCommunity: true},               // 7
		}},
	}
}

func TestPolicyAcceptsImportFilters(t *testing.T) {
	p := pfImportPolicy()
	noOwners := p.Clone()
	noOwners.BlockOwnerAS = nil
	for _, c := range []struct {
		name     string
		p        Policy
		kind     PeerKind
		neighbor netip.Addr
		prefix   string
		origin   uint32
		cs       []Community
		want     bool
		reason   string
	}{
		{"Accept before a Reject lets it on to the import list", p, KindExternal, ptToR, "198.51.100.0/26", 0, nil, true, "is in the import list"},
		{"Accept first even with the rejected community", p, KindExternal, ptToR, "198.51.100.0/26", 0, []Community{pfBlackhole}, true, "import list"},
		{"Reject refuses", p, KindExternal, ptToR, "198.51.100.64/26", 0, nil, false,
			"198.51.100.64/26 is refused by import filter rule 2 of external neighbour 192.0.2.1 (reject 198.51.100.0/24 ge 24 le 32)"},
		{"Reject of the range's own prefix", p, KindExternal, ptToR, "198.51.100.0/24", 0, nil, false, "import filter rule 2"},
		{"outside every rule: the import list", p, KindExternal, ptToR, "0.0.0.0/0", 0, nil, true, "import list"},
		{"community rule with the community", p, KindExternal, ptToR, "0.0.0.0/0", 0, []Community{pfOther, pfBlackhole}, false, "import filter rule 3"},
		{"community rule without the community", p, KindExternal, ptToR, "0.0.0.0/0", 0, []Community{pfOther}, true, "import list"},
		{"Accept of what the import list lacks is still refused", p, KindExternal, ptToR, "203.0.113.0/24", 0, nil, false, "203.0.113.0/24 is not in the import list of external neighbour 192.0.2.1"},
		{"another neighbour's filters do not apply", p, KindExternal, ptToR2, "198.51.100.64/26", 0, nil, true, "import list"},
		{"filters are external neighbours' only", p, KindMesh, ptB, "10.244.0.64/26", 0, []Community{pfBlackhole}, true, "assigned to next hop"},
		{"IPv6 community rule with the community", p, KindExternal, ptToR, "2001:db8:1::/48", 0, []Community{pfOther}, false, "import filter rule 7"},
		{"IPv6 community rule without the community", p, KindExternal, ptToR, "2001:db8:1::/48", 0, nil, true, "import list"},
		{"IPv6 rule's lengths", p, KindExternal, ptToR, "2001:db8::/32", 0, []Community{pfOther}, true, "import list"},

		// Inside a pool with BlockOwnerAS: only rules without a community count.
		{"pool block: community Reject ignored", p, KindExternal, ptToR, "10.244.0.128/26", 64602, []Community{pfBlackhole}, true, "originates in its owner's AS 64602"},
		{"pool block: community Accept ignored, the origin still decides", p, KindExternal, ptToR, "10.244.0.128/26", 64601, []Community{pfOther}, false, "hijack rejected"},
		{"pool block: community Accept ignored for an unassigned block", p, KindExternal, ptToR, "10.244.1.0/26", 64601, []Community{pfOther}, false, "is not an assigned block"},
		{"pool block: a plain Reject still refuses", p, KindExternal, ptToR, "10.244.0.64/26", 64601, nil, false, "import filter rule 5"},
		{"pool block: a plain Reject refuses with any community", p, KindExternal, ptToR, "10.244.0.64/26", 64601, []Community{pfOther}, false, "import filter rule 5"},
		{"own block never", p, KindExternal, ptToR, "10.244.0.0/26", 64512, []Community{pfOther}, false, "is our own block"},

		// Without BlockOwnerAS the community rules count inside pools too.
		{"no owner ASes: community Reject refuses a block", noOwners, KindExternal, ptToR, "10.244.0.128/26", 0, []Community{pfBlackhole}, false, "import filter rule 3"},
		{"no owner ASes: block without the community", noOwners, KindExternal, ptToR, "10.244.0.128/26", 0, nil, true, "import list"},
		{"no owner ASes: community Accept lets it on", noOwners, KindExternal, ptToR, "10.244.1.0/26", 0, []Community{pfOther}, true, "import list"},
		{"no owner ASes: Accept still needs the import list", noOwners, KindExternal, ptToR, "10.244.1.0/27", 0, []Community{pfOther}, false, "not in the import list"},
		{"no owner ASes: plain Reject", noOwners, KindExternal, ptToR, "10.244.0.64/26", 0, []Community{pfOther}, false, "import filter rule 5"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, why := c.p.Accepts(c.kind, c.neighbor, gbPfx(c.prefix), c.neighbor, c.origin, c.cs...)
			if c.kind != KindExternal {
				got, why = c.p.Accepts(c.kind, c.neighbor, gbPfx(c.prefix), ptB, c.origin, c.cs...)
			}
			if got != c.want || !strings.Contains(why, c.reason) {
				t.Errorf("Accepts = %v (%s), want %v (%s)", got, why, c.want, c.reason)
			}
			nh := c.neighbor
			if c.kind != KindExternal {
				nh = ptB
			}
			rejected, rwhy := c.p.Rejects(c.kind, c.neighbor, gbPfx(c.prefix), nh, c.origin, c.cs...)
			if rejected == got || (rejected && rwhy != why) {
				t.Errorf("Rejects = %v (%s), Accepts = %v (%s)", rejected, rwhy, got, why)
			}
		})
	}
}

// Clone copies the new fields deeply: changing the original's filters or tags later does
// not change the copy.
func TestPolicyCloneFiltersAndTags(t *testing.T) {
	p := pfExportPolicy()
	p.ImportFilters = pfImportPolicy().ImportFilters
	c := p.Clone()
	if !reflect.DeepEqual(c, p) {
		t.Fatalf("clone differs:\n%+v\n%+v", c, p)
	}
	p.ExportFilters[ptToR][0].Accept = false
	p.ImportFilters[ptToR][0].Accept = false
	p.Tags[0].Attrs.Communities[0] = 1
	p.Tags[0].Prefixes[0] = gbPfx("0.0.0.0/0")
	p.Tags[1].Neighbors[0] = ptB
	p.ServiceExports[0] = gbPfx("0.0.0.0/0")
	if !c.ExportFilters[ptToR][0].Accept || !c.ImportFilters[ptToR][0].Accept || c.Tags[0].Attrs.Communities[0] == 1 ||
		c.Tags[0].Prefixes[0] != gbPfx("10.244.0.0/16") || c.Tags[1].Neighbors[0] != ptToR || c.ServiceExports[0] != gbPfx("10.96.0.0/12") {
		t.Errorf("the clone shares memory with the original: %+v", c)
	}
}
