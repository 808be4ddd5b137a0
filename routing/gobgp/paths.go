package gobgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/hostroute/hostroute/routing"
)

// BestPaths lists the equal-cost best paths learned from neighbours, for IPv4 and IPv6
// unicast. Prefixes whose best path is our own route are left out (we are their
// destination). GoBGP marks only the first path of a destination Best even with
// multipath, so the equal-cost set is computed here with GoBGP's multipath rule: same
// iBGP/eBGP kind, local preference, AS path length, origin and MED as the best path.
// Stale is true when any path of the set is kept for a restarting neighbour.
func (g *Speaker) BestPaths() ([]routing.BestPath, error) {
	if !g.isStarted() {
		return nil, errors.New("bgp: best paths: not started")
	}
	ibgp := g.ibgpFunc()
	var out []routing.BestPath
	var decodeErr error
	for _, fam := range []*api.Family{familyIPv4, familyIPv6} {
		err := g.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: fam},
			func(d *api.Destination) {
				bp, ok, err := ecmpSet(d.GetPaths(), ibgp)
				if err != nil && decodeErr == nil {
					decodeErr = err
				}
				if ok {
					out = append(out, bp)
				}
			})
		if err != nil {
			return nil, fmt.Errorf("bgp: list paths: %w", err)
		}
	}
	if decodeErr != nil {
		g.log.Warn("bgp: undecodable path skipped", "err", decodeErr)
	}
	slices.SortFunc(out, func(a, b routing.BestPath) int { return a.Prefix.Compare(b.Prefix) })
	return out, nil
}

// ibgpFunc says whether a path from neighbour with AS sourceAS is iBGP, as GoBGP decides
// it (the neighbour's AS equals our AS on that session).
func (g *Speaker) ibgpFunc() func(neighbor netip.Addr, sourceAS uint32) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	local := make(map[netip.Addr]uint32, len(g.peers))
	for a, pc := range g.peers {
		local[a] = pc.LocalAS
		if local[a] == 0 {
			local[a] = g.global.AS
		}
	}
	globalAS := g.global.AS
	return func(n netip.Addr, as uint32) bool {
		if l, ok := local[n]; ok {
			return l == as
		}
		return as == globalAS
	}
}

// ecmpSet turns a destination's paths (best first, as ListPath returns them) into the
// learned equal-cost set; ok is false when there is none or our own route is best.
func ecmpSet(paths []*api.Path, ibgp func(netip.Addr, uint32) bool) (routing.BestPath, bool, error) {
	var best *decodedPath
	var bp routing.BestPath
	var firstErr error
	for _, p := range paths {
		if p.GetIsWithdraw() || p.GetIsNexthopInvalid() {
			continue
		}
		d, err := decodePath(p)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if best == nil {
			if d.local {
				return routing.BestPath{}, false, firstErr
			}
			best = &d
			bp.Prefix = d.prefix
		} else if d.local || !equalCost(*best, d, ibgp) {
			continue
		}
		bp.NextHops = appendUnique(bp.NextHops, d.nextHop)
		bp.Stale = bp.Stale || p.GetStale()
	}
	slices.SortFunc(bp.NextHops, netip.Addr.Compare)
	return bp, best != nil, firstErr
}

func equalCost(a, b decodedPath, ibgp func(netip.Addr, uint32) bool) bool {
	return ibgp(a.neighbor, a.sourceAS) == ibgp(b.neighbor, b.sourceAS) &&
		a.localPref == b.localPref && a.asPathLen == b.asPathLen &&
		a.origin == b.origin && a.med == b.med
}

