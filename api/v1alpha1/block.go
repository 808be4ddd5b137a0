package v1alpha1

import (
	"fmt"
	"net/netip"
	"strings"
)

// maxBlockCapacityShift caps BlockCapacity at 2^30 addresses so that it fits the int32
// of IPAMBlockStatus.Capacity even for a prefix no pool would hand out (the schema
// allows blocks of /20 to /32 and /116 to /128, at most 4096 addresses).
const maxBlockCapacityShift = 30

// BlockCapacity is the number of addresses in a block, the value of
// IPAMBlockStatus.Capacity: the agent publishes it and the controller measures the
// watermark against it, so both must count alike.
func BlockCapacity(block netip.Prefix) int32 {
	shift := block.Addr().BitLen() - block.Bits()
	if shift > maxBlockCapacityShift {
		shift = maxBlockCapacityShift
	}
	return 1 << shift
}

// ParseReserved reads an IPReservation entry: a prefix (masked), or an address as a host
// prefix.
func ParseReserved(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("reserved CIDR %q: %w", s, err)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("reserved address %q: %w", s, err)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ServesEveryNamespace reports whether a pool serves pods of every namespace: its
// namespaceSelector is absent or empty ({}).
func ServesEveryNamespace(p *IPPool) bool {
	s := p.Spec.NamespaceSelector
	return s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0)
}

// BlockName is the IPAMBlock name for a block prefix: 10.244.3.64/26 → 10-244-3-64-26.
func BlockName(p netip.Prefix) string {
	s := strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(p.String())
	if strings.HasPrefix(s, "-") {
		s = "0" + s
	}
	return s
}

// EffectiveBlockSize is a pool's block size: its spec's, else 26 for IPv4 and 122 for
// IPv6 (the controller's defaults, which it also reports in status.blockSize).
func EffectiveBlockSize(p *IPPool, family6 bool) int {
	switch {
	case p.Spec.BlockSize != nil:
		return int(*p.Spec.BlockSize)
	case family6:
		return 122
	}
	return 26
}

// Prefixes are the reservation's entries as prefixes, and the entries that are neither a
// prefix nor an address (the schema refuses those; they are reported, never used).
func (r *IPReservation) Prefixes() (prefixes []netip.Prefix, bad []string) {
	for _, c := range r.Spec.ReservedCIDRs {
		if p, err := ParseReserved(c); err == nil {
			prefixes = append(prefixes, p)
		} else {
			bad = append(bad, c)
		}
	}
	return prefixes, bad
}

// OlderPool orders pools oldest first (creation time, then name). Of two overlapping pools
// the older one is used and holds the addresses they share, for the controller and the
// agent alike.
func OlderPool(a, b *IPPool) bool {
	ta, tb := a.CreationTimestamp, b.CreationTimestamp
	if !ta.Equal(&tb) {
		return ta.Before(&tb)
	}
	return a.Name < b.Name
}
