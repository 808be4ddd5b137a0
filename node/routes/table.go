package routes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"
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

	mu        sync.Mutex
	blocks    map[netip.Prefix]bool
	learned   map[netip.Prefix][]netip.Addr
	lastEvent map[netip.Prefix]uint64 // sequence number of each prefix's last SetLearned
	seq       uint64
	dead      map[netip.Addr]bool
	dirty     map[netip.Prefix]bool
	full      bool
	keepUntil time.Time
	conflicts map[netip.Prefix]Conflict
	pools     []netip.Prefix // where a legacy-protocol route may be ours
	lastErr   error
	busy      bool // the writer is in a pass

	// gateways maps a next hop to the kernel gateway that reaches it, until the next
	// full pass (written by the writer, read by Wanted).
	gateways map[netip.Addr]netip.Addr

	kick  chan struct{}
	clock func() time.Time

	// Owned by the writer (Run) alone.
	inKernel map[netip.Prefix]Route    // our routes as last read or written (kernel form)
	onChange func(Conflict)            // called by the writer for each new conflict
	applied  map[netip.Prefix]Conflict // conflicts last reported through onChange
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
		t.learned[p] = slices.Compact(sortedHops(hops))
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
		t.learned[p] = hops
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
	if len(fixed) > 0 {
		t.signal()
	}
	sortPrefixes(fixed)
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

// currentKernel is implemented by kernels that tell their own protocol number apart from
// the legacy one they also own.
type currentKernel interface{ Current() int }

// ownsOccupant reports whether the route of protocol proto at p is ours.
func (t *Table) ownsOccupant(p netip.Prefix, proto int) bool {
	if !t.k.Owns(proto) {
		return false
	}
	if ck, ok := t.k.(currentKernel); ok && proto != ck.Current() {
		return t.legacyOurs(p)
	}
	return true
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

// Learned returns the best paths as last set, dead next hops included.
func (t *Table) Learned() map[netip.Prefix][]netip.Addr {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.learned)
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
	slices.SortFunc(out, func(a, b Conflict) int { return comparePrefixes(a.Dst, b.Dst) })
	return out
}

// Err is the last pass's error (nil when it wrote everything).
func (t *Table) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastErr
}

// Run writes until ctx ends. It starts with a full pass.
func (t *Table) Run(ctx context.Context) {
	t.Resync()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
		}
		t.pass()
	}
}

// pass takes the work queued so far and writes it.
func (t *Table) pass() {
	t.mu.Lock()
	full := t.full
	dirty := t.dirty
	t.full, t.dirty, t.busy = false, map[netip.Prefix]bool{}, true
	t.mu.Unlock()

	var err error
	if full {
		err = t.fullPass()
	} else {
		err = t.writeDirty(dirty)
	}
	t.reportConflicts()
	t.mu.Lock()
	t.lastErr = err
	t.busy = false
	t.mu.Unlock()
}

// Settled reports whether the writer has nothing queued and is not writing: the kernel
// then holds what the sources say (or Err says why not).
func (t *Table) Settled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.busy && !t.full && len(t.dirty) == 0
}