// WatchBestPaths registers a watch of GoBGP's best paths and returns; fn then runs on
// one goroutine, in order, until ctx ends. It first gets every current prefix, then
// each change of a prefix's learned next-hop set (or of its Stale flag), with empty
// NextHops when the prefix is gone or our own route became best. Changes of other
// attributes are not reported. fn must not block for long: GoBGP queues events without
// bound behind it. A watch may begin before Start and lives across Stop and Start, so a
// caller whose first Start failed keeps its watch.
//
// With multipath, a GoBGP event carries a prefix's whole equal-cost set; when one member
// goes, the event lists only the survivors with nothing marked withdrawn. So each event
// replaces the prefix's set. Events without paths (GoBGP sends them when it marks
// routes stale) and End-of-RIB markers are ignored; a stale flag set that way shows in
// BestPaths, not here.
func (g *Speaker) WatchBestPaths(ctx context.Context, fn func(routing.BestPath)) error {
	w := &bestWatch{last: map[netip.Prefix]watchLast{}, fn: fn, log: g}
	err := g.srv.WatchEvent(ctx, &api.WatchEventRequest{Table: &api.WatchEventRequest_Table{
		Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_BEST, Init: true}},
	}}, w.onEvent)
	if err != nil {
		return fmt.Errorf("bgp: watch best paths: %w", err)
	}
	return nil
}

// bestWatch is one WatchBestPaths; only GoBGP's watcher goroutine touches it.
type bestWatch struct {
	last map[netip.Prefix]watchLast
	hops routing.HopSets // shares last's next hop slices
	fn   func(routing.BestPath)
	log  *Speaker
	// Scratch space of onEvent, kept between events: the sets of one event in order of
	// first appearance, and their index by prefix (built only when an event has more
	// than one prefix).
	sets  []watchSet
	index map[netip.Prefix]int
}

// watchLast is what the watch last reported for a prefix.
type watchLast struct {
	hops  []netip.Addr // shared (bestWatch.hops): never modified
	stale bool
}

// watchSet is one prefix's paths in one event.
type watchSet struct {
	prefix netip.Prefix
	hops   []netip.Addr
	stale  bool
	ours   bool // our own route is among them: the prefix is not learned
}

func (w *bestWatch) onEvent(r *api.WatchEventResponse) {
	t := r.GetTable()
	if t == nil || len(t.GetPaths()) == 0 {
		return
	}
	w.sets = w.sets[:0]
	if len(w.index) > 1024 {
		w.index = nil // do not clear a big map for every small event
	} else {
		clear(w.index)
	}
	for _, p := range t.GetPaths() {
		if p.GetNlri() == nil { // End-of-RIB
			continue
		}
		pfx, nh, local, err := decodeWatchPath(p)
		if err != nil {
			w.log.log.Warn("bgp: undecodable best path skipped", "err", err)
			continue
		}
		s := w.set(pfx)
		if p.GetIsWithdraw() || p.GetIsNexthopInvalid() {
			continue
		}
		if local {
			s.ours = true
			continue
		}
		s.hops = appendUnique(s.hops, nh)
		s.stale = s.stale || p.GetStale()
	}
	for i := range w.sets {
		s := &w.sets[i]
		pfx := s.prefix
		if s.ours {
			s.hops, s.stale = s.hops[:0], false
		}
		slices.SortFunc(s.hops, netip.Addr.Compare)
		old, had := w.last[pfx]
		if len(s.hops) == 0 {
			if !had {
				continue
			}
			delete(w.last, pfx)
			w.fn(routing.BestPath{Prefix: pfx})
			continue
		}
		if had && old.stale == s.stale && slices.Equal(old.hops, s.hops) {
			continue
		}
		w.last[pfx] = watchLast{hops: w.hops.Get(s.hops), stale: s.stale}
		w.fn(routing.BestPath{Prefix: pfx, NextHops: slices.Clone(s.hops), Stale: s.stale})
	}
}

