package routing

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// Accepts decides whether a path for prefix with nextHop and originAS (the last AS of
// the AS path's final AS_SEQUENCE; 0 when the path is empty or ends in an AS_SET),
// learned from neighbor (a neighbour of the given kind), may enter the routing table. It
// is the specification the GoBGP import policy is built from (see routing/gobgp), and
// it is what the hijack log uses to explain a rejection. The reason is meant for a log
// line or a status.
//
// Rules, first match wins:
//  1. Our own blocks, and anything inside them, are never accepted back: a neighbour
//     echoing (or claiming) them would steal our pods' traffic.
//  2. From an external neighbour, its ImportFilters first: the first matching rule
//     decides, a Reject refuses, an Accept lets the route on. For a prefix inside a pool,
//     when BlockOwnerAS is set, only rules without a community condition count (a
//     block's ownership, below, is what admits it). Then only what ExternalImports[neighbor] lists; and, when
//     BlockOwnerAS is set, a prefix inside a pool only when it is an assigned block
//     whose path originates in its owner's AS (the next hop is the ToR's, so the origin
//     AS is what names the announcing node). With every node in one AS this still
//     holds: the owner's AS is the cluster's.
//  3. From a node (mesh, reflector, reflector client) a prefix inside a pool, of any
//     length from the pool's to a host route, only when BlockOwners[prefix] is the
//     next hop: a node can advertise the blocks assigned to it and nothing else. The next
//     hop is checked, not the neighbour, because a reflector passes on other nodes'
//     routes with their next hop unchanged.
//  4. Everything else is rejected.
//
// Hazard: BlockOwners is looked up by the exact prefix, so a /32 for an address borrowed
// from another node's block needs its own entry.
//
// communities are the route's; only import filters look at them.
func (p Policy) Accepts(kind PeerKind, neighbor netip.Addr, prefix netip.Prefix, nextHop netip.Addr, originAS uint32, communities ...Community) (bool, string) {
	return p.judge(kind, neighbor, prefix, nextHop, originAS, communities, true)
}

// Rejects is Accepts for a scan of many routes: the reason of a rejection, and no reason
// formatted for the routes accepted (with 100k routes, that was most of a scan's work).
func (p Policy) Rejects(kind PeerKind, neighbor netip.Addr, prefix netip.Prefix, nextHop netip.Addr, originAS uint32, communities ...Community) (rejected bool, reason string) {
	ok, reason := p.judge(kind, neighbor, prefix, nextHop, originAS, communities, false)
	return !ok, reason
}

// judge is Accepts; the reason of an acceptance is formatted only with explain.
func (p Policy) judge(kind PeerKind, neighbor netip.Addr, prefix netip.Prefix, nextHop netip.Addr, originAS uint32, communities []Community, explain bool) (bool, string) {
	prefix = prefix.Masked()
	neighbor, nextHop = neighbor.Unmap(), nextHop.Unmap()
	for _, own := range p.OwnBlocks {
		if covers(own, prefix) {
			if own.Masked() == prefix {
				return false, fmt.Sprintf("%s is our own block", prefix)
			}
			return false, fmt.Sprintf("%s is inside our own block %s", prefix, own.Masked())
		}
	}
	switch kind {
	case KindExternal:
		if f, i, ok := p.importRule(neighbor, prefix, communities); ok && !f.Accept {
			return false, fmt.Sprintf("%s is refused by import filter rule %d of external neighbour %s (%s)", prefix, i+1, neighbor, f)
		}
		for _, r := range p.ExternalImports[neighbor] {
			if r.Matches(prefix) {
				return p.externalOrigin(neighbor, prefix, originAS, r, explain)
			}
		}
		return false, fmt.Sprintf("%s is not in the import list of external neighbour %s", prefix, neighbor)
	case KindMesh, KindReflector, KindReflectorClient:
		pool, ok := p.PoolOf(prefix)
		if !ok {
			return false, fmt.Sprintf("%s from node %s is not inside any pool", prefix, neighbor)
		}
		owner, ok := p.BlockOwners[prefix]
		if !ok {
			return false, fmt.Sprintf("%s (pool %s) is not assigned to any node: rejected", prefix, pool)
		}
		if owner.Unmap() != nextHop {
			return false, fmt.Sprintf("%s is assigned to %s, not to next hop %s: hijack rejected", prefix, owner, nextHop)
		}
		if !explain {
			return true, ""
		}
		return true, fmt.Sprintf("%s is assigned to next hop %s", prefix, nextHop)
	}
	return false, fmt.Sprintf("unknown peer kind %q for %s", kind, neighbor)
}