func (t *Table) writeDirty(dirty map[netip.Prefix]bool) error {
	var errs []error
	for p := range dirty {
		if err := t.sync(p, false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// fullPass reads our routes back from the kernel and brings every prefix to its desired
// state, deleting routes of ours nothing desires (unless kept after a restart).
func (t *Table) fullPass() error {
	have, err := t.k.List()
	if err != nil {
		return fmt.Errorf("list kernel routes: %w", err)
	}
	t.inKernel = map[netip.Prefix]Route{}
	var errs []error
	for _, r := range have {
		if r.Legacy && !t.legacyOurs(r.Dst) {
			continue // the legacy number outside the pools: someone else's (FRR's static)
		}
		if _, dup := t.inKernel[r.Dst]; dup {
			// A second route of ours to the same destination (another metric): keep one.
			if err := t.k.Delete(r); err != nil {
				errs = append(errs, fmt.Errorf("delete duplicate %s: %w", r, err))
			}
			continue
		}
		t.inKernel[r.Dst] = r
	}
	t.mu.Lock()
	t.gateways = map[netip.Addr]netip.Addr{}
	all := map[netip.Prefix]bool{}
	for p := range t.blocks {
		all[p] = true
	}
	for p := range t.learned {
		all[p] = true
	}
	for p := range t.conflicts {
		all[p] = true
	}
	t.mu.Unlock()
	for p := range t.inKernel {
		all[p] = true
	}
	for p := range all {
		if err := t.sync(p, true); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sync brings one prefix's kernel route to its desired state.
func (t *Table) sync(p netip.Prefix, full bool) error {
	t.mu.Lock()
	want, ok := t.desiredLocked(p)
	keep := full && t.keepingLocked()
	t.mu.Unlock()
	have, ours := t.inKernel[p]
	if !ok {
		t.clearConflict(p)
		if !ours || (keep && !have.Blackhole) {
			return nil
		}
		if err := t.k.Delete(have); err != nil {
			return fmt.Errorf("delete %s: %w", have, err)
		}
		delete(t.inKernel, p)
		return nil
	}
	kr, err := t.resolve(want)
	if err != nil {
		return fmt.Errorf("route %s: %w", want, err)
	}
	if ours && kr.equal(have) && !have.Legacy {
		return nil
	}
	if ours {
		if err := t.k.Replace(kr); err != nil {
			return fmt.Errorf("replace %s: %w", kr, err)
		}
		t.inKernel[p] = kr
		return nil
	}
	return t.add(want, kr)
}

// add installs a route at a destination the table does not know to be ours: exclusively,
// so that a route someone else holds there is reported, never taken over.
func (t *Table) add(want, kr Route) error {
	p := kr.Dst
	err := t.k.Add(kr)
	if errors.Is(err, ErrExists) {
		proto, found, lerr := t.k.Occupant(p)
		switch {
		case lerr != nil:
			return fmt.Errorf("add %s: the destination is taken and reading it failed: %w", kr, lerr)
		case found && t.ownsOccupant(p, proto):
			err = t.k.Replace(kr) // ours after all (written since the last read, or legacy)
		case found:
			t.setConflict(Conflict{Dst: p, Protocol: proto, Want: want})
			return nil
		default:
			err = t.k.Add(kr) // gone in between
		}
	}
	if err != nil {
		return fmt.Errorf("add %s: %w", kr, err)
	}
	t.inKernel[p] = kr
	t.clearConflict(p)
	return nil
}

// resolve turns BGP next hops into kernel gateways.
func (t *Table) resolve(r Route) (Route, error) {
	if r.Blackhole {
		return r, nil
	}
	out := Route{Dst: r.Dst}
	for _, h := range r.NextHops {
		t.mu.Lock()
		gw, ok := t.gateways[h]
		t.mu.Unlock()
		if !ok {
			var err error
			if gw, err = t.k.Gateway(h); err != nil {
				return Route{}, fmt.Errorf("next hop %s: %w", h, err)
			}
			t.mu.Lock()
			t.gateways[h] = gw
			t.mu.Unlock()
		}
		if !slices.Contains(out.NextHops, gw) {
			out.NextHops = append(out.NextHops, gw)
		}
	}
	out.NextHops = sortedHops(out.NextHops)
	return out, nil
}

// Wanted returns every desired route as the kernel should hold it: next hops resolved to
// the gateways the writer last used (a next hop not resolved yet stays as it is).
func (t *Table) Wanted() []Route {
	rs := t.Desired()
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, r := range rs {
		if r.Blackhole {
			continue
		}
		var hops []netip.Addr
		for _, h := range r.NextHops {
			if gw, ok := t.gateways[h]; ok {
				h = gw
			}
			if !slices.Contains(hops, h) {
				hops = append(hops, h)
			}
		}
		rs[i].NextHops = sortedHops(hops)
	}
	return rs
}

func (t *Table) setConflict(c Conflict) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.conflicts[c.Dst] = c
}

func (t *Table) clearConflict(p netip.Prefix) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conflicts, p)
}

// reportConflicts logs conflicts that appeared or went and reports new ones.
func (t *Table) reportConflicts() {
	t.mu.Lock()
	cur := maps.Clone(t.conflicts)
	t.mu.Unlock()
	for p, c := range cur {
		if old, ok := t.applied[p]; ok && old.Protocol == c.Protocol {
			continue
		}
		t.log.Warn("kernel route conflict: not replacing a route hostroute does not own", "prefix", p, "protocol", c.Protocol, "want", c.Want.String())
		if t.onChange != nil {
			t.onChange(c)
		}
	}
	for p := range t.applied {
		if _, ok := cur[p]; !ok {
			t.log.Info("kernel route conflict resolved", "prefix", p)
		}
	}
	t.applied = cur
}

func keysOf(m map[netip.Prefix][]netip.Addr) map[netip.Prefix]bool {
	out := make(map[netip.Prefix]bool, len(m))
	for p := range m {
		out[p] = true
	}
	return out
}

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func sortPrefixes(ps []netip.Prefix) { slices.SortFunc(ps, comparePrefixes) }
