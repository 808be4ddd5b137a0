package gobgp

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"

	goldenfile "github.com/hostroute/hostroute/internal/golden"
	"github.com/hostroute/hostroute/routing"
)

var update = flag.Bool("update", false, "rewrite routing/gobgp/testdata/*.golden from the current output")

// Addresses of the policy cases: this node is A.
var (
	ptA    = netip.MustParseAddr("192.0.2.11")
	ptB    = netip.MustParseAddr("192.0.2.12")
	ptC    = netip.MustParseAddr("192.0.2.13")
	ptRR2  = netip.MustParseAddr("192.0.2.20")
	ptToR  = netip.MustParseAddr("192.0.2.254")
	ptToR2 = netip.MustParseAddr("192.0.2.253")
	ptA6   = netip.MustParseAddr("fd00::11")
	ptB6   = netip.MustParseAddr("fd00::12")
	ptToR6 = netip.MustParseAddr("2001:db8::1")
)

// policyCase is what SetPolicy and SetPeers give buildPolicy: the node's Policy (as
// the agent computes it) and its neighbours' kinds.
type policyCase struct {
	name, about string
	policy      routing.Policy
	kinds       map[netip.Addr]routing.PeerKind
}

// meshPolicy is node A's policy in a three-node mesh with one IPv4 pool.
func meshPolicy() routing.Policy {
	return routing.Policy{
		OwnBlocks: []netip.Prefix{gbPfx("10.244.0.0/26")},
		BlockOwners: map[netip.Prefix]netip.Addr{
			gbPfx("10.244.0.0/26"): ptA, gbPfx("10.244.0.64/26"): ptB, gbPfx("10.244.0.128/26"): ptC,
			gbPfx("10.244.0.192/26"): ptB, // a second block of B
		},
		Pools:           []netip.Prefix{gbPfx("10.244.0.0/16")},
		ExternalImports: map[netip.Addr][]routing.PrefixRange{},
	}
}

