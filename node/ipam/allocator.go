// Package ipam is the node agent's local address allocator. It hands out addresses from
// the node's own blocks without asking the API server, and makes every allocation durable
// on the host before it answers. It is the only writer of allocations in those blocks.
package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
)

// Owner is who holds an address: one interface of one pod sandbox.
type Owner struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	PodUID      string `json:"podUID,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	Pod         string `json:"pod,omitempty"`
}

// Attachment identifies an owner the way the CNI runtime does.
type Attachment struct{ ContainerID, IfName string }

func (o Owner) attachment() Attachment { return Attachment{o.ContainerID, o.IfName} }

// Errors the caller maps to CNI/gRPC codes.
var (
	// ErrNoBlock: the node has no block of any family yet.
	ErrNoBlock = errors.New("the node has no address block yet")
	// ErrFull: every block of a family the node has is full.
	ErrFull = errors.New("every address block of this node is full")
	// ErrInvalid: the request is malformed.
	ErrInvalid = errors.New("invalid request")
)

// Allocator hands out addresses from the node's blocks.
//
// All state changes go through one mutex held across the store write: a retried ADD for
// an attachment whose first ADD is still being written must not be answered before the
// address is on disk, and serialising makes that trivially true. One fsync per ADD keeps
// the hot path far below the CNI latency budget.
type Allocator struct {
	mu     sync.Mutex
	store  Store
	blocks []netip.Prefix // sorted, the node's current blocks
	byAddr map[netip.Addr]Owner
	// cursor is the next address to try per block (next-fit), so a just-released
	// address is not handed out again at once while stale conntrack or ARP entries live.
	cursor map[netip.Prefix]netip.Addr
	// attach orders calls for one attachment across their whole duration (see
	// LockAttachment); it is never taken while mu is held.
	attach attachLocks
}

// New loads the store.
func New(store Store) (*Allocator, error) {
	m, err := store.Load()
	if err != nil {
		return nil, err
	}
	return &Allocator{store: store, byAddr: m, cursor: map[netip.Prefix]netip.Addr{}}, nil
}

// SetBlocks replaces the node's blocks. Allocations outside them are kept (a pod keeps its
// address until its DEL) but no new address comes from a block the node no longer has.
func (a *Allocator) SetBlocks(blocks []netip.Prefix) {
	bs := append([]netip.Prefix(nil), blocks...)
	sort.Slice(bs, func(i, j int) bool { return bs[i].Addr().Less(bs[j].Addr()) })
	a.mu.Lock()
	a.blocks = bs
	a.mu.Unlock()
}

// Adopt records allocations found only in the API copy (for example after the host's
// state dir was wiped): an address recorded anywhere is in use until proven free.
// It returns the addresses it adopted.
func (a *Allocator) Adopt(allocs map[netip.Addr]Owner) ([]netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var adopted []netip.Addr
	for addr, o := range allocs {
		if _, ok := a.byAddr[addr]; ok {
			continue
		}
		if err := a.store.Put(addr, o); err != nil {
			return adopted, err
		}
		a.byAddr[addr] = o
		adopted = append(adopted, addr)
	}
	return adopted, nil
}

// Allocate gives the owner one address per address family the node has blocks for.
// A retry for the same attachment returns the addresses it already holds.
func (a *Allocator) Allocate(o Owner) ([]netip.Prefix, error) {
	if o.ContainerID == "" || o.IfName == "" {
		return nil, fmt.Errorf("%w: container ID and interface name are required", ErrInvalid)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if held := a.heldLocked(o.attachment()); len(held) > 0 {
		return held, nil
	}
	if len(a.blocks) == 0 {
		return nil, ErrNoBlock
	}
	var got []netip.Addr
	for _, fam := range families(a.blocks) {
		addr, ok := a.freeLocked(fam)
		if !ok {
			a.rollbackLocked(got)
			return nil, fmt.Errorf("%w (IPv%d)", ErrFull, fam)
		}
		if err := a.store.Put(addr, o); err != nil {
			a.rollbackLocked(got)
			return nil, err
		}
		a.byAddr[addr] = o
		got = append(got, addr)
	}
	return hostPrefixes(got), nil
}

// rollbackLocked undoes a partial dual-stack allocation.
func (a *Allocator) rollbackLocked(addrs []netip.Addr) {
	if len(addrs) == 0 {
		return
	}
	if err := a.store.Delete(addrs...); err != nil {
		return // still on disk: keep them in memory too, so they are not handed out twice
	}
	for _, ad := range addrs {
		delete(a.byAddr, ad)
	}
}

// Release frees the attachment's addresses; an unknown attachment frees nothing.
func (a *Allocator) Release(at Attachment) ([]netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var addrs []netip.Addr
	for addr, o := range a.byAddr {
		if o.attachment() == at {
			addrs = append(addrs, addr)
		}
	}
	return addrs, a.deleteLocked(addrs)
}

// Get returns the attachment's addresses.
func (a *Allocator) Get(at Attachment) []netip.Prefix {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.heldLocked(at)
}

// GC releases every allocation whose attachment is not in valid.
func (a *Allocator) GC(valid []Attachment) ([]netip.Addr, error) {
	keep := map[Attachment]bool{}
	for _, v := range valid {
		keep[v] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var addrs []netip.Addr
	for addr, o := range a.byAddr {
		if !keep[o.attachment()] {
			addrs = append(addrs, addr)
		}
	}
	return addrs, a.deleteLocked(addrs)
}

func (a *Allocator) deleteLocked(addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	if err := a.store.Delete(addrs...); err != nil {
		return err
	}
	for _, ad := range addrs {
		delete(a.byAddr, ad)
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	return nil
}

func (a *Allocator) heldLocked(at Attachment) []netip.Prefix {
	var held []netip.Addr
	for addr, o := range a.byAddr {
		if o.attachment() == at {
			held = append(held, addr)
		}
	}
	sort.Slice(held, func(i, j int) bool { return held[i].Less(held[j]) })
	return hostPrefixes(held)
}

// freeLocked finds a free address of the family, next-fit from each block's cursor.
func (a *Allocator) freeLocked(fam int) (netip.Addr, bool) {
	for _, b := range a.blocks {
		if familyOf(b) != fam {
			continue
		}
		start, ok := a.cursor[b]
		if !ok || !b.Contains(start) {
			start = b.Addr()
		}
		addr := start
		for {
			if _, used := a.byAddr[addr]; !used {
				next := addr.Next()
				if !b.Contains(next) {
					next = b.Addr()
				}
				a.cursor[b] = next
				return addr, true
			}
			addr = addr.Next()
			if !b.Contains(addr) {
				addr = b.Addr()
			}
			if addr == start {
				break
			}
		}
	}
	return netip.Addr{}, false
}

// Allocation is one address and its owner, for publishing and inspection.
type Allocation struct {
	Addr  netip.Addr
	Owner Owner
}

// Snapshot returns every allocation, grouped by the node block holding it; allocations in
// no current block are under the zero prefix.
func (a *Allocator) Snapshot() map[netip.Prefix][]Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[netip.Prefix][]Allocation{}
	for _, b := range a.blocks {
		out[b] = nil
	}
	for addr, o := range a.byAddr {
		var key netip.Prefix
		for _, b := range a.blocks {
			if b.Contains(addr) {
				key = b
				break
			}
		}
		out[key] = append(out[key], Allocation{addr, o})
	}
	for _, l := range out {
		sort.Slice(l, func(i, j int) bool { return l[i].Addr.Less(l[j].Addr) })
	}
	return out
}

// Blocks returns the node's current blocks.
func (a *Allocator) Blocks() []netip.Prefix {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]netip.Prefix(nil), a.blocks...)
}

func families(blocks []netip.Prefix) []int {
	var has4, has6 bool
	for _, b := range blocks {
		if b.Addr().Is4() {
			has4 = true
		} else {
			has6 = true
		}
	}
	var out []int
	if has4 {
		out = append(out, 4)
	}
	if has6 {
		out = append(out, 6)
	}
	return out
}

func familyOf(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 4
	}
	return 6
}

func hostPrefixes(addrs []netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}
