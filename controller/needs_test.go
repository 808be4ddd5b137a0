package controller

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// needNode is a node with labels.
func needNode(name string, lbls map[string]string) *corev1.Node {
	n := &corev1.Node{}
	n.Name, n.Labels = name, lbls
	return n
}

// nsPool is a pool that serves only the namespaces labelled team=<team>.
func nsPool(name, cidr string, bs int32, team string) *v1alpha1.IPPool {
	p := pool(name, cidr, bs, time.Hour)
	p.Spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": team}}
	return p
}

// needPrefixes parses prefixes and addresses the way IPReservation entries are read.
func needPrefixes(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range ss {
		p, err := v1alpha1.ParseReserved(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func draining(b *v1alpha1.IPAMBlock) *v1alpha1.IPAMBlock {
	b.Spec.Draining = true
	return b
}

func needMsg(p string) string {
	return "the node's pods need IPPool " + p + " and the node has no block of it"
}

func fullMsg(n int) string {
	return fmt.Sprintf("all %d block(s) at or above the 90%% watermark", n)
}

func capMsg(n int) string {
	return fmt.Sprintf("node already has %d IPv4 blocks, the most it may have (--max-blocks-per-node); its blocks are at the watermark: delete pods or raise the cap", n)
}

// TestPlanNodeNeeds: the pools a node's pods need, reservations, draining blocks and the
// per-node cap as planNode weighs them.
func TestPlanNodeNeeds(t *testing.T) {
	gen := pool("gen", "10.1.0.0/24", 26, time.Hour)
	team := nsPool("team", "10.5.0.0/24", 26, "a")
	teamB := nsPool("team-b", "10.8.0.0/24", 26, "b")
	team6 := nsPool("team6", "fd05::/120", 122, "a")
	teamRack := nsPool("team-rack", "10.6.0.0/24", 26, "a")
	teamRack.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "a"}}
	teamOff := nsPool("team-off", "10.7.0.0/24", 26, "a")
	teamOff.Spec.Disabled = true
	open := pool("open", "10.9.0.0/24", 26, time.Minute)
	open.Spec.NamespaceSelector = &metav1.LabelSelector{}
	expr := pool("expr", "10.10.0.0/24", 26, time.Minute)
	expr.Spec.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "team", Operator: metav1.LabelSelectorOpExists},
	}}

	n1 := needNode("n1", nil)
	for _, tc := range []struct {
		name      string
		node      *corev1.Node
		pools     []*v1alpha1.IPPool
		blocks    []*v1alpha1.IPAMBlock
		need      []string
		reserved  []string
		max       int
		want      []string // "prefix from pool: reason"
		wantShort []string
	}{
		{name: "needed pool gets a block besides the general one", node: n1, pools: []*v1alpha1.IPPool{gen, team}, need: []string{"team"},
			want: []string{"10.1.0.0/26 from gen: node has no block", "10.5.0.0/26 from team: " + needMsg("team")}},
		{name: "pool with a namespaceSelector not needed gets nothing", node: n1, pools: []*v1alpha1.IPPool{gen, team},
			want: []string{"10.1.0.0/26 from gen: node has no block"}},
		{name: "needed pool that does not select the node gets nothing", node: n1, pools: []*v1alpha1.IPPool{gen, teamRack}, need: []string{"team-rack"},
			want: []string{"10.1.0.0/26 from gen: node has no block"}},
		{name: "needed pool that selects the node", node: needNode("n1", map[string]string{"rack": "a"}), pools: []*v1alpha1.IPPool{gen, teamRack}, need: []string{"team-rack"},
			want: []string{"10.1.0.0/26 from gen: node has no block", "10.6.0.0/26 from team-rack: " + needMsg("team-rack")}},
		{name: "needed pool disabled gets nothing", node: n1, pools: []*v1alpha1.IPPool{gen, teamOff}, need: []string{"team-off"},
			want: []string{"10.1.0.0/26 from gen: node has no block"}},
		{name: "needed pool that does not exist", node: n1, pools: []*v1alpha1.IPPool{gen}, need: []string{"ghost"},
			want: []string{"10.1.0.0/26 from gen: node has no block"}},
		{name: "needed pool with room gets nothing", node: n1, pools: []*v1alpha1.IPPool{gen, team}, need: []string{"team"},
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.5.0.0/26", "team", "n1", 57)}},
		{name: "needed pool at the watermark gets a second block", node: n1, pools: []*v1alpha1.IPPool{gen, team}, need: []string{"team"},
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.5.0.0/26", "team", "n1", 58)},
			want:   []string{"10.5.0.64/26 from team: " + fullMsg(1)}},
		{name: "general block does not serve a needed pool", node: n1, pools: []*v1alpha1.IPPool{gen, team}, need: []string{"team"},
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1)},
			want:   []string{"10.5.0.0/26 from team: " + needMsg("team")}},
		{name: "another node's block of a needed pool does not count", node: n1, pools: []*v1alpha1.IPPool{gen, team}, need: []string{"team"},
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.5.0.0/26", "team", "n2", 0)},
			want:   []string{"10.5.0.64/26 from team: " + needMsg("team")}},
		{name: "needed IPv6 pool", node: n1, pools: []*v1alpha1.IPPool{gen, team6}, need: []string{"team6"},
			want: []string{"10.1.0.0/26 from gen: node has no block", "fd05::/122 from team6: " + needMsg("team6")}},
		{name: "needed pools in name order", node: n1, pools: []*v1alpha1.IPPool{teamB, gen, team}, need: []string{"team-b", "team"},
			want: []string{"10.1.0.0/26 from gen: node has no block", "10.5.0.0/26 from team: " + needMsg("team"), "10.8.0.0/26 from team-b: " + needMsg("team-b")}},
		{name: "needed pool that serves every namespace gets no second block", node: n1, pools: []*v1alpha1.IPPool{gen}, need: []string{"gen"},
			want: []string{"10.1.0.0/26 from gen: node has no block"}},

		{name: "cap: first block of a needed pool is exempt", node: n1, pools: []*v1alpha1.IPPool{gen, team}, need: []string{"team"}, max: 1,
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1)},
			want:   []string{"10.5.0.0/26 from team: " + needMsg("team")}},
		{name: "cap: first block of a needed pool is exempt after a general block", node: n1, pools: []*v1alpha1.IPPool{gen, team}, need: []string{"team"}, max: 2,
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 58)},
			want:   []string{"10.1.0.64/26 from gen: " + fullMsg(1), "10.5.0.0/26 from team: " + needMsg("team")}},
		{name: "cap: second block of a needed pool is not exempt", node: n1, pools: []*v1alpha1.IPPool{gen, team}, need: []string{"team"}, max: 2,
			blocks:    []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.5.0.0/26", "team", "n1", 58)},
			wantShort: []string{capMsg(2)}},
		{name: "cap: general block beyond the cap is not exempt", node: n1, pools: []*v1alpha1.IPPool{gen, team}, need: []string{"team"}, max: 1,
			blocks:    []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 64), block("10.5.0.0/26", "team", "n1", 1)},
			wantShort: []string{capMsg(2)}},
		{name: "cap: a draining block of a needed pool leaves the next one exempt", node: n1, pools: []*v1alpha1.IPPool{gen, team}, need: []string{"team"}, max: 2,
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), draining(block("10.5.0.0/26", "team", "n1", 0))},
			want:   []string{"10.5.0.64/26 from team: " + needMsg("team")}},

		{name: "draining block is no room", node: n1, pools: []*v1alpha1.IPPool{gen},
			blocks: []*v1alpha1.IPAMBlock{draining(block("10.1.0.0/26", "gen", "n1", 0))},
			want:   []string{"10.1.0.64/26 from gen: node has no block"}},
		{name: "draining block beside a full one is no room", node: n1, pools: []*v1alpha1.IPPool{gen},
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 64), draining(block("10.1.0.64/26", "gen", "n1", 0))},
			want:   []string{"10.1.0.128/26 from gen: " + fullMsg(1)}},
		{name: "draining block counts towards the cap", node: n1, pools: []*v1alpha1.IPPool{gen}, max: 2,
			blocks:    []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 64), draining(block("10.1.0.64/26", "gen", "n1", 0))},
			wantShort: []string{capMsg(2)}},

		{name: "whole-block reservation: next block picked", node: n1, pools: []*v1alpha1.IPPool{gen}, reserved: []string{"10.1.0.0/26"},
			want: []string{"10.1.0.64/26 from gen: node has no block"}},
		{name: "reservation of two blocks", node: n1, pools: []*v1alpha1.IPPool{gen}, reserved: []string{"10.1.0.0/25"},
			want: []string{"10.1.0.128/26 from gen: node has no block"}},
		{name: "reservation between used blocks", node: n1, pools: []*v1alpha1.IPPool{gen}, reserved: []string{"10.1.0.64/26"},
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n2", 0)},
			want:   []string{"10.1.0.128/26 from gen: node has no block"}},
		{name: "reservation of the whole pool", node: n1, pools: []*v1alpha1.IPPool{gen}, reserved: []string{"10.0.0.0/8"},
			wantShort: []string{"no free IPv4 block in IPPool gen"}},
		{name: "reservation of the whole pool falls over to the next", node: n1, pools: []*v1alpha1.IPPool{gen, open}, reserved: []string{"10.1.0.0/24"},
			want: []string{"10.9.0.0/26 from open: node has no block"}},
		{name: "whole-block reservation in a needed pool", node: n1, pools: []*v1alpha1.IPPool{gen, team}, need: []string{"team"}, reserved: []string{"10.5.0.0/26"},
			want: []string{"10.1.0.0/26 from gen: node has no block", "10.5.0.64/26 from team: " + needMsg("team")}},
		{name: "partial reservation: block still picked", node: n1, pools: []*v1alpha1.IPPool{gen}, reserved: []string{"10.1.0.0/27"},
			want: []string{"10.1.0.0/26 from gen: node has no block"}},
		{name: "reserved address: block still picked", node: n1, pools: []*v1alpha1.IPPool{gen}, reserved: []string{"10.1.0.0"},
			want: []string{"10.1.0.0/26 from gen: node has no block"}},
		{name: "reservation of the other family ignored", node: n1, pools: []*v1alpha1.IPPool{gen}, reserved: []string{"::/0"},
			want: []string{"10.1.0.0/26 from gen: node has no block"}},
		{name: "partial reservation pushes a block over the watermark", node: n1, pools: []*v1alpha1.IPPool{gen}, reserved: []string{"10.1.0.0/27"},
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 30)},
			want:   []string{"10.1.0.64/26 from gen: " + fullMsg(1)}},
		{name: "partial reservation below the watermark", node: n1, pools: []*v1alpha1.IPPool{gen}, reserved: []string{"10.1.0.0/27"},
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 25)}},
		{name: "one reserved address tips a block over the watermark", node: n1, pools: []*v1alpha1.IPPool{gen}, reserved: []string{"10.1.0.9"},
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 57)},
			want:   []string{"10.1.0.64/26 from gen: " + fullMsg(1)}},
		{name: "reserved address in another block does not count", node: n1, pools: []*v1alpha1.IPPool{gen}, reserved: []string{"10.1.0.70", "fd00::1"},
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 57)}},
		{name: "reservation covering an assigned block makes it full", node: n1, pools: []*v1alpha1.IPPool{gen}, reserved: []string{"10.1.0.0/26"},
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 0)},
			want:   []string{"10.1.0.64/26 from gen: " + fullMsg(1)}},

		{name: "namespaceSelector {} serves every namespace", node: n1, pools: []*v1alpha1.IPPool{open},
			want: []string{"10.9.0.0/26 from open: node has no block"}},
		{name: "namespaceSelector {} beside a namespace-selected pool", node: n1, pools: []*v1alpha1.IPPool{team, open},
			want: []string{"10.9.0.0/26 from open: node has no block"}},
		{name: "a block of any general pool is room", node: n1, pools: []*v1alpha1.IPPool{gen, open},
			blocks: []*v1alpha1.IPAMBlock{block("10.9.0.0/26", "open", "n1", 1)}},
		{name: "namespaceSelector with only matchExpressions does not", node: n1, pools: []*v1alpha1.IPPool{expr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			needs := nodeNeeds{pools: tc.need, reserved: needPrefixes(t, tc.reserved...)}
			plan := planNode(tc.node, analysePools(tc.pools), tc.blocks, 0.9, tc.max, needs)
			var got []string
			for _, a := range plan.assign {
				got = append(got, fmt.Sprintf("%s from %s: %s", a.prefix, a.pool.pool.Name, a.reason))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("assigned\n  %q\nwant\n  %q", got, tc.want)
			}
			var short []string
			for _, s := range plan.short {
				short = append(short, s.String())
			}
			if !slices.Equal(short, tc.wantShort) {
				t.Errorf("shortages\n  %q\nwant\n  %q", short, tc.wantShort)
			}
		})
	}
}

