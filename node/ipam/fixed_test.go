package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// fxPod is a pod of namespace default named web with the given annotations.
func fxPod(ann map[string]string) PodInfo {
	return PodInfo{Namespace: "default", Name: "web", Annotations: ann}
}

// fxAddr parses an address; "" is the zero address (no fixed address).
func fxAddr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

// TestChooseFixed: hostroute.io/ip-addrs as Choose reads it.
func TestChooseFixed(t *testing.T) {
	const (
		ips = v1alpha1.AnnotationIPAddrs
		v4  = v1alpha1.AnnotationIPv4Pools
		v6  = v1alpha1.AnnotationIPv6Pools
	)
	team := map[string]string{"team": "blue"}
	off4 := testPool("off4", "10.4.0.0/16", nil, nil)
	off4.Spec.Disabled = true
	badSel4 := testPool("badsel4", "10.6.0.0/16", nil, nil)
	badSel4.Spec.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "rack", Operator: "Bogus"},
	}}
	// Pools of both families, one per namespace, one for other nodes only, one for no node
	// at all (fixed addresses only), a disabled one and broken ones.
	cluster := []*v1alpha1.IPPool{
		testPool("gen4", "10.0.0.0/16", nil, nil),
		testPool("gen6", "fd00::/48", nil, nil),
		testPool("other6", "fd01::/48", nil, nil),
		testPool("blue4", "10.2.0.0/16", nil, team),
		testPool("blue6", "fd00:2::/48", nil, team),
		testPool("rack4", "10.3.0.0/16", map[string]string{"rack": "r1"}, nil),
		testPool("fixonly4", "10.5.0.0/16", map[string]string{"never": "selected"}, nil),
		off4,
		badSel4,
		testPool("bad-cidr", "10.7.0.0", nil, nil),
	}
	blue := func(ann map[string]string) PodInfo {
		return PodInfo{Namespace: "blue", Name: "api", NamespaceLabels: team, Annotations: ann}
	}

	for _, tc := range []struct {
		name           string
		pod            PodInfo
		node           map[string]string
		pools          []*v1alpha1.IPPool
		want           Choice
		wantV4, wantV6 string
		errHas         []string // non-nil: Choose fails with ErrPoolChoice and a message holding these
	}{
		{
			name:   "IPv4 address as a JSON list: its pool; IPv6 keeps the default",
			pod:    fxPod(map[string]string{ips: `["10.0.0.5"]`}),
			want:   Choice{V4: []string{"gen4"}, V6: []string{"gen6", "other6"}},
			wantV4: "10.0.0.5",
		},
		{
			name:   "IPv6 address alone: its pool; IPv4 keeps the default",
			pod:    fxPod(map[string]string{ips: "fd01::7"}),
			pools:  []*v1alpha1.IPPool{testPool("gen4", "10.0.0.0/16", nil, nil), testPool("gen6", "fd00::/48", nil, nil), testPool("other6", "fd01::/48", nil, nil)},
			want:   Choice{V4: []string{"gen4"}, V6: []string{"other6"}},
			wantV6: "fd01::7",
		},
		{
			name:   "both families as a comma list with spaces",
			pod:    fxPod(map[string]string{ips: " fd00::9 , 10.0.1.2 "}),
			want:   Choice{V4: []string{"gen4"}, V6: []string{"gen6"}},
			wantV4: "10.0.1.2", wantV6: "fd00::9",
		},
		{
			name:   "both families as a JSON list",
			pod:    fxPod(map[string]string{ips: `["10.0.1.2", "fd00::9"]`}),
			want:   Choice{V4: []string{"gen4"}, V6: []string{"gen6"}},
			wantV4: "10.0.1.2", wantV6: "fd00::9",
		},
		{
			name:   "an IPv4-mapped IPv6 address is the IPv4 address",
			pod:    fxPod(map[string]string{ips: "::ffff:10.0.0.5"}),
			want:   Choice{V4: []string{"gen4"}, V6: []string{"gen6", "other6"}},
			wantV4: "10.0.0.5",
		},
		{
			name:   "the pool's nodeSelector need not select the node",
			pod:    fxPod(map[string]string{ips: "10.3.0.1"}),
			node:   map[string]string{"rack": "r2"},
			want:   Choice{V4: []string{"rack4"}, V6: []string{"gen6", "other6"}},
			wantV4: "10.3.0.1",
		},
		{
			name:   "a pool that selects no node serves fixed addresses",
			pod:    fxPod(map[string]string{ips: "10.5.3.4"}),
			want:   Choice{V4: []string{"fixonly4"}, V6: []string{"gen6", "other6"}},
			wantV4: "10.5.3.4",
		},
		{
			name:   "a namespace-selected pool admits its namespace",
			pod:    blue(map[string]string{ips: "10.2.0.9"}),
			want:   Choice{V4: []string{"blue4"}, V6: []string{"blue6"}},
			wantV4: "10.2.0.9",
		},
		{
			name:   "a general pool serves a namespace that has its own pools",
			pod:    blue(map[string]string{ips: "fd00::1"}),
			want:   Choice{V4: []string{"blue4"}, V6: []string{"gen6"}},
			wantV6: "fd00::1",
		},
		{
			name: "the namespace's annotation of the family is overridden, the other's is kept",
			pod: PodInfo{Namespace: "default", Name: "web",
				Annotations:          map[string]string{ips: "10.0.0.5"},
				NamespaceAnnotations: map[string]string{v4: "nosuch", v6: "other6"}},
			want:   Choice{V4: []string{"gen4"}, V6: []string{"other6"}},
			wantV4: "10.0.0.5",
		},
		{
			name:   "the pod's pool annotation of the other family is kept",
			pod:    fxPod(map[string]string{ips: "10.0.0.5", v6: "other6"}),
			want:   Choice{V4: []string{"gen4"}, V6: []string{"other6"}},
			wantV4: "10.0.0.5",
		},
		{
			name: "overlapping pools: the first by name; a bad pool is skipped",
			pod:  fxPod(map[string]string{ips: "10.0.0.5"}),
			pools: []*v1alpha1.IPPool{
				testPool("b-wide", "10.0.0.0/8", nil, nil),
				testPool("a-narrow", "10.0.0.0/24", nil, nil),
				testPool("0-bad", "10.0.0.0", nil, nil),
			},
			want:   Choice{V4: []string{"a-narrow"}},
			wantV4: "10.0.0.5",
		},
		{
			name: "overlapping pools: the only one holding the address",
			pod:  fxPod(map[string]string{ips: "10.1.0.5"}),
			pools: []*v1alpha1.IPPool{
				testPool("b-wide", "10.0.0.0/8", nil, nil),
				testPool("a-narrow", "10.0.0.0/24", nil, nil),
			},
			want:   Choice{V4: []string{"b-wide"}},
			wantV4: "10.1.0.5",
		},

		{
			name:   "not an IP address",
			pod:    fxPod(map[string]string{ips: "web-0"}),
			errHas: []string{`"web-0" is not an IP address`, "annotation " + ips + " of pod default/web"},
		},
		{
			name:   "a prefix is not an IP address",
			pod:    fxPod(map[string]string{ips: "10.0.0.5/32"}),
			errHas: []string{`"10.0.0.5/32" is not an IP address`},
		},
		{
			name:   "an address with a zone",
			pod:    fxPod(map[string]string{ips: "fd00::1%eth0"}),
			errHas: []string{`"fd00::1%eth0" is not an IP address`},
		},
		{
			name:   "a bad entry after a good one",
			pod:    fxPod(map[string]string{ips: "10.0.0.5,fd00::zz"}),
			errHas: []string{`"fd00::zz" is not an IP address`},
		},
		{
			name:   "two IPv4 addresses",
			pod:    fxPod(map[string]string{ips: "10.0.0.5,10.0.0.6"}),
			errHas: []string{"two IPv4 addresses", "one per family", "of pod default/web"},
		},
		{
			name:   "two IPv4 addresses, one written IPv4-mapped",
			pod:    fxPod(map[string]string{ips: `["10.0.0.5","::ffff:10.0.0.6"]`}),
			errHas: []string{"two IPv4 addresses"},
		},
		{
			name:   "two IPv6 addresses",
			pod:    fxPod(map[string]string{ips: "fd00::1, 10.0.0.5, fd00::2"}),
			errHas: []string{"two IPv6 addresses"},
		},
		{
			name:   "the same address twice",
			pod:    fxPod(map[string]string{ips: "10.0.0.5,10.0.0.5"}),
			errHas: []string{"twice", "of pod default/web"},
		},
		{
			name:   "malformed JSON",
			pod:    fxPod(map[string]string{ips: `["10.0.0.5"`}),
			errHas: []string{"neither a JSON list", "annotation " + ips + " of pod default/web"},
		},
		{
			name:   "empty annotation",
			pod:    fxPod(map[string]string{ips: ""}),
			errHas: []string{"annotation " + ips + " of pod default/web"},
		},
		{
			name:   "empty JSON list",
			pod:    fxPod(map[string]string{ips: "[]"}),
			errHas: []string{"annotation " + ips + " of pod default/web"},
		},
		{
			name:   "the pod also names IPv4 pools",
			pod:    fxPod(map[string]string{ips: "10.0.0.5", v4: "gen4"}),
			errHas: []string{"both " + ips + " and " + v4 + " for IPv4", "pod default/web"},
		},
		{
			name:   "the pod also names IPv6 pools",
			pod:    fxPod(map[string]string{ips: "10.0.0.5,fd00::1", v6: "gen6"}),
			errHas: []string{"both " + ips + " and " + v6 + " for IPv6"},
		},
		{
			name:   "an address in no pool",
			pod:    fxPod(map[string]string{ips: "192.168.1.1"}),
			errHas: []string{"asks for 192.168.1.1, which lies in no IPPool", "of pod default/web"},
		},
		{
			name:   "an IPv6 address in no pool",
			pod:    fxPod(map[string]string{ips: "fd09::1"}),
			errHas: []string{"asks for fd09::1, which lies in no IPPool"},
		},
		{
			name:   "an address only in a pool with a bad cidr",
			pod:    fxPod(map[string]string{ips: "10.7.0.0"}),
			errHas: []string{"10.7.0.0"},
		},
		{
			name:   "an address only in a pool with a bad nodeSelector",
			pod:    fxPod(map[string]string{ips: "10.6.0.1"}),
			errHas: []string{"10.6.0.1"},
		},
		{
			name:   "an address in a disabled pool",
			pod:    fxPod(map[string]string{ips: "10.4.0.1"}),
			errHas: []string{"asks for 10.4.0.1", `IPPool "off4"`, "disabled"},
		},
		{
			name:   "namespaceSelector refuses the namespace",
			pod:    fxPod(map[string]string{ips: "10.2.0.9"}),
			errHas: []string{"asks for 10.2.0.9", `IPPool "blue4"`, "does not select namespace default", "team=blue"},
		},
		{
			name:   "namespaceSelector refuses: the IPv6 address",
			pod:    PodInfo{Namespace: "red", Name: "x", NamespaceLabels: map[string]string{"team": "red"}, Annotations: map[string]string{ips: "10.0.0.5,fd00:2::1"}},
			errHas: []string{"asks for fd00:2::1", `IPPool "blue6"`, "does not select namespace red", "of pod red/x"},
		},
		{
			name:   "no pools at all",
			pod:    fxPod(map[string]string{ips: "10.0.0.5"}),
			pools:  []*v1alpha1.IPPool{},
			errHas: []string{"lies in no IPPool"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pools := tc.pools
			if pools == nil {
				pools = cluster
			}
			got, err := Choose(tc.pod, tc.node, pools)
			if tc.errHas != nil {
				if !errors.Is(err, ErrPoolChoice) {
					t.Fatalf("Choose = %+v, %v; want an ErrPoolChoice", got, err)
				}
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				if !got.Empty() {
					t.Errorf("failed Choose returned a choice %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Choose: %v", err)
			}
			if !slices.Equal(got.V4, tc.want.V4) || !slices.Equal(got.V6, tc.want.V6) {
				t.Errorf("Choose pools = %q, %q; want %q, %q", got.V4, got.V6, tc.want.V4, tc.want.V6)
			}
			if got.V4Addr != fxAddr(tc.wantV4) || got.V6Addr != fxAddr(tc.wantV6) {
				t.Errorf("Choose addresses = %v, %v; want %q, %q", got.V4Addr, got.V6Addr, tc.wantV4, tc.wantV6)
			}
			if got.Fixed(4) != got.V4Addr || got.Fixed(6) != got.V6Addr {
				t.Errorf("Fixed(4), Fixed(6) = %v, %v; want %v, %v", got.Fixed(4), got.Fixed(6), got.V4Addr, got.V6Addr)
			}
		})
	}
}

