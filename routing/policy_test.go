package routing

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

var (
	ptA    = netip.MustParseAddr("192.0.2.11") // this node
	ptB    = netip.MustParseAddr("192.0.2.12")
	ptC    = netip.MustParseAddr("192.0.2.13")
	ptRR   = netip.MustParseAddr("192.0.2.20")
	ptToR  = netip.MustParseAddr("192.0.2.1")
	ptToR2 = netip.MustParseAddr("192.0.2.2")
	ptV6   = netip.MustParseAddr("fd00::12")
)

func gbPfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// testPolicy is node A's policy.
func ptPolicy() Policy {
	return Policy{
		BlockOwnerAS: map[netip.Prefix]uint32{},
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
		ExternalImports:    map[netip.Addr][]PrefixRange{ptToR: {{Prefix: gbPfx("0.0.0.0/0")}, {Prefix: gbPfx("198.51.100.0/24"), MaxLen: 28}}},
		NoExportToExternal: []netip.Prefix{gbPfx("10.245.0.0/16")},
	}
}

func TestPolicyAccepts(t *testing.T) {
	p := ptPolicy()
	for _, c := range []struct {
		name     string
		kind     PeerKind
		neighbor netip.Addr
		prefix   string
		nextHop  netip.Addr
		want     bool
		reason   string // a substring of the reason
	}{
		{"owner's block from owner", KindMesh, ptB, "10.244.1.0/26", ptB, true, "assigned to next hop 192.0.2.12"},
		{"hijack", KindMesh, ptC, "10.244.1.0/26", ptC, false,
			"10.244.1.0/26 is assigned to 192.0.2.12, not to next hop 192.0.2.13: hijack rejected"},
		{"hijack keeping the owner's neighbour", KindMesh, ptB, "10.244.2.0/26", ptB, false, "assigned to 192.0.2.13"},
		{"reflected, next hop unchanged", KindReflector, ptRR, "10.244.1.0/26", ptB, true, "assigned to next hop"},
		{"from a reflector client", KindReflectorClient, ptC, "10.244.2.0/26", ptC, true, ""},
		{"reflected hijack", KindReflector, ptRR, "10.244.2.0/26", ptB, false, "hijack rejected"},
		{"host route with its own owner entry", KindMesh, ptC, "10.244.3.7/32", ptC, true, ""},
		{"pool itself listed as a block", KindMesh, ptB, "10.244.0.0/16", ptB, true, "assigned to next hop"},
		{"own block back", KindMesh, ptB, "10.244.0.0/26", ptA, false, "10.244.0.0/26 is our own block"},
		{"inside own block", KindMesh, ptB, "10.244.0.5/32", ptB, false, "inside our own block 10.244.0.0/26"},
		{"own block from external", KindExternal, ptToR, "10.244.0.0/26", ptToR, false, "our own block"},
		{"unassigned block", KindMesh, ptB, "10.244.9.0/26", ptB, false, "not assigned to any node"},
		{"more specific of a block", KindMesh, ptB, "10.244.1.0/27", ptB, false, "not assigned"},
		{"outside pools", KindMesh, ptB, "172.16.0.0/26", ptB, false, "not inside any pool"},
		{"default route from a node", KindMesh, ptB, "0.0.0.0/0", ptB, false, "not inside any pool"},
		{"IPv6 owner", KindMesh, ptB, "fd00:244:0:1::/80", ptV6, true, ""},
		{"IPv6 hijack", KindMesh, ptC, "fd00:244:0:1::/80", ptC, false, "hijack rejected"},
		{"IPv6 block with IPv4 owner", KindMesh, ptC, "fd00:244:0:2::/80", ptC, true, ""},
		{"IPv6 block, IPv6 next hop, IPv4 owner", KindMesh, ptC, "fd00:244:0:2::/80", ptV6, false, "hijack rejected"},
		{"external exact", KindExternal, ptToR, "0.0.0.0/0", ptToR, true, "import list"},
		{"external range", KindExternal, ptToR, "198.51.100.16/28", ptToR, true, "198.51.100.0/24 le 28"},
		{"external range base", KindExternal, ptToR, "198.51.100.0/24", ptToR, true, ""},
		{"external too long", KindExternal, ptToR, "198.51.100.16/29", ptToR, false, "not in the import list"},
		{"external exact only", KindExternal, ptToR, "10.0.0.0/8", ptToR, false, "not in the import list"},
		{"external pool block", KindExternal, ptToR, "10.244.1.0/26", ptB, false, "not in the import list"},
		{"external without list", KindExternal, ptToR2, "0.0.0.0/0", ptToR2, false, "192.0.2.2"},
		{"unknown kind", PeerKind("bogus"), ptB, "10.244.1.0/26", ptB, false, "unknown peer kind"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, reason := p.Accepts(c.kind, c.neighbor, gbPfx(c.prefix), c.nextHop, 64512)
			if got != c.want || !strings.Contains(reason, c.reason) {
				t.Errorf("Accepts(%s, %v, %s, %v) = %v, %q; want %v, containing %q",
					c.kind, c.neighbor, c.prefix, c.nextHop, got, reason, c.want, c.reason)
			}
			checkRejects(t, p, c.kind, c.neighbor, gbPfx(c.prefix), c.nextHop, 64512)
		})
	}
}

