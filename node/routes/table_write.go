package routes

// The route table's writer: one goroutine turns queued prefixes (and full passes) into
// kernel writes. See Table for the hazards it handles.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

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
	t.inKernel = make(map[netip.Prefix]Route, len(have))
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
		r.NextHops = t.kernelHops.Get(r.NextHops)
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
		kr.NextHops = t.kernelHops.Get(kr.NextHops)
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
	kr.NextHops = t.kernelHops.Get(kr.NextHops)
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

// Wanted returns every desired route as the kernel should hold it (see EachWanted),
// sorted.
func (t *Table) Wanted() []Route {
	var rs []Route
	t.EachWanted(func(r Route, _ []netip.Addr) { rs = append(rs, r) })
	sortRoutes(rs)
	return rs
}

// EachWanted calls fn, in no order, with every desired route as the kernel should hold
// it — next hops resolved to the gateways the writer last used (a next hop not resolved
// yet stays as it is) — and the RIB's next hops for its prefix, dead ones included. fn
// runs under the table's lock: it must not call the table, nor keep rib.
func (t *Table) EachWanted(fn func(r Route, rib []netip.Addr)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	each := func(p netip.Prefix) {
		r, ok := t.desiredLocked(p)
		if !ok {
			return
		}
		if !r.Blackhole {
			var hops []netip.Addr
			for _, h := range r.NextHops {
				if gw, ok := t.gateways[h]; ok {
					h = gw
				}
				if !slices.Contains(hops, h) {
					hops = append(hops, h)
				}
			}
			r.NextHops = sortedHops(hops)
		}
		fn(r, t.learned[p])
	}
	for p := range t.blocks {
		each(p)
	}
	for p := range t.learned {
		if !t.blocks[p] {
			each(p)
		}
	}
}

// LearnedFor returns the RIB's next hops for p as last set (dead ones included).
func (t *Table) LearnedFor(p netip.Prefix) []netip.Addr {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.learned[p])
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
