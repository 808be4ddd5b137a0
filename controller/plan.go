package controller

import (
	"fmt"
	"math"
	"net/netip"
	"sort"
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

// nodeNeeds is what else decides a node's blocks besides its pools and labels.
type nodeNeeds struct {
	// pools its agent reports its pods need (NodeNetworkStatus.status.poolsNeeded).
	pools []string
	// addrs are fixed addresses of its pods outside its blocks (status.addressesNeeded).
	addrs []string
	// reserved prefixes (IPReservations): counted as in use, and a block that one
	// reservation covers whole is never assigned (one that several cover together is,
	// and counts as full at once).
	reserved []netip.Prefix
}

// supply is a set of pools of which a node must hold a block with room: the pools of a
// family that serve every namespace (need == ""), or one pool its pods need.
type supply struct {
	cands []*poolInfo
	need  string
}

// planNode decides which blocks a node needs, per address family: one from the pools
// without a namespaceSelector that select the node, and one from each pool its pods need;
// in both cases one more when every block it has of them is at or above the high
// watermark (a fraction of the block's addresses in use or reserved). Draining blocks do
// not count as room. blocks must hold every block in the cluster (for the free-block
// search). A node never gets more than maxPerNode blocks of one family (counting every
// block it holds of it), so one runaway node cannot drain a pool other nodes need — except
// the first block of a pool its pods need, which it always gets (so many pools make as
// many blocks).
func planNode(node *corev1.Node, pools []*poolInfo, blocks []*v1alpha1.IPAMBlock, watermark float64, maxPerNode int, needs nodeNeeds) nodePlan {
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
		for _, sup := range supplies(node, pools, fam, needs.pools) {
			inCands := map[string]bool{}
			for _, c := range sup.cands {
				inCands[c.pool.Name] = true
			}
			have, full := 0, 0
			for _, b := range mine[fam] {
				if !inCands[b.Spec.Pool] || b.Spec.Draining {
					continue // a block of another, disabled or deselected pool, or going back
				}
				have++
				if atWatermark(b, watermark, needs.reserved) {
					full++
				}
			}
			if have > 0 && full < have {
				continue
			}
			firstOfNeed := sup.need != "" && have == 0
			if maxPerNode > 0 && len(mine[fam]) >= maxPerNode && !firstOfNeed {
				s := shortage{family: fam, capped: len(mine[fam])}
				for _, c := range sup.cands {
					s.pools = append(s.pools, c.pool.Name)
				}
				plan.short = append(plan.short, s)
				continue
			}
			reason := "node has no block"
			if sup.need != "" {
				reason = fmt.Sprintf("the node's pods need IPPool %s and the node has no block of it", sup.need)
			}
			if have > 0 {
				reason = fmt.Sprintf("all %d block(s) at or above the %.0f%% watermark", have, watermark*100)
			}
			a, ok := pickBlock(sup.cands, used, needs.reserved)
			if !ok {
				s := shortage{family: fam}
				for _, c := range sup.cands {
					s.pools = append(s.pools, c.pool.Name)
				}
				plan.short = append(plan.short, s)
				continue
			}
			a.reason = reason
			plan.assign = append(plan.assign, a)
			used = append(used, a.prefix)
			mine[fam] = append(mine[fam], newBlock(a, node.Name)) // later supplies see it
		}
	}
	plan.assign = append(plan.assign, fixedAssignments(node, pools, used, needs)...)
	plan.short = dedupeShortages(plan.short)
	return plan
}

// fixedAssignments gives a node the block of each fixed address its pods need, from the
// enabled pool holding the address (its nodeSelector need not select the node), when no
// node holds that block yet and no reservation covers it whole. Not capped: a pod waits
// for it. An address whose block is taken gets nothing here; the agent refuses that ADD.
func fixedAssignments(node *corev1.Node, pools []*poolInfo, used []netip.Prefix, needs nodeNeeds) []assignment {
	var out []assignment
	for _, s := range needs.addrs {
		addr, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		for _, p := range pools {
			if p.unusable != "" || !p.prefix.Contains(addr) {
				continue
			}
			blk := netip.PrefixFrom(addr, p.blockSize).Masked()
			free := true
			for _, u := range used {
				if u.Overlaps(blk) {
					free = false
					break
				}
			}
			for _, r := range needs.reserved {
				if r.Bits() <= blk.Bits() && r.Overlaps(blk) {
					free = false
				}
			}
			if free {
				out = append(out, assignment{pool: p, prefix: blk, reason: fmt.Sprintf("fixed address %s of a pod on the node", addr)})
				used = append(used, blk)
			}
			break
		}
	}
	return out
}