func policyCases() []policyCase {
	mesh := map[netip.Addr]routing.PeerKind{ptB: routing.KindMesh, ptC: routing.KindMesh}

	tor := meshPolicy()
	tor.ExternalImports = map[netip.Addr][]routing.PrefixRange{
		ptToR:  {{Prefix: gbPfx("0.0.0.0/0")}, {Prefix: gbPfx("198.51.100.0/24"), MaxLen: 28}},
		ptToR2: nil, // a BGPPeer without an import list
	}
	torKinds := maps.Clone(mesh)
	torKinds[ptToR], torKinds[ptToR2] = routing.KindExternal, routing.KindExternal

	noExport := meshPolicy()
	noExport.OwnBlocks = append(noExport.OwnBlocks, gbPfx("10.245.0.0/26"))
	noExport.BlockOwners[gbPfx("10.245.0.0/26")] = ptA
	noExport.BlockOwners[gbPfx("10.245.0.64/26")] = ptB
	noExport.Pools = append(noExport.Pools, gbPfx("10.245.0.0/16"))
	noExport.NoExportToExternal = []netip.Prefix{gbPfx("10.245.0.0/16")}
	noExport.ExternalImports = map[netip.Addr][]routing.PrefixRange{ptToR: {{Prefix: gbPfx("0.0.0.0/0")}}}

	v6 := meshPolicy()
	v6.OwnBlocks = append(v6.OwnBlocks, gbPfx("fd00:244::/80"))
	v6.BlockOwners[gbPfx("fd00:244::/80")] = ptA6
	v6.BlockOwners[gbPfx("fd00:244:0:1::/80")] = ptB6
	v6.Pools = append(v6.Pools, gbPfx("fd00:244::/48"))
	v6.ExternalImports = map[netip.Addr][]routing.PrefixRange{
		ptToR6: {{Prefix: gbPfx("::/0")}, {Prefix: gbPfx("2001:db8:100::/40"), MaxLen: 48}},
	}

	external := meshPolicy()
	external.BlockOwners = map[netip.Prefix]netip.Addr{gbPfx("10.244.0.0/26"): ptA}
	external.ExternalImports = map[netip.Addr][]routing.PrefixRange{ptToR: {{Prefix: gbPfx("0.0.0.0/0")}}}

	racks := meshPolicy()
	racks.BlockOwnerAS = map[netip.Prefix]uint32{
		gbPfx("10.244.0.0/26"): 64601, gbPfx("10.244.0.64/26"): 64601, gbPfx("10.244.0.128/26"): 64602,
		gbPfx("10.244.0.192/26"): 64601, gbPfx("10.244.1.0/26"): 64603, // the last one not in the import list below
	}
	racks.ExternalImports = map[netip.Addr][]routing.PrefixRange{
		ptToR:  {{Prefix: gbPfx("0.0.0.0/0")}, {Prefix: gbPfx("10.244.0.0/24"), MaxLen: 26}},
		ptToR2: {{Prefix: gbPfx("10.244.0.128/26")}},
	}

	return []policyCase{
		{"mesh", "a three-node full mesh, one IPv4 pool", meshPolicy(), mesh},
		{"mesh-tor", "the mesh and two ToRs, one with an import list (the default route and 198.51.100.0/24 le 28), one without",
			tor, torKinds},
		{"reflector", "A reflects for clients B and C and meshes with the other reflector",
			meshPolicy(), map[netip.Addr]routing.PeerKind{ptB: routing.KindReflectorClient, ptC: routing.KindReflectorClient, ptRR2: routing.KindMesh}},
		{"reflector-client", "A is a client of two reflectors: it reflects nothing",
			meshPolicy(), map[netip.Addr]routing.PeerKind{ptB: routing.KindReflector, ptRR2: routing.KindReflector}},
		{"disable-bgp-export", "a second pool with disableBGPExport: its blocks go to nodes, never to the ToR",
			noExport, map[netip.Addr]routing.PeerKind{ptB: routing.KindMesh, ptToR: routing.KindExternal}},
		{"ipv6", "dual stack: an IPv6 pool with blocks owned by the nodes' IPv6 addresses, over IPv4 mesh sessions, and an IPv6 ToR",
			v6, map[netip.Addr]routing.PeerKind{ptB: routing.KindMesh, ptToR6: routing.KindExternal}},
		{"external-only", "no node neighbours, one ToR: no rule that needs a node neighbour set",
			external, map[netip.Addr]routing.PeerKind{ptToR: routing.KindExternal}},
		{"as-per-rack", "AS per rack (A and B in 64601, C in 64602) behind two ToRs that carry the blocks between racks: a pool block from a ToR only with its owner's AS as origin",
			racks, map[netip.Addr]routing.PeerKind{ptToR: routing.KindExternal, ptToR2: routing.KindExternal}},
		{"edge-cases", "extra exports, a no-export range, a /32 with its own owner, blocks outside every pool, an IPv4 owner of an IPv6 block, the pool itself as a block",
			edgePolicy(), map[netip.Addr]routing.PeerKind{ptB: routing.KindMesh, ptC: routing.KindReflectorClient, ptToR: routing.KindExternal}},
	}
}

