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

// routeView is the routes part of a routing snapshot.
type routeView struct {
	rows    []*agentv1.Route
	counts  *agentv1.RouteCounts
	all     bool   // rows holds every route, not only those not ok
	listErr string // reading the kernel failed
}

// routeView reads the kernel and lines it up with the route table. With all, every route
// is listed (the Routing RPC); otherwise only those not ok, with the counts of all (the
// observer's snapshot, which with 100k routes would otherwise hold 100k messages).
func (a *Agent) routeView(all bool) routeView {
	v := routeView{all: all}
	kernel, err := a.cfg.Kernel.List()
	if err != nil {
		v.listErr = "list kernel routes: " + err.Error()
	}
	var src wantedSource = a.table
	if a.bgp == nil {
		src = noRIB{a.table}
	}
	v.rows, v.counts = compareRoutes(src, kernel, a.table.Keeping(), all)
	return v
}

// routingState builds the Routing RPC's answer: sessions, blocks, and the routes of v.
// It reads the speaker, so it is not for the packet path.
func (a *Agent) routingState(ctx context.Context, v routeView) *agentv1.RoutingResponse {
	resp := &agentv1.RoutingResponse{Node: a.cfg.NodeName}
	a.obs.fillLocal(resp)
	if a.obs.ready != nil {
		resp.Ready, resp.Message = a.obs.ready(ctx)
	}
	resp.Blocks = blockUsage(a.alloc)
	if a.bgp != nil {
		resp.Sessions = a.sessions()
	}
	for _, c := range a.table.Conflicts() {
		resp.LastError = joinNonEmpty(resp.LastError, "kernel route conflict: "+c.String())
	}
	resp.LastError = joinNonEmpty(resp.LastError, v.listErr)
	resp.Routes, resp.RouteCounts, resp.RoutesOkOmitted = v.rows, v.counts, !v.all
	if a.bgp != nil && v.all {
		resp.Advertised = a.bgp.advertised()
	}
	return resp
}

// wantedSource is what compareRoutes reads of the route table.
type wantedSource interface {
	EachWanted(fn func(r routes.Route, rib []netip.Addr))
	LearnedFor(netip.Prefix) []netip.Addr
}

// noRIB hides the RIB (an agent without BGP shows none).
type noRIB struct{ t *routes.Table }

func (n noRIB) EachWanted(fn func(routes.Route, []netip.Addr)) {
	n.t.EachWanted(func(r routes.Route, _ []netip.Addr) { fn(r, nil) })
}
func (noRIB) LearnedFor(netip.Prefix) []netip.Addr { return nil }

// kernelEntry is what the kernel holds at one destination (a current and a legacy route
// there are merged, as routectl shows them).
type kernelEntry struct {
	blackhole bool
	hops      []netip.Addr
	wanted    bool // matched by a wanted route
}

// compareRoutes lines up the wanted routes, the RIB and the kernel per prefix, and counts
// them by state. With all, every row is returned; otherwise only the rows not ok, so that
// a node with 100k routes in order builds no message for them.
func compareRoutes(src wantedSource, kernel []routes.Route, keep, all bool) ([]*agentv1.Route, *agentv1.RouteCounts) {
	inKernel := make(map[netip.Prefix]*kernelEntry, len(kernel))
	for _, k := range kernel {
		e := inKernel[k.Dst]
		if e == nil {
			e = &kernelEntry{}
			inKernel[k.Dst] = e
		}
		e.blackhole = e.blackhole || k.Blackhole
		e.hops = append(e.hops, k.NextHops...)
	}
	counts := &agentv1.RouteCounts{Kernel: uint32(len(inKernel))}
	type keyed struct {
		p netip.Prefix
		r *agentv1.Route
	}
	var rows []keyed
	src.EachWanted(func(w routes.Route, rib []netip.Addr) {
		k := inKernel[w.Dst]
		state := nodestatus.RouteMissing
		if k != nil {
			k.wanted = true
			if (k.blackhole || len(k.hops) > 0) && k.blackhole == w.Blackhole && sameAddrs(w.NextHops, k.hops) {
				state = nodestatus.RouteOK
			}
		}
		if state == nodestatus.RouteOK {
			counts.Ok++
			if !all {
				return
			}
		} else {
			counts.Missing++
		}
		r := &agentv1.Route{Prefix: w.Dst.String(), WantBlackhole: w.Blackhole, WantNextHops: sortedAddrs(w.NextHops), State: state}
		if len(rib) > 0 {
			r.RibNextHops = sortedAddrs(rib)
		}
		if k != nil {
			r.KernelBlackhole, r.KernelNextHops = k.blackhole, sortedAddrs(k.hops)
		}
		rows = append(rows, keyed{w.Dst, r})
	})
	for p, k := range inKernel {
		if k.wanted {
			continue
		}
		state := nodestatus.RouteStale
		if keep {
			state = nodestatus.RouteKept
			counts.Kept++
		} else {
			counts.Stale++
		}
		r := &agentv1.Route{Prefix: p.String(), KernelBlackhole: k.blackhole, KernelNextHops: sortedAddrs(k.hops), State: state}
		if rib := src.LearnedFor(p); len(rib) > 0 {
			r.RibNextHops = sortedAddrs(rib)
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
	return out, counts
}

// sameAddrs reports whether sorted a and b (any order) hold the same addresses, as many
// times each; it allocates only when b is not sorted.
func sameAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	if !slices.IsSortedFunc(b, netip.Addr.Compare) {
		b = slices.Clone(b)
		slices.SortFunc(b, netip.Addr.Compare)
	}
	return slices.Equal(a, b)
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
