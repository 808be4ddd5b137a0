package gobgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"

	"github.com/hostroute/hostroute/routing"
)

// setDelta is what one prefix set gains and loses between two built policies.
type setDelta struct {
	name     string
	add, del []*api.Prefix
}

// diffPolicy reports whether next differs from prev only in the entries of prefix sets
// that both have (same statements, same other sets), and then those changes. A block
// assigned to or released from a node that keeps at least one block is such a change:
// the cost of applying it is then O(changed prefixes), not a new policy.
func diffPolicy(prev, next *api.SetPoliciesRequest) ([]setDelta, bool) {
	if prev == nil || len(prev.Policies) != len(next.Policies) || len(prev.DefinedSets) != len(next.DefinedSets) {
		return nil, false
	}
	for i := range prev.Policies {
		if !proto.Equal(prev.Policies[i], next.Policies[i]) {
			return nil, false
		}
	}
	old := map[string]*api.DefinedSet{}
	for _, d := range prev.DefinedSets {
		old[d.Name] = d
	}
	var out []setDelta
	for _, d := range next.DefinedSets {
		o, ok := old[d.Name]
		if !ok || o.DefinedType != d.DefinedType {
			return nil, false
		}
		if proto.Equal(o, d) {
			continue
		}
		if d.DefinedType != api.DefinedType_PREFIX || !slices.Equal(o.List, d.List) {
			return nil, false
		}
		delta := setDelta{name: d.Name, add: missing(d.Prefixes, o.Prefixes), del: missing(o.Prefixes, d.Prefixes)}
		if len(delta.add)+len(delta.del) > 0 {
			out = append(out, delta)
		}
	}
	return out, true
}

// missing returns the entries of a that b lacks.
func missing(a, b []*api.Prefix) []*api.Prefix {
	var out []*api.Prefix
	for _, p := range a {
		if !slices.ContainsFunc(b, func(q *api.Prefix) bool { return proto.Equal(p, q) }) {
			out = append(out, p)
		}
	}
	return out
}

// applyDeltas edits the installed prefix sets in place (GoBGP's statements refer to the
// set objects, so the edit takes effect for every route judged from now on).
func (g *Speaker) applyDeltas(ctx context.Context, deltas []setDelta) error {
	for _, d := range deltas {
		if len(d.add) > 0 {
			ds := &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: d.name, Prefixes: d.add}
			if err := g.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: ds}); err != nil {
				return fmt.Errorf("bgp: add to %s: %w", d.name, err)
			}
		}
		if len(d.del) > 0 {
			ds := &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: d.name, Prefixes: d.del}
			if err := g.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: ds}); err != nil {
				return fmt.Errorf("bgp: remove from %s: %w", d.name, err)
			}
		}
	}
	return nil
}