// edgePolicy has the odd inputs the builder must cope with.
func edgePolicy() routing.Policy {
	return routing.Policy{
		OwnBlocks:    []netip.Prefix{gbPfx("10.244.0.0/26")},
		ExtraExports: []netip.Prefix{gbPfx("10.245.0.7/32"), gbPfx("203.0.113.5/32"), gbPfx("fd00:245::7/128")},
		BlockOwners: map[netip.Prefix]netip.Addr{
			gbPfx("10.244.0.0/26"):        ptA,
			gbPfx("10.244.1.0/26"):        ptB,
			gbPfx("10.244.2.0/26"):        ptC,
			gbPfx("10.244.3.7/32"):        ptC, // an address borrowed from B's... block, owned by C
			gbPfx("10.244.0.5/32"):        ptB, // inside our own block: never accepted
			gbPfx("fd00:244:0:1::/80"):    ptB6,
			gbPfx("172.16.0.0/26"):        ptB, // outside every pool
			gbPfx("fd00:244:0:2::/80"):    ptC, // an IPv4 owner for an IPv6 block: never matches
			gbPfx("10.244.128.0/26"):      ptB,
			gbPfx("10.244.0.0/16"):        ptB, // the pool itself as a "block"
			gbPfx("10.244.255.192/26"):    ptC,
			gbPfx("fd00:244:0:ffff::/80"): ptB6,
		},
		Pools: []netip.Prefix{gbPfx("10.244.0.0/16"), gbPfx("fd00:244::/48")},
		ExternalImports: map[netip.Addr][]routing.PrefixRange{ptToR: {
			{Prefix: gbPfx("0.0.0.0/0")}, {Prefix: gbPfx("198.51.100.0/24"), MaxLen: 28},
			{Prefix: gbPfx("192.0.2.0/24"), MaxLen: 16},   // shorter than the prefix: matches nothing
			{Prefix: gbPfx("203.0.113.0/24"), MaxLen: 64}, // longer than a host route: capped
			{Prefix: gbPfx("2001:db8::/32"), MaxLen: 48},  // IPv6 from an IPv4 neighbour
		}},
		NoExportToExternal: []netip.Prefix{gbPfx("10.245.0.0/16")},
	}
}

// goldenText is the golden file of a case: its inputs as comments, then policyText.
func goldenText(c policyCase) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n#\n# What SetPolicy installs in GoBGP for node %s with these inputs\n", c.about, ptA)
	fmt.Fprintf(&b, "# (go test ./routing/gobgp -update rewrites this file):\n")
	for _, a := range slices.SortedFunc(maps.Keys(c.kinds), netip.Addr.Compare) {
		fmt.Fprintf(&b, "#   neighbour %s %s\n", a, c.kinds[a])
	}
	p := c.policy
	line := func(name string, ps []netip.Prefix) {
		if len(ps) > 0 {
			fmt.Fprintf(&b, "#   %s %v\n", name, slices.SortedFunc(slices.Values(ps), netip.Prefix.Compare))
		}
	}
	line("own blocks", p.OwnBlocks)
	line("extra exports", p.ExtraExports)
	line("pools", p.Pools)
	line("no export to external", p.NoExportToExternal)
	for _, blk := range slices.SortedFunc(maps.Keys(p.BlockOwners), netip.Prefix.Compare) {
		as := ""
		if a, ok := p.BlockOwnerAS[blk]; ok {
			as = fmt.Sprintf(" AS %d", a)
		}
		fmt.Fprintf(&b, "#   block %s owner %s%s\n", blk, p.BlockOwners[blk], as)
	}
	for _, a := range slices.SortedFunc(maps.Keys(p.ExternalImports), netip.Addr.Compare) {
		fmt.Fprintf(&b, "#   imports from %s %v\n", a, p.ExternalImports[a])
	}
	b.WriteString("\n")
	b.WriteString(policyText(buildPolicy(c.policy, c.kinds), assignments()))
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	goldenfile.Check(t, name, []byte(got), *update, "go test ./routing/gobgp -update")
}

// The GoBGP policy for representative inputs, statement by statement, against
// testdata/*.golden.
func TestPolicyGolden(t *testing.T) {
	for _, c := range policyCases() {
		t.Run(c.name, func(t *testing.T) { golden(t, c.name, goldenText(c)) })
	}
}

