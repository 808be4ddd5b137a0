package controller

import (
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// fxMsg is the reason of an assignment for a fixed address.
func fxMsg(addr string) string {
	return "fixed address " + addr + " of a pod on the node"
}

// fxAssigned formats a plan's assignments as "prefix from pool: reason".
func fxAssigned(plan nodePlan) []string {
	var out []string
	for _, a := range plan.assign {
		out = append(out, fmt.Sprintf("%s from %s: %s", a.prefix, a.pool.pool.Name, a.reason))
	}
	return out
}

// fxShort formats a plan's shortages.
func fxShort(plan nodePlan) []string {
	var out []string
	for _, s := range plan.short {
		out = append(out, s.String())
	}
	return out
}

// TestPlanNodeFixed: the blocks planNode assigns a node for the fixed addresses its pods
// need (status.addressesNeeded).
func TestPlanNodeFixed(t *testing.T) {
	gen := pool("gen", "10.1.0.0/24", 26, time.Hour)
	// fix selects no node: a pool for fixed addresses only.
	fix := pool("fix", "10.20.0.0/24", 28, time.Hour)
	fix.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"never": "selected"}}
	fix6 := pool("fix6", "fd20::/120", 124, time.Hour)
	fix6.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"never": "selected"}}
	team := nsPool("team", "10.5.0.0/24", 26, "a")
	off := pool("off", "10.7.0.0/24", 26, time.Hour)
	off.Spec.Disabled = true
	// older and newer overlap: the newer is unusable, the older serves both.
	older := pool("older", "10.30.0.0/16", 26, 2*time.Hour)
	older.Spec.NodeSelector = fix.Spec.NodeSelector
	newer := pool("newer", "10.30.1.0/24", 28, time.Hour)
	badBS := pool("badbs", "10.40.0.0/24", 19, time.Hour)
	std := []*v1alpha1.IPPool{gen, fix, fix6, team, off, older, newer, badBS}

	n1 := needNode("n1", nil)
	// hasGen is a general block with room, so planNode assigns nothing for the pools.
	hasGen := func(more ...*v1alpha1.IPAMBlock) []*v1alpha1.IPAMBlock {
		return append([]*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1)}, more...)
	}
	for _, tc := range []struct {
		name      string
		pools     []*v1alpha1.IPPool
		blocks    []*v1alpha1.IPAMBlock
		addrs     []string
		need      []string
		reserved  []string
		max       int
		want      []string // "prefix from pool: reason"
		wantShort []string
	}{
		{name: "the block of the pool's blockSize holding the address", blocks: hasGen(), addrs: []string{"10.20.0.5"},
			want: []string{"10.20.0.0/28 from fix: " + fxMsg("10.20.0.5")}},
		{name: "not the pool's first block", blocks: hasGen(), addrs: []string{"10.20.0.17"},
			want: []string{"10.20.0.16/28 from fix: " + fxMsg("10.20.0.17")}},
		{name: "the block's first and last address", blocks: hasGen(), addrs: []string{"10.20.0.32", "10.20.0.79"},
			want: []string{"10.20.0.32/28 from fix: " + fxMsg("10.20.0.32"), "10.20.0.64/28 from fix: " + fxMsg("10.20.0.79")}},
		{name: "the pool's last block", blocks: hasGen(), addrs: []string{"10.20.0.255"},
			want: []string{"10.20.0.240/28 from fix: " + fxMsg("10.20.0.255")}},
		{name: "IPv6", blocks: hasGen(), addrs: []string{"fd20::25"},
			want: []string{"fd20::20/124 from fix6: " + fxMsg("fd20::25")}},
		{name: "two addresses in one block: one assignment", blocks: hasGen(), addrs: []string{"10.20.0.5", "10.20.0.9"},
			want: []string{"10.20.0.0/28 from fix: " + fxMsg("10.20.0.5")}},
		{name: "two addresses in two blocks, in the order asked", blocks: hasGen(), addrs: []string{"10.20.0.50", "10.20.0.5", "fd20::1"},
			want: []string{"10.20.0.48/28 from fix: " + fxMsg("10.20.0.50"), "10.20.0.0/28 from fix: " + fxMsg("10.20.0.5"), "fd20::/124 from fix6: " + fxMsg("fd20::1")}},
		{name: "a pool serving only some namespaces, not needed", blocks: hasGen(), addrs: []string{"10.5.0.70"},
			want: []string{"10.5.0.64/26 from team: " + fxMsg("10.5.0.70")}},
		{name: "another block of a general pool the node has room in", blocks: hasGen(), addrs: []string{"10.1.0.70"},
			want: []string{"10.1.0.64/26 from gen: " + fxMsg("10.1.0.70")}},
		{name: "the overlapping older pool, with its blockSize", blocks: hasGen(), addrs: []string{"10.30.1.5"},
			want: []string{"10.30.1.0/26 from older: " + fxMsg("10.30.1.5")}},
		{name: "another node's block of the general pool is no reason", blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n2", 1), block("10.1.0.64/26", "gen", "n1", 1)},
			addrs: []string{"10.20.0.5"},
			want:  []string{"10.20.0.0/28 from fix: " + fxMsg("10.20.0.5")}},

		// Nothing for the address.
		{name: "the node holds the block", blocks: hasGen(block("10.20.0.0/28", "fix", "n1", 0)), addrs: []string{"10.20.0.5"}},
		{name: "the node holds the block, draining", blocks: hasGen(draining(block("10.20.0.0/28", "fix", "n1", 0))), addrs: []string{"10.20.0.5"}},
		{name: "another node holds the block", blocks: hasGen(block("10.20.0.0/28", "fix", "n2", 3)), addrs: []string{"10.20.0.5"}},
		{name: "another node holds a larger block around it", blocks: hasGen(block("10.20.0.0/26", "fix", "n2", 0)), addrs: []string{"10.20.0.5"}},
		{name: "another node holds a smaller block inside it", blocks: hasGen(block("10.20.0.8/29", "fix", "n2", 0)), addrs: []string{"10.20.0.5"}},
		{name: "a reservation covers the block whole", blocks: hasGen(), addrs: []string{"10.20.0.5"}, reserved: []string{"10.20.0.0/28"}},
		{name: "a reservation covers the pool", blocks: hasGen(), addrs: []string{"10.20.0.5"}, reserved: []string{"10.20.0.0/24"}},
		{name: "a disabled pool", blocks: hasGen(), addrs: []string{"10.7.0.5"}},
		{name: "an invalid pool", blocks: hasGen(), addrs: []string{"10.40.0.5"}},
		{name: "no pool holds it", blocks: hasGen(), addrs: []string{"192.168.0.1", "fd99::1"}},
		{name: "not an address", blocks: hasGen(), addrs: []string{"nope", "10.20.0.5/32", ""}},
		{name: "an address with a zone", blocks: hasGen(), addrs: []string{"fd20::5%eth0"}},
		{name: "no pools", pools: []*v1alpha1.IPPool{}, addrs: []string{"10.20.0.5"}},

		// Reservations that do not cover the block whole.
		{name: "a reservation of part of the block", blocks: hasGen(), addrs: []string{"10.20.0.5"}, reserved: []string{"10.20.0.0/30"},
			want: []string{"10.20.0.0/28 from fix: " + fxMsg("10.20.0.5")}},
		{name: "a reservation of the address itself", blocks: hasGen(), addrs: []string{"10.20.0.5"}, reserved: []string{"10.20.0.5"},
			want: []string{"10.20.0.0/28 from fix: " + fxMsg("10.20.0.5")}},
		{name: "a reservation of the neighbouring block", blocks: hasGen(), addrs: []string{"10.20.0.5"}, reserved: []string{"10.20.0.16/28"},
			want: []string{"10.20.0.0/28 from fix: " + fxMsg("10.20.0.5")}},
		{name: "a reservation of the other family", blocks: hasGen(), addrs: []string{"10.20.0.5"}, reserved: []string{"::/0"},
			want: []string{"10.20.0.0/28 from fix: " + fxMsg("10.20.0.5")}},

		// Beside the pools' blocks.
		{name: "a new node gets its general block, then the address's",
			addrs: []string{"10.20.0.5"},
			want:  []string{"10.1.0.0/26 from gen: node has no block", "10.20.0.0/28 from fix: " + fxMsg("10.20.0.5")}},
		{name: "the general block picked holds the address: assigned once",
			addrs: []string{"10.1.0.5"},
			want:  []string{"10.1.0.0/26 from gen: node has no block"}},
		{name: "the general block picked is not the address's",
			addrs: []string{"10.1.0.70"},
			want:  []string{"10.1.0.0/26 from gen: node has no block", "10.1.0.64/26 from gen: " + fxMsg("10.1.0.70")}},
		{name: "a needed pool's block holds the address: assigned once", blocks: hasGen(),
			need: []string{"team"}, addrs: []string{"10.5.0.5"},
			want: []string{"10.5.0.0/26 from team: the node's pods need IPPool team and the node has no block of it"}},
		{name: "a needed pool's block besides the address's", blocks: hasGen(),
			need: []string{"team"}, addrs: []string{"10.5.0.70"},
			want: []string{"10.5.0.0/26 from team: the node's pods need IPPool team and the node has no block of it", "10.5.0.64/26 from team: " + fxMsg("10.5.0.70")}},
		{name: "a general block at the watermark: the new one holds the address",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 64)}, addrs: []string{"10.1.0.70"},
			want: []string{"10.1.0.64/26 from gen: " + fullMsg(1)}},

		// Not capped.
		{name: "the node at the cap still gets it", blocks: hasGen(), max: 1, addrs: []string{"10.20.0.5", "10.20.0.20"},
			want: []string{"10.20.0.0/28 from fix: " + fxMsg("10.20.0.5"), "10.20.0.16/28 from fix: " + fxMsg("10.20.0.20")}},
		{name: "the node at the cap and at the watermark: a shortage, and the address's block",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 64)}, max: 1, addrs: []string{"10.20.0.5"},
			want:      []string{"10.20.0.0/28 from fix: " + fxMsg("10.20.0.5")},
			wantShort: []string{capMsg(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pools := tc.pools
			if pools == nil {
				pools = std
			}
			needs := nodeNeeds{pools: tc.need, addrs: tc.addrs, reserved: needPrefixes(t, tc.reserved...)}
			plan := planNode(n1, analysePools(pools), tc.blocks, 0.9, tc.max, needs)
			if got := fxAssigned(plan); !slices.Equal(got, tc.want) {
				t.Errorf("assigned\n  %q\nwant\n  %q", got, tc.want)
			}
			if got := fxShort(plan); !slices.Equal(got, tc.wantShort) {
				t.Errorf("shortages\n  %q\nwant\n  %q", got, tc.wantShort)
			}
			for _, a := range plan.assign {
				if a.prefix.Masked() != a.prefix || a.prefix.Bits() != a.pool.blockSize || !a.pool.prefix.Contains(a.prefix.Addr()) {
					t.Errorf("assignment %s is not a block of IPPool %s (%s, blockSize %d)", a.prefix, a.pool.pool.Name, a.pool.prefix, a.pool.blockSize)
				}
			}
		})
	}
}