// TestSupplies: the general pools of a family first, then each needed pool that is usable
// and selects the node, in name order.
func TestSupplies(t *testing.T) {
	gen := pool("gen", "10.1.0.0/24", 26, time.Hour)
	open := pool("open", "10.9.0.0/24", 26, time.Minute)
	open.Spec.NamespaceSelector = &metav1.LabelSelector{}
	zeta := nsPool("zeta", "10.5.0.0/24", 26, "a")
	alpha := nsPool("alpha", "10.6.0.0/24", 26, "a")
	off := nsPool("off", "10.7.0.0/24", 26, "a")
	off.Spec.Disabled = true
	rack := nsPool("rack", "10.8.0.0/24", 26, "a")
	rack.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "a"}}
	v6 := pool("v6", "fd00::/120", 122, time.Hour)
	six := nsPool("six", "fd05::/120", 122, "a")
	pools := analysePools([]*v1alpha1.IPPool{gen, open, zeta, alpha, off, rack, v6, six})
	needed := []string{"zeta", "alpha", "off", "rack", "six", "ghost", "alpha"}

	show := func(sups []supply) []string {
		var out []string
		for _, s := range sups {
			var names []string
			for _, c := range s.cands {
				names = append(names, c.pool.Name)
			}
			out = append(out, fmt.Sprintf("%q: %v", s.need, names))
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		node   *corev1.Node
		fam    int
		needed []string
		want   []string
	}{
		{"v4", needNode("n1", nil), 4, needed, []string{`"": [gen open]`, `"alpha": [alpha]`, `"zeta": [zeta]`}},
		{"v4 rack", needNode("n1", map[string]string{"rack": "a"}), 4, needed, []string{`"": [gen open]`, `"alpha": [alpha]`, `"rack": [rack]`, `"zeta": [zeta]`}},
		{"v4 nothing needed", needNode("n1", nil), 4, nil, []string{`"": [gen open]`}},
		{"v6", needNode("n1", nil), 6, needed, []string{`"": [v6]`, `"six": [six]`}},
		{"v6 nothing needed", needNode("n1", nil), 6, nil, []string{`"": [v6]`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := show(supplies(tc.node, pools, tc.fam, tc.needed)); !slices.Equal(got, tc.want) {
				t.Errorf("supplies\n  %q\nwant\n  %q", got, tc.want)
			}
		})
	}
	// Without a general pool of the family, the needed pools are still supplied.
	pools = analysePools([]*v1alpha1.IPPool{zeta})
	if got := show(supplies(needNode("n1", nil), pools, 4, []string{"zeta"})); !slices.Equal(got, []string{`"zeta": [zeta]`}) {
		t.Errorf("supplies without a general pool: %q", got)
	}
}

