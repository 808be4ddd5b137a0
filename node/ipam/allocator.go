// Package ipam is the node agent's local address allocator. It hands out addresses from
// the node's own blocks without asking the API server, and makes every allocation durable
// on the host before it answers. It is the only writer of allocations in those blocks.
package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
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
	// ErrAddrTaken: a fixed address another attachment holds.
	ErrAddrTaken = errors.New("the fixed address is taken")
)

// Block is one of the node's blocks as the allocator sees it.
type Block struct {
	Prefix netip.Prefix
	// Pool is the IPPool the block was cut from ("" matches any choice).
	Pool string
	// Draining: no new address comes from the block (the controller wants it back).
	Draining bool
}

// Choice is the pools an attachment may take its addresses from, per family, in order of
// preference. A family with no pools gets no address.
type Choice struct {
	V4, V6 []string
	// V4Addr and V6Addr are fixed addresses (hostroute.io/ip-addrs): that family's address
	// is exactly this one, from whichever of the node's blocks holds it.
	V4Addr, V6Addr netip.Addr
}

// Fixed returns the fixed address of one family (4 or 6), if any.
func (c Choice) Fixed(fam int) netip.Addr {
	if fam == 4 {
		return c.V4Addr
	}
	return c.V6Addr
}

// Pools returns the choice of one family (4 or 6).
func (c Choice) Pools(fam int) []string {
	if fam == 4 {
		return c.V4
	}
	return c.V6
}

// Empty reports whether the choice wants no address at all.
func (c Choice) Empty() bool {
	return len(c.V4) == 0 && len(c.V6) == 0 && !c.V4Addr.IsValid() && !c.V6Addr.IsValid()
}

