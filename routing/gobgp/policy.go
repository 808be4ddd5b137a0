package gobgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"

	"github.com/hostroute/hostroute/routing"
)

// GoBGP policy names; the speaker owns GoBGP's whole policy configuration.
const (
	importPolicyName = "hostroute-import"
	exportPolicyName = "hostroute-export"
)

// SetPolicy installs p as GoBGP's global import and export policy (the rules are
// routing.Policy.Accepts and routing.Policy.Exports), replacing the previous one whole.
// Installing the same policy for the same neighbour kinds again does nothing. A policy
// set before Start is installed by Start.
//
// Hazards handled here:
//   - GoBGP does not re-evaluate routes already received when the policy changes. When
//     only prefix sets' entries change (a block assigned or released), the sets are
//     edited in place and only the neighbours that can carry those prefixes are soft
//     reset in (resetTargets): a block change costs O(1) sessions, not O(nodes). Any
//     other change (a node's first block, a new neighbour kind, pools) installs the
//     whole policy and soft resets (in and out) every neighbour. Neighbours merely added
//     or removed need none.
//   - A route is judged against the export policy when it is added: add our own routes
//     after the policy that exports them (the agent sets the policy first).
//   - A soft reset out sends newly allowed routes but never withdraws newly refused ones,
//     and a withdrawal is itself filtered by the export policy. So our routes that the new
//     policy stops exporting are withdrawn before it is installed and re-originated after.
func (g *Speaker) SetPolicy(p routing.Policy) error {
	g.op.Lock()
	defer g.op.Unlock()
	g.policy, g.hasPolicy = p.Clone(), true
	g.mu.Lock()
	g.advGen++
	g.mu.Unlock()
	if !g.isStarted() {
		return nil
	}
	return g.installPolicy(g.kinds())
}

// installPolicy builds and installs the GoBGP policy for the stored Policy and kinds.
// The caller holds g.op.
func (g *Speaker) installPolicy(kinds map[netip.Addr]routing.PeerKind) (err error) {
	if !g.hasPolicy {
		return nil
	}
	g.hj.update(g.policy, kinds)
	req := buildPolicy(g.policy, kinds)
	if g.applied != nil && proto.Equal(req, g.applied) {
		return nil
	}
	ctx := context.Background()

	// Withdraw what stops being exported while the old policy still lets the withdrawal
	// out; re-originate it afterwards, whether the install worked or not.
	reorig, advs := g.stopsExporting(kinds)
	var withdrawn []netip.Prefix
	defer func() {
		for _, pfx := range withdrawn {
			uuid, aerr := g.addPath(pfx, advs[pfx].nextHop)
			g.mu.Lock()
			if aerr != nil {
				delete(g.adv, pfx)
			} else {
				g.adv[pfx] = advert{nextHop: advs[pfx].nextHop, uuid: uuid}
			}
			g.mu.Unlock()
			err = errors.Join(err, aerr)
		}
	}()
	for _, pfx := range reorig {
		if err := g.deletePath(pfx, advs[pfx]); err != nil {
			return err
		}
		withdrawn = append(withdrawn, pfx)
	}

	// Only prefixes moved in or out of existing sets (a block assigned or released, the
	// common change): edit those sets in place and re-judge the routes of the neighbours
	// that can carry them, instead of replacing the policy and resetting everyone.
	if deltas, ok := diffPolicy(g.applied, req); ok && maps.Equal(g.appliedKinds, kinds) {
		err := g.applyDeltas(ctx, deltas)
		if err == nil {
			g.applied, g.appliedPol, g.appliedKinds = req, g.policy, kinds
			addrs, all := resetTargets(deltas, kinds)
			return g.resetIn(ctx, addrs, all, deltas)
		}
		g.log.Warn("bgp: editing the policy in place failed; installing it whole", "err", err)
	}
	if err := g.srv.SetPolicies(ctx, req); err != nil {
		return fmt.Errorf("bgp: set policies: %w", err)
	}
	for _, a := range assignments() {
		if err := g.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: a}); err != nil {
			return fmt.Errorf("bgp: assign %s: %w", a.GetPolicies()[0].GetName(), err)
		}
	}
	// Routes already received or sent need judging again only when the rules changed,
	// or an existing neighbour's kind did. Neighbours just added are judged as their
	// routes arrive, and the routes of removed ones are gone.
	reset := g.applied == nil || !reflect.DeepEqual(g.appliedPol, g.policy)
	for a, k := range kinds {
		if old, ok := g.appliedKinds[a]; ok && old != k {
			reset = true
		}
	}
	g.applied, g.appliedPol, g.appliedKinds = req, g.policy, kinds
	if reset && len(kinds) > 0 {
		g.noteReset("")
		err := g.srv.ResetPeer(ctx, &api.ResetPeerRequest{Soft: true, Direction: api.ResetPeerRequest_BOTH})
		if err != nil {
			return fmt.Errorf("bgp: soft reset after policy change: %w", err)
		}
	}
	return nil
}