// Pool prefixes from an external neighbour (a ToR carrying blocks between racks) are
// judged by the origin AS of their path once BlockOwnerAS is set: only an assigned
// block, from its owner's AS. With every node in one AS the owner's AS is the cluster's.
func TestPolicyAcceptsOriginAS(t *testing.T) {
	racks := ptPolicy()
	racks.ExternalImports = map[netip.Addr][]PrefixRange{
		ptToR:  {{Prefix: gbPfx("10.244.0.0/16"), MaxLen: 26}, {Prefix: gbPfx("fd00:244::/48"), MaxLen: 80}, {Prefix: gbPfx("198.51.100.0/24")}},
		ptToR2: {{Prefix: gbPfx("0.0.0.0/0"), MaxLen: 32}},
	}
	racks.BlockOwnerAS = map[netip.Prefix]uint32{
		gbPfx("10.244.0.0/26"): 64601, gbPfx("10.244.1.0/26"): 64601, gbPfx("10.244.2.0/26"): 64602,
		gbPfx("10.244.3.7/32"): 64602, gbPfx("fd00:244:0:1::/80"): 64601,
	}
	unchecked := racks.Clone()
	unchecked.BlockOwnerAS = nil
	oneAS := racks.Clone()
	for b := range oneAS.BlockOwnerAS {
		oneAS.BlockOwnerAS[b] = 64512
	}
	for _, c := range []struct {
		name     string
		p        Policy
		neighbor netip.Addr
		prefix   string
		origin   uint32
		want     bool
		reason   string
	}{
		{"rack block from its rack", racks, ptToR, "10.244.2.0/26", 64602, true, "originates in its owner's AS 64602"},
		{"rack block from another rack", racks, ptToR, "10.244.2.0/26", 64601, false,
			"10.244.2.0/26 is assigned to a node in AS 64602, but the path from 192.0.2.1 originates in AS 64601: hijack rejected"},
		{"block originated by the ToR", racks, ptToR, "10.244.1.0/26", 65000, false, "originates in AS 65000"},
		{"block with an empty path", racks, ptToR, "10.244.1.0/26", 0, false, "originates in AS 0"},
		{"IPv6 block from its rack", racks, ptToR, "fd00:244:0:1::/80", 64601, true, ""},
		{"IPv6 block from another rack", racks, ptToR, "fd00:244:0:1::/80", 64602, false, "hijack rejected"},
		{"unassigned block", racks, ptToR, "10.244.9.0/26", 64601, false, "is not an assigned block"},
		{"more specific of a block", racks, ptToR2, "10.244.2.0/27", 64602, false, "is not an assigned block"},
		{"host route with its own entry", racks, ptToR2, "10.244.3.7/32", 64602, true, ""},
		{"outside the pools, any origin", racks, ptToR, "198.51.100.0/24", 65000, true, "import list"},
		{"in a pool, not in the import list", racks, ptToR, "10.244.2.0/27", 64602, false, "not in the import list"},
		{"own block still first", racks, ptToR, "10.244.0.0/26", 64601, false, "our own block"},
		{"no BlockOwnerAS: not checked", unchecked, ptToR, "10.244.2.0/26", 65000, true, "import list"},
		{"one AS: owner's", oneAS, ptToR, "10.244.2.0/26", 64512, true, "AS 64512"},
		{"one AS: the ToR's", oneAS, ptToR, "10.244.2.0/26", 65000, false, "hijack rejected"},
		{"nodes are judged by next hop", racks, ptC, "10.244.2.0/26", 1, true, "assigned to next hop"},
	} {
		t.Run(c.name, func(t *testing.T) {
			kind := KindExternal
			if c.neighbor == ptC {
				kind = KindMesh
			}
			got, reason := c.p.Accepts(kind, c.neighbor, gbPfx(c.prefix), c.neighbor, c.origin)
			checkRejects(t, c.p, kind, c.neighbor, gbPfx(c.prefix), c.neighbor, c.origin)
			if got != c.want || !strings.Contains(reason, c.reason) {
				t.Errorf("Accepts(%v, %s, origin %d) = %v, %q; want %v, containing %q",
					c.neighbor, c.prefix, c.origin, got, reason, c.want, c.reason)
			}
		})
	}
}

