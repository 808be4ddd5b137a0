package routes

import (
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hostroute/hostroute/routing"
)

// Table is the only writer of hostroute's kernel routes (the protocol its Kernel writes)
// on a node.
//
// Desired state is kept per prefix, from its sources: the node's own blocks (blackholes),
// the best paths BGP learned (next hops), and the next hops BFD declared dead (left out
// of every route at once). Callers only change sources; one goroutine (Run) turns the
// prefixes they touched into kernel writes, reading each prefix's desired state when its
// turn comes, so the latest state always wins and no two writers race. A full resync
// (Resync, and every pass of the caller's ticker) reads the kernel back and repairs
// everything; RepairLearned lets the caller replace the learned paths with a fresh read of
// the RIB without undoing events that arrived while it was reading.
//
// Hazards, and what the table does about them:
//   - A route of someone else at the same destination and metric (a static default
//     route, a route another daemon imported, FRR's zebra): Linux matches routes by
//     destination, TOS and metric, not by protocol, so a replace would take it over and a
//     later delete remove it. New routes are therefore added exclusively (EEXIST when the
//     slot is taken); a taken slot is left alone and reported as a Conflict until the
//     other route goes. Replace is used only on a slot the last kernel read or our own
//     write showed to be ours; a foreign writer that replaces our route between two
//     resyncs can be overwritten once, until the next resync sees the route is not ours.
//   - Next hops that are not on a connected subnet (nodes in different subnets behind an
//     L3 fabric, reflectors across racks): Linux refuses such a gateway. Each next hop is
//     resolved through the route to it (Kernel.Gateway); the kernel route then points at
//     the gateway that reaches it. Resolutions are cached until the next full resync, so
//     an underlay change is picked up within one resync interval.
//   - Dumps interrupted by concurrent changes are retried (Kernel.List).
//   - Our own block must never be routed anywhere but to its blackhole: a learned path
//     for a prefix that is also an own block is ignored.
//   - After a restart, routes of ours found in the kernel may be kept (KeepUntil) while
//     BGP re-learns them, so a restarting agent never cuts traffic.
//   - After an upgrade from the legacy protocol number, the kernel holds our routes with
//     that number (Route.Legacy): they are ours (Kernel.Owns), never a conflict; a full
//     pass rewrites the wanted ones with the current number and deletes the others, so
//     none stays behind looking like someone else's. The legacy number is FRR's "static"
//     (196), so a legacy route counts as ours only inside the pools (SetPools), where
//     hostroute's own blocks and learned blocks live; outside them (a static default
//     route of FRR's, say) it is someone else's: never deleted, a conflict if wanted.
type Table struct {
	k   Kernel
	log *slog.Logger

	mu      sync.Mutex
	blocks  map[netip.Prefix]bool
	learned map[netip.Prefix][]netip.Addr // next hop slices shared through learnedHops
	// lastEvent is the sequence number of each prefix's last SetLearned, until a
	// RepairLearned from a later RIB read no longer needs it.
	lastEvent   map[netip.Prefix]uint64
	learnedHops routing.HopSets
	seq         uint64
	dead        map[netip.Addr]bool
	dirty       map[netip.Prefix]bool
	full        bool
	keepUntil   time.Time
	conflicts   map[netip.Prefix]Conflict
	pools       []netip.Prefix // where a legacy-protocol route may be ours
	lastErr     error
	busy        bool // the writer is in a pass

	// gateways maps a next hop to the kernel gateway that reaches it, until the next
	// full pass (written by the writer, read by Wanted).
	gateways map[netip.Addr]netip.Addr

	kick  chan struct{}
	clock func() time.Time

	// Owned by the writer (Run) alone.
	inKernel   map[netip.Prefix]Route    // our routes as last read or written (kernel form)
	kernelHops routing.HopSets           // shares inKernel's next hop slices
	onChange   func(Conflict)            // called by the writer for each new conflict
	applied    map[netip.Prefix]Conflict // conflicts last reported through onChange
}

// Conflict is a destination hostroute wants but someone else's route holds.
type Conflict struct {
	Dst      netip.Prefix
	Protocol int // the other route's protocol number
	Want     Route
}

func (c Conflict) String() string {
	return fmt.Sprintf("%s is held by a route of protocol %d that hostroute does not own; not replacing it (wanted %s)", c.Dst, c.Protocol, c.Want)
}

// NewTable returns a table writing to k. onConflict, if not nil, is called from the writer
// goroutine for each conflict that appears (Conflicts lists the current ones).
func NewTable(k Kernel, log *slog.Logger, onConflict func(Conflict)) *Table {
	return &Table{
		k: k, log: log, onChange: onConflict,
		blocks: map[netip.Prefix]bool{}, learned: map[netip.Prefix][]netip.Addr{},
		lastEvent: map[netip.Prefix]uint64{}, dead: map[netip.Addr]bool{},
		dirty: map[netip.Prefix]bool{}, conflicts: map[netip.Prefix]Conflict{},
		kick: make(chan struct{}, 1), inKernel: map[netip.Prefix]Route{},
		gateways: map[netip.Addr]netip.Addr{}, applied: map[netip.Prefix]Conflict{},
		clock: time.Now,
	}
}

func (t *Table) signal() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// SetBlocks makes the node's own blocks the given set (their blackholes are desired).
func (t *Table) SetBlocks(blocks []netip.Prefix) {
	t.mu.Lock()
	defer t.mu.Unlock()
	want := map[netip.Prefix]bool{}
	for _, b := range blocks {
		want[b] = true
		if !t.blocks[b] {
			t.dirty[b] = true
		}
	}
	for b := range t.blocks {
		if !want[b] {
			t.dirty[b] = true
		}
	}
	t.blocks = want
	t.signal()
}

