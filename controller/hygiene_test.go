package controller

import (
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// hyStepName names a step in the test's expectations.
func hyStepName(s hygieneStep) string {
	switch s {
	case stepNone:
		return "none"
	case stepMarkEmpty:
		return "mark"
	case stepUnmark:
		return "unmark"
	case stepDrain:
		return "drain"
	case stepRelease:
		return "release"
	case stepWaitDrained:
		return "wait"
	}
	return fmt.Sprintf("step(%d)", int(s))
}

// hyMarked sets the empty-since annotation to a time.
func hyMarked(b *v1alpha1.IPAMBlock, since time.Time) *v1alpha1.IPAMBlock {
	return hyAnnotated(b, since.UTC().Format(time.RFC3339Nano))
}

func hyAnnotated(b *v1alpha1.IPAMBlock, v string) *v1alpha1.IPAMBlock {
	if b.Annotations == nil {
		b.Annotations = map[string]string{}
	}
	b.Annotations[v1alpha1.AnnotationEmptySince] = v
	return b
}

// hyDrained is a draining block the agent answered for.
func hyDrained(b *v1alpha1.IPAMBlock) *v1alpha1.IPAMBlock {
	b.Spec.Draining = true
	b.Status.Drained = true
	return b
}

func TestPlanHygiene(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	const grace = 10 * time.Minute
	ago := func(d time.Duration) time.Time { return now.Add(-d) }

	gen := pool("gen", "10.1.0.0/24", 26, time.Hour)
	gen6 := pool("gen6", "fd00::/120", 122, time.Hour)
	team := nsPool("team", "10.5.0.0/24", 26, "a")
	old := pool("old", "10.9.0.0/24", 26, time.Hour)
	old.Spec.Disabled = true
	rack := pool("rack", "10.0.0.0/24", 26, time.Hour)
	rack.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "a"}}
	open := pool("open", "10.3.0.0/24", 26, time.Hour)
	open.Spec.NamespaceSelector = &metav1.LabelSelector{}
	std := []*v1alpha1.IPPool{gen, gen6, team, old, rack, open}

	for _, tc := range []struct {
		name     string
		blocks   []*v1alpha1.IPAMBlock
		need     []string
		reserved []string
		grace    time.Duration // 0: the default grace; negative: off
		want     []string      // "cidr step", highest address first
		wantWait time.Duration
	}{
		// The handshake, step by step.
		{name: "extra empty general block is marked",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.1.0.64/26", "gen", "n1", 0)},
			want:   []string{"10.1.0.64/26 mark"}, wantWait: grace},
		{name: "marked within the grace: nothing yet",
			blocks:   []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(4*time.Minute))},
			wantWait: 6 * time.Minute},
		{name: "marked just short of the grace",
			blocks:   []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(grace-time.Millisecond))},
			wantWait: time.Millisecond},
		{name: "marked for the grace: drain",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(grace))},
			want:   []string{"10.1.0.64/26 drain"}, wantWait: time.Second},
		{name: "marked beyond the grace: drain",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(time.Hour))},
			want:   []string{"10.1.0.64/26 drain"}, wantWait: time.Second},
		{name: "draining, the agent has not answered",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), draining(hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(time.Hour)))},
			want:   []string{"10.1.0.64/26 wait"}, wantWait: 5 * time.Second},
		{name: "drained: release",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyDrained(hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(time.Hour)))},
			want:   []string{"10.1.0.64/26 release"}},
		{name: "drained but marked within the grace: not released",
			blocks:   []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyDrained(hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(time.Minute)))},
			wantWait: 9 * time.Minute},
		{name: "unreadable mark is set again",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyAnnotated(block("10.1.0.64/26", "gen", "n1", 0), "yesterday")},
			want:   []string{"10.1.0.64/26 mark"}, wantWait: grace},

		// What stays.
		{name: "last block of a family never touched",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 0)}},
		{name: "last block of a family marked long ago is unmarked",
			blocks: []*v1alpha1.IPAMBlock{hyMarked(block("10.1.0.0/26", "gen", "n1", 0), ago(time.Hour))},
			want:   []string{"10.1.0.0/26 unmark"}},
		{name: "last block of a family draining is unmarked",
			blocks: []*v1alpha1.IPAMBlock{hyDrained(hyMarked(block("10.1.0.0/26", "gen", "n1", 0), ago(time.Hour)))},
			want:   []string{"10.1.0.0/26 unmark"}},
		{name: "each family keeps its last block",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 0), block("fd00::/122", "gen6", "n1", 0)}},
		{name: "extra IPv6 block",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 0), block("fd00::/122", "gen6", "n1", 1), block("fd00::40/122", "gen6", "n1", 0)},
			want:   []string{"fd00::40/122 mark"}, wantWait: grace},
		{name: "two empty general blocks: only the higher goes",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 0), block("10.1.0.64/26", "gen", "n1", 0)},
			want:   []string{"10.1.0.64/26 mark"}, wantWait: grace},
		{name: "two empty general blocks given high first: only the higher goes",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.64/26", "gen", "n1", 0), block("10.1.0.0/26", "gen", "n1", 0)},
			want:   []string{"10.1.0.64/26 mark"}, wantWait: grace},
		{name: "three empty general blocks: all but the lowest go",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 0), block("10.1.0.128/26", "gen", "n1", 0), block("10.1.0.64/26", "gen", "n1", 0)},
			want:   []string{"10.1.0.128/26 mark", "10.1.0.64/26 mark"}, wantWait: grace},
		{name: "the empty one goes even if it is the lower",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 0), block("10.1.0.64/26", "gen", "n1", 3)},
			want:   []string{"10.1.0.0/26 mark"}, wantWait: grace},
		{name: "blocks of two general pools",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 2), block("10.3.0.0/26", "open", "n1", 0)},
			want:   []string{"10.3.0.0/26 mark"}, wantWait: grace},
		{name: "another node's block does not count",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n2", 1), block("10.1.0.64/26", "gen", "n1", 0)}},
		{name: "a needed pool's only block stays",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.5.0.0/26", "team", "n1", 0)}, need: []string{"team"}},
		{name: "a needed pool's only block, marked, is unmarked",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), draining(hyMarked(block("10.5.0.0/26", "team", "n1", 0), ago(time.Hour)))}, need: []string{"team"},
			want: []string{"10.5.0.0/26 unmark"}},
		{name: "a pool no longer needed gives its block back",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.5.0.0/26", "team", "n1", 0)},
			want:   []string{"10.5.0.0/26 mark"}, wantWait: grace},
		{name: "a needed pool's general sibling is no stand-in",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 0), block("10.5.0.0/26", "team", "n1", 0)}, need: []string{"team"}},
		{name: "two empty blocks of a needed pool: the higher goes",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.5.0.0/26", "team", "n1", 0), block("10.5.0.64/26", "team", "n1", 0)}, need: []string{"team"},
			want: []string{"10.5.0.64/26 mark"}, wantWait: grace},
		{name: "a needed pool's sibling at the watermark: the empty one stays and is unmarked",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.5.0.0/26", "team", "n1", 58), hyDrained(hyMarked(block("10.5.0.64/26", "team", "n1", 0), ago(time.Hour)))}, need: []string{"team"},
			want: []string{"10.5.0.64/26 unmark"}},
		{name: "general sibling at the watermark: the empty one stays",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 58), block("10.1.0.64/26", "gen", "n1", 0)}},
		{name: "general sibling at the watermark: a marked one is unmarked",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 58), hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(time.Minute))},
			want:   []string{"10.1.0.64/26 unmark"}},
		{name: "general sibling at the watermark: a draining one is unmarked",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 58), draining(hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(time.Hour)))},
			want:   []string{"10.1.0.64/26 unmark"}},
		{name: "general sibling at the watermark by reservations",
			blocks:   []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 30), hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(time.Minute))},
			reserved: []string{"10.1.0.0/27"},
			want:     []string{"10.1.0.64/26 unmark"}},
		{name: "a reserved address elsewhere leaves the sibling below the watermark",
			blocks:   []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 57), hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(time.Minute))},
			reserved: []string{"10.1.0.64"},
			wantWait: 9 * time.Minute},
		{name: "one full sibling, one with room: the highest empty goes",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 58), block("10.1.0.64/26", "gen", "n1", 0), block("10.1.0.128/26", "gen", "n1", 0)},
			want:   []string{"10.1.0.128/26 mark"}, wantWait: grace},
		{name: "a draining sibling is no stand-in; the drain under way goes on",
			blocks: []*v1alpha1.IPAMBlock{draining(hyMarked(block("10.1.0.0/26", "gen", "n1", 0), ago(time.Hour))), block("10.1.0.64/26", "gen", "n1", 0)},
			want:   []string{"10.1.0.0/26 wait"}, wantWait: 5 * time.Second},

		// In use again.
		{name: "non-empty marked block is unmarked",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyMarked(block("10.1.0.64/26", "gen", "n1", 2), ago(time.Minute))},
			want:   []string{"10.1.0.64/26 unmark"}},
		{name: "non-empty draining block is unmarked",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), draining(hyMarked(block("10.1.0.64/26", "gen", "n1", 2), ago(time.Hour)))},
			want:   []string{"10.1.0.64/26 unmark"}},
		{name: "non-empty draining block without a mark is unmarked",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), draining(block("10.1.0.64/26", "gen", "n1", 1))},
			want:   []string{"10.1.0.64/26 unmark"}},
		{name: "non-empty blocks untouched",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.1.0.64/26", "gen", "n1", 2)}},

		// Hygiene off.
		{name: "grace off: empty block not marked", grace: -1,
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.1.0.64/26", "gen", "n1", 0)}},
		{name: "grace off: drained block not released but unmarked", grace: -1,
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyDrained(hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(time.Hour)))},
			want:   []string{"10.1.0.64/26 unmark"}},
		{name: "grace off: marked block unmarked", grace: -time.Hour,
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(time.Minute))},
			want:   []string{"10.1.0.64/26 unmark"}},

		// Pools the node no longer takes blocks from.
		{name: "a disabled pool's block goes back",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), block("10.9.0.0/26", "old", "n1", 0)},
			want:   []string{"10.9.0.0/26 mark"}, wantWait: grace},
		{name: "a disabled pool's drained block is released",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1), hyDrained(hyMarked(block("10.9.0.0/26", "old", "n1", 0), ago(time.Hour)))},
			want:   []string{"10.9.0.0/26 release"}},
		{name: "a disabled pool's block beside an empty general block: only it goes",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 0), block("10.9.0.0/26", "old", "n1", 0)},
			want:   []string{"10.9.0.0/26 mark"}, wantWait: grace},
		{name: "a deselected pool's block goes back though it is the lower",
			blocks: []*v1alpha1.IPAMBlock{block("10.0.0.0/26", "rack", "n1", 0), block("10.1.0.0/26", "gen", "n1", 0)},
			want:   []string{"10.0.0.0/26 mark"}, wantWait: grace},
		{name: "a disabled pool's block that is the family's last stays",
			blocks: []*v1alpha1.IPAMBlock{block("10.9.0.0/26", "old", "n1", 0), block("fd00::/122", "gen6", "n1", 1)}},
		{name: "a disabled pool's block with pods does not stand in for the general one",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 0), block("10.9.0.0/26", "old", "n1", 3)}},

		// When to look again: the soonest.
		{name: "the soonest wait",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1),
				hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(4*time.Minute)),
				hyMarked(block("10.1.0.128/26", "gen", "n1", 0), ago(time.Minute))},
			wantWait: 6 * time.Minute},
		{name: "the soonest wait across steps",
			blocks: []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "gen", "n1", 1),
				draining(hyMarked(block("10.1.0.64/26", "gen", "n1", 0), ago(time.Hour))),
				block("10.1.0.128/26", "gen", "n1", 0)},
			want: []string{"10.1.0.128/26 mark", "10.1.0.64/26 wait"}, wantWait: 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := grace
			if tc.grace != 0 {
				g = tc.grace
			}
			pools := analysePools(std)
			node := needNode("n1", nil)
			needs := nodeNeeds{pools: tc.need, reserved: needPrefixes(t, tc.reserved...)}
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

