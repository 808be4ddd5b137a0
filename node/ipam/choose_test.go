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

// testPool builds an IPPool; nodeSel and nsSel are matchLabels, nil for no selector.
func testPool(name, cidr string, nodeSel, nsSel map[string]string) *v1alpha1.IPPool {
	p := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.IPPoolSpec{CIDR: cidr},
	}
	if nodeSel != nil {
		p.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: nodeSel}
	}
	if nsSel != nil {
		p.Spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: nsSel}
	}
	return p
}

func TestChoose(t *testing.T) {
	const (
		v4 = v1alpha1.AnnotationIPv4Pools
		v6 = v1alpha1.AnnotationIPv6Pools
	)
	rack1 := map[string]string{"rack": "r1"}
	team := map[string]string{"team": "blue"}
	// A cluster with general pools of both families, a namespace-selected pool of each
	// family, and pools only for nodes of rack r1.
	cluster := []*v1alpha1.IPPool{
		testPool("general-b4", "10.1.0.0/16", nil, nil),
		testPool("general-a4", "10.0.0.0/16", nil, nil),
		testPool("general6", "fd00::/48", nil, nil),
		testPool("blue4", "10.2.0.0/16", nil, team),
		testPool("blue6", "fd00:2::/48", nil, team),
		testPool("rack4", "10.3.0.0/16", rack1, nil),
		testPool("rack-blue4", "10.4.0.0/16", rack1, team),
		testPool("bad-cidr", "10.5.0.0", nil, nil),
	}
	plain := PodInfo{Namespace: "default", Name: "web"}
	blue := PodInfo{Namespace: "blue", Name: "api", NamespaceLabels: team}

	for _, tc := range []struct {
		name   string
		pod    PodInfo
		node   map[string]string
		pools  []*v1alpha1.IPPool
		want   Choice
		errHas []string // non-nil: Choose fails with ErrPoolChoice and a message holding these
	}{
		{
			name:  "no annotations, only general pools, in name order",
			pod:   plain,
			pools: cluster,
			want:  Choice{V4: []string{"general-a4", "general-b4"}, V6: []string{"general6"}},
		},
		{
			name:  "namespace-selected pools win over general ones",
			pod:   blue,
			pools: cluster,
			want:  Choice{V4: []string{"blue4"}, V6: []string{"blue6"}},
		},
		{
			name:  "namespace not selected falls back to the general pools",
			pod:   PodInfo{Namespace: "red", Name: "x", NamespaceLabels: map[string]string{"team": "red"}},
			pools: cluster,
			want:  Choice{V4: []string{"general-a4", "general-b4"}, V6: []string{"general6"}},
		},
		{
			name:  "nodeSelector adds the rack's general pool on its nodes",
			pod:   plain,
			node:  rack1,
			pools: cluster,
			want:  Choice{V4: []string{"general-a4", "general-b4", "rack4"}, V6: []string{"general6"}},
		},
		{
			name:  "nodeSelector adds the rack's namespace pool on its nodes",
			pod:   blue,
			node:  rack1,
			pools: cluster,
			want:  Choice{V4: []string{"blue4", "rack-blue4"}, V6: []string{"blue6"}},
		},
		{
			name: "nodeSelector leaves a namespace with no pool on this node to the general pools",
			pod:  blue,
			pools: []*v1alpha1.IPPool{
				testPool("general4", "10.0.0.0/16", nil, nil),
				testPool("rack-blue4", "10.4.0.0/16", rack1, team),
			},
			want: Choice{V4: []string{"general4"}},
		},
		{
			name:  "a family with no pool is nil",
			pod:   plain,
			pools: []*v1alpha1.IPPool{testPool("only4", "10.0.0.0/16", nil, nil)},
			want:  Choice{V4: []string{"only4"}},
		},
		{
			name:  "no pools at all",
			pod:   plain,
			pools: nil,
			want:  Choice{},
		},
		{
			name: "a family with only pools for other nodes is nil",
			pod:  plain,
			pools: []*v1alpha1.IPPool{
				testPool("rack4", "10.3.0.0/16", rack1, nil),
				testPool("general6", "fd00::/48", nil, nil),
			},
			want: Choice{V6: []string{"general6"}},
		},
		{
			name: "namespace annotation, comma list in its order",
			pod: PodInfo{Namespace: "default", Name: "web",
				NamespaceAnnotations: map[string]string{v4: " general-b4 , general-a4 "}},
			pools: cluster,
			want:  Choice{V4: []string{"general-b4", "general-a4"}, V6: []string{"general6"}},
		},
		{
			name: "namespace annotation, JSON list in its order",
			pod: PodInfo{Namespace: "blue", Name: "api", NamespaceLabels: team,
				NamespaceAnnotations: map[string]string{v4: `["general-a4","blue4"]`, v6: ` ["general6"] `}},
			pools: cluster,
			want:  Choice{V4: []string{"general-a4", "blue4"}, V6: []string{"general6"}},
		},
		{
			name: "pod annotation wins over namespace annotation for its family only",
			pod: PodInfo{Namespace: "blue", Name: "api", NamespaceLabels: team,
				Annotations:          map[string]string{v4: "general-b4"},
				NamespaceAnnotations: map[string]string{v4: "general-a4", v6: "general6"}},
			pools: cluster,
			want:  Choice{V4: []string{"general-b4"}, V6: []string{"general6"}},
		},
		{
			name: "pod annotation for one family, the other keeps the default",
			pod: PodInfo{Namespace: "blue", Name: "api", NamespaceLabels: team,
				Annotations: map[string]string{v6: `["general6"]`}},
			pools: cluster,
			want:  Choice{V4: []string{"blue4"}, V6: []string{"general6"}},
		},
		{
			name: "pod annotation hides a malformed namespace annotation of its family",
			pod: PodInfo{Namespace: "default", Name: "web",
				Annotations:          map[string]string{v4: "general-a4"},
				NamespaceAnnotations: map[string]string{v4: `["general-a4"`}},
			pools: cluster,
			want:  Choice{V4: []string{"general-a4"}, V6: []string{"general6"}},
		},
		{
			name: "named pool with a matching nodeSelector and namespaceSelector",
			pod: PodInfo{Namespace: "blue", Name: "api", NamespaceLabels: team,
				Annotations: map[string]string{v4: "rack-blue4"}},
			node:  rack1,
			pools: cluster,
			want:  Choice{V4: []string{"rack-blue4"}, V6: []string{"blue6"}},
		},
		{
			name: "pools of both families from one dual-stack annotation set",
			pod: PodInfo{Namespace: "default", Name: "web",
				Annotations: map[string]string{v4: "general-a4", v6: "general6"}},
			pools: cluster,
			want:  Choice{V4: []string{"general-a4"}, V6: []string{"general6"}},
		},
		{
			name: "pod annotation: unknown pool",
			pod: PodInfo{Namespace: "default", Name: "web",
				Annotations: map[string]string{v4: "general-a4,nosuch"}},
			pools:  cluster,
			errHas: []string{`"nosuch"`, "does not exist", "annotation " + v4 + " of pod default/web"},
		},
		{
			name: "namespace annotation: unknown pool",
			pod: PodInfo{Namespace: "default", Name: "web",
				NamespaceAnnotations: map[string]string{v6: `["nosuch6"]`}},
			pools:  cluster,
			errHas: []string{`"nosuch6"`, "does not exist", "annotation " + v6 + " of namespace default"},
		},
		{
			name: "pod annotation: pool of the other family",
			pod: PodInfo{Namespace: "default", Name: "web",
				Annotations: map[string]string{v6: "general-a4"}},
			pools:  cluster,
			errHas: []string{`"general-a4"`, "is an IPv4 pool", "not IPv6", "of pod default/web"},
		},
		{
			name: "namespace annotation: pool of the other family",
			pod: PodInfo{Namespace: "default", Name: "web",
				NamespaceAnnotations: map[string]string{v4: "general6"}},
			pools:  cluster,
			errHas: []string{`"general6"`, "is an IPv6 pool", "not IPv4", "of namespace default"},
		},
		{
			name: "pod annotation: nodeSelector refuses",
			pod: PodInfo{Namespace: "default", Name: "web",
				Annotations: map[string]string{v4: "rack4"}},
			node:   map[string]string{"rack": "r2"},
			pools:  cluster,
			errHas: []string{`"rack4"`, "does not select this node", "rack=r1", "of pod default/web"},
		},
		{
			name: "namespace annotation: nodeSelector refuses",
			pod: PodInfo{Namespace: "default", Name: "web",
				NamespaceAnnotations: map[string]string{v4: "rack4"}},
			pools:  cluster,
			errHas: []string{`"rack4"`, "does not select this node", "of namespace default"},
		},
		{
			name: "pod annotation: namespaceSelector refuses",
			pod: PodInfo{Namespace: "default", Name: "web",
				Annotations: map[string]string{v4: "blue4"}},
			pools:  cluster,
			errHas: []string{`"blue4"`, "does not select namespace default", "team=blue", "of pod default/web"},
		},
		{
			name: "namespace annotation: namespaceSelector refuses",
			pod: PodInfo{Namespace: "red", Name: "x", NamespaceLabels: map[string]string{"team": "red"},
				NamespaceAnnotations: map[string]string{v6: "blue6"}},
			pools:  cluster,
			errHas: []string{`"blue6"`, "does not select namespace red", "of namespace red"},
		},
		{
			name: "named pool with a bad cidr",
			pod: PodInfo{Namespace: "default", Name: "web",
				Annotations: map[string]string{v4: "bad-cidr"}},
			pools:  cluster,
			errHas: []string{`"bad-cidr"`, "bad cidr", "of pod default/web"},
		},
		{
			name: "pod annotation: malformed JSON",
			pod: PodInfo{Namespace: "default", Name: "web",
				Annotations: map[string]string{v4: `["general-a4",`}},
			pools:  cluster,
			errHas: []string{"general-a4", "neither a JSON list", "of pod default/web"},
		},
		{
			name: "namespace annotation: malformed JSON",
			pod: PodInfo{Namespace: "blue", Name: "api",
				NamespaceAnnotations: map[string]string{v6: `[general6]`}},
			pools:  cluster,
			errHas: []string{"general6", "neither a JSON list", "of namespace blue"},
		},
		{
			name: "pod annotation: empty name in a comma list",
			pod: PodInfo{Namespace: "default", Name: "web",
				Annotations: map[string]string{v4: "general-a4,,general-b4"}},
			pools:  cluster,
			errHas: []string{"general-a4,,general-b4", "empty IPPool name", "of pod default/web"},
		},
		{
			name: "namespace annotation: empty annotation",
			pod: PodInfo{Namespace: "default", Name: "web",
				NamespaceAnnotations: map[string]string{v4: ""}},
			pools:  cluster,
			errHas: []string{"empty IPPool name", "of namespace default"},
		},
		{
			name: "pod annotation: empty JSON list",
			pod: PodInfo{Namespace: "default", Name: "web",
				Annotations: map[string]string{v6: "[]"}},
			pools:  cluster,
			errHas: []string{"names no IPPool", "of pod default/web"},
		},
		{
			name: "pod annotation: duplicate name",
			pod: PodInfo{Namespace: "default", Name: "web",
				Annotations: map[string]string{v4: `["general-a4","general-b4","general-a4"]`}},
			pools:  cluster,
			errHas: []string{`"general-a4" twice`, "of pod default/web"},
		},
		{
			name: "namespace annotation: duplicate name",
			pod: PodInfo{Namespace: "default", Name: "web",
				NamespaceAnnotations: map[string]string{v4: "general-a4, general-a4"}},
			pools:  cluster,
			errHas: []string{`"general-a4" twice`, "of namespace default"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Choose(tc.pod, tc.node, tc.pools)
			if tc.errHas != nil {
				if !errors.Is(err, ErrPoolChoice) {
					t.Fatalf("Choose = %v, %v; want an ErrPoolChoice", got, err)
				}
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				if !got.Empty() {
					t.Errorf("failed Choose returned a choice %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Choose: %v", err)
			}
			if !slices.Equal(got.V4, tc.want.V4) || !slices.Equal(got.V6, tc.want.V6) {
				t.Fatalf("Choose = %+v, want %+v", got, tc.want)
			}
			if (got.V4 == nil) != (tc.want.V4 == nil) || (got.V6 == nil) != (tc.want.V6 == nil) {
				t.Fatalf("Choose = %#v, want %#v (nil-ness of a family differs)", got, tc.want)
			}
		})
	}
}

func TestParsePoolList(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		errHas  string
		wantErr bool
	}{
		{in: "a", want: []string{"a"}},
		{in: "a,b", want: []string{"a", "b"}},
		{in: "  b , a  ", want: []string{"b", "a"}},
		{in: `["a","b"]`, want: []string{"a", "b"}},
		{in: ` [ "b" , "a" ] `, want: []string{"b", "a"}},
		{in: `["a",]`, wantErr: true, errHas: "neither a JSON list"},
		{in: `["a"`, wantErr: true, errHas: "neither a JSON list"},
		{in: `[1]`, wantErr: true, errHas: "neither a JSON list"},
		{in: `[]`, wantErr: true, errHas: "names no IPPool"},
		{in: ``, wantErr: true, errHas: "empty IPPool name"},
		{in: `a,`, wantErr: true, errHas: "empty IPPool name"},
		{in: `,a`, wantErr: true, errHas: "empty IPPool name"},
		{in: `["a",""]`, wantErr: true, errHas: "empty IPPool name"},
		{in: `a,b,a`, wantErr: true, errHas: `"a" twice`},
		{in: `["b","b"]`, wantErr: true, errHas: `"b" twice`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parsePoolList(tc.in)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("parsePoolList(%q) = %v, %v; want an error mentioning %q", tc.in, got, err, tc.errHas)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("parsePoolList(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestNeeds(t *testing.T) {
	blk := func(prefix, pool string, draining bool) Block {
		return Block{Prefix: netip.MustParsePrefix(prefix), Pool: pool, Draining: draining}
	}
	for _, tc := range []struct {
		name     string
		choices  []Choice
		blocks   []Block
		disabled map[string]bool
		want     []string
	}{
		{
			name: "nothing to choose",
			want: []string{},
		},
		{
			name:    "no blocks: the first pool of each family",
			choices: []Choice{{V4: []string{"a4", "b4"}, V6: []string{"a6", "b6"}}},
			want:    []string{"a4", "a6"},
		},
		{
			name:    "the pool the node already has an open block of",
			choices: []Choice{{V4: []string{"a4", "b4"}, V6: []string{"a6", "b6"}}},
			blocks:  []Block{blk("10.1.0.0/26", "b4", false), blk("fd00:1::/122", "b6", false)},
			want:    []string{"b4", "b6"},
		},
		{
			name:    "a block of a later pool wins over none of the first",
			choices: []Choice{{V4: []string{"a4", "b4", "c4"}}},
			blocks:  []Block{blk("10.2.0.0/26", "c4", false)},
			want:    []string{"c4"},
		},
		{
			name:    "a draining block does not count",
			choices: []Choice{{V4: []string{"a4", "b4"}}},
			blocks:  []Block{blk("10.1.0.0/26", "b4", true)},
			want:    []string{"a4"},
		},
		{
			name:    "draining block of the first pool, open block of the second",
			choices: []Choice{{V4: []string{"a4", "b4"}}},
			blocks:  []Block{blk("10.0.0.0/26", "a4", true), blk("10.1.0.0/26", "b4", false)},
			want:    []string{"b4"},
		},
		{
			name:     "no block: disabled pools are skipped",
			choices:  []Choice{{V4: []string{"a4", "b4", "c4"}}},
			disabled: map[string]bool{"a4": true, "b4": true},
			want:     []string{"c4"},
		},
		{
			name:     "an open block of a disabled pool is still used",
			choices:  []Choice{{V4: []string{"a4", "b4"}}},
			blocks:   []Block{blk("10.0.0.0/26", "a4", false)},
			disabled: map[string]bool{"a4": true},
			want:     []string{"a4"},
		},
		{
			name:     "only disabled pools and no block: nothing",
			choices:  []Choice{{V4: []string{"a4"}, V6: []string{"a6"}}},
			disabled: map[string]bool{"a4": true},
			want:     []string{"a6"},
		},
		{
			name:     "only a draining block of a disabled pool: nothing",
			choices:  []Choice{{V4: []string{"a4"}}},
			blocks:   []Block{blk("10.0.0.0/26", "a4", true)},
			disabled: map[string]bool{"a4": true},
			want:     []string{},
		},
		{
			name: "several choices: sorted and deduplicated",
			choices: []Choice{
				{V4: []string{"z4"}, V6: []string{"m6"}},
				{V4: []string{"b4", "z4"}},
				{V4: []string{"z4", "b4"}, V6: []string{"m6"}},
				{V6: []string{"a6"}},
				{},
			},
			want: []string{"a6", "b4", "m6", "z4"},
		},
		{
			name: "several choices sharing a held block",
			choices: []Choice{
				{V4: []string{"a4", "b4"}},
				{V4: []string{"c4", "b4"}},
			},
			blocks: []Block{blk("10.1.0.0/26", "b4", false)},
			want:   []string{"b4"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Needs(tc.choices, tc.blocks, tc.disabled)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Needs = %q, want %q", got, tc.want)
			}
		})
	}
}