// Properties of every built policy, which a golden file rewritten with -update could
// lose unnoticed: it is deterministic (installing it twice is a no-op), and GoBGP's
// policy-engine hazards are handled: explicit mask ranges, one family per prefix set,
// unique set names, no empty neighbour set (it would match every neighbour), and every
// set a statement names exists.
func TestBuildPolicyInvariants(t *testing.T) {
	for _, c := range policyCases() {
		t.Run(c.name, func(t *testing.T) {
			a := buildPolicy(c.policy, c.kinds)
			for range 20 { // map iteration order must not matter
				if b := buildPolicy(c.policy, c.kinds); !proto.Equal(a, b) {
					t.Fatal("buildPolicy is not deterministic")
				}
			}
			sets := map[string]*api.DefinedSet{}
			for _, s := range a.DefinedSets {
				if sets[s.Name] != nil {
					t.Errorf("defined set %s twice", s.Name)
				}
				sets[s.Name] = s
				if len(s.List)+len(s.Prefixes) == 0 {
					t.Errorf("empty set %s", s.Name)
				}
				for i, e := range s.Prefixes {
					q := gbPfx(e.IpPrefix)
					if q.Addr().Is4() != gbPfx(s.Prefixes[0].IpPrefix).Addr().Is4() {
						t.Errorf("set %s mixes families", s.Name)
					}
					if int(e.MaskLengthMin) != q.Bits() || e.MaskLengthMax < e.MaskLengthMin || int(e.MaskLengthMax) > q.Addr().BitLen() {
						t.Errorf("set %s entry %d: %s %d..%d", s.Name, i, e.IpPrefix, e.MaskLengthMin, e.MaskLengthMax)
					}
				}
			}
			for _, pol := range a.Policies {
				for _, s := range pol.Statements {
					for _, ms := range []*api.MatchSet{s.Conditions.GetPrefixSet(), s.Conditions.GetNeighborSet(), s.Conditions.GetAsPathSet()} {
						if ms != nil && sets[ms.Name] == nil {
							t.Errorf("statement %s names the missing set %s", s.Name, ms.Name)
						}
					}
				}
			}
		})
	}
}

// GoBGP holds what buildPolicy built: every case installed on a real (non-listening)
// speaker and read back renders the same, once GoBGP's own normalisations are undone
// (it reports an RPKI condition of -1 for "none" and next hops in a list as /32 or
// /128).
func TestInstalledPolicyMatchesBuilt(t *testing.T) {
	ctx := context.Background()
	for _, c := range policyCases() {
		t.Run(c.name, func(t *testing.T) {
			s := New(slog.New(slog.DiscardHandler))
			if err := s.Start(ctx, routing.GlobalConfig{AS: gbAS, RouterID: ptA, ListenPort: -1}); err != nil {
				t.Fatal(err)
			}
			defer s.Stop()
			s.op.Lock()
			s.policy, s.hasPolicy = c.policy.Clone(), true
			err := s.installPolicy(c.kinds)
			s.op.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			got := &api.SetPoliciesRequest{}
			var as []*api.PolicyAssignment
			var errs []error
			for _, typ := range []api.DefinedType{api.DefinedType_PREFIX, api.DefinedType_NEIGHBOR, api.DefinedType_AS_PATH} {
				errs = append(errs, s.srv.ListDefinedSet(ctx, &api.ListDefinedSetRequest{DefinedType: typ}, func(d *api.DefinedSet) {
					d.DefinedType = typ // GoBGP leaves PREFIX (0) out anyway
					got.DefinedSets = append(got.DefinedSets, d)
				}))
			}
			errs = append(errs, s.srv.ListPolicy(ctx, &api.ListPolicyRequest{}, func(p *api.Policy) {
				for _, st := range p.Statements {
					if st.Conditions.GetRpkiResult() == -1 {
						st.Conditions.RpkiResult = 0
					}
					for i, nh := range st.Conditions.GetNextHopInList() {
						if p, err := netip.ParsePrefix(nh); err == nil && p.IsSingleIP() {
							st.Conditions.NextHopInList[i] = p.Addr().String()
						}
					}
				}
				got.Policies = append(got.Policies, p)
			}))
			for _, dir := range []api.PolicyDirection{api.PolicyDirection_IMPORT, api.PolicyDirection_EXPORT} {
				errs = append(errs, s.srv.ListPolicyAssignment(ctx, &api.ListPolicyAssignmentRequest{Name: "global", Direction: dir},
					func(a *api.PolicyAssignment) {
						for i, p := range a.Policies {
							a.Policies[i] = &api.Policy{Name: p.Name} // the statements again, shown above
						}
						as = append(as, a)
					}))
			}
			for _, err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			want := policyText(buildPolicy(c.policy, c.kinds), assignments())
			if d := cmp.Diff(want, policyText(got, as)); d != "" {
				t.Errorf("GoBGP's installed policy differs from the built one (-built +installed):\n%s", d)
			}
		})
	}
}
