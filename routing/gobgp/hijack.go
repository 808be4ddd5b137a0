package gobgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"github.com/hostroute/hostroute/routing"
)

// Rejected returns, per neighbour, how many of the routes it currently sends us the
// import policy rejects (hijack attempts, our own blocks echoed back, unlisted external
// prefixes). Neighbours with none are left out. Counts reset when a session goes down.
// They are as of the last scan of the Adj-RIB-In (see Options.RejectScanInterval).
func (g *Speaker) Rejected() map[netip.Addr]int { return g.hj.counts() }

// Defaults of the rejected-route scan.
const (
	defaultRejectScanInterval = 5 * time.Second
	// rejectScanRefresh: a neighbour whose session and UPDATE count did not change is
	// scanned again after this many intervals anyway (see scanRejected).
	rejectScanRefresh = 12
)

// hijackLog logs, once per path and session, each route in GoBGP's pre-policy
// Adj-RIB-In that routing.Policy.Accepts rejects, with its reason. GoBGP itself drops
// such routes silently. It mirrors the decision of the GoBGP policy rather than
// observing it: the import policy is built from the same rules (policy.go), and a test
// checks both agree. Nothing is judged before the first SetPolicy (GoBGP then accepts
// everything).
//
// The Adj-RIB-In is scanned periodically (Speaker.scanRejected) rather than watched: a
// watch of it converts every received path to protobuf on GoBGP's watcher goroutine,
// which doubled the cost of learning a route.
//
// Its state is guarded by mu; it never calls the Speaker or GoBGP.
type hijackLog struct {
	log  *slog.Logger
	kick chan struct{} // a scan is due now (the policy or the neighbour kinds changed)

	mu     sync.Mutex
	active bool
	policy routing.Policy
	kinds  map[netip.Addr]routing.PeerKind
	// gen changes with the policy, the kinds and on reset; epoch[n] each time n's session
	// goes down. A scan whose gen or epoch changed meanwhile is thrown away.
	gen      uint64
	epoch    map[netip.Addr]uint64
	rejected map[netip.Addr]map[netip.Prefix]string // neighbour → prefix → reason logged
}

func newHijackLog(l *slog.Logger) *hijackLog {
	h := &hijackLog{log: l, kick: make(chan struct{}, 1), epoch: map[netip.Addr]uint64{}}
	h.reset()
	return h
}

func (h *hijackLog) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.active, h.policy, h.kinds = false, routing.Policy{}, map[netip.Addr]routing.PeerKind{}
	h.gen++
	h.rejected = map[netip.Addr]map[netip.Prefix]string{}
}

// forget drops what a neighbour sent (its session is gone).
func (h *hijackLog) forget(n netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.epoch[n]++
	delete(h.rejected, n)
}

// update sets the policy and neighbour kinds; when they changed, every known path is
// judged again by a scan, at once.
func (h *hijackLog) update(p routing.Policy, kinds map[netip.Addr]routing.PeerKind) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.active && maps.Equal(h.kinds, kinds) && reflect.DeepEqual(h.policy, p) {
		return
	}
	h.active, h.policy, h.kinds = true, p, kinds
	h.gen++
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// onPeerEvent forgets a neighbour's routes when its session leaves Established.
func (h *hijackLog) onPeerEvent(r *api.WatchEventResponse) {
	pe := r.GetPeer()
	if pe == nil || pe.GetType() != api.WatchEventResponse_PeerEvent_STATE {
		return
	}
	st := pe.GetPeer().GetState()
	if a, err := netip.ParseAddr(st.GetNeighborAddress()); err == nil && st.GetSessionState() != api.PeerState_ESTABLISHED {
		h.forget(a.Unmap())
	}
}

// judgement is one scan's verdict on a neighbour's routes, before it is applied.
type judgement struct {
	gen, epoch uint64
	kind       routing.PeerKind
	rejected   map[netip.Prefix]rejection
}

type rejection struct {
	nextHop netip.Addr
	reason  string
}

// begin snapshots what judging a neighbour needs; ok is false when nothing is judged
// (no policy yet, or a neighbour of unknown kind).
func (h *hijackLog) begin(n netip.Addr) (j judgement, p routing.Policy, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	kind, known := h.kinds[n]
	if !h.active || !known {
		return judgement{}, routing.Policy{}, false
	}
	return judgement{gen: h.gen, epoch: h.epoch[n], kind: kind}, h.policy, true
}

