package controller

import (
	"fmt"
	"math"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// assignment is one block to create for a node.
type assignment struct {
	pool   *poolInfo
	prefix netip.Prefix
	reason string
}

// shortage is an address family for which a node needs a block and gets none: none is
// free, or the node already has the most blocks of the family it may have (capped > 0).
type shortage struct {
	family int
	pools  []string
	capped int
}

func (s shortage) String() string {
	if s.capped > 0 {
		return fmt.Sprintf("node already has %d IPv%d blocks, the most it may have (--max-blocks-per-node); its blocks are at the watermark: delete pods or raise the cap",
			s.capped, s.family)
	}
	return fmt.Sprintf("no free IPv%d block in IPPool %s", s.family, strings.Join(s.pools, ", "))
}

// nodePlan is what the controller must do for one existing node.
type nodePlan struct {
	assign []assignment
	short  []shortage
}

// planNode decides which blocks a node needs: one per address family that some usable
// pool selecting the node offers, and one more when every block it has of that family is
// at or above the high watermark (a fraction of the block's addresses in use).
// blocks must hold every block in the cluster (for the free-block search). A node never
// gets more than maxPerNode blocks of one family (counting every block it holds of it):
// one runaway node must not drain a pool other nodes need.
func planNode(node *corev1.Node, pools []*poolInfo, blocks []*v1alpha1.IPAMBlock, watermark float64, maxPerNode int) nodePlan {
	var used []netip.Prefix
	mine := map[int][]*v1alpha1.IPAMBlock{}
	for _, b := range blocks {
		p, err := netip.ParsePrefix(b.Spec.CIDR)
		if err != nil {
			continue
		}
		used = append(used, p)
		if b.Spec.Node == node.Name {
			mine[family(p)] = append(mine[family(p)], b)
		}
	}
	var plan nodePlan
	for _, fam := range []int{4, 6} {
		cands := candidatePools(node, pools, fam)
		if len(cands) == 0 {
			continue
		}
		inCands := map[string]bool{}
		for _, c := range cands {
			inCands[c.pool.Name] = true
		}
		have, full := 0, 0
		for _, b := range mine[fam] {
			if !inCands[b.Spec.Pool] {
				continue // a block of a disabled or deselected pool: kept, but not counted
			}
			have++
			if atWatermark(b, watermark) {
				full++
			}
		}
		if have > 0 && full < have {
			continue
		}
		if maxPerNode > 0 && len(mine[fam]) >= maxPerNode {
			s := shortage{family: fam, capped: len(mine[fam])}
			for _, c := range cands {
				s.pools = append(s.pools, c.pool.Name)
			}
			plan.short = append(plan.short, s)
			continue
		}
		reason := "node has no block"
		if have > 0 {
			reason = fmt.Sprintf("all %d block(s) at or above the %.0f%% watermark", have, watermark*100)
		}
		a, ok := pickBlock(cands, used)
		if !ok {
			s := shortage{family: fam}
			for _, c := range cands {
				s.pools = append(s.pools, c.pool.Name)
			}
			plan.short = append(plan.short, s)
			continue
		}
		a.reason = reason
		plan.assign = append(plan.assign, a)
		used = append(used, a.prefix)
	}
	return plan
}

// candidatePools are the usable pools of one family whose nodeSelector matches the node.
func candidatePools(node *corev1.Node, pools []*poolInfo, fam int) []*poolInfo {
	var out []*poolInfo
	for _, p := range pools {
		if p.unusable != "" || family(p.prefix) != fam {
			continue
		}
		if !p.selector.Matches(labels.Set(node.Labels)) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func pickBlock(cands []*poolInfo, used []netip.Prefix) (assignment, bool) {
	for _, c := range cands {
		if blk, ok := nextFreeBlock(c, used); ok {
			return assignment{pool: c, prefix: blk}, true
		}
	}
	return assignment{}, false
}

// atWatermark reports whether a block's allocations reached the watermark.
func atWatermark(b *v1alpha1.IPAMBlock, watermark float64) bool {
	p, err := netip.ParsePrefix(b.Spec.CIDR)
	if err != nil {
		return false
	}
	capacity := v1alpha1.BlockCapacity(p)
	threshold := int(math.Ceil(watermark * float64(capacity)))
	if threshold < 1 {
		threshold = 1
	}
	return len(b.Status.Allocations) >= threshold
}

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 4
	}
	return 6
}

// newBlock builds the IPAMBlock object for an assignment.
func newBlock(a assignment, node string) *v1alpha1.IPAMBlock {
	b := &v1alpha1.IPAMBlock{
		Spec: v1alpha1.IPAMBlockSpec{CIDR: a.prefix.String(), Pool: a.pool.pool.Name, Node: node},
	}
	b.Name = BlockName(a.prefix)
	return b
}