func TestPolicyExports(t *testing.T) {
	p := ptPolicy()
	for _, c := range []struct {
		name               string
		kind               PeerKind
		prefix             string
		learned, reflector bool
		want               bool
	}{
		{"own block to node", KindMesh, "10.244.0.0/26", false, false, true},
		{"own block to external", KindExternal, "10.244.0.0/26", false, false, true},
		{"more specific of own block", KindMesh, "10.244.0.1/32", false, false, false},
		{"extra export to node", KindMesh, "10.245.0.7/32", false, false, true},
		{"no-export prefix to external", KindExternal, "10.245.0.7/32", false, false, false},
		{"extra export to external", KindExternal, "203.0.113.5/32", false, false, true},
		{"another node's block as our route", KindMesh, "10.244.1.0/26", false, false, false},
		{"learned, not a reflector", KindMesh, "10.244.1.0/26", true, false, false},
		{"reflected to client", KindReflectorClient, "10.244.1.0/26", true, true, true},
		{"reflected to non-client", KindMesh, "10.244.1.0/26", true, true, true},
		{"reflected to external", KindExternal, "10.244.1.0/26", true, true, false},
		{"reflected outside pools", KindReflectorClient, "8.8.8.0/24", true, true, false},
		{"reflected IPv6", KindReflectorClient, "fd00:244:0:1::/80", true, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, reason := p.Exports(c.kind, netip.MustParseAddr("192.0.2.254"), gbPfx(c.prefix), c.learned, c.reflector)
			if got != c.want || reason == "" {
				t.Errorf("Exports(%s, %s, learned=%v, reflector=%v) = %v, %q; want %v", c.kind, c.prefix, c.learned, c.reflector, got, reason, c.want)
			}
		})
	}
}