// apply makes j the neighbour's rejected set and logs each rejection not logged before
// with the same reason. It returns false (and changes nothing) when the policy changed
// or the session went down since begin.
func (h *hijackLog) apply(n netip.Addr, j judgement) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gen != j.gen || h.epoch[n] != j.epoch {
		return false
	}
	old := h.rejected[n]
	if len(j.rejected) == 0 {
		delete(h.rejected, n)
		return true
	}
	now := make(map[netip.Prefix]string, len(j.rejected))
	for pfx, r := range j.rejected {
		now[pfx] = r.reason
		if prev, ok := old[pfx]; ok && prev == r.reason {
			continue
		}
		h.log.Warn("bgp: route rejected", "neighbor", n, "kind", j.kind, "prefix", pfx, "next_hop", r.nextHop, "reason", r.reason)
	}
	h.rejected[n] = now
	return true
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

// scanPeer is what scanRejected remembers of a neighbour between scans.
type scanPeer struct {
	uptime  int64     // when the session came up (a new session is new routes)
	updates uint64    // UPDATE messages received
	quiet   int       // consecutive passes with the same uptime and updates
	gen     uint64    // hijackLog.gen of the last successful scan
	scanned time.Time // when that was
}

// due reports whether the neighbour's Adj-RIB-In is to be judged now, with the hijack
// log at generation gen. One still sending is judged once it has been quiet for an
// interval, not every interval while 100k routes arrive (each scan lists them all); under
// constant churn, every refresh.
func (sp *scanPeer) due(gen uint64, now time.Time, refresh time.Duration) bool {
	recent := now.Sub(sp.scanned) < refresh
	switch {
	case sp.quiet == 0 && recent: // still sending
		return false
	case sp.quiet >= 2 && sp.gen == gen && recent: // judged since it went quiet
		return false
	}
	return true
}

// scanRejected judges the Adj-RIB-In of every Established neighbour every interval, and
// at once when the policy or the neighbour kinds change, until ctx ends.
//
// A neighbour's routes can only have changed if its session restarted or it sent an
// UPDATE, so a neighbour is scanned once its session's start time and its count of
// received UPDATEs stayed the same for an interval after changing (so also after GoBGP,
// which counts a message before its routes reach the Adj-RIB-In, stored them); otherwise
// only after a policy change, or every rejectScanRefresh intervals to be safe (also while
// a neighbour never stops sending). A quiet neighbour with 100,000 routes costs nothing
// between refreshes, and one sending 100,000 is listed once, after the last.
func (g *Speaker) scanRejected(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	peers := map[netip.Addr]*scanPeer{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.hj.kick:
		}
		g.scanPass(ctx, peers, rejectScanRefresh*interval)
	}
}

// scanPass is one pass of scanRejected over the neighbours.
func (g *Speaker) scanPass(ctx context.Context, peers map[netip.Addr]*scanPeer, refresh time.Duration) {
	var list []*api.Peer
	if err := g.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) { list = append(list, p) }); err != nil {
		return
	}
	seen := make(map[netip.Addr]bool, len(list))
	for _, p := range list {
		a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil || p.GetState().GetSessionState() != api.PeerState_ESTABLISHED {
			continue
		}
		a = a.Unmap()
		seen[a] = true
		up := p.GetTimers().GetState().GetUptime()
		uptime := up.GetSeconds()*1e9 + int64(up.GetNanos())
		updates := p.GetState().GetMessages().GetReceived().GetUpdate()
		sp, ok := peers[a]
		if !ok {
			// Not scanned yet, but first seen now: wait like for a neighbour still sending.
			sp = &scanPeer{uptime: uptime, updates: updates, scanned: time.Now()}
			peers[a] = sp
		} else if sp.uptime != uptime || sp.updates != updates {
			sp.uptime, sp.updates, sp.quiet = uptime, updates, 0
		} else if sp.quiet < 2 {
			sp.quiet++
		}
		j, pol, ok := g.hj.begin(a)
		if !ok || !sp.due(j.gen, time.Now(), refresh) {
			continue
		}
		if err := g.judgeAdjIn(ctx, a, pol, &j); err != nil {
			g.log.Debug("bgp: scan of rejected routes failed", "neighbor", a, "err", err)
			sp.quiet = 0 // try again next time
			continue
		}
		if g.hj.apply(a, j) {
			sp.gen, sp.scanned = j.gen, time.Now()
		} else {
			sp.quiet = 0
		}
	}
	for a := range peers {
		if !seen[a] {
			delete(peers, a)
		}
	}
}

// judgeAdjIn lists neighbour n's pre-policy Adj-RIB-In (binary: no protobuf attributes
// to build and parse) and fills j.rejected.
func (g *Speaker) judgeAdjIn(ctx context.Context, n netip.Addr, pol routing.Policy, j *judgement) error {
	var decodeErr error
	for _, fam := range []*api.Family{familyIPv4, familyIPv6} {
		err := g.srv.ListPath(ctx, &api.ListPathRequest{
			TableType: api.TableType_ADJ_IN, Name: n.String(), Family: fam, EnableOnlyBinary: true,
		}, func(d *api.Destination) {
			for _, p := range d.GetPaths() {
				if p.GetIsWithdraw() {
					continue
				}
				pfx, nh, err := decodeBinaryPath(p)
				if err != nil {
					decodeErr = err
					continue
				}
				rejected, reason := pol.Rejects(j.kind, n, pfx, nh, binaryOriginAS(p), binaryCommunities(p)...)
				if !rejected {
					continue
				}
				if j.rejected == nil {
					j.rejected = map[netip.Prefix]rejection{}
				}
				j.rejected[pfx] = rejection{nextHop: nh, reason: reason}
			}
		})
		if err != nil {
			return err
		}
	}
	if decodeErr != nil {
		g.log.Debug("bgp: undecodable received path skipped", "neighbor", n, "err", decodeErr)
	}
	return nil
}