// stopsExporting returns our routes that the installed GoBGP policy exports to one of
// the neighbours and the stored Policy no longer does (with no policy installed GoBGP
// exports everything), and a copy of our routes. Hazard: such a route is withdrawn from
// every neighbour and re-originated, so the neighbours that still get it see it flap once.
func (g *Speaker) stopsExporting(kinds map[netip.Addr]routing.PeerKind) ([]netip.Prefix, map[netip.Prefix]advert) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []netip.Prefix
	for pfx := range g.adv {
		for a, k := range kinds {
			before := g.applied == nil
			if !before {
				before, _ = g.appliedPol.Exports(k, a, pfx, false, false)
			}
			if after, _ := g.policy.Exports(k, a, pfx, false, false); before && !after {
				out = append(out, pfx)
				break
			}
		}
	}
	slices.SortFunc(out, netip.Prefix.Compare)
	return out, maps.Clone(g.adv)
}

// buildPolicy translates p into GoBGP defined sets and two policies. The import policy,
// default REJECT:
//
//	local routes (our own AddPath routes pass the import policy too)   accept
//	own blocks and more specifics                                      reject
//	per owner: its pool blocks (exact) from a node with next hop = owner accept
//	with BlockOwnerAS, per external neighbour and owner AS: that AS's
//	  blocks in the import list (exact), AS path origin = that AS       accept
//	with BlockOwnerAS, any other pool prefix from an external neighbour reject
//	per external neighbour, its import filter rules in order:
//	  Reject: the rule's range (and community) from that neighbour     reject
//	  Accept: the rule's range ∩ each import range (and community)     accept
//	per external neighbour: its import ranges from that neighbour      accept
//
// An Accept rule lets a route on to the import list: accepting the intersection of its
// range with the import ranges, before the later rules, is the same first-match verdict
// in GoBGP's statement order. Blocks (pool prefixes with BlockOwnerAS) are decided by
// the origin rules, which leave out the blocks a filter rule without a community rejects.
//
// The export policy, default REJECT:
//
//	per Tag: local routes inside its prefixes to its neighbours        add attributes
//	NoExportToExternal and more specifics to external neighbours       reject
//	per external neighbour: local routes its export filters refuse     reject
//	  (exact prefixes, judged here by routing.Policy.ExportFilterRefuses)
//	local routes for ServiceExports (exact) to external neighbours     accept
//	local routes for OwnBlocks and ExtraExports (exact)                accept
//	reflector only: iBGP-learned pool prefixes to nodes                accept
//
// Hazards: a prefix set holds one family only (each rule is built per family); a
// prefix-set entry with mask lengths 0..0 matches only /0 (ranges are always explicit);
// an empty neighbour set matches every neighbour (rules that need one are left out when
// it would be empty); the per-owner rules are evaluated in order, one per node and
// family, which is linear in the cluster size per received route.
func buildPolicy(p routing.Policy, kinds map[netip.Addr]routing.PeerKind) *api.SetPoliciesRequest {
	b := &policyBuilder{}
	var nodes, externals []netip.Addr
	reflector := false
	for a, k := range kinds {
		switch k {
		case routing.KindExternal:
			externals = append(externals, a)
		case routing.KindMesh, routing.KindReflector, routing.KindReflectorClient:
			nodes = append(nodes, a)
		}
		reflector = reflector || k == routing.KindReflectorClient
	}
	slices.SortFunc(nodes, netip.Addr.Compare)
	slices.SortFunc(externals, netip.Addr.Compare)
	nodeSet := b.neighborSet("hr-nodes", nodes)
	extSet := b.neighborSet("hr-external", externals)

	imp := []*api.Statement{statement("hr-im-local", &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL}, true)}
	for _, f := range families {
		if s := b.prefixSet("hr-own-"+f.tag, f.only(p.OwnBlocks), true); s != "" {
			imp = append(imp, statement("hr-im-own-"+f.tag, &api.Conditions{PrefixSet: matchAny(s)}, false))
		}
	}
	if nodeSet != "" {
		owners := map[netip.Addr][]netip.Prefix{}
		for blk, owner := range p.BlockOwners {
			if _, inPool := p.PoolOf(blk); inPool && !p.InOwnBlock(blk) {
				owners[owner.Unmap()] = append(owners[owner.Unmap()], blk)
			}
		}
		for _, owner := range slices.SortedFunc(maps.Keys(owners), netip.Addr.Compare) {
			for _, f := range families {
				name := fmt.Sprintf("owner-%s-%s", f.tag, owner)
				if s := b.prefixSet("hr-"+name, f.only(owners[owner]), false); s != "" {
					imp = append(imp, statement("hr-im-"+name, &api.Conditions{
						PrefixSet: matchAny(s), NeighborSet: matchAny(nodeSet), NextHopInList: []string{owner.String()},
					}, true))
				}
			}
		}
	}
	if p.BlockOwnerAS != nil && extSet != "" {
		imp = append(imp, originStatements(b, p, externals, extSet)...)
	}
	imp = append(imp, importFilterStatements(b, p, externals)...)
	for _, ext := range externals {
		for _, f := range families {
			name := fmt.Sprintf("import-%s-%s", f.tag, ext)
			s := b.rangeSet("hr-"+name, f, p.ExternalImports[ext])
			if s == "" {
				continue
			}
			peerSet := b.neighborSet("hr-peer-"+ext.String(), []netip.Addr{ext})
			imp = append(imp, statement("hr-im-"+name, &api.Conditions{PrefixSet: matchAny(s), NeighborSet: matchAny(peerSet)}, true))
		}
	}

	exp := tagStatements(b, p)
	for _, f := range families {
		if extSet == "" {
			break
		}
		if s := b.prefixSet("hr-noexport-"+f.tag, f.only(p.NoExportToExternal), true); s != "" {
			exp = append(exp, statement("hr-ex-noexport-"+f.tag, &api.Conditions{PrefixSet: matchAny(s), NeighborSet: matchAny(extSet)}, false))
		}
	}
	ours := slices.Concat(p.OwnBlocks, p.ExtraExports, p.ServiceExports)
	for _, ext := range externals {
		var refused []netip.Prefix
		for _, pfx := range ours {
			if no, _ := p.ExportFilterRefuses(ext, pfx); no {
				refused = append(refused, pfx)
			}
		}
		for _, f := range families {
			name := fmt.Sprintf("exfilter-%s-%s", f.tag, ext)
			if s := b.prefixSet("hr-"+name, f.only(refused), false); s != "" {
				peerSet := b.neighborSet("hr-peer-"+ext.String(), []netip.Addr{ext})
				exp = append(exp, statement("hr-ex-"+name, &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL,
					PrefixSet: matchAny(s), NeighborSet: matchAny(peerSet)}, false))
			}
		}
	}
	for _, f := range families {
		if extSet == "" {
			break
		}
		if s := b.prefixSet("hr-svc-"+f.tag, f.only(p.ServiceExports), false); s != "" {
			exp = append(exp, statement("hr-ex-svc-"+f.tag, &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL,
				PrefixSet: matchAny(s), NeighborSet: matchAny(extSet)}, true))
		}
	}
	for _, f := range families {
		out := f.only(append(slices.Clone(p.OwnBlocks), p.ExtraExports...))
		if s := b.prefixSet("hr-export-"+f.tag, out, false); s != "" {
			exp = append(exp, statement("hr-ex-own-"+f.tag, &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL, PrefixSet: matchAny(s)}, true))
		}
	}
	for _, f := range families {
		if !reflector || nodeSet == "" {
			break
		}
		if s := b.prefixSet("hr-pools-"+f.tag, f.only(p.Pools), true); s != "" {
			exp = append(exp, statement("hr-ex-reflect-"+f.tag, &api.Conditions{
				RouteType: api.Conditions_ROUTE_TYPE_INTERNAL, PrefixSet: matchAny(s), NeighborSet: matchAny(nodeSet),
			}, true))
		}
	}
	return &api.SetPoliciesRequest{
		DefinedSets: b.sets,
		Policies:    []*api.Policy{{Name: importPolicyName, Statements: imp}, {Name: exportPolicyName, Statements: exp}},
	}
}

