package routing

import (
	"net/netip"
	"slices"
)

// HopSets shares one slice per distinct set of next hops: 100k prefixes learned from one
// or two neighbours then hold one or two slices instead of 100k, which is memory and,
// above all, objects the garbage collector need not scan. A returned slice is shared and
// must not be modified (its capacity is its length, so an append copies it). Not safe
// for concurrent use.
type HopSets struct {
	m map[hopKey][]netip.Addr
}

// maxSharedHops is the largest set shared; larger ones (rare: wide ECMP) are kept as they
// come.
const maxSharedHops = 4

// maxHopSets bounds the sets remembered: they change with the neighbours, and forgetting
// them only costs new copies.
const maxHopSets = 1024

type hopKey struct {
	n    int
	hops [maxSharedHops]netip.Addr
}

// Get returns a shared slice equal to hops (nil for none).
func (h *HopSets) Get(hops []netip.Addr) []netip.Addr {
	if len(hops) == 0 {
		return nil
	}
	if len(hops) > maxSharedHops {
		return hops
	}
	k := hopKey{n: len(hops)}
	copy(k.hops[:], hops)
	if s, ok := h.m[k]; ok {
		return s
	}
	if h.m == nil || len(h.m) >= maxHopSets {
		h.m = map[hopKey][]netip.Addr{}
	}
	s := slices.Clip(slices.Clone(hops))
	h.m[k] = s
	return s
}