// checkHygieneAgreesWithPlan: a block on its way back (marked, draining or released, and
// still empty) leaves no gap planNode would fill with a new block at once.
func checkHygieneAgreesWithPlan(t *testing.T, node *corev1.Node, pools []*poolInfo, blocks []*v1alpha1.IPAMBlock, needs nodeNeeds, actions []hygieneAction, grace time.Duration) {
	t.Helper()
	step := map[*v1alpha1.IPAMBlock]hygieneStep{}
	for _, a := range actions {
		step[a.block] = a.step
	}
	var stay, all []*v1alpha1.IPAMBlock
	for _, b := range blocks {
		c := b.DeepCopy()
		_, marked := b.Annotations[v1alpha1.AnnotationEmptySince]
		going := false
		switch step[b] {
		case stepMarkEmpty, stepDrain, stepRelease, stepWaitDrained:
			going = true
		case stepNone:
			going = marked && len(b.Status.Allocations) == 0 && b.Spec.Node == node.Name && grace > 0
		}
		c.Spec.Draining = false // as if every block stayed in service
		all = append(all, c)
		if !going {
			stay = append(stay, c)
		}
	}
	if before := planNode(node, pools, all, 0.9, 0, needs); len(before.assign) > 0 {
		return
	}
	if after := planNode(node, pools, stay, 0.9, 0, needs); len(after.assign) > 0 {
		var got []string
		for _, a := range after.assign {
			got = append(got, fmt.Sprintf("%s from %s: %s", a.prefix, a.pool.pool.Name, a.reason))
		}
		t.Errorf("with the returned blocks gone planNode assigns %q", got)
	}
}