// dedupeShortages drops repeats (a needed pool that also serves every namespace is in two
// supplies), so one shortage makes one Event.
func dedupeShortages(ss []shortage) []shortage {
	seen := map[string]bool{}
	out := ss[:0]
	for _, s := range ss {
		k := s.String()
		if !seen[k] {
			seen[k] = true
			out = append(out, s)
		}
	}
	return out
}

// supplies are the pool sets of one family a node must hold a block of: the pools serving
// every namespace that select it, then each needed pool of the family that is usable and
// selects it (in name order).
func supplies(node *corev1.Node, pools []*poolInfo, fam int, needed []string) []supply {
	var out []supply
	if general := generalPools(node, pools, fam); len(general) > 0 {
		out = append(out, supply{cands: general})
	}
	want := map[string]bool{}
	for _, n := range needed {
		want[n] = true
	}
	for _, c := range candidatePools(node, pools, fam) {
		if want[c.pool.Name] {
			out = append(out, supply{cands: []*poolInfo{c}, need: c.pool.Name})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].need < out[j].need })
	return out
}

// generalPools are the candidate pools of one family that serve every namespace: those a
// node always keeps a block of.
func generalPools(node *corev1.Node, pools []*poolInfo, fam int) []*poolInfo {
	var out []*poolInfo
	for _, c := range candidatePools(node, pools, fam) {
		if v1alpha1.ServesEveryNamespace(c.pool) {
			out = append(out, c)
		}
	}
	return out
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

// pickBlock finds the first free block of the first candidate pool that has one; a block
// that a reservation covers whole is not free.
func pickBlock(cands []*poolInfo, used, reserved []netip.Prefix) (assignment, bool) {
	for _, c := range cands {
		taken := used
		for _, r := range reserved {
			if r.Bits() <= c.blockSize && r.Overlaps(c.prefix) {
				taken = append(taken[:len(taken):len(taken)], r)
			}
		}
		if blk, ok := nextFreeBlock(c, taken); ok {
			return assignment{pool: c, prefix: blk}, true
		}
	}
	return assignment{}, false
}

// atWatermark reports whether a block's allocations, with its reserved addresses, reached
// the watermark.
func atWatermark(b *v1alpha1.IPAMBlock, watermark float64, reserved []netip.Prefix) bool {
	p, err := netip.ParsePrefix(b.Spec.CIDR)
	if err != nil {
		return false
	}
	capacity := v1alpha1.BlockCapacity(p)
	threshold := int(math.Ceil(watermark * float64(capacity)))
	if threshold < 1 {
		threshold = 1
	}
	return len(b.Status.Allocations)+reservedIn(p, reserved) >= threshold
}

// reservedIn counts the reserved addresses of a block (capped at its capacity); nested or
// repeated reservations count once (two prefixes either nest or do not overlap).
func reservedIn(block netip.Prefix, reserved []netip.Prefix) int {
	capacity := int(v1alpha1.BlockCapacity(block))
	var inside []netip.Prefix
	for _, r := range reserved {
		if !r.Overlaps(block) || r.Addr().BitLen() != block.Addr().BitLen() {
			continue
		}
		if r.Bits() <= block.Bits() {
			return capacity
		}
		inside = append(inside, r.Masked())
	}
	n := 0
	for i, r := range inside {
		counted := false
		for j, o := range inside {
			if j != i && o.Bits() <= r.Bits() && o.Contains(r.Addr()) && (o.Bits() < r.Bits() || j < i) {
				counted = true // inside a larger one, or a repeat of an earlier one
				break
			}
		}
		if counted {
			continue
		}
		shift := r.Addr().BitLen() - r.Bits()
		if shift >= 30 {
			return capacity
		}
		n += 1 << shift
	}
	return min(n, capacity)
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