func TestPlanPickBlock(t *testing.T) {
	a := pool("a", "10.1.0.0/24", 26, time.Hour)
	b := pool("b", "10.2.0.0/24", 28, time.Minute)
	cands := analysePools([]*v1alpha1.IPPool{a, b})
	for _, tc := range []struct {
		name           string
		used, reserved []string
		want           string // "prefix from pool", "" none
	}{
		{"nothing used", nil, nil, "10.1.0.0/26 from a"},
		{"whole block reserved", nil, []string{"10.1.0.0/26"}, "10.1.0.64/26 from a"},
		{"whole block reserved after a used one", []string{"10.1.0.0/26"}, []string{"10.1.0.64/26"}, "10.1.0.128/26 from a"},
		{"partial reservation", nil, []string{"10.1.0.0/27", "10.1.0.1"}, "10.1.0.0/26 from a"},
		{"first pool reserved whole", nil, []string{"10.1.0.0/24"}, "10.2.0.0/28 from b"},
		{"reservation of several smaller blocks", nil, []string{"10.1.0.0/24", "10.2.0.0/26"}, "10.2.0.64/28 from b"},
		{"whole and partial reservations in a pool of small blocks", nil, []string{"10.1.0.0/24", "10.2.0.0/27", "10.2.0.32/29"}, "10.2.0.32/28 from b"},
		{"everything reserved", nil, []string{"10.0.0.0/8"}, ""},
		{"other family", nil, []string{"::/0"}, "10.1.0.0/26 from a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			used := make([]netip.Prefix, 0, 8) // spare capacity: pickBlock must not write into it
			used = append(used, needPrefixes(t, tc.used...)...)
			n := len(used)
			got, ok := pickBlock(cands, used, needPrefixes(t, tc.reserved...))
			var s string
			if ok {
				s = fmt.Sprintf("%s from %s", got.prefix, got.pool.pool.Name)
			}
			if s != tc.want {
				t.Errorf("got %q, want %q", s, tc.want)
			}
			for i, p := range used[n:cap(used)] {
				if p.IsValid() {
					t.Errorf("pickBlock wrote %s into the caller's used slice at %d", p, n+i)
				}
			}
		})
	}
}