// BGP path attribute types and flags (RFC 4271, RFC 4760).
const (
	attrFlagExtendedLength = 0x10
	attrTypeASPath         = 2
	attrTypeNextHop        = 3
	attrTypeCommunities    = 8
	attrTypeMpReachNLRI    = 14
)

// decodeBinaryPath reads the prefix and next hop of a unicast path listed with
// EnableOnlyBinary: the NLRI in wire format (length in bits, then the significant
// bytes; no path identifier) and the path attributes, one per entry, each with its
// header. The next hop is that of NEXT_HOP or of MP_REACH_NLRI (the global address when
// a link-local one follows), whichever comes last, as decodePath reads them.
func decodeBinaryPath(p *api.Path) (netip.Prefix, netip.Addr, error) {
	b := p.GetNlriBinary()
	size := 4
	if p.GetFamily().GetAfi() == api.Family_AFI_IP6 {
		size = 16
	}
	if len(b) < 1 || int(b[0]) > size*8 || len(b) != 1+(int(b[0])+7)/8 {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("bgp: nlri %x is not a unicast prefix", b)
	}
	var raw [16]byte
	copy(raw[:], b[1:])
	var addr netip.Addr
	if size == 4 {
		addr = netip.AddrFrom4([4]byte(raw[:4]))
	} else {
		addr = netip.AddrFrom16(raw).Unmap()
	}
	pfx, err := addr.Prefix(int(b[0]))
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("bgp: nlri %x: %w", b, err)
	}
	var nh netip.Addr
	for _, a := range p.GetPattrsBinary() {
		if len(a) < 3 {
			continue
		}
		hdr := 3
		if a[0]&attrFlagExtendedLength != 0 {
			hdr = 4
		}
		if len(a) < hdr {
			continue
		}
		v := a[hdr:]
		switch a[1] {
		case attrTypeNextHop:
			if h, ok := netip.AddrFromSlice(v); ok {
				nh = h.Unmap()
			}
		case attrTypeMpReachNLRI: // AFI (2), SAFI (1), next hop length (1), next hops
			if len(v) < 4 || len(v) < 4+int(v[3]) {
				continue
			}
			hops := v[4 : 4+int(v[3])]
			switch len(hops) {
			case 4, 16:
			case 32: // global, link-local
				hops = hops[:16]
			default:
				continue
			}
			if h, ok := netip.AddrFromSlice(hops); ok {
				nh = h.Unmap()
			}
		}
	}
	if !nh.IsValid() {
		return pfx, nh, errors.New("bgp: path for " + pfx.String() + " has no next hop")
	}
	return pfx, nh, nil
}

// binaryOriginAS is the origin AS (the last AS of a final AS_SEQUENCE, 0 otherwise, as
// GoBGP's `_AS$` match reads it) of a path listed with EnableOnlyBinary. GoBGP's own
// decoder tells two- from four-octet AS numbers.
func binaryOriginAS(p *api.Path) uint32 {
	for _, a := range p.GetPattrsBinary() {
		if len(a) < 2 || a[1] != attrTypeASPath {
			continue
		}
		var ap bgp.PathAttributeAsPath
		if err := ap.DecodeFromBytes(a); err != nil || len(ap.Value) == 0 {
			return 0
		}
		last := ap.Value[len(ap.Value)-1]
		if as := last.GetAS(); last.GetType() == bgp.BGP_ASPATH_ATTR_TYPE_SEQ && len(as) > 0 {
			return as[len(as)-1]
		}
		return 0
	}
	return 0
}

// binaryCommunities are the RFC 1997 communities of a path listed with EnableOnlyBinary
// (import filter rules match them; see routing.Policy.Accepts).
func binaryCommunities(p *api.Path) []routing.Community {
	for _, a := range p.GetPattrsBinary() {
		if len(a) < 2 || a[1] != attrTypeCommunities {
			continue
		}
		var c bgp.PathAttributeCommunities
		if err := c.DecodeFromBytes(a); err != nil {
			return nil
		}
		out := make([]routing.Community, len(c.Value))
		for i, v := range c.Value {
			out[i] = routing.Community(v)
		}
		return out
	}
	return nil
}