// TestPlanNodeFixedSettles: once the node holds the block of its fixed address, the next
// plan assigns it nothing more, and no other node gets the block.
func TestPlanNodeFixedSettles(t *testing.T) {
	fix := pool("fix", "10.20.0.0/24", 28, time.Hour)
	fix.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"never": "selected"}}
	pools := analysePools([]*v1alpha1.IPPool{pool("gen", "10.1.0.0/24", 26, time.Hour), fix})
	needs := nodeNeeds{addrs: []string{"10.20.0.5"}}
	var blocks []*v1alpha1.IPAMBlock
	for round := 0; round < 3; round++ {
		plan := planNode(needNode("n1", nil), pools, blocks, 0.9, 0, needs)
		if round > 0 && len(plan.assign) != 0 {
			t.Fatalf("round %d: assigned %q again", round, fxAssigned(plan))
		}
		for _, a := range plan.assign {
			blocks = append(blocks, newBlock(a, "n1"))
		}
	}
	want := []string{"10.1.0.0/26 gen n1", "10.20.0.0/28 fix n1"}
	var got []string
	for _, b := range blocks {
		got = append(got, b.Spec.CIDR+" "+b.Spec.Pool+" "+b.Spec.Node)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("blocks %q, want %q", got, want)
	}
	// A second node whose pod asks for the same address gets only its general block.
	plan := planNode(needNode("n2", nil), pools, blocks, 0.9, 0, needs)
	if got, want := fxAssigned(plan), []string{"10.1.0.64/26 from gen: node has no block"}; !slices.Equal(got, want) {
		t.Fatalf("n2 assigned %q, want %q", got, want)
	}
}