// set returns the event's set for pfx, adding an empty one.
func (w *bestWatch) set(pfx netip.Prefix) *watchSet {
	n := len(w.sets)
	if n > 0 && w.sets[n-1].prefix == pfx { // paths of one prefix come together
		return &w.sets[n-1]
	}
	if n > 0 {
		if w.index == nil {
			w.index = map[netip.Prefix]int{}
		}
		if len(w.index) == 0 {
			for i := range w.sets {
				w.index[w.sets[i].prefix] = i
			}
		}
		if i, ok := w.index[pfx]; ok {
			return &w.sets[i]
		}
		w.index[pfx] = n
	}
	if n < cap(w.sets) {
		w.sets = w.sets[:n+1]
		s := &w.sets[n]
		s.prefix, s.hops, s.stale, s.ours = pfx, s.hops[:0], false, false
		return s
	}
	w.sets = append(w.sets, watchSet{prefix: pfx})
	return &w.sets[n]
}

// decodedPath is what hostroute needs from a GoBGP path.
type decodedPath struct {
	prefix    netip.Prefix
	nextHop   netip.Addr
	neighbor  netip.Addr // invalid for our own routes
	local     bool
	sourceAS  uint32
	localPref uint32
	asPathLen int
	originAS  uint32 // see routing.Policy.Accepts
	origin    uint32
	med       uint32
}

// decodePath reads a unicast path. Our own routes have no neighbour: GoBGP reports
// their NeighborIp as "<nil>".
func decodePath(p *api.Path) (decodedPath, error) {
	d := decodedPath{localPref: 100, sourceAS: p.GetSourceAsn()}
	m, err := p.GetNlri().UnmarshalNew()
	if err != nil {
		return d, fmt.Errorf("bgp: nlri: %w", err)
	}
	n, ok := m.(*api.IPAddressPrefix)
	if !ok {
		return d, fmt.Errorf("bgp: nlri %T is not a unicast prefix", m)
	}
	a, err := netip.ParseAddr(n.GetPrefix())
	if err != nil {
		return d, fmt.Errorf("bgp: nlri prefix %q: %w", n.GetPrefix(), err)
	}
	d.prefix, err = a.Unmap().Prefix(int(n.GetPrefixLen()))
	if err != nil {
		return d, fmt.Errorf("bgp: nlri %s/%d: %w", a, n.GetPrefixLen(), err)
	}
	if nb, err := netip.ParseAddr(p.GetNeighborIp()); err == nil {
		d.neighbor = nb.Unmap()
	} else {
		d.local = true
	}
	for _, at := range p.GetPattrs() {
		m, err := at.UnmarshalNew()
		if err != nil {
			return d, fmt.Errorf("bgp: path attribute %s: %w", at.GetTypeUrl(), err)
		}
		switch v := m.(type) {
		case *api.NextHopAttribute:
			if nh, err := netip.ParseAddr(v.GetNextHop()); err == nil {
				d.nextHop = nh.Unmap()
			}
		case *api.MpReachNLRIAttribute:
			if hops := v.GetNextHops(); len(hops) > 0 {
				if nh, err := netip.ParseAddr(hops[0]); err == nil { // [1] is a link-local
					d.nextHop = nh.Unmap()
				}
			}
		case *api.LocalPrefAttribute:
			d.localPref = v.GetLocalPref()
		case *api.OriginAttribute:
			d.origin = v.GetOrigin()
		case *api.MultiExitDiscAttribute:
			d.med = v.GetMed()
		case *api.AsPathAttribute:
			d.originAS = 0
			if segs := v.GetSegments(); len(segs) > 0 {
				if last := segs[len(segs)-1]; last.GetType() == 2 && len(last.GetNumbers()) > 0 {
					d.originAS = last.GetNumbers()[len(last.GetNumbers())-1]
				}
			}
			for _, s := range v.GetSegments() {
				switch s.GetType() {
				case 1: // AS_SET counts as one
					d.asPathLen++
				case 2: // AS_SEQUENCE
					d.asPathLen += len(s.GetNumbers())
				} // confederation segments do not count
			}
		}
	}
	if !p.GetIsWithdraw() && !d.nextHop.IsValid() {
		return d, fmt.Errorf("bgp: path for %v has no next hop", d.prefix)
	}
	return d, nil
}