func TestPrefixRangeMatches(t *testing.T) {
	for _, c := range []struct {
		r      PrefixRange
		prefix string
		want   bool
	}{
		{PrefixRange{Prefix: gbPfx("10.0.0.0/8")}, "10.0.0.0/8", true},
		{PrefixRange{Prefix: gbPfx("10.0.0.0/8")}, "10.1.0.0/16", false},
		{PrefixRange{Prefix: gbPfx("10.0.0.0/8"), MaxLen: 16}, "10.1.0.0/16", true},
		{PrefixRange{Prefix: gbPfx("10.0.0.0/8"), MaxLen: 16}, "10.1.1.0/24", false},
		{PrefixRange{Prefix: gbPfx("10.0.0.0/8"), MaxLen: 16}, "11.0.0.0/16", false},
		{PrefixRange{Prefix: gbPfx("10.0.0.0/8"), MaxLen: 32}, "0.0.0.0/0", false},
		{PrefixRange{Prefix: gbPfx("::/0"), MaxLen: 128}, "10.0.0.0/8", false},
		{PrefixRange{Prefix: gbPfx("2001:db8::/32"), MaxLen: 48}, "2001:db8:1::/48", true},
	} {
		if got := c.r.Matches(gbPfx(c.prefix)); got != c.want {
			t.Errorf("%v.Matches(%s) = %v, want %v", c.r, c.prefix, got, c.want)
		}
	}
}

func TestPolicyInOwnBlockAndPoolOf(t *testing.T) {
	p := ptPolicy()
	for _, c := range []struct {
		prefix string
		own    bool
		pool   string // "" = none
	}{
		{"10.244.0.0/26", true, "10.244.0.0/16"},
		{"10.244.0.5/32", true, "10.244.0.0/16"},
		{"10.244.0.0/25", false, "10.244.0.0/16"}, // covers our block, not inside it
		{"10.244.1.0/26", false, "10.244.0.0/16"},
		{"10.244.0.0/16", false, "10.244.0.0/16"},
		{"10.0.0.0/8", false, ""},
		{"fd00:244:0:1::/80", false, "fd00:244::/48"},
		{"::ffff:10.244.0.0/122", false, ""}, // a mapped address is IPv6
	} {
		pool, ok := p.PoolOf(gbPfx(c.prefix))
		if got := p.InOwnBlock(gbPfx(c.prefix)); got != c.own || ok != (c.pool != "") || ok && pool != gbPfx(c.pool) {
			t.Errorf("%s: InOwnBlock = %v, PoolOf = %v %v; want %v, %q", c.prefix, got, pool, ok, c.own, c.pool)
		}
	}
}

// A Clone shares nothing with the original: changing one never changes the other.
func TestPolicyClone(t *testing.T) {
	p := ptPolicy()
	c := p.Clone()
	if !reflect.DeepEqual(p, c) {
		t.Fatalf("Clone differs:\n%+v\n%+v", p, c)
	}
	c.OwnBlocks[0] = gbPfx("10.0.0.0/8")
	c.ExtraExports[0] = gbPfx("10.0.0.0/8")
	c.BlockOwners[gbPfx("10.244.1.0/26")] = ptC
	c.BlockOwnerAS[gbPfx("10.244.1.0/26")] = 1
	c.Pools[0] = gbPfx("10.0.0.0/8")
	c.NoExportToExternal[0] = gbPfx("10.0.0.0/8")
	c.ExternalImports[ptToR][0].MaxLen = 32
	c.ExternalImports[ptToR2] = nil
	if !reflect.DeepEqual(p, ptPolicy()) {
		t.Errorf("changing the clone changed the original:\n%+v", p)
	}
	if z := (Policy{}).Clone(); !reflect.DeepEqual(z, Policy{}) {
		t.Errorf("Clone of the zero Policy = %+v", z)
	}
}

// checkRejects: Rejects decides as Accepts does, with the same reason for a rejection and
// none formatted for an acceptance.
func checkRejects(t *testing.T, p Policy, kind PeerKind, n netip.Addr, pfx netip.Prefix, nh netip.Addr, origin uint32) {
	t.Helper()
	ok, why := p.Accepts(kind, n, pfx, nh, origin)
	rejected, reason := p.Rejects(kind, n, pfx, nh, origin)
	switch {
	case rejected == ok:
		t.Errorf("Rejects = %v, Accepts = %v", rejected, ok)
	case rejected && reason != why:
		t.Errorf("Rejects reason %q, Accepts %q", reason, why)
	case !rejected && reason != "":
		t.Errorf("Rejects formatted %q for an accepted route", reason)
	}
}