// originStatements are the import rules for pool prefixes from external neighbours
// (routing.Policy.Accepts, rule 2, with BlockOwnerAS set): per neighbour, family and
// owner AS, the assigned blocks of that AS in the neighbour's import list (exact) with
// an AS path originating in that AS (`_AS$`, which GoBGP matches against the last AS
// of the final AS_SEQUENCE) → accept; then any other pool prefix from an external
// neighbour → reject, before the import lists accept the rest. Hazard: one statement
// per neighbour, family and AS, so AS per node makes the list linear in the cluster.
func originStatements(b *policyBuilder, p routing.Policy, externals []netip.Addr, extSet string) []*api.Statement {
	var out []*api.Statement
	for _, ext := range externals {
		for _, f := range families {
			byAS := map[uint32][]netip.Prefix{}
			for blk, as := range p.BlockOwnerAS {
				blk = blk.Masked()
				if !blk.IsValid() || blk.Addr().Is4() != f.v4 || p.InOwnBlock(blk) {
					continue
				}
				if _, inPool := p.PoolOf(blk); !inPool || !slices.ContainsFunc(p.ExternalImports[ext], func(r routing.PrefixRange) bool { return r.Matches(blk) }) {
					continue
				}
				if refused, _ := p.Rejects(routing.KindExternal, ext, blk, netip.Addr{}, as); refused {
					continue // an import filter rule refuses it
				}
				byAS[as] = append(byAS[as], blk)
			}
			for _, as := range slices.Sorted(maps.Keys(byAS)) {
				name := fmt.Sprintf("origin-%s-%s-as%d", f.tag, ext, as)
				out = append(out, statement("hr-im-"+name, &api.Conditions{
					PrefixSet:   matchAny(b.prefixSet("hr-"+name, f.only(byAS[as]), false)),
					NeighborSet: matchAny(b.neighborSet("hr-peer-"+ext.String(), []netip.Addr{ext})),
					AsPathSet:   matchAny(b.asPathSet(fmt.Sprintf("hr-origin-as%d", as), fmt.Sprintf("_%d$", as))),
				}, true))
			}
		}
	}
	for _, f := range families {
		if s := b.prefixSet("hr-pools-"+f.tag, f.only(p.Pools), true); s != "" {
			out = append(out, statement("hr-im-pools-external-"+f.tag, &api.Conditions{PrefixSet: matchAny(s), NeighborSet: matchAny(extSet)}, false))
		}
	}
	return out
}

