package controller

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

func pool(name, cidr string, bs int32, age time.Duration) *v1alpha1.IPPool {
	p := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{CIDR: cidr}}
	p.Name = name
	p.CreationTimestamp = metav1.NewTime(time.Unix(1e9, 0).Add(-age))
	if bs != 0 {
		p.Spec.BlockSize = &bs
	}
	return p
}

func block(cidr, poolName, node string, inUse int) *v1alpha1.IPAMBlock {
	b := &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: cidr, Pool: poolName, Node: node}}
	b.Name = BlockName(netip.MustParsePrefix(cidr))
	for i := 0; i < inUse; i++ {
		b.Status.Allocations = append(b.Status.Allocations, v1alpha1.Allocation{Address: "x"})
	}
	return b
}

func TestParsePool(t *testing.T) {
	for _, tc := range []struct {
		name, cidr string
		bs         int32
		wantBS     int
		wantErr    string
	}{
		{"v4 default", "10.244.0.0/16", 0, 26, ""},
		{"v6 default", "fd00:10:244::/56", 0, 122, ""},
		{"v4 explicit", "10.0.0.0/8", 24, 24, ""},
		{"bad cidr", "10.0.0.300/16", 0, 0, "is not a prefix"},
		{"host bits", "10.0.0.1/16", 0, 0, "did you mean 10.0.0.0/16"},
		{"v4 too small block", "10.0.0.0/8", 19, 0, "outside 20–32"},
		{"v6 out of range", "fd00::/48", 64, 0, "outside 116–128"},
		{"block larger than pool", "10.0.0.0/28", 26, 0, "larger than the pool"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pi, err := parsePool(pool("p", tc.cidr, tc.bs, 0))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if pi.blockSize != tc.wantBS {
				t.Fatalf("blockSize = %d, want %d", pi.blockSize, tc.wantBS)
			}
		})
	}
}

func TestAnalysePoolsOlderWins(t *testing.T) {
	a := pool("a", "10.0.0.0/16", 0, time.Hour)
	b := pool("b", "10.0.128.0/17", 0, time.Minute)
	c := pool("c", "10.1.0.0/16", 0, 0)
	d := pool("d", "10.2.0.0/16", 0, 0)
	d.Spec.Disabled = true
	got := map[string]*poolInfo{}
	for _, pi := range analysePools([]*v1alpha1.IPPool{b, c, a, d}) {
		got[pi.pool.Name] = pi
	}
	if got["a"].unusable != "" || got["c"].unusable != "" {
		t.Fatalf("a and c must be usable: %q %q", got["a"].unusable, got["c"].unusable)
	}
	if got["b"].overlaps != "a" || !strings.Contains(got["b"].unusable, "overlaps IPPool a (10.0.0.0/16)") {
		t.Fatalf("b: overlaps=%q unusable=%q", got["b"].overlaps, got["b"].unusable)
	}
	if got["d"].unusable != "the pool is disabled" {
		t.Fatalf("d: %q", got["d"].unusable)
	}
}

