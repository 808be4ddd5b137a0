package routing

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// BlockOwner is an assigned block and the BGP identity of the node it is assigned to.
type BlockOwner struct {
	Block netip.Prefix // masked
	Node  NodeBGP
}

// NextHop is the owner's address a path for the block must carry as next hop: its
// address of the block's family, its IPv4 one when it has no IPv6 address (an IPv6
// block over an IPv4 session).
func (o BlockOwner) NextHop() netip.Addr {
	if o.Block.Addr().Is6() && o.Node.Address6.IsValid() {
		return o.Node.Address6
	}
	return o.Node.Address
}

// BlockOwnersOf pairs every IPAMBlock that names a node with that node's identity
// (NodeBGPOf: its address and AS, the AS-per-rack annotation included), sorted by
// prefix. Blocks with no node, an unparsable CIDR, or a node that is missing or cannot
// run BGP are left out. Blocks being deleted are kept: their pods may still be in use,
// callers that must not route them filter first.
func BlockOwnersOf(nodes []*corev1.Node, cfg *v1alpha1.BGPConfiguration, blocks []*v1alpha1.IPAMBlock) []BlockOwner {
	byName := map[string]NodeBGP{}
	for _, n := range nodes {
		if nb, err := NodeBGPOf(n, cfg); err == nil {
			byName[nb.Name] = nb
		}
	}
	var out []BlockOwner
	for _, b := range blocks {
		if b == nil || b.Spec.Node == "" {
			continue
		}
		p, err := netip.ParsePrefix(b.Spec.CIDR)
		nb, ok := byName[b.Spec.Node]
		if err != nil || !ok {
			continue
		}
		out = append(out, BlockOwner{Block: p.Masked(), Node: nb})
	}
	slices.SortFunc(out, func(a, b BlockOwner) int { return a.Block.Compare(b.Block) })
	return out
}

// OwnerMaps returns Policy.BlockOwners (block → owner's next hop) and
// Policy.BlockOwnerAS (block → owner's AS) for owners.
func OwnerMaps(owners []BlockOwner) (map[netip.Prefix]netip.Addr, map[netip.Prefix]uint32) {
	addrs := make(map[netip.Prefix]netip.Addr, len(owners))
	ases := make(map[netip.Prefix]uint32, len(owners))
	for _, o := range owners {
		addrs[o.Block], ases[o.Block] = o.NextHop(), o.Node.AS
	}
	return addrs, ases
}
