package agent

import (
	"context"
	"net/netip"
	"slices"
	"sort"
	"strings"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/node/routes"
	nodestatus "github.com/hostroute/hostroute/node/status"
	"github.com/hostroute/hostroute/routing/bfd"
)

// bfdSessions is the optional part of BFD that status reads. It is asserted rather than
// added to the BFD interface so that fakes without it keep working (sessions then show
// no BFD state).
type bfdSessions interface {
	Sessions() []bfd.SessionState
}

// routingState builds the Routing RPC's answer: sessions, blocks, and the routes the
// agent wants next to what the kernel holds. It reads the speaker and the kernel, so it
// is not for the packet path; the observer calls it once a second and caches the result.
func (a *Agent) routingState(ctx context.Context) *agentv1.RoutingResponse {
	resp := &agentv1.RoutingResponse{Node: a.cfg.NodeName}
	a.obs.fillLocal(resp)
	if a.obs.ready != nil {
		resp.Ready, resp.Message = a.obs.ready(ctx)
	}
	resp.Blocks = blockUsage(a.alloc)

	want := map[netip.Prefix]routes.Route{}
	for _, r := range a.table.Wanted() {
		want[r.Dst] = r
	}
	rib := map[netip.Prefix][]netip.Addr{}
	if a.bgp != nil {
		resp.Sessions = a.sessions()
		rib = a.table.Learned()
	}
	keep := a.table.Keeping()
	for _, c := range a.table.Conflicts() {
		resp.LastError = joinNonEmpty(resp.LastError, "kernel route conflict: "+c.String())
	}
	kernel, err := a.cfg.Kernel.List()
	if err != nil {
		resp.LastError = joinNonEmpty(resp.LastError, "list kernel routes: "+err.Error())
	}
	resp.Routes = compareRoutes(want, rib, kernel, keep)
	return resp
}

// compareRoutes lines up the wanted routes, the RIB and the kernel per prefix.
func compareRoutes(want map[netip.Prefix]routes.Route, rib map[netip.Prefix][]netip.Addr, kernel []routes.Route, keep bool) []*agentv1.Route {
	byDst := map[netip.Prefix]*agentv1.Route{}
	get := func(p netip.Prefix) *agentv1.Route {
		if r, ok := byDst[p]; ok {
			return r
		}
		r := &agentv1.Route{Prefix: p.String()}
		byDst[p] = r
		return r
	}
	for p, w := range want {
		r := get(p)
		r.WantBlackhole, r.WantNextHops = w.Blackhole, sortedAddrs(w.NextHops)
	}
	for p, hops := range rib {
		get(p).RibNextHops = sortedAddrs(hops)
	}
	for _, k := range kernel {
		r := get(k.Dst)
		r.KernelBlackhole = r.KernelBlackhole || k.Blackhole
		r.KernelNextHops = append(r.KernelNextHops, sortedAddrs(k.NextHops)...)
	}
	type keyed struct {
		p netip.Prefix
		r *agentv1.Route
	}
	rows := make([]keyed, 0, len(byDst))
	for p, r := range byDst {
		_, wanted := want[p]
		inKernel := r.KernelBlackhole || len(r.KernelNextHops) > 0
		switch {
		case wanted && inKernel && r.WantBlackhole == r.KernelBlackhole && slices.Equal(r.WantNextHops, r.KernelNextHops):
			r.State = nodestatus.RouteOK
		case wanted:
			r.State = nodestatus.RouteMissing
		case inKernel && keep:
			r.State = nodestatus.RouteKept
		case inKernel:
			r.State = nodestatus.RouteStale
		default:
			continue // in the RIB only: our own block seen back, or every next hop dead
		}
		rows = append(rows, keyed{p, r})
	}
	// Sorted on the prefixes themselves: with 100k routes, re-parsing strings in every
	// comparison was a third of the agent's CPU.
	slices.SortFunc(rows, func(a, b keyed) int {
		if c := a.p.Addr().Compare(b.p.Addr()); c != 0 {
			return c
		}
		return a.p.Bits() - b.p.Bits()
	})
	out := make([]*agentv1.Route, len(rows))
	for i, k := range rows {
		out[i] = k.r
	}
	return out
}

// BFDUnreachable is a session's BFD state while the agent cannot reach its BFD daemon.
const BFDUnreachable = "Unreachable"

// bfdStates returns each peer's BFD state as the status shows it: Down for a session b
// does not know, BFDUnreachable for every peer while b is a BFD daemon the agent cannot
// reach (the daemon may well hold them Up; "Down" would be a guess).
func bfdStates(b BFD) func(netip.Addr) string {
	if c, ok := b.(interface{ Connected() bool }); ok && !c.Connected() {
		return func(netip.Addr) string { return BFDUnreachable }
	}
	states := map[netip.Addr]string{}
	if bs, ok := b.(bfdSessions); ok {
		for _, s := range bs.Sessions() {
			states[s.Peer] = s.State.String()
		}
	}
	return func(p netip.Addr) string {
		if st, ok := states[p]; ok {
			return st
		}
		return bfd.Down.String()
	}
}

// sessions lists the BGP neighbours with their BFD state.
func (a *Agent) sessions() []*agentv1.Session {
	peers, err := a.cfg.BGP.Speaker.Peers()
	if err != nil {
		return nil
	}
	bfdState := bfdStates(a.cfg.BGP.BFD)
	out := make([]*agentv1.Session, 0, len(peers))
	for _, p := range peers {
		s := &agentv1.Session{
			Peer: p.Config.Address.String(), Kind: string(p.Config.Kind), Name: p.Config.Name,
			LocalAs: p.Config.LocalAS, PeerAs: p.Config.PeerAS, State: p.State,
			Received: p.Received, Accepted: p.Accepted, Advertised: p.Advertised, LastError: p.LastError,
		}
		if !p.Since.IsZero() {
			s.SinceUnix = p.Since.Unix()
		}
		if p.Config.BFD {
			s.BfdState = bfdState(p.Config.Address)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		return netip.MustParseAddr(out[i].Peer).Less(netip.MustParseAddr(out[j].Peer))
	})
	return out
}

func sortedAddrs(as []netip.Addr) []string {
	s := slices.Clone(as)
	slices.SortFunc(s, func(a, b netip.Addr) int { return a.Compare(b) })
	out := make([]string, len(s))
	for i, a := range s {
		out[i] = a.String()
	}
	return out
}

func joinNonEmpty(a, b string) string {
	return strings.Join(slices.DeleteFunc([]string{a, b}, func(s string) bool { return s == "" }), "; ")
}