func TestNextFreeBlock(t *testing.T) {
	for _, tc := range []struct {
		name, pool string
		bs         int32
		used       []string
		want       string // "" = none free
	}{
		{"empty", "10.0.0.0/24", 26, nil, "10.0.0.0/26"},
		{"first taken", "10.0.0.0/24", 26, []string{"10.0.0.0/26"}, "10.0.0.64/26"},
		{"hole", "10.0.0.0/24", 26, []string{"10.0.0.0/26", "10.0.0.128/26"}, "10.0.0.64/26"},
		{"unsorted", "10.0.0.0/24", 26, []string{"10.0.0.64/26", "10.0.0.0/26"}, "10.0.0.128/26"},
		{"full", "10.0.0.0/25", 26, []string{"10.0.0.0/26", "10.0.0.64/26"}, ""},
		{"smaller foreign block inside", "10.0.0.0/24", 26, []string{"10.0.0.16/28"}, "10.0.0.64/26"},
		{"bigger foreign block", "10.0.0.0/24", 26, []string{"10.0.0.0/25"}, "10.0.0.128/26"},
		{"outside blocks ignored", "10.0.0.0/24", 26, []string{"10.9.0.0/26"}, "10.0.0.0/26"},
		{"last of space", "255.255.255.0/24", 25, []string{"255.255.255.0/25"}, "255.255.255.128/25"},
		{"end of space full", "255.255.255.0/24", 25, []string{"255.255.255.0/25", "255.255.255.128/25"}, ""},
		{"v6", "fd00::/120", 122, []string{"fd00::/122"}, "fd00::40/122"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pi, err := parsePool(pool("p", tc.pool, tc.bs, 0))
			if err != nil {
				t.Fatal(err)
			}
			var used []netip.Prefix
			for _, u := range tc.used {
				used = append(used, netip.MustParsePrefix(u))
			}
			got, ok := nextFreeBlock(pi, used)
			if tc.want == "" {
				if ok {
					t.Fatalf("got %s, want none", got)
				}
				return
			}
			if !ok || got.String() != tc.want {
				t.Fatalf("got %s %v, want %s", got, ok, tc.want)
			}
		})
	}
}