// TestPlanHygieneFixed: an empty block that holds a fixed address a pod of the node waits
// for stays, and is unmarked if it was on its way back.
func TestPlanHygieneFixed(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	const grace = 10 * time.Minute
	ago := func(d time.Duration) time.Time { return now.Add(-d) }

	gen := pool("gen", "10.1.0.0/24", 26, time.Hour)
	gen6 := pool("gen6", "fd00::/120", 122, time.Hour)
	fix := pool("fix", "10.20.0.0/24", 28, time.Hour)
	fix.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"never": "selected"}}
	off := pool("off", "10.9.0.0/24", 26, time.Hour)
	off.Spec.Disabled = true
	std := []*v1alpha1.IPPool{gen, gen6, fix, off}

	for _, tc := range []struct {
		name     string
		blocks   []*v1alpha1.IPAMBlock
		addrs    []string
		grace    time.Duration // 0: the default grace; negative: off
		want     []string      // "cidr step", highest address first
		wantWait time.Duration
	}{
		{name: "an empty block of a pool selecting no node, holding the address, stays",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.20.0.0/28", "fix", "n1", 0)},
			addrs:  []string{"10.20.0.5"}},
		{name: "without the address it goes back",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.20.0.0/28", "fix", "n1", 0)},
			want:   []string{"10.20.0.0/28 mark"}, wantWait: grace},
		{name: "an address in another block does not keep it",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.20.0.0/28", "fix", "n1", 0)},
			addrs:  []string{"10.20.0.16", "10.1.0.5", "fd00::5"},
			want:   []string{"10.20.0.0/28 mark"}, wantWait: grace},
		{name: "an unreadable address does not keep it",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.20.0.0/28", "fix", "n1", 0)},
			addrs:  []string{"10.20.0.5/28", "ten"},
			want:   []string{"10.20.0.0/28 mark"}, wantWait: grace},
		{name: "marked: unmarked",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyMarked(block("10.20.0.0/28", "fix", "n1", 0), ago(time.Minute))},
			addrs:  []string{"10.20.0.15"},
			want:   []string{"10.20.0.0/28 unmark"}},
		{name: "draining: unmarked",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), draining(hyMarked(block("10.20.0.0/28", "fix", "n1", 0), ago(time.Hour)))},
			addrs:  []string{"10.20.0.0"},
			want:   []string{"10.20.0.0/28 unmark"}},
		{name: "drained: unmarked, not released",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyDrained(hyMarked(block("10.20.0.0/28", "fix", "n1", 0), ago(time.Hour)))},
			addrs:  []string{"10.20.0.5"},
			want:   []string{"10.20.0.0/28 unmark"}},
		{name: "draining without a mark: unmarked",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), draining(block("10.20.0.0/28", "fix", "n1", 0))},
			addrs:  []string{"10.20.0.5"},
			want:   []string{"10.20.0.0/28 unmark"}},
		{name: "grace off: unmarked all the same", grace: -1,
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyDrained(hyMarked(block("10.20.0.0/28", "fix", "n1", 0), ago(time.Hour)))},
			addrs:  []string{"10.20.0.5"},
			want:   []string{"10.20.0.0/28 unmark"}},
		{name: "an extra general block holding the address stays",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), draining(block("10.1.0.64/26", "gen", "n1", 0))},
			addrs:  []string{"10.1.0.127"},
			want:   []string{"10.1.0.64/26 unmark"}},
		{name: "a disabled pool's block holding the address stays",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyMarked(block("10.9.0.0/26", "off", "n1", 0), ago(time.Hour))},
			addrs:  []string{"10.9.0.1"},
			want:   []string{"10.9.0.0/26 unmark"}},
		{name: "IPv6",
			blocks: []*v1alpha1.IPAMBlock{block("fd00::/122", "gen6", "n1", 1), draining(block("fd00::40/122", "gen6", "n1", 0))},
			addrs:  []string{"fd00::7f"},
			want:   []string{"fd00::40/122 unmark"}},
		{name: "only the block holding the address stays; another empty one goes",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.1.0.64/26", "gen", "n1", 0), block("10.1.0.128/26", "gen", "n1", 0)},
			addrs:  []string{"10.1.0.130"},
			want:   []string{"10.1.0.64/26 mark"}, wantWait: grace},
		{name: "the block kept for an address stands in for an empty general one",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 0), block("10.20.0.0/28", "fix", "n1", 0), block("10.1.0.64/26", "gen", "n1", 0)},
			addrs:  []string{"10.20.0.5"},
			want:   []string{"10.1.0.64/26 mark"}, wantWait: grace},
		{name: "another node's block holding the address is not this node's business",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyMarked(block("10.20.0.0/28", "fix", "n2", 0), ago(time.Hour))},
			addrs:  []string{"10.20.0.5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := grace
			if tc.grace != 0 {
				g = tc.grace
			}
			pools := analysePools(std)
			node := needNode("n1", nil)
			needs := nodeNeeds{addrs: tc.addrs}
			actions, wait := planHygiene(node, pools, tc.blocks, needs, 0.9, now, g)
			var got []string
			for _, a := range actions {
				got = append(got, fmt.Sprintf("%s %s", a.block.Spec.CIDR, hyStepName(a.step)))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("actions\n  %q\nwant\n  %q", got, tc.want)
			}
			if wait != tc.wantWait {
				t.Errorf("wait = %s, want %s", wait, tc.wantWait)
			}
			checkHygieneAgreesWithPlan(t, node, pools, tc.blocks, needs, actions, g)
		})
	}
}

