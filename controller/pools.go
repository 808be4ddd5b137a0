package controller

import (
	"fmt"
	"math/big"
	"net/netip"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// Default block sizes when a pool does not set one.
const (
	DefaultBlockSizeV4 = 26
	DefaultBlockSizeV6 = 122
)

// poolInfo is a pool as the assigner sees it: parsed, with its effective block size and
// whether the controller may allocate from it.
type poolInfo struct {
	pool      *v1alpha1.IPPool
	prefix    netip.Prefix
	blockSize int
	selector  labels.Selector
	// unusable says why no block may be cut from the pool ("" when it is usable).
	unusable string
	// overlaps names the older pool this one overlaps, if any.
	overlaps string
}

// capacity is the number of blocks in the pool, capped at 2^62 so it fits an int64.
func (p *poolInfo) capacity() int64 {
	shift := p.blockSize - p.prefix.Bits()
	if shift > 62 {
		shift = 62
	}
	return int64(1) << shift
}

// parsePool validates a pool's spec the way the CRD schema does; the controller re-checks
// so that a pool stored before the schema existed (or with validation off) is never used.
func parsePool(p *v1alpha1.IPPool) (*poolInfo, error) {
	prefix, err := netip.ParsePrefix(p.Spec.CIDR)
	if err != nil {
		return nil, fmt.Errorf("cidr %q is not a prefix: %w", p.Spec.CIDR, err)
	}
	if prefix.Masked() != prefix {
		return nil, fmt.Errorf("cidr %s is not the network address (did you mean %s?)", prefix, prefix.Masked())
	}
	bs := DefaultBlockSizeV4
	lo, hi := 20, 32
	if prefix.Addr().Is6() {
		bs, lo, hi = DefaultBlockSizeV6, 116, 128
	}
	if p.Spec.BlockSize != nil {
		bs = int(*p.Spec.BlockSize)
		if bs < lo || bs > hi {
			return nil, fmt.Errorf("blockSize %d is outside %d–%d", bs, lo, hi)
		}
	}
	if bs < prefix.Bits() {
		return nil, fmt.Errorf("blockSize /%d is larger than the pool %s", bs, prefix)
	}
	sel := labels.Everything()
	if p.Spec.NodeSelector != nil {
		sel, err = metav1.LabelSelectorAsSelector(p.Spec.NodeSelector)
		if err != nil {
			return nil, fmt.Errorf("nodeSelector: %w", err)
		}
	}
	return &poolInfo{pool: p, prefix: prefix, blockSize: bs, selector: sel}, nil
}

// analysePools parses every pool and marks the unusable ones: invalid, disabled, or
// overlapping an older pool. Of two overlapping pools the older (by creation time, then
// name) stays usable, so adding a bad pool never breaks a working one.
func analysePools(pools []*v1alpha1.IPPool) []*poolInfo {
	sorted := append([]*v1alpha1.IPPool(nil), pools...)
	sort.Slice(sorted, func(i, j int) bool { return v1alpha1.OlderPool(sorted[i], sorted[j]) })
	out := make([]*poolInfo, 0, len(sorted))
	var valid []*poolInfo
	for _, p := range sorted {
		pi, err := parsePool(p)
		if err != nil {
			out = append(out, &poolInfo{pool: p, unusable: err.Error()})
			continue
		}
		for _, older := range valid {
			if older.prefix.Overlaps(pi.prefix) {
				pi.overlaps = older.pool.Name
				pi.unusable = fmt.Sprintf("cidr %s overlaps IPPool %s (%s); no blocks are assigned from this pool", pi.prefix, older.pool.Name, older.prefix)
				break
			}
		}
		if pi.overlaps == "" {
			valid = append(valid, pi)
			if p.Spec.Disabled {
				pi.unusable = "the pool is disabled"
			}
		}
		out = append(out, pi)
	}
	return out
}

// nextFreeBlock returns the first block of the pool that overlaps no used prefix.
// used must hold every assigned block of every pool.
func nextFreeBlock(p *poolInfo, used []netip.Prefix) (netip.Prefix, bool) {
	// Only blocks inside the pool matter; sort them so the scan skips past each in turn.
	var inside []netip.Prefix
	for _, u := range used {
		if u.Overlaps(p.prefix) {
			inside = append(inside, u)
		}
	}
	sort.Slice(inside, func(i, j int) bool { return inside[i].Addr().Less(inside[j].Addr()) })

	cand := netip.PrefixFrom(p.prefix.Addr(), p.blockSize)
	for _, u := range inside {
		for cand.Overlaps(u) {
			// Move past u: start from the first block boundary after u's last address.
			next, ok := blockAfter(lastAddr(u), p.blockSize)
			if !ok || !p.prefix.Contains(next.Addr()) {
				return netip.Prefix{}, false
			}
			cand = next
		}
		if cand.Addr().Less(u.Addr()) {
			// u lies after cand and they do not overlap: cand is free.
			return cand, true
		}
	}
	if !p.prefix.Contains(cand.Addr()) {
		return netip.Prefix{}, false
	}
	return cand, true
}

// lastAddr is the last address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for bit := 0; bit < 8; bit++ {
			if i*8+bit >= bits {
				b[i] |= 0x80 >> bit
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// blockAfter returns the first block of the given size that starts after addr.
func blockAfter(addr netip.Addr, blockSize int) (netip.Prefix, bool) {
	next := lastAddr(netip.PrefixFrom(addr, blockSize).Masked()).Next()
	if !next.IsValid() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(next, blockSize), true
}

// BlockName is the IPAMBlock name for a block prefix: 10.244.3.64/26 → 10-244-3-64-26.
// The name is a function of the prefix, so the API server itself refuses a second
// assignment of the same block, even from a second controller replica.
func BlockName(p netip.Prefix) string { return v1alpha1.BlockName(p) }

// blockCount formats "assigned/capacity", using a big number for huge IPv6 pools.
func blockCount(assigned int, p *poolInfo) string {
	shift := p.blockSize - p.prefix.Bits()
	if shift > 62 {
		return fmt.Sprintf("%d/%s", assigned, new(big.Int).Lsh(big.NewInt(1), uint(shift)).String())
	}
	return fmt.Sprintf("%d/%d", assigned, p.capacity())
}