func TestAtWatermark(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cidr      string
		inUse     int
		reserved  []string
		watermark float64
		want      bool
	}{
		{"below", "10.1.0.0/26", 57, nil, 0.9, false},
		{"at", "10.1.0.0/26", 58, nil, 0.9, true},
		{"full", "10.1.0.0/26", 64, nil, 0.9, true},
		{"watermark 0: empty is below", "10.1.0.0/26", 0, nil, 0, false},
		{"watermark 0: one address is at", "10.1.0.0/26", 1, nil, 0, true},
		{"watermark 1: one short", "10.1.0.0/26", 63, nil, 1, false},
		{"watermark 1: full", "10.1.0.0/26", 64, nil, 1, true},
		{"partial reservation counts", "10.1.0.0/26", 26, []string{"10.1.0.32/27"}, 0.9, true},
		{"partial reservation not enough", "10.1.0.0/26", 25, []string{"10.1.0.32/27"}, 0.9, false},
		{"reserved addresses count", "10.1.0.0/26", 56, []string{"10.1.0.1", "10.1.0.2/32"}, 0.9, true},
		{"reservation covering the block", "10.1.0.0/26", 0, []string{"10.1.0.0/24"}, 0.9, true},
		{"reservation outside", "10.1.0.0/26", 57, []string{"10.1.0.64/26", "10.1.1.0/24"}, 0.9, false},
		{"reservation of the other family", "10.1.0.0/26", 57, []string{"::/0", "::ffff:10.1.0.1"}, 0.9, false},
		{"v6 below", "fd00::/122", 57, nil, 0.9, false},
		{"v6 reserved address", "fd00::/122", 57, []string{"fd00::3f"}, 0.9, true},
		{"v6 address outside", "fd00::/122", 57, []string{"fd00::40"}, 0.9, false},
		{"/32 block", "10.1.0.7/32", 1, nil, 0.9, true},
		{"bad cidr", "10.1.0.0/33", 64, nil, 0.9, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: tc.cidr}}
			for i := 0; i < tc.inUse; i++ {
				b.Status.Allocations = append(b.Status.Allocations, v1alpha1.Allocation{Address: "x"})
			}
			if got := atWatermark(b, tc.watermark, needPrefixes(t, tc.reserved...)); got != tc.want {
				t.Errorf("atWatermark = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReservedIn(t *testing.T) {
	for _, tc := range []struct {
		block    string
		reserved []string
		want     int
	}{
		{"10.1.0.0/26", nil, 0},
		{"10.1.0.0/26", []string{"10.1.0.0/27"}, 32},
		{"10.1.0.0/26", []string{"10.1.0.0/28", "10.1.0.32/27"}, 48},
		{"10.1.0.0/26", []string{"10.1.0.1", "10.1.0.63"}, 2},
		{"10.1.0.0/26", []string{"10.1.0.0/26"}, 64},
		{"10.1.0.0/26", []string{"10.0.0.0/8"}, 64},
		{"10.1.0.0/26", []string{"10.1.0.64/27", "10.1.0.64"}, 0},
		{"10.1.0.0/26", []string{"::/0", "::ffff:10.1.0.1/128"}, 0},
		{"fd00::/122", []string{"fd00::/126", "fd00::3f"}, 5},
		{"fd00::/122", []string{"fd00::/64"}, 64},
		{"fd00::/122", []string{"10.0.0.0/8"}, 0},
		// Nested and repeated reservations count once.
		{"10.1.0.0/26", []string{"10.1.0.0/27", "10.1.0.0/28", "10.1.0.5", "10.1.0.5/32"}, 32},
		{"10.1.0.0/26", []string{"10.1.0.40", "10.1.0.40", "10.1.0.41"}, 2},
	} {
		if got := reservedIn(netip.MustParsePrefix(tc.block), needPrefixes(t, tc.reserved...)); got != tc.want {
			t.Errorf("reservedIn(%s, %v) = %d, want %d", tc.block, tc.reserved, got, tc.want)
		}
	}
}

// heldBlock is a block with allocations of the given addresses, by pods named after them.
func heldBlock(cidr, node string, addrs ...string) *v1alpha1.IPAMBlock {
	b := &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: cidr, Pool: "p", Node: node}}
	for _, a := range addrs {
		b.Status.Allocations = append(b.Status.Allocations, v1alpha1.Allocation{Address: a, Namespace: "ns", Pod: "pod-" + a})
	}
	return b
}