func TestHygieneHoldsAny(t *testing.T) {
	b := func(cidr string) *v1alpha1.IPAMBlock {
		return &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: cidr}}
	}
	for _, tc := range []struct {
		block string
		addrs []string
		want  bool
	}{
		{"10.0.0.0/28", nil, false},
		{"10.0.0.0/28", []string{"10.0.0.0"}, true},
		{"10.0.0.0/28", []string{"10.0.0.15"}, true},
		{"10.0.0.0/28", []string{"10.0.0.16"}, false},
		{"10.0.0.0/28", []string{"9.255.255.255"}, false},
		{"10.0.0.0/28", []string{"10.0.1.1", "bad", "10.0.0.3"}, true},
		{"10.0.0.0/28", []string{"::ffff:10.0.0.3"}, false},
		{"10.0.0.0/28", []string{"10.0.0.3/32"}, false},
		{"fd00::/124", []string{"fd00::f"}, true},
		{"fd00::/124", []string{"fd00::10", "10.0.0.1"}, false},
		{"not-a-cidr", []string{"10.0.0.1"}, false},
	} {
		if got := holdsAny(b(tc.block), tc.addrs); got != tc.want {
			t.Errorf("holdsAny(%s, %q) = %v, want %v", tc.block, tc.addrs, got, tc.want)
		}
	}
}