// importRule is the first of neighbor's import filter rules that matches; inside a pool
// only rules without a community condition count (see Accepts, rule 2).
func (p Policy) importRule(neighbor netip.Addr, prefix netip.Prefix, communities []Community) (Filter, int, bool) {
	_, inPool := p.PoolOf(prefix)
	for i, f := range p.ImportFilters[neighbor] {
		if inPool && f.HasCommunity && p.BlockOwnerAS != nil {
			continue
		}
		if f.Matches(prefix, communities) {
			return f, i, true
		}
	}
	return Filter{}, 0, false
}

// externalOrigin judges a prefix in external neighbour's import list (range r) by its
// origin AS, when it is inside a pool and BlockOwnerAS is set (see Accepts, rule 2).
func (p Policy) externalOrigin(neighbor netip.Addr, prefix netip.Prefix, originAS uint32, r PrefixRange, explain bool) (bool, string) {
	pool, inPool := p.PoolOf(prefix)
	if (!inPool || p.BlockOwnerAS == nil) && !explain {
		return true, ""
	}
	if !inPool || p.BlockOwnerAS == nil {
		return true, fmt.Sprintf("%s is in the import list of %s (%s)", prefix, neighbor, r)
	}
	as, ok := p.BlockOwnerAS[prefix]
	switch {
	case !ok:
		return false, fmt.Sprintf("%s (pool %s) from external neighbour %s is not an assigned block: rejected", prefix, pool, neighbor)
	case as != originAS:
		return false, fmt.Sprintf("%s is assigned to a node in AS %d, but the path from %s originates in AS %d: hijack rejected",
			prefix, as, neighbor, originAS)
	case !explain:
		return true, ""
	}
	return true, fmt.Sprintf("%s is in the import list of %s (%s) and originates in its owner's AS %d", prefix, neighbor, r, as)
}

// Exports decides whether a route for prefix is sent to neighbor, a neighbour of the
// given kind. learned is false for the node's own routes (Advertise) and true for routes
// learned from another node; reflector is true when this node reflects for clients.
//
// Own routes: OwnBlocks and ExtraExports (exact prefixes) go to every neighbour, except
// that prefixes inside NoExportToExternal never go to external neighbours;
// ServiceExports go to external neighbours only. To an external neighbour, its
// ExportFilters decide first (a Reject keeps the route back), matching the communities
// ExportAttrs gives the route for it.
// Learned routes: passed on only by a route reflector, only pool prefixes, only to nodes.
// GoBGP applies the export policy to reflected routes too, so without that rule a
// reflector would accept its clients' routes and reflect nothing; which node gets which
// reflected route is still GoBGP's route-reflector logic (RFC 4456).
func (p Policy) Exports(kind PeerKind, neighbor netip.Addr, prefix netip.Prefix, learned, reflector bool) (bool, string) {
	prefix, neighbor = prefix.Masked(), neighbor.Unmap()
	if learned {
		if !reflector {
			return false, fmt.Sprintf("%s was learned and this node reflects for nobody", prefix)
		}
		if kind == KindExternal {
			return false, fmt.Sprintf("%s was learned from a node: not passed on to external neighbours", prefix)
		}
		if pool, ok := p.PoolOf(prefix); ok {
			return true, fmt.Sprintf("%s is inside pool %s: reflected", prefix, pool)
		}
		return false, fmt.Sprintf("%s is not inside any pool: not reflected", prefix)
	}
	if kind == KindExternal {
		for _, n := range p.NoExportToExternal {
			if covers(n, prefix) {
				return false, fmt.Sprintf("%s is inside %s, not exported to external neighbours", prefix, n.Masked())
			}
		}
		if refused, why := p.ExportFilterRefuses(neighbor, prefix); refused {
			return false, why
		}
		if slices.Contains(p.ServiceExports, prefix) {
			return true, fmt.Sprintf("%s is a Service address: exported to external neighbours", prefix)
		}
	}
	for _, l := range [][]netip.Prefix{p.OwnBlocks, p.ExtraExports} {
		for _, e := range l {
			if e.Masked() == prefix {
				return true, fmt.Sprintf("%s is exported", prefix)
			}
		}
	}
	if slices.Contains(p.ServiceExports, prefix) {
		return false, fmt.Sprintf("%s is a Service address: exported to external neighbours only", prefix)
	}
	return false, fmt.Sprintf("%s is neither our block nor an extra export", prefix)
}