// importFilterStatements are the import filter rules of each external neighbour (see
// buildPolicy): a Reject rule as a reject of its range, an Accept rule as an accept of
// its range's intersection with the neighbour's import ranges.
func importFilterStatements(b *policyBuilder, p routing.Policy, externals []netip.Addr) []*api.Statement {
	var out []*api.Statement
	for _, ext := range externals {
		peerSet := ""
		for i, r := range p.ImportFilters[ext] {
			f := families[0]
			if r.Prefix.Addr().Is6() {
				f = families[1]
			}
			entries := []*api.Prefix{{IpPrefix: r.Prefix.Masked().String(), MaskLengthMin: uint32(r.MinLen), MaskLengthMax: uint32(r.MaxLen)}}
			if r.Accept {
				entries = nil
				for _, ir := range p.ExternalImports[ext] {
					if x, ok := intersect(r, ir); ok {
						entries = append(entries, x)
					}
				}
			}
			if len(entries) == 0 {
				continue // an Accept of nothing the import list takes: the later rules decide
			}
			name := fmt.Sprintf("imfilter-%s-%s-%d", f.tag, ext, i+1)
			if !b.has("hr-" + name) {
				b.sets = append(b.sets, &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: "hr-" + name, Prefixes: entries})
			}
			if peerSet == "" {
				peerSet = b.neighborSet("hr-peer-"+ext.String(), []netip.Addr{ext})
			}
			c := &api.Conditions{PrefixSet: matchAny("hr-" + name), NeighborSet: matchAny(peerSet)}
			if r.HasCommunity {
				c.CommunitySet = matchAny(b.communitySet(r.Community))
			}
			out = append(out, statement("hr-im-"+name, c, r.Accept))
		}
	}
	return out
}