// resetTargets returns the neighbours whose received routes must be judged again after
// deltas, or nil with all = true when that cannot be narrowed down. By set:
//
//	hr-owner-F-OWNER (a node's blocks)   the owner, if it is a neighbour; our route
//	                                     reflectors; if we reflect, our mesh neighbours
//	                                     (the other reflectors)
//	hr-own-F, hr-origin-*, hr-import-*,  the external neighbours (a prefix that is no
//	hr-imfilter-*                        node's was refused from every node anyway)
//	hr-export-F, hr-svc-F, hr-exfilter-* none: our own routes are added after the policy
//	                                     that exports them, and withdrawn before the one
//	                                     that stops (installPolicy)
//	anything else (pools, no-export)     everyone
func resetTargets(deltas []setDelta, kinds map[netip.Addr]routing.PeerKind) (addrs []netip.Addr, all bool) {
	want := map[netip.Addr]bool{}
	reflecting := false
	for _, k := range kinds {
		reflecting = reflecting || k == routing.KindReflectorClient
	}
	byKind := func(match func(routing.PeerKind) bool) {
		for a, k := range kinds {
			if match(k) {
				want[a] = true
			}
		}
	}
	for _, d := range deltas {
		switch {
		case strings.HasPrefix(d.name, "hr-owner-"):
			owner, err := netip.ParseAddr(d.name[strings.LastIndex(d.name, "-")+1:])
			if _, ok := kinds[owner]; err == nil && ok {
				want[owner] = true
			}
			byKind(func(k routing.PeerKind) bool {
				return k == routing.KindReflector || reflecting && k == routing.KindMesh
			})
		case strings.HasPrefix(d.name, "hr-own-"), strings.HasPrefix(d.name, "hr-origin-"), strings.HasPrefix(d.name, "hr-import-"),
			strings.HasPrefix(d.name, "hr-imfilter-"):
			byKind(func(k routing.PeerKind) bool { return k == routing.KindExternal })
		case strings.HasPrefix(d.name, "hr-export-"), strings.HasPrefix(d.name, "hr-svc-"), strings.HasPrefix(d.name, "hr-exfilter-"):
		default:
			return nil, true
		}
	}
	for a := range want {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return addrs, false
}

// resetIn re-judges the routes received from the targets (soft reset in): all of them
// when all is set; otherwise only targets that sent a route the deltas concern (a block
// seen in the API before its route arrives, the common order, needs no reset at all).
func (g *Speaker) resetIn(ctx context.Context, addrs []netip.Addr, all bool, deltas []setDelta) error {
	if all {
		g.noteReset("")
		if err := g.srv.ResetPeer(ctx, &api.ResetPeerRequest{Soft: true, Direction: api.ResetPeerRequest_BOTH}); err != nil {
			return fmt.Errorf("bgp: soft reset after policy change: %w", err)
		}
		return nil
	}
	added, removed := changedPrefixes(deltas)
	var errs []error
	for _, a := range addrs {
		if !g.adjInHas(ctx, a, added) {
			continue // nothing to judge again: what it sends later meets the new sets
		}
		errs = append(errs, g.softResetIn(ctx, a))
	}
	// A prefix that left a set (a block released) is usually withdrawn by its sender
	// within milliseconds; judge again only what is still there after removalGrace.
	if len(removed) > 0 && len(addrs) > 0 {
		time.AfterFunc(removalGrace, func() {
			g.op.Lock()
			defer g.op.Unlock()
			if !g.isStarted() {
				return
			}
			for _, a := range addrs {
				if g.adjInHas(context.Background(), a, removed) {
					if err := g.softResetIn(context.Background(), a); err != nil {
						g.log.Warn("bgp: soft reset after a block was released", "neighbor", a, "err", err)
					}
				}
			}
		})
	}
	return errors.Join(errs...)
}

// removalGrace is how long a route for a released block may stay before it is judged
// again (see resetIn): the controller hands a released block to another node only after
// its own, much longer, grace.
const removalGrace = 2 * time.Second

func (g *Speaker) softResetIn(ctx context.Context, a netip.Addr) error {
	g.noteReset(a.String())
	if err := g.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: a.String(), Soft: true, Direction: api.ResetPeerRequest_IN}); err != nil {
		return fmt.Errorf("bgp: soft reset in of %s after policy change: %w", a, err)
	}
	return nil
}

func (g *Speaker) noteReset(addr string) {
	if g.onReset != nil {
		g.onReset(addr)
	}
}

// changedPrefixes are the entries the deltas add and remove (a ranged entry as its
// prefix, matched with its more specifics by adjInHas).
func changedPrefixes(deltas []setDelta) (added, removed []*api.Prefix) {
	for _, d := range deltas {
		added, removed = append(added, d.add...), append(removed, d.del...)
	}
	return added, removed
}

// adjInHas reports whether neighbour a sent any route matching the entries (accepted or
// not: GoBGP keeps what it refused in the Adj-RIB-In). On an error it says yes: a reset
// too many is harmless.
func (g *Speaker) adjInHas(ctx context.Context, a netip.Addr, entries []*api.Prefix) bool {
	for _, e := range entries {
		p, err := netip.ParsePrefix(e.IpPrefix)
		if err != nil {
			return true
		}
		lookup := &api.TableLookupPrefix{Prefix: p.String(), Type: api.TableLookupPrefix_EXACT}
		if int(e.MaskLengthMax) > p.Bits() {
			lookup.Type = api.TableLookupPrefix_LONGER
		}
		found := false
		err = g.srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_ADJ_IN, Name: a.String(),
			Family: familyOf(p.Addr()), Prefixes: []*api.TableLookupPrefix{lookup}}, func(*api.Destination) { found = true })
		if err != nil || found {
			return true
		}
	}
	return false
}