// ExportFilterRefuses reports whether the first of external neighbour's export filter
// rules that matches our route for prefix (with the communities ExportAttrs gives it)
// is a Reject.
func (p Policy) ExportFilterRefuses(neighbor netip.Addr, prefix netip.Prefix) (bool, string) {
	neighbor, prefix = neighbor.Unmap(), prefix.Masked()
	rules := p.ExportFilters[neighbor]
	if len(rules) == 0 {
		return false, ""
	}
	communities := p.ExportAttrs(neighbor, prefix).Communities
	for i, f := range rules {
		if f.Matches(prefix, communities) {
			if f.Accept {
				return false, ""
			}
			return true, fmt.Sprintf("%s is kept from %s by export filter rule %d (%s)", prefix, neighbor, i+1, f)
		}
	}
	return false, ""
}

// ExportAttrs are the attributes our route for prefix carries to neighbor: every Tag
// that applies, merged.
func (p Policy) ExportAttrs(neighbor netip.Addr, prefix netip.Prefix) Attrs {
	var a Attrs
	for _, t := range p.Tags {
		if t.applies(neighbor.Unmap(), prefix.Masked()) {
			a = a.Merge(t.Attrs)
		}
	}
	return a
}

// Matches reports whether prefix is r.Prefix or a more specific up to r.MaxLen (exactly
// r.Prefix when MaxLen is 0).
func (r PrefixRange) Matches(prefix netip.Prefix) bool {
	if !covers(r.Prefix, prefix) {
		return false
	}
	if r.MaxLen == 0 {
		return prefix.Bits() == r.Prefix.Bits()
	}
	return prefix.Bits() <= r.MaxLen
}

func (r PrefixRange) String() string {
	if r.MaxLen == 0 {
		return r.Prefix.Masked().String()
	}
	return fmt.Sprintf("%s le %d", r.Prefix.Masked(), r.MaxLen)
}

// PoolOf returns the pool containing prefix (a prefix equal to or longer than the pool).
func (p Policy) PoolOf(prefix netip.Prefix) (netip.Prefix, bool) {
	for _, pool := range p.Pools {
		if covers(pool, prefix) {
			return pool.Masked(), true
		}
	}
	return netip.Prefix{}, false
}

// InOwnBlock reports whether prefix is one of OwnBlocks or inside one (never accepted
// back, see Accepts).
func (p Policy) InOwnBlock(prefix netip.Prefix) bool {
	for _, o := range p.OwnBlocks {
		if covers(o, prefix) {
			return true
		}
	}
	return false
}

// Clone returns a deep copy of p: a speaker keeps the copy, so a caller changing its
// slices or maps later cannot change the installed policy behind the speaker's back.
func (p Policy) Clone() Policy {
	c := Policy{
		OwnBlocks:          slices.Clone(p.OwnBlocks),
		ExtraExports:       slices.Clone(p.ExtraExports),
		BlockOwners:        maps.Clone(p.BlockOwners),
		BlockOwnerAS:       maps.Clone(p.BlockOwnerAS),
		Pools:              slices.Clone(p.Pools),
		NoExportToExternal: slices.Clone(p.NoExportToExternal),
		ServiceExports:     slices.Clone(p.ServiceExports),
		ExportFilters:      cloneEach(p.ExportFilters),
		ImportFilters:      cloneEach(p.ImportFilters),
		ExternalImports:    cloneEach(p.ExternalImports),
	}
	for _, t := range p.Tags {
		c.Tags = append(c.Tags, Tag{Source: t.Source, Prefixes: slices.Clone(t.Prefixes), Neighbors: slices.Clone(t.Neighbors),
			Attrs: Attrs{}.Merge(t.Attrs)})
	}
	return c
}

// cloneEach copies a map of slices, each slice too (nil stays nil).
func cloneEach[V any](m map[netip.Addr][]V) map[netip.Addr][]V {
	if m == nil {
		return nil
	}
	c := make(map[netip.Addr][]V, len(m))
	for a, vs := range m {
		c[a] = slices.Clone(vs)
	}
	return c
}

// covers reports whether inner is outer or a more specific of it (same family).
func covers(outer, inner netip.Prefix) bool {
	return outer.IsValid() && inner.IsValid() && outer.Bits() <= inner.Bits() &&
		outer.Addr().Is4() == inner.Addr().Is4() && outer.Masked().Contains(inner.Addr())
}