// Type URL suffixes ("/" and the full name) of the protobuf messages decodeWatchPath reads.
var (
	msgIPAddressPrefix = "/" + string((&api.IPAddressPrefix{}).ProtoReflect().Descriptor().FullName())
	msgNextHop         = "/" + string((&api.NextHopAttribute{}).ProtoReflect().Descriptor().FullName())
	msgMpReachNLRI     = "/" + string((&api.MpReachNLRIAttribute{}).ProtoReflect().Descriptor().FullName())
)

// decodeWatchPath reads what the best-path watch needs of a path: its prefix and next
// hop, and whether it is our own route. It reads the few protobuf fields it needs from
// the wire format instead of unmarshalling every attribute (decodePath): GoBGP delivers
// every best path this way and the watch is on the path of every route to the kernel.
// Paths it cannot read so are handed to decodePath.
func decodeWatchPath(p *api.Path) (prefix netip.Prefix, nextHop netip.Addr, local bool, err error) {
	nlri := p.GetNlri()
	if !strings.HasSuffix(nlri.GetTypeUrl(), msgIPAddressPrefix) {
		return decodeWatchPathSlow(p)
	}
	var bits uint64
	var addr []byte
	ok := protoFields(nlri.GetValue(), func(num protowire.Number, v uint64, b []byte) {
		switch num {
		case 1:
			bits = v
		case 2:
			addr = b
		}
	})
	if !ok {
		return decodeWatchPathSlow(p)
	}
	a, err := netip.ParseAddr(string(addr))
	if err != nil {
		return decodeWatchPathSlow(p)
	}
	if prefix, err = a.Unmap().Prefix(int(min(bits, 1<<16))); err != nil {
		return decodeWatchPathSlow(p)
	}
	if nb, err := netip.ParseAddr(p.GetNeighborIp()); err != nil || !nb.IsValid() {
		local = true
	}
	for _, at := range p.GetPattrs() {
		var field protowire.Number
		switch url := at.GetTypeUrl(); {
		case strings.HasSuffix(url, msgNextHop): // next_hop = 1
			field = 1
		case strings.HasSuffix(url, msgMpReachNLRI): // next_hops = 2; [1] is a link-local
			field = 2
		default:
			continue
		}
		var hop []byte
		found := false
		ok := protoFields(at.GetValue(), func(num protowire.Number, _ uint64, b []byte) {
			if num == field && !found {
				hop, found = b, true
			}
		})
		if !ok {
			return decodeWatchPathSlow(p)
		}
		if !found {
			continue
		}
		if nh, err := netip.ParseAddr(string(hop)); err == nil {
			nextHop = nh.Unmap()
		}
	}
	if !p.GetIsWithdraw() && !nextHop.IsValid() {
		return prefix, nextHop, local, fmt.Errorf("bgp: path for %v has no next hop", prefix)
	}
	return prefix, nextHop, local, nil
}

func decodeWatchPathSlow(p *api.Path) (netip.Prefix, netip.Addr, bool, error) {
	d, err := decodePath(p)
	return d.prefix, d.nextHop, d.local, err
}

// protoFields calls fn for each field of a protobuf message in wire format: v for a
// varint, b for a length-delimited field. It returns false if the message is malformed.
func protoFields(msg []byte, fn func(num protowire.Number, v uint64, b []byte)) bool {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return false
		}
		msg = msg[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(msg)
			if n < 0 {
				return false
			}
			fn(num, v, nil)
			msg = msg[n:]
		case protowire.BytesType:
			b, n := protowire.ConsumeBytes(msg)
			if n < 0 {
				return false
			}
			fn(num, 0, b)
			msg = msg[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, msg)
			if n < 0 {
				return false
			}
			msg = msg[n:]
		}
	}
	return true
}

func appendUnique(l []netip.Addr, a netip.Addr) []netip.Addr {
	if slices.Contains(l, a) {
		return l
	}
	return append(l, a)
}