func TestReservationStatus(t *testing.T) {
	blocks := []*v1alpha1.IPAMBlock{
		heldBlock("fd00::/122", "n3", "fd00::6", "fd00::5"),
		heldBlock("10.1.0.64/26", "n2", "10.1.0.71", "10.1.0.70"),
		heldBlock("10.1.0.0/26", "n1", "10.1.0.20", "10.1.0.3", "10.1.0.1", "not-an-address"),
		heldBlock("10.2.0.0/26", "n1", "10.2.0.1"),
		heldBlock("bad", "n1", "10.1.0.2"),
	}
	holder := func(addr, node, blk string) v1alpha1.ReservedHolder {
		return v1alpha1.ReservedHolder{Address: addr, Node: node, Block: blk, Namespace: "ns", Pod: "pod-" + addr}
	}
	for _, tc := range []struct {
		name     string
		reserved []string
		want     []v1alpha1.ReservedHolder
	}{
		{"nothing held", []string{"10.3.0.0/24", "10.1.0.5"}, nil},
		{"across blocks and families", []string{"10.1.0.0/28", "10.1.0.70", "fd00::5"}, []v1alpha1.ReservedHolder{
			holder("10.1.0.1", "n1", "10.1.0.0/26"),
			holder("10.1.0.3", "n1", "10.1.0.0/26"),
			holder("10.1.0.70", "n2", "10.1.0.64/26"),
			holder("fd00::5", "n3", "fd00::/122"),
		}},
		{"single addresses are host prefixes", []string{"10.1.0.20", "fd00::6"}, []v1alpha1.ReservedHolder{
			holder("10.1.0.20", "n1", "10.1.0.0/26"),
			holder("fd00::6", "n3", "fd00::/122"),
		}},
		{"a prefix larger than the blocks", []string{"10.1.0.0/25"}, []v1alpha1.ReservedHolder{
			holder("10.1.0.1", "n1", "10.1.0.0/26"),
			holder("10.1.0.3", "n1", "10.1.0.0/26"),
			holder("10.1.0.20", "n1", "10.1.0.0/26"),
			holder("10.1.0.70", "n2", "10.1.0.64/26"),
			holder("10.1.0.71", "n2", "10.1.0.64/26"),
		}},
		{"IPv6 prefix", []string{"fd00::4/126"}, []v1alpha1.ReservedHolder{
			holder("fd00::5", "n3", "fd00::/122"),
			holder("fd00::6", "n3", "fd00::/122"),
		}},
		{"bad entries skipped", []string{"garbage", "10.1.0.3", "10.1.0.0/40"}, []v1alpha1.ReservedHolder{
			holder("10.1.0.3", "n1", "10.1.0.0/26"),
		}},
		{"overlapping entries list a holder once", []string{"10.1.0.0/26", "10.1.0.3", "10.1.0.0/30"}, []v1alpha1.ReservedHolder{
			holder("10.1.0.1", "n1", "10.1.0.0/26"),
			holder("10.1.0.3", "n1", "10.1.0.0/26"),
			holder("10.1.0.20", "n1", "10.1.0.0/26"),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &v1alpha1.IPReservation{Spec: v1alpha1.IPReservationSpec{ReservedCIDRs: tc.reserved}}
			r.Generation = 7
			st := reservationStatus(r, blocks)
			if st.ObservedGeneration != 7 {
				t.Errorf("observedGeneration = %d, want 7", st.ObservedGeneration)
			}
			if int(st.HolderCount) != len(tc.want) {
				t.Errorf("holderCount = %d, want %d", st.HolderCount, len(tc.want))
			}
			if !slices.Equal(st.Holders, tc.want) {
				t.Errorf("holders\n  %+v\nwant\n  %+v", st.Holders, tc.want)
			}
		})
	}
}