func TestBlockName(t *testing.T) {
	for in, want := range map[string]string{
		"10.244.3.64/26":    "10-244-3-64-26",
		"fd00:10:244::/122": "fd00-10-244---122",
		"::/122":            "0---122",
	} {
		if got := BlockName(netip.MustParsePrefix(in)); got != want {
			t.Errorf("BlockName(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestPlanNode(t *testing.T) {
	node := func(name string, lbls map[string]string) *corev1.Node {
		n := &corev1.Node{}
		n.Name, n.Labels = name, lbls
		return n
	}
	rackA := pool("rack-a", "10.0.0.0/24", 26, time.Hour)
	rackA.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "a"}}
	v4 := pool("v4", "10.1.0.0/24", 26, time.Hour)
	v6 := pool("v6", "fd00::/120", 122, time.Hour)
	tiny := pool("tiny", "10.2.0.0/25", 26, time.Hour)
	tiny2 := pool("tiny2", "10.3.0.0/25", 26, time.Minute)

	const noBlock, atMark = "node has no block", "all 1 block(s) at or above the 90% watermark"
	for _, tc := range []struct {
		name      string
		node      *corev1.Node
		pools     []*v1alpha1.IPPool
		blocks    []*v1alpha1.IPAMBlock
		want      []string // assignments: "prefix from pool: reason"
		wantShort []string // shortages, as logged and put in Events
	}{
		{"new node gets one", node("n1", nil), []*v1alpha1.IPPool{v4}, nil, []string{"10.1.0.0/26 from v4: " + noBlock}, nil},
		{"has one, below watermark", node("n1", nil), []*v1alpha1.IPPool{v4},
			[]*v1alpha1.IPAMBlock{block("10.1.0.0/26", "v4", "n1", 57)}, nil, nil},
		{"at watermark gets another", node("n1", nil), []*v1alpha1.IPPool{v4},
			[]*v1alpha1.IPAMBlock{block("10.1.0.0/26", "v4", "n1", 58)}, []string{"10.1.0.64/26 from v4: " + atMark}, nil},
		{"one full one not", node("n1", nil), []*v1alpha1.IPPool{v4},
			[]*v1alpha1.IPAMBlock{block("10.1.0.0/26", "v4", "n1", 64), block("10.1.0.64/26", "v4", "n1", 1)}, nil, nil},
		{"both full", node("n1", nil), []*v1alpha1.IPPool{v4},
			[]*v1alpha1.IPAMBlock{block("10.1.0.0/26", "v4", "n1", 64), block("10.1.0.64/26", "v4", "n1", 60)},
			[]string{"10.1.0.128/26 from v4: all 2 block(s) at or above the 90% watermark"}, nil},
		{"dual stack", node("n1", nil), []*v1alpha1.IPPool{v4, v6}, nil,
			[]string{"10.1.0.0/26 from v4: " + noBlock, "fd00::/122 from v6: " + noBlock}, nil},
		{"selector excludes", node("n1", map[string]string{"rack": "b"}), []*v1alpha1.IPPool{rackA}, nil, nil, nil},
		{"selector includes", node("n1", map[string]string{"rack": "a"}), []*v1alpha1.IPPool{rackA}, nil, []string{"10.0.0.0/26 from rack-a: " + noBlock}, nil},
		{"skips other nodes' blocks", node("n3", nil), []*v1alpha1.IPPool{v4},
			[]*v1alpha1.IPAMBlock{block("10.1.0.0/26", "v4", "n1", 0), block("10.1.0.64/26", "v4", "n2", 0)}, []string{"10.1.0.128/26 from v4: " + noBlock}, nil},
		{"exhausted", node("n3", nil), []*v1alpha1.IPPool{tiny},
			[]*v1alpha1.IPAMBlock{block("10.2.0.0/26", "tiny", "n1", 0), block("10.2.0.64/26", "tiny", "n2", 0)}, nil,
			[]string{"no free IPv4 block in IPPool tiny"}},
		{"exhausted v4, v6 still served", node("n3", nil), []*v1alpha1.IPPool{tiny, v6},
			[]*v1alpha1.IPAMBlock{block("10.2.0.0/26", "tiny", "n1", 0), block("10.2.0.64/26", "tiny", "n2", 0)},
			[]string{"fd00::/122 from v6: " + noBlock}, []string{"no free IPv4 block in IPPool tiny"}},
		{"exhausted names every candidate pool", node("n3", nil), []*v1alpha1.IPPool{tiny, tiny2},
			[]*v1alpha1.IPAMBlock{block("10.2.0.0/26", "tiny", "n1", 0), block("10.2.0.64/26", "tiny", "n2", 0),
				block("10.3.0.0/26", "tiny2", "n1", 0), block("10.3.0.64/26", "tiny2", "n2", 0)}, nil,
			[]string{"no free IPv4 block in IPPool tiny, tiny2"}},
		{"falls over to the next pool", node("n3", nil), []*v1alpha1.IPPool{tiny, v4},
			[]*v1alpha1.IPAMBlock{block("10.2.0.0/26", "tiny", "n1", 0), block("10.2.0.64/26", "tiny", "n2", 0)}, []string{"10.1.0.0/26 from v4: " + noBlock}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := planNode(tc.node, analysePools(tc.pools), tc.blocks, 0.9, 4, nodeNeeds{})
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

// TestPlanNodeCap: a node at the per-node cap of a family gets no further block of it,
// however full its blocks are, and the shortage says why; the other family is unaffected.
func TestPlanNodeCap(t *testing.T) {
	v4 := pool("v4", "10.1.0.0/24", 26, time.Hour)
	v6 := pool("v6", "fd00::/120", 122, time.Hour)
	full := []*v1alpha1.IPAMBlock{block("10.1.0.0/26", "v4", "n1", 64), block("10.1.0.64/26", "v4", "n1", 64)}
	for _, tc := range []struct {
		name      string
		max       int
		wantAssig int
		wantShort string
	}{
		{"below the cap", 3, 2, ""},
		{"at the cap", 2, 1, "node already has 2 IPv4 blocks, the most it may have (--max-blocks-per-node); its blocks are at the watermark: delete pods or raise the cap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &corev1.Node{}
			n.Name = "n1"
			plan := planNode(n, analysePools([]*v1alpha1.IPPool{v4, v6}), full, 0.9, tc.max, nodeNeeds{})
			if len(plan.assign) != tc.wantAssig {
				t.Fatalf("%d assignments %+v, want %d", len(plan.assign), plan.assign, tc.wantAssig)
			}
			var short string
			if len(plan.short) > 0 {
				short = plan.short[0].String()
			}
			if short != tc.wantShort {
				t.Fatalf("shortage %q, want %q", short, tc.wantShort)
			}
		})
	}
}