// intersect is the prefix-set entry matching what both the filter rule r and the import
// range ir match (ok false: nothing).
func intersect(r routing.Filter, ir routing.PrefixRange) (*api.Prefix, bool) {
	q := ir.Prefix.Masked()
	qhi := q.Bits()
	if ir.MaxLen > 0 {
		qhi = min(ir.MaxLen, q.Addr().BitLen())
	}
	var base netip.Prefix
	switch {
	case q.Addr().Is4() != r.Prefix.Addr().Is4():
		return nil, false
	case r.Prefix.Bits() <= q.Bits() && r.Prefix.Contains(q.Addr()):
		base = q
	case q.Bits() <= r.Prefix.Bits() && q.Contains(r.Prefix.Addr()):
		base = r.Prefix.Masked()
	default:
		return nil, false
	}
	lo, hi := max(r.MinLen, q.Bits(), base.Bits()), min(r.MaxLen, qhi)
	if lo > hi {
		return nil, false
	}
	return &api.Prefix{IpPrefix: base.String(), MaskLengthMin: uint32(lo), MaskLengthMax: uint32(hi)}, true
}

// tagStatements add each Tag's attributes to our own routes it applies to; they carry
// no verdict, so the statements after them still decide. GoBGP's local preference action
// sets the value, so of several tags the last one applied would win: the tags with a
// local preference come last, in ascending order, so that the highest wins as in
// routing.Attrs.Merge (adding communities does not depend on the order).
func tagStatements(b *policyBuilder, p routing.Policy) []*api.Statement {
	var out []*api.Statement
	order := make([]int, len(p.Tags))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(x, y int) int {
		ax, ay := p.Tags[x].Attrs, p.Tags[y].Attrs
		if ax.HasLocalPref != ay.HasLocalPref {
			if ax.HasLocalPref {
				return 1
			}
			return -1
		}
		return cmp.Compare(ax.LocalPref, ay.LocalPref)
	})
	for _, i := range order {
		t := p.Tags[i]
		if t.Attrs.IsZero() {
			continue
		}
		c := &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL}
		if t.Neighbors != nil {
			if len(t.Neighbors) == 0 {
				continue
			}
			ns := slices.SortedFunc(slices.Values(t.Neighbors), netip.Addr.Compare)
			c.NeighborSet = matchAny(b.neighborSet(fmt.Sprintf("hr-tag-%d-peers", i+1), ns))
		}
		acts := tagActions(t.Attrs)
		if t.Prefixes == nil {
			out = append(out, &api.Statement{Name: fmt.Sprintf("hr-ex-tag-%d", i+1), Conditions: c, Actions: acts})
			continue
		}
		for _, f := range families {
			s := b.prefixSet(fmt.Sprintf("hr-tag-%d-%s", i+1, f.tag), f.only(t.Prefixes), true)
			if s == "" {
				continue
			}
			fc := proto.Clone(c).(*api.Conditions)
			fc.PrefixSet = matchAny(s)
			out = append(out, &api.Statement{Name: fmt.Sprintf("hr-ex-tag-%d-%s", i+1, f.tag), Conditions: fc, Actions: acts})
		}
	}
	return out
}

func tagActions(a routing.Attrs) *api.Actions {
	acts := &api.Actions{RouteAction: api.RouteAction_NONE}
	if len(a.Communities) > 0 {
		acts.Community = &api.CommunityAction{Type: api.CommunityAction_ADD, Communities: a.CommunityStrings()}
	}
	if len(a.LargeCommunities) > 0 {
		acts.LargeCommunity = &api.CommunityAction{Type: api.CommunityAction_ADD, Communities: a.LargeCommunityStrings()}
	}
	if a.HasLocalPref {
		acts.LocalPref = &api.LocalPrefAction{Value: a.LocalPref}
	}
	return acts
}

// assignments are the global import and export assignments of the policies buildPolicy
// makes, both default REJECT. They never change; SetPolicies ignores assignments, so
// they are set after it.
func assignments() []*api.PolicyAssignment {
	var out []*api.PolicyAssignment
	for _, a := range []struct {
		dir  api.PolicyDirection
		name string
	}{{api.PolicyDirection_IMPORT, importPolicyName}, {api.PolicyDirection_EXPORT, exportPolicyName}} {
		out = append(out, &api.PolicyAssignment{
			Name:          "global",
			Direction:     a.dir,
			Policies:      []*api.Policy{{Name: a.name}},
			DefaultAction: api.RouteAction_REJECT,
		})
	}
	return out
}