// TestReservationStatusCap: at most maxHolders holders are listed, the lowest addresses,
// and all are counted.
func TestReservationStatusCap(t *testing.T) {
	var blocks []*v1alpha1.IPAMBlock
	// Three blocks of 50 allocations each, highest block and address first.
	for blk := 2; blk >= 0; blk-- {
		var addrs []string
		for i := 49; i >= 0; i-- {
			addrs = append(addrs, fmt.Sprintf("10.1.0.%d", blk*64+i))
		}
		blocks = append(blocks, heldBlock(fmt.Sprintf("10.1.0.%d/26", blk*64), fmt.Sprintf("n%d", blk), addrs...))
	}
	r := &v1alpha1.IPReservation{Spec: v1alpha1.IPReservationSpec{ReservedCIDRs: []string{"10.1.0.0/24"}}}
	st := reservationStatus(r, blocks)
	if st.HolderCount != 150 {
		t.Errorf("holderCount = %d, want 150", st.HolderCount)
	}
	if len(st.Holders) != maxHolders {
		t.Fatalf("%d holders listed, want %d", len(st.Holders), maxHolders)
	}
	for i, h := range st.Holders {
		blk, off := i/50, i%50
		want := fmt.Sprintf("10.1.0.%d", blk*64+off)
		if h.Address != want || h.Node != fmt.Sprintf("n%d", blk) || h.Block != fmt.Sprintf("10.1.0.%d/26", blk*64) {
			t.Fatalf("holder %d = %+v, want %s on n%d", i, h, want, blk)
		}
	}
	// Exactly maxHolders: all listed.
	r.Spec.ReservedCIDRs = []string{"10.1.0.0/26", "10.1.0.64/26"}
	st = reservationStatus(r, blocks)
	if st.HolderCount != 100 || len(st.Holders) != 100 {
		t.Errorf("holderCount %d, %d listed, want 100 and 100", st.HolderCount, len(st.Holders))
	}
}
