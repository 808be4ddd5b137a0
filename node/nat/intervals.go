package nat

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
)

// addrRange is an inclusive range of addresses of one family.
type addrRange struct{ first, last netip.Addr }

// lastAddr is the highest address inside p (the "broadcast" address for IPv4).
func lastAddr(p netip.Prefix) netip.Addr {
	p = p.Masked()
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		setHostBits(b[:], p.Bits())
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	setHostBits(b[:], p.Bits())
	return netip.AddrFrom16(b)
}

// setHostBits sets every bit after the first `bits` bits of b to one.
func setHostBits(b []byte, bits int) {
	for i := range b {
		switch {
		case bits >= (i+1)*8:
			// whole byte is network part
		case bits <= i*8:
			b[i] = 0xff
		default:
			b[i] |= 0xff >> (bits - i*8)
		}
	}
}

// mergeRanges turns prefixes of one family into sorted, disjoint, non-adjacent
// ranges. The kernel rejects overlapping intervals in a set (EEXIST), and an
// interval ending exactly where the next one starts would need an end marker and a
// start element on the same key, so pools that overlap or touch (for example a /16
// and a /24 inside it, or two neighbouring /25s) are coalesced first.
func mergeRanges(prefixes []netip.Prefix) []addrRange {
	rs := make([]addrRange, 0, len(prefixes))
	for _, p := range prefixes {
		rs = append(rs, addrRange{first: p.Masked().Addr(), last: lastAddr(p)})
	}
	slices.SortFunc(rs, func(a, b addrRange) int { return a.first.Compare(b.first) })
	var out []addrRange
	for _, r := range rs {
		if n := len(out); n > 0 {
			cur := &out[n-1]
			// next is the zero Addr when cur already reaches the top of the
			// address space; then everything after it is covered.
			next := cur.last.Next()
			if !next.IsValid() || r.first.Compare(next) <= 0 {
				if r.last.Compare(cur.last) > 0 {
					cur.last = r.last
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// intervalElements computes the elements of an nftables interval set holding
// exactly the given prefixes, all of which must be of the family chosen by v4.
//
// nftables stores an interval [first, last] as two elements: the key `first`, and
// the key `last+1` flagged NFT_SET_ELEM_INTERVAL_END (this is what nft(8) sends and
// what google/nftables expects through SetElement.IntervalEnd). When last is the
// highest address of the family (255.255.255.255, ffff:…:ffff, e.g. for a /0) there
// is no last+1; nft(8) then sends the start element alone, meaning "up to the end",
// and so do we.
func intervalElements(prefixes []netip.Prefix, v4 bool) ([]nftables.SetElement, error) {
	for _, p := range prefixes {
		if !p.IsValid() {
			return nil, fmt.Errorf("invalid prefix %q", p)
		}
		if p.Addr().Is4() != v4 {
			return nil, fmt.Errorf("prefix %s is not of the set's address family", p)
		}
	}
	var elems []nftables.SetElement
	for _, r := range mergeRanges(prefixes) {
		elems = append(elems, nftables.SetElement{Key: r.first.AsSlice()})
		if end := r.last.Next(); end.IsValid() {
			elems = append(elems, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return elems, nil
}

// splitFamilies separates prefixes into IPv4 and IPv6 and canonicalises them:
// masked, deduplicated and sorted, so equal configs yield equal batches. IPv4-mapped
// IPv6 prefixes (::ffff:a.b.c.d/n) stay IPv6: that is what the kernel sees in an
// IPv6 header.
func splitFamilies(prefixes []netip.Prefix) (v4, v6 []netip.Prefix, err error) {
	for _, p := range prefixes {
		if !p.IsValid() {
			return nil, nil, fmt.Errorf("invalid prefix %q", p)
		}
		p = p.Masked()
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	byAddr := func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	}
	slices.SortFunc(v4, byAddr)
	slices.SortFunc(v6, byAddr)
	return slices.Compact(v4), slices.Compact(v6), nil
}