type family struct {
	tag string
	v4  bool
}

var families = []family{{"v4", true}, {"v6", false}}

// only returns the prefixes of family f, masked, sorted and without duplicates.
func (f family) only(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.IsValid() && p.Addr().Is4() == f.v4 {
			out = append(out, p.Masked())
		}
	}
	slices.SortFunc(out, netip.Prefix.Compare)
	return slices.Compact(out)
}

// policyBuilder collects the defined sets. A set is added once per name: a name is
// always built from the same inputs, so a second request for it reuses the first.
type policyBuilder struct {
	sets  []*api.DefinedSet
	names map[string]bool
}

// has reports whether a set of that name exists, and reserves the name if not.
func (b *policyBuilder) has(name string) bool {
	if b.names == nil {
		b.names = map[string]bool{}
	}
	seen := b.names[name]
	b.names[name] = true
	return seen
}

// prefixSet adds a prefix set and returns its name ("" when ps is empty). ranged sets
// match each prefix and its more specifics, others the exact prefixes.
func (b *policyBuilder) prefixSet(name string, ps []netip.Prefix, ranged bool) string {
	if len(ps) == 0 {
		return ""
	}
	if b.has(name) {
		return name
	}
	s := &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: name}
	for _, p := range ps {
		hi := p.Bits()
		if ranged {
			hi = p.Addr().BitLen()
		}
		s.Prefixes = append(s.Prefixes, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(hi)})
	}
	b.sets = append(b.sets, s)
	return name
}

// rangeSet adds a prefix set for the ranges of family f (see routing.PrefixRange.Matches).
func (b *policyBuilder) rangeSet(name string, f family, rs []routing.PrefixRange) string {
	var entries []*api.Prefix
	for _, r := range rs {
		if !r.Prefix.IsValid() || r.Prefix.Addr().Is4() != f.v4 {
			continue
		}
		p := r.Prefix.Masked()
		hi := p.Bits()
		if r.MaxLen > 0 {
			hi = min(r.MaxLen, p.Addr().BitLen())
		}
		if hi < p.Bits() {
			continue // matches nothing
		}
		entries = append(entries, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(hi)})
	}
	if len(entries) == 0 {
		return ""
	}
	if b.has(name) {
		return name
	}
	b.sets = append(b.sets, &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: name, Prefixes: entries})
	return name
}

// neighborSet adds a neighbour set and returns its name ("" when addrs is empty: GoBGP
// would match every neighbour with an empty set).
func (b *policyBuilder) neighborSet(name string, addrs []netip.Addr) string {
	if len(addrs) == 0 {
		return ""
	}
	if b.has(name) {
		return name
	}
	s := &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: name}
	for _, a := range addrs {
		s.List = append(s.List, netip.PrefixFrom(a, a.BitLen()).String())
	}
	b.sets = append(b.sets, s)
	return name
}

// asPathSet adds an AS-path set of one regular expression and returns its name.
func (b *policyBuilder) asPathSet(name, re string) string {
	if !b.has(name) {
		b.sets = append(b.sets, &api.DefinedSet{DefinedType: api.DefinedType_AS_PATH, Name: name, List: []string{re}})
	}
	return name
}

// communitySet adds a community set matching c exactly and returns its name.
func (b *policyBuilder) communitySet(c routing.Community) string {
	name := "hr-community-" + strings.ReplaceAll(c.String(), ":", "-")
	if !b.has(name) {
		b.sets = append(b.sets, &api.DefinedSet{DefinedType: api.DefinedType_COMMUNITY, Name: name, List: []string{"^" + c.String() + "$"}})
	}
	return name
}

func statement(name string, c *api.Conditions, accept bool) *api.Statement {
	action := api.RouteAction_REJECT
	if accept {
		action = api.RouteAction_ACCEPT
	}
	return &api.Statement{Name: name, Conditions: c, Actions: &api.Actions{RouteAction: action}}
}

func matchAny(set string) *api.MatchSet { return &api.MatchSet{Type: api.MatchSet_ANY, Name: set} }