// TestChooseWithoutFixed: a pod without the annotation has no fixed address.
func TestChooseWithoutFixed(t *testing.T) {
	got, err := Choose(fxPod(map[string]string{v1alpha1.AnnotationIPv4Pools: "gen4"}), nil, []*v1alpha1.IPPool{
		testPool("gen4", "10.0.0.0/16", nil, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.V4Addr.IsValid() || got.V6Addr.IsValid() {
		t.Fatalf("Choose = %+v, want no fixed address", got)
	}
}

func TestNeedAddrs(t *testing.T) {
	v4 := func(s string) Choice { return Choice{V4: []string{"p"}, V4Addr: fxAddr(s)} }
	v6 := func(s string) Choice { return Choice{V6: []string{"p6"}, V6Addr: fxAddr(s)} }
	for _, tc := range []struct {
		name    string
		choices []Choice
		blocks  []Block
		want    []string
	}{
		{name: "nothing", want: []string{}},
		{name: "choices without fixed addresses", choices: []Choice{{V4: []string{"a"}}, {V6: []string{"b"}}, {}}, want: []string{}},
		{name: "no blocks", choices: []Choice{v4("10.0.0.5")}, want: []string{"10.0.0.5"}},
		{name: "in an open block", choices: []Choice{v4("10.0.0.5")},
			blocks: []Block{poolBlock("10.0.0.0/26", "p")}, want: []string{}},
		{name: "in an open block of another pool", choices: []Choice{v4("10.0.0.5")},
			blocks: []Block{poolBlock("10.0.0.0/26", "other")}, want: []string{}},
		{name: "at the edges of an open block", choices: []Choice{v4("10.0.0.0"), v4("10.0.0.63"), v4("10.0.0.64")},
			blocks: []Block{poolBlock("10.0.0.0/26", "p")}, want: []string{"10.0.0.64"}},
		{name: "in a draining block", choices: []Choice{v4("10.0.0.5")},
			blocks: []Block{drainingBlock("10.0.0.0/26", "p")}, want: []string{"10.0.0.5"}},
		{name: "in a draining and an open block", choices: []Choice{v4("10.0.0.5")},
			blocks: []Block{drainingBlock("10.0.0.0/26", "p"), poolBlock("10.0.0.0/28", "p")}, want: []string{}},
		{name: "outside the node's blocks", choices: []Choice{v4("10.0.1.5"), v6("fd00:1::5")},
			blocks: []Block{poolBlock("10.0.0.0/26", "p"), poolBlock("fd00::/122", "p6")}, want: []string{"10.0.1.5", "fd00:1::5"}},
		{name: "an IPv6 address is not in an IPv4 block", choices: []Choice{v6("::a00:5")},
			blocks: []Block{poolBlock("10.0.0.0/26", "p")}, want: []string{"::a00:5"}},
		{name: "both families of one choice",
			choices: []Choice{{V4: []string{"p"}, V6: []string{"p6"}, V4Addr: fxAddr("10.0.0.5"), V6Addr: fxAddr("fd00::5")}},
			blocks:  []Block{poolBlock("fd00::/122", "p6")}, want: []string{"10.0.0.5"}},
		{name: "sorted by address, not as text, IPv4 first, deduplicated",
			choices: []Choice{v6("fd00::10"), v4("10.0.0.10"), v4("10.0.0.9"), v6("fd00::9"), v4("10.0.0.10"), v4("9.0.0.1"),
				{V4Addr: fxAddr("10.0.0.9"), V6Addr: fxAddr("fd00::9")}},
			want: []string{"9.0.0.1", "10.0.0.9", "10.0.0.10", "fd00::9", "fd00::10"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := NeedAddrs(tc.choices, tc.blocks)
			if got == nil || !slices.Equal(got, tc.want) {
				t.Fatalf("NeedAddrs = %#v, want %q", got, tc.want)
			}
		})
	}
}

// TestNeedsSkipsFixed: a family with a fixed address needs its block (NeedAddrs), not a
// block of its pool.
func TestNeedsSkipsFixed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		choices []Choice
		blocks  []Block
		want    []string
	}{
		{name: "fixed IPv4, pool IPv6",
			choices: []Choice{{V4: []string{"a4"}, V4Addr: fxAddr("10.0.0.5"), V6: []string{"a6"}}},
			want:    []string{"a6"}},
		{name: "both fixed",
			choices: []Choice{{V4: []string{"a4"}, V4Addr: fxAddr("10.0.0.5"), V6: []string{"a6"}, V6Addr: fxAddr("fd00::5")}},
			want:    []string{}},
		{name: "the pool of a fixed address is still needed by another pod",
			choices: []Choice{{V4: []string{"a4"}, V4Addr: fxAddr("10.0.0.5")}, {V4: []string{"a4"}}},
			want:    []string{"a4"}},
		{name: "fixed address outside the node's open block of its pool",
			choices: []Choice{{V4: []string{"a4"}, V4Addr: fxAddr("10.0.1.5")}},
			blocks:  []Block{poolBlock("10.0.0.0/26", "a4")},
			want:    []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Needs(tc.choices, tc.blocks, nil); !slices.Equal(got, tc.want) {
				t.Fatalf("Needs = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestChooseFixedNeeds: what a node reports for a pod with a fixed address, from its
// annotation to poolsNeeded and addressesNeeded.
func TestChooseFixedNeeds(t *testing.T) {
	pools := []*v1alpha1.IPPool{
		testPool("gen4", "10.0.0.0/16", nil, nil),
		testPool("gen6", "fd00::/48", nil, nil),
		testPool("fix4", "10.9.0.0/16", map[string]string{"never": "selected"}, nil),
	}
	c, err := Choose(fxPod(map[string]string{v1alpha1.AnnotationIPAddrs: "10.9.0.77"}), nil, pools)
	if err != nil {
		t.Fatal(err)
	}
	blocks := []Block{poolBlock("10.0.0.0/26", "gen4")}
	if got, want := Needs([]Choice{c}, blocks, nil), []string{"gen6"}; !slices.Equal(got, want) {
		t.Errorf("Needs = %q, want %q", got, want)
	}
	if got, want := NeedAddrs([]Choice{c}, blocks), []string{"10.9.0.77"}; !slices.Equal(got, want) {
		t.Errorf("NeedAddrs = %q, want %q", got, want)
	}
	// The block holding it assigned, nothing more is needed for IPv4, and the address
	// comes from that block.
	blocks = append(blocks, poolBlock("10.9.0.64/26", "fix4"), poolBlock("fd00::/122", "gen6"))
	if got := NeedAddrs([]Choice{c}, blocks); len(got) != 0 {
		t.Errorf("NeedAddrs with the block = %q, want none", got)
	}
	a, _ := newPoolAllocator(t, blocks...)
	got, err := a.AllocateFrom(owner(1), c)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.9.0.77/32", "fd00::/128"}; !slices.Equal(prefixStrings(got), want) {
		t.Fatalf("AllocateFrom = %v, want %v", got, want)
	}
}

func TestAllocateFromFixed(t *testing.T) {
	fix4 := func(s string) Choice { return Choice{V4: []string{"a"}, V4Addr: fxAddr(s)} }
	a := Choice{V4: []string{"a"}}
	for _, tc := range []struct {
		name     string
		blocks   []Block
		reserved []string
		steps    []allocStep
	}{
		{
			name:   "exactly the address; pool allocations go around it",
			blocks: []Block{poolBlock("10.0.0.0/30", "a")},
			steps: []allocStep{
				{owner: 1, choice: fix4("10.0.0.1"), want: []string{"10.0.0.1/32"}},
				{owner: 2, choice: a, want: []string{"10.0.0.0/32"}},
				{owner: 3, choice: a, want: []string{"10.0.0.2/32"}},
				{owner: 4, choice: a, want: []string{"10.0.0.3/32"}},
				{owner: 5, choice: a, err: ErrFull},
			},
		},
		{
			name:   "the first and last address of a block",
			blocks: []Block{poolBlock("10.0.0.0/30", "a")},
			steps: []allocStep{
				{owner: 1, choice: fix4("10.0.0.3"), want: []string{"10.0.0.3/32"}},
				{owner: 2, choice: fix4("10.0.0.0"), want: []string{"10.0.0.0/32"}},
			},
		},
		{
			name:   "from a block of another pool, or of none",
			blocks: []Block{poolBlock("10.0.0.0/30", "other"), poolBlock("10.1.0.0/30", "")},
			steps: []allocStep{
				{owner: 1, choice: Choice{V4: []string{"x"}, V4Addr: fxAddr("10.0.0.2")}, want: []string{"10.0.0.2/32"}},
				{owner: 2, choice: Choice{V4Addr: fxAddr("10.1.0.1")}, want: []string{"10.1.0.1/32"}},
			},
		},
		{
			name:   "an IPv4 block full of others does not matter, only the address",
			blocks: []Block{poolBlock("10.0.0.0/31", "a")},
			steps: []allocStep{
				{owner: 1, choice: a, want: []string{"10.0.0.0/32"}},
				{owner: 2, choice: fix4("10.0.0.1"), want: []string{"10.0.0.1/32"}},
				{owner: 3, choice: a, err: ErrFull},
			},
		},
		{
			name:   "held by another fixed attachment",
			blocks: []Block{poolBlock("10.0.0.0/30", "a")},
			steps: []allocStep{
				{owner: 1, choice: fix4("10.0.0.2"), want: []string{"10.0.0.2/32"}},
				{owner: 2, choice: fix4("10.0.0.2"), err: ErrAddrTaken, errHas: []string{"10.0.0.2", "held by c1"}},
			},
		},
		{
			name:   "held by a pool allocation",
			blocks: []Block{poolBlock("10.0.0.0/30", "a")},
			steps: []allocStep{
				{owner: 1, choice: a, want: []string{"10.0.0.0/32"}},
				{owner: 2, choice: fix4("10.0.0.0"), err: ErrAddrTaken, errHas: []string{"10.0.0.0", "c1"}},
			},
		},
		{
			name:   "a retry returns the same address, whatever it asks for now",
			blocks: []Block{poolBlock("10.0.0.0/30", "a")},
			steps: []allocStep{
				{owner: 1, choice: fix4("10.0.0.2"), want: []string{"10.0.0.2/32"}},
				{owner: 1, choice: fix4("10.0.0.2"), want: []string{"10.0.0.2/32"}},
				{owner: 1, choice: fix4("10.0.0.3"), want: []string{"10.0.0.2/32"}},
				{owner: 1, choice: a, want: []string{"10.0.0.2/32"}},
			},
		},
		{
			name:     "reserved",
			blocks:   []Block{poolBlock("10.0.0.0/29", "a")},
			reserved: []string{"10.0.0.4/30"},
			steps: []allocStep{
				{owner: 1, choice: fix4("10.0.0.5"), err: ErrPoolChoice, errHas: []string{"10.0.0.5", "reserved"}},
				{owner: 1, choice: fix4("10.0.0.3"), want: []string{"10.0.0.3/32"}},
			},
		},
		{
			name:   "no block of the node holds it",
			blocks: []Block{poolBlock("10.0.0.0/30", "a")},
			steps: []allocStep{
				{owner: 1, choice: fix4("10.0.0.4"), err: ErrNoBlock, errHas: []string{"fixed address 10.0.0.4"}},
			},
		},
		{
			name:  "no blocks at all",
			steps: []allocStep{{owner: 1, choice: fix4("10.0.0.4"), err: ErrNoBlock, errHas: []string{"fixed address 10.0.0.4"}}},
		},
		{
			name:   "only a draining block holds it",
			blocks: []Block{drainingBlock("10.0.0.0/30", "a"), poolBlock("10.1.0.0/30", "a")},
			steps: []allocStep{
				{owner: 1, choice: fix4("10.0.0.1"), err: ErrNoBlock, errHas: []string{"fixed address 10.0.0.1"}},
			},
		},
		{
			name:   "IPv6",
			blocks: []Block{poolBlock("fd00::/126", "a6")},
			steps: []allocStep{
				{owner: 1, choice: Choice{V6: []string{"a6"}, V6Addr: fxAddr("fd00::2")}, want: []string{"fd00::2/128"}},
				{owner: 2, choice: Choice{V6: []string{"a6"}}, want: []string{"fd00::/128"}},
				{owner: 3, choice: Choice{V6: []string{"a6"}, V6Addr: fxAddr("fd00::2")}, err: ErrAddrTaken, errHas: []string{"fd00::2", "c1"}},
			},
		},
		{
			name:   "dual stack: fixed IPv4, IPv6 from a pool",
			blocks: []Block{poolBlock("10.0.0.0/30", "a"), poolBlock("fd00::/126", "a6")},
			steps: []allocStep{
				{owner: 1, choice: Choice{V4: []string{"a"}, V4Addr: fxAddr("10.0.0.3"), V6: []string{"a6"}}, want: []string{"10.0.0.3/32", "fd00::/128"}},
			},
		},
		{
			name:   "dual stack: IPv4 from a pool, fixed IPv6",
			blocks: []Block{poolBlock("10.0.0.0/30", "a"), poolBlock("fd00::/126", "a6")},
			steps: []allocStep{
				{owner: 1, choice: Choice{V4: []string{"a"}, V6: []string{"a6"}, V6Addr: fxAddr("fd00::3")}, want: []string{"10.0.0.0/32", "fd00::3/128"}},
			},
		},
		{
			name:   "dual stack: both fixed",
			blocks: []Block{poolBlock("10.0.0.0/30", "a"), poolBlock("fd00::/126", "a6")},
			steps: []allocStep{
				{owner: 1, choice: Choice{V4Addr: fxAddr("10.0.0.2"), V6Addr: fxAddr("fd00::1")}, want: []string{"10.0.0.2/32", "fd00::1/128"}},
			},
		},
		{
			name:   "fixed IPv4 only: no IPv6 though the node has a block",
			blocks: []Block{poolBlock("10.0.0.0/30", "a"), poolBlock("fd00::/126", "a6")},
			steps: []allocStep{
				{owner: 1, choice: Choice{V4Addr: fxAddr("10.0.0.2")}, want: []string{"10.0.0.2/32"}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			al, _ := newPoolAllocator(t, tc.blocks...)
			if tc.reserved != nil {
				al.SetReserved(parsePrefixes(t, tc.reserved...))
			}
			runAllocSteps(t, al, tc.steps)
		})
	}
}

// TestAllocateFromFixedHolder: the refusal of a taken address names its holder, by pod
// when known, else by container ID, also when the holder was adopted from the API copy
// and lies in no block of the node.
func TestAllocateFromFixedHolder(t *testing.T) {
	a, _ := newPoolAllocator(t, poolBlock("10.0.0.0/29", "a"))
	web := Owner{ContainerID: "c-web", IfName: "eth0", PodUID: "u1", Namespace: "shop", Pod: "web-0"}
	if _, err := a.AllocateFrom(web, Choice{V4Addr: fxAddr("10.0.0.5")}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Adopt(map[netip.Addr]Owner{fxAddr("10.9.9.9"): {ContainerID: "c-gone", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr, has string
	}{
		{"10.0.0.5", "10.0.0.5 is held by pod shop/web-0 on this node"},
		{"10.9.9.9", "10.9.9.9 is held by c-gone on this node"},
	} {
		got, err := a.AllocateFrom(owner(2), Choice{V4Addr: fxAddr(tc.addr)})
		if !errors.Is(err, ErrAddrTaken) || got != nil {
			t.Fatalf("AllocateFrom(%s) = %v, %v; want ErrAddrTaken", tc.addr, got, err)
		}
		if !strings.Contains(err.Error(), tc.has) {
			t.Errorf("error %q does not say %q", err, tc.has)
		}
		if errors.Is(err, ErrPoolChoice) || errors.Is(err, ErrNoBlock) {
			t.Errorf("error %q is also another kind", err)
		}
	}
}

// TestAllocateFromFixedReleased: a released fixed address can be taken by the next pod
// asking for it (a StatefulSet pod recreated).
func TestAllocateFromFixedReleased(t *testing.T) {
	a, _ := newPoolAllocator(t, poolBlock("10.0.0.0/29", "a"))
	c := Choice{V4Addr: fxAddr("10.0.0.5")}
	runAllocSteps(t, a, []allocStep{
		{owner: 1, choice: c, want: []string{"10.0.0.5/32"}},
		{owner: 2, choice: c, err: ErrAddrTaken},
	})
	if got, err := a.Release(owner(1).attachment()); err != nil || len(got) != 1 || got[0] != fxAddr("10.0.0.5") {
		t.Fatalf("Release = %v, %v", got, err)
	}
	runAllocSteps(t, a, []allocStep{{owner: 2, choice: c, want: []string{"10.0.0.5/32"}}})
}

// TestAllocateFromFixedRollback: when one family fails, the other family's address is
// given back (on disk too), whichever of them is the fixed one.
func TestAllocateFromFixedRollback(t *testing.T) {
	for _, tc := range []struct {
		name   string
		choice Choice
		err    error
	}{
		{name: "fixed IPv4, no IPv6 block of the pool", choice: Choice{V4Addr: fxAddr("10.0.0.5"), V6: []string{"b6"}}, err: ErrNoBlock},
		{name: "fixed IPv4, IPv6 block full", choice: Choice{V4Addr: fxAddr("10.0.0.5"), V6: []string{"a6"}}, err: ErrFull},
		{name: "fixed IPv4, fixed IPv6 taken", choice: Choice{V4Addr: fxAddr("10.0.0.5"), V6Addr: fxAddr("fd00::")}, err: ErrAddrTaken},
		{name: "fixed IPv4, fixed IPv6 in no block", choice: Choice{V4Addr: fxAddr("10.0.0.5"), V6Addr: fxAddr("fd00::1:1")}, err: ErrNoBlock},
		{name: "IPv4 from a pool, fixed IPv6 taken", choice: Choice{V4: []string{"a"}, V6Addr: fxAddr("fd00::")}, err: ErrAddrTaken},
		{name: "fixed IPv4 taken: nothing allocated", choice: Choice{V4Addr: fxAddr("10.0.0.0"), V6: []string{"a6"}}, err: ErrAddrTaken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, s := newPoolAllocator(t, poolBlock("10.0.0.0/29", "a"), poolBlock("fd00::/128", "a6"))
			first, err := a.AllocateFrom(owner(1), Choice{V4: []string{"a"}, V6: []string{"a6"}})
			if err != nil || len(first) != 2 {
				t.Fatalf("first = %v, %v", first, err)
			}
			got, err := a.AllocateFrom(owner(2), tc.choice)
			if !errors.Is(err, tc.err) || got != nil {
				t.Fatalf("second = %v, %v; want %v", got, err, tc.err)
			}
			if held := a.Get(owner(2).attachment()); len(held) != 0 {
				t.Fatalf("c2 holds %v after a failed allocation", held)
			}
			if len(s.M) != 2 {
				t.Fatalf("store holds %v, want only c1's two addresses", s.M)
			}
			// The fixed IPv4 address is free again for the next pod asking for it.
			runAllocSteps(t, a, []allocStep{{owner: 3, choice: Choice{V4Addr: fxAddr("10.0.0.5")}, want: []string{"10.0.0.5/32"}}})
		})
	}
}

// TestAllocateFromFixedStoreFailure: a fixed address the store could not record is not
// held.
func TestAllocateFromFixedStoreFailure(t *testing.T) {
	a, s := newPoolAllocator(t, poolBlock("10.0.0.0/29", "a"))
	s.FailPut = errors.New("disk full")
	c := Choice{V4Addr: fxAddr("10.0.0.5")}
	if got, err := a.AllocateFrom(owner(1), c); err == nil {
		t.Fatalf("AllocateFrom = %v with a failing store", got)
	}
	s.FailPut = nil
	runAllocSteps(t, a, []allocStep{{owner: 2, choice: c, want: []string{"10.0.0.5/32"}}})
}