// SetLearned records BGP's best next hops for a prefix (none: withdrawn).
func (t *Table) SetLearned(p netip.Prefix, hops []netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	t.lastEvent[p] = t.seq
	if len(hops) == 0 {
		delete(t.learned, p)
	} else {
		t.learned[p] = t.learnedHops.Get(slices.Compact(sortedHops(hops)))
	}
	t.dirty[p] = true
	t.signal()
}

// Seq returns the sequence number of the latest SetLearned. Read it before reading the
// RIB for RepairLearned.
func (t *Table) Seq() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.seq
}

// RepairLearned replaces the learned paths with rib, a read of the RIB that began after
// Seq returned since. Prefixes with an event newer than since keep the event's state
// (it is newer than the read). It returns the prefixes it corrected: events that were
// missed.
func (t *Table) RepairLearned(rib map[netip.Prefix][]netip.Addr, since uint64) []netip.Prefix {
	t.mu.Lock()
	defer t.mu.Unlock()
	var fixed []netip.Prefix
	newer := func(p netip.Prefix) bool { return t.lastEvent[p] > since }
	for p, hops := range rib {
		hops = slices.Compact(sortedHops(hops))
		if newer(p) || slices.Equal(t.learned[p], hops) {
			continue
		}
		t.learned[p] = t.learnedHops.Get(hops)
		t.dirty[p] = true
		fixed = append(fixed, p)
	}
	for p := range t.learned {
		if _, ok := rib[p]; !ok && !newer(p) {
			delete(t.learned, p)
			t.dirty[p] = true
			fixed = append(fixed, p)
		}
	}
	// Events up to since are older than the RIB read, so no later repair (whose since is
	// larger) needs them: without this, every prefix ever learned kept an entry.
	maps.DeleteFunc(t.lastEvent, func(_ netip.Prefix, seq uint64) bool { return seq <= since })
	if len(fixed) > 0 {
		t.signal()
	}
	slices.SortFunc(fixed, netip.Prefix.Compare)
	return fixed
}

// SetDead marks a next hop dead (BFD down) or alive; every route through it is rewritten.
func (t *Table) SetDead(hop netip.Addr, dead bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead[hop] == dead {
		return
	}
	if dead {
		t.dead[hop] = true
	} else {
		delete(t.dead, hop)
	}
	for p, hops := range t.learned {
		if slices.Contains(hops, hop) {
			t.dirty[p] = true
		}
	}
	t.signal()
}

// KeepUntil keeps routes of ours that nothing desires (found in the kernel after a
// restart) until the given time, while BGP re-learns them.
func (t *Table) KeepUntil(until time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.keepUntil = until
	t.full = true
	t.signal()
}

// SetPools sets the pool prefixes: legacy-protocol routes inside them are ours.
func (t *Table) SetPools(pools []netip.Prefix) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if slices.Equal(t.pools, pools) {
		return
	}
	t.pools = slices.Clone(pools)
	t.full = true
	t.signal()
}

// legacyOurs reports whether a legacy-protocol route to p is ours: p lies in a pool.
func (t *Table) legacyOurs(p netip.Prefix) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, pool := range t.pools {
		if pool.Bits() <= p.Bits() && pool.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// ownsOccupant reports whether the route of protocol proto at p is ours.
func (t *Table) ownsOccupant(p netip.Prefix, proto int) bool {
	return t.k.Owns(proto) && (!t.k.IsLegacy(proto) || t.legacyOurs(p))
}

// Resync asks for a full pass: the kernel is read back and every difference repaired.
func (t *Table) Resync() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.full = true
	t.signal()
}

// desiredLocked is a prefix's desired route in BGP terms (next hops not yet resolved).
func (t *Table) desiredLocked(p netip.Prefix) (Route, bool) {
	if t.blocks[p] {
		return Route{Dst: p, Blackhole: true}, true
	}
	var alive []netip.Addr
	for _, h := range t.learned[p] {
		if !t.dead[h] {
			alive = append(alive, h)
		}
	}
	if len(alive) == 0 {
		return Route{}, false
	}
	return Route{Dst: p, NextHops: alive}, true
}

// Desired returns every route the table wants, next hops in BGP terms.
func (t *Table) Desired() []Route {
	t.mu.Lock()
	defer t.mu.Unlock()
	seen := map[netip.Prefix]bool{}
	var out []Route
	for _, src := range []map[netip.Prefix]bool{t.blocks, keysOf(t.learned)} {
		for p := range src {
			if seen[p] {
				continue
			}
			seen[p] = true
			if r, ok := t.desiredLocked(p); ok {
				out = append(out, r)
			}
		}
	}
	sortRoutes(out)
	return out
}

// Keeping reports whether unknown routes of ours are being kept (a restart).
func (t *Table) Keeping() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.keepingLocked()
}

// keepingLocked is the one test of the restart grace that KeepUntil set: status and the
// writer must never disagree on whether a route of ours nobody wants is kept or stale.
func (t *Table) keepingLocked() bool { return t.clock().Before(t.keepUntil) }

// Conflicts lists the destinations held by routes hostroute does not own.
func (t *Table) Conflicts() []Conflict {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := slices.Collect(maps.Values(t.conflicts))
	slices.SortFunc(out, func(a, b Conflict) int { return a.Dst.Compare(b.Dst) })
	return out
}

// Err is the last pass's error (nil when it wrote everything).
func (t *Table) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastErr
}

func keysOf(m map[netip.Prefix][]netip.Addr) map[netip.Prefix]bool {
	out := make(map[netip.Prefix]bool, len(m))
	for p := range m {
		out[p] = true
	}
	return out
}
