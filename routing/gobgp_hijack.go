package routing

import (
	"log/slog"
	"net/netip"
	"sync"

	api "github.com/osrg/gobgp/v3/api"
)

// Rejected returns, per neighbour, how many of the routes it currently sends us the
// import policy rejects (hijack attempts, our own blocks echoed back, unlisted external
// prefixes). Neighbours with none are left out. Counts reset when a session goes down.
func (g *GoBGP) Rejected() map[netip.Addr]int { return g.hj.counts() }

// hijackLog watches GoBGP's pre-policy Adj-RIB-In and logs, once per path and session,
// each route Policy.Accepts rejects, with its reason. GoBGP itself drops such routes
// silently. It mirrors the decision of the GoBGP policy rather than observing it: the
// import policy is built from the same rules (gobgp_policy.go), and a test checks both
// agree. Nothing is judged before the first SetPolicy (GoBGP then accepts everything).
//
// It runs on GoBGP's watcher goroutine and under its own lock; it never calls GoBGP.
type hijackLog struct {
	log *slog.Logger

	mu       sync.Mutex
	active   bool
	policy   Policy
	kinds    map[netip.Addr]PeerKind
	adjIn    map[netip.Addr]map[netip.Prefix]netip.Addr // neighbour → prefix → next hop
	rejected map[netip.Addr]map[netip.Prefix]string     // neighbour → prefix → reason logged
}

func newHijackLog(l *slog.Logger) *hijackLog {
	h := &hijackLog{log: l}
	h.reset()
	return h
}

func (h *hijackLog) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.active, h.policy, h.kinds = false, Policy{}, map[netip.Addr]PeerKind{}
	h.adjIn = map[netip.Addr]map[netip.Prefix]netip.Addr{}
	h.rejected = map[netip.Addr]map[netip.Prefix]string{}
}

// forget drops what a neighbour sent (its session is gone).
func (h *hijackLog) forget(n netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.adjIn, n)
	delete(h.rejected, n)
}

// update judges every known path again under a new policy or new neighbour kinds.
func (h *hijackLog) update(p Policy, kinds map[netip.Addr]PeerKind) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.active, h.policy, h.kinds = true, p, kinds
	for n, paths := range h.adjIn {
		for pfx, nh := range paths {
			h.judge(n, pfx, nh)
		}
	}
}

func (h *hijackLog) onEvent(r *api.WatchEventResponse) {
	if pe := r.GetPeer(); pe != nil {
		st := pe.GetPeer().GetState()
		if a, err := netip.ParseAddr(st.GetNeighborAddress()); err == nil &&
			pe.GetType() == api.WatchEventResponse_PeerEvent_STATE && st.GetSessionState() != api.PeerState_ESTABLISHED {
			h.forget(a.Unmap())
		}
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range r.GetTable().GetPaths() {
		if p.GetNlri() == nil {
			continue // End-of-RIB
		}
		d, err := decodePath(p)
		if err != nil || d.local {
			continue
		}
		n := d.neighbor
		if p.GetIsWithdraw() {
			delete(h.adjIn[n], d.prefix)
			delete(h.rejected[n], d.prefix)
			continue
		}
		if h.adjIn[n] == nil {
			h.adjIn[n] = map[netip.Prefix]netip.Addr{}
		}
		h.adjIn[n][d.prefix] = d.nextHop
		h.judge(n, d.prefix, d.nextHop)
	}
}

// judge logs a rejected path unless the same rejection was logged already. h.mu held.
func (h *hijackLog) judge(n netip.Addr, pfx netip.Prefix, nh netip.Addr) {
	kind, known := h.kinds[n]
	if !h.active || !known {
		return
	}
	ok, reason := h.policy.Accepts(kind, n, pfx, nh)
	if ok {
		delete(h.rejected[n], pfx)
		return
	}
	if h.rejected[n] == nil {
		h.rejected[n] = map[netip.Prefix]string{}
	}
	if h.rejected[n][pfx] == reason {
		return
	}
	h.rejected[n][pfx] = reason
	h.log.Warn("bgp: route rejected", "neighbor", n, "kind", kind, "prefix", pfx, "next_hop", nh, "reason", reason)
}

func (h *hijackLog) counts() map[netip.Addr]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[netip.Addr]int{}
	for n, r := range h.rejected {
		if len(r) > 0 {
			out[n] = len(r)
		}
	}
	return out
}