// Allocator hands out addresses from the node's blocks.
//
// All state changes go through one mutex held across the store write: a retried ADD for
// an attachment whose first ADD is still being written must not be answered before the
// address is on disk, and serialising makes that trivially true. One fsync per ADD keeps
// the hot path far below the CNI latency budget.
type Allocator struct {
	mu     sync.Mutex
	store  Store
	blocks []Block // sorted by prefix, the node's current blocks
	// reserved are prefixes no new address may come from (IPReservations).
	reserved []netip.Prefix
	byAddr   map[netip.Addr]Owner
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

// SetBlocks replaces the node's blocks with open blocks of no particular pool.
func (a *Allocator) SetBlocks(blocks []netip.Prefix) {
	bs := make([]Block, len(blocks))
	for i, p := range blocks {
		bs[i] = Block{Prefix: p}
	}
	a.SetNodeBlocks(bs)
}

// SetNodeBlocks replaces the node's blocks. Allocations outside them are kept (a pod keeps
// its address until its DEL) but no new address comes from a block the node no longer has,
// or from a draining one.
func (a *Allocator) SetNodeBlocks(blocks []Block) {
	bs := append([]Block(nil), blocks...)
	sort.Slice(bs, func(i, j int) bool { return bs[i].Prefix.Addr().Less(bs[j].Prefix.Addr()) })
	a.mu.Lock()
	a.blocks = bs
	a.mu.Unlock()
}

// SetReserved replaces the reserved prefixes: no new address comes from them. Addresses
// already allocated there stay with their owners.
func (a *Allocator) SetReserved(reserved []netip.Prefix) {
	rs := append([]netip.Prefix(nil), reserved...)
	a.mu.Lock()
	a.reserved = rs
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

// Allocate gives the owner one address per address family the node has blocks for, from
// any of them. A retry for the same attachment returns the addresses it already holds.
func (a *Allocator) Allocate(o Owner) ([]netip.Prefix, error) {
	return a.allocate(o, nil)
}

// AllocateFrom gives the owner one address per family of the choice, from a block of one
// of the family's pools (tried in order). A retry for the same attachment returns the
// addresses it already holds.
func (a *Allocator) AllocateFrom(o Owner, c Choice) ([]netip.Prefix, error) {
	if c.Empty() {
		return nil, fmt.Errorf("%w: no pool of any address family to allocate from", ErrInvalid)
	}
	return a.allocate(o, &c)
}

func (a *Allocator) allocate(o Owner, c *Choice) ([]netip.Prefix, error) {
	if o.ContainerID == "" || o.IfName == "" {
		return nil, fmt.Errorf("%w: container ID and interface name are required", ErrInvalid)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if held := a.heldLocked(o.attachment()); len(held) > 0 {
		return held, nil
	}
	fams := []int{4, 6}
	if c == nil {
		if len(a.blocks) == 0 {
			return nil, ErrNoBlock
		}
		fams = families(a.blocks)
	}
	var got []netip.Addr
	for _, fam := range fams {
		var pools []string
		var addr netip.Addr
		var err error
		switch {
		case c != nil && c.Fixed(fam).IsValid():
			addr, err = a.fixedLocked(c.Fixed(fam))
		case c != nil && len(c.Pools(fam)) == 0:
			continue
		default:
			if c != nil {
				pools = c.Pools(fam)
			}
			addr, err = a.freeLocked(fam, pools)
		}
		if err != nil {
			a.rollbackLocked(got)
			return nil, err
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

// freeLocked finds a free address of the family in a block of the pools (tried in order;
// nil: any block), next-fit from each block's cursor. It fails with ErrNoBlock when the
// node has no open block of those pools, and with ErrFull when they are all full.
func (a *Allocator) freeLocked(fam int, pools []string) (netip.Addr, error) {
	order := pools
	if pools == nil {
		order = []string{""} // any block
	}
	open := 0
	for _, want := range order {
		for _, b := range a.blocks {
			if familyOf(b.Prefix) != fam || b.Draining || (want != "" && b.Pool != want && b.Pool != "") {
				continue
			}
			open++
			if addr, ok := a.freeInLocked(b.Prefix); ok {
				return addr, nil
			}
		}
	}
	which := fmt.Sprintf("IPv%d", fam)
	if pools != nil {
		which = fmt.Sprintf("IPv%d of IPPool %s", fam, strings.Join(pools, ", "))
	}
	if open == 0 {
		return netip.Addr{}, fmt.Errorf("%w (%s)", ErrNoBlock, which)
	}
	return netip.Addr{}, fmt.Errorf("%w (%s)", ErrFull, which)
}

// fixedLocked checks that a fixed address can be given: in an open block of the node, not
// reserved, and held by no one (a retry of its holder returned earlier).
func (a *Allocator) fixedLocked(addr netip.Addr) (netip.Addr, error) {
	if o, held := a.byAddr[addr]; held {
		who := o.ContainerID
		if o.Pod != "" {
			who = "pod " + o.Namespace + "/" + o.Pod
		}
		return netip.Addr{}, fmt.Errorf("%w: %s is held by %s on this node", ErrAddrTaken, addr, who)
	}
	if a.reservedLocked(addr) {
		return netip.Addr{}, fmt.Errorf("%w: fixed address %s is reserved (IPReservation)", ErrPoolChoice, addr)
	}
	for _, b := range a.blocks {
		if b.Prefix.Contains(addr) && !b.Draining {
			return addr, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w (no open block of this node holds fixed address %s yet)", ErrNoBlock, addr)
}

// freeInLocked finds a free, unreserved address in one block, next-fit from its cursor.
func (a *Allocator) freeInLocked(b netip.Prefix) (netip.Addr, bool) {
	start, ok := a.cursor[b]
	if !ok || !b.Contains(start) {
		start = b.Addr()
	}
	addr := start
	for {
		if _, used := a.byAddr[addr]; !used && !a.reservedLocked(addr) {
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
			return netip.Addr{}, false
		}
	}
}

func (a *Allocator) reservedLocked(addr netip.Addr) bool {
	for _, r := range a.reserved {
		if r.Contains(addr) {
			return true
		}
	}
	return false
}

// Allocation is one address and its owner, for publishing and inspection.
type Allocation struct {
	Addr  netip.Addr
	Owner Owner
}

// Snapshot returns every allocation, grouped by the node block holding it; allocations in
// no current block are under the zero prefix.
func (a *Allocator) Snapshot() map[netip.Prefix][]Allocation {
	out, _ := a.SnapshotDraining()
	return out
}

// SnapshotDraining is Snapshot, and the set of draining blocks read at the same instant:
// a draining block empty in this snapshot stays empty.
func (a *Allocator) SnapshotDraining() (map[netip.Prefix][]Allocation, map[netip.Prefix]bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[netip.Prefix][]Allocation{}
	draining := map[netip.Prefix]bool{}
	for _, b := range a.blocks {
		out[b.Prefix] = nil
		if b.Draining {
			draining[b.Prefix] = true
		}
	}
	for addr, o := range a.byAddr {
		var key netip.Prefix
		for _, b := range a.blocks {
			if b.Prefix.Contains(addr) {
				key = b.Prefix
				break
			}
		}
		out[key] = append(out[key], Allocation{addr, o})
	}
	for _, l := range out {
		sort.Slice(l, func(i, j int) bool { return l[i].Addr.Less(l[j].Addr) })
	}
	return out, draining
}

// Blocks returns the prefixes of the node's current blocks, draining ones too.
func (a *Allocator) Blocks() []netip.Prefix {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]netip.Prefix, len(a.blocks))
	for i, b := range a.blocks {
		out[i] = b.Prefix
	}
	return out
}

// NodeBlocks returns the node's current blocks with their pools and draining marks.
func (a *Allocator) NodeBlocks() []Block {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Block(nil), a.blocks...)
}

func families(blocks []Block) []int {
	var has4, has6 bool
	for _, b := range blocks {
		if b.Prefix.Addr().Is4() {
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
