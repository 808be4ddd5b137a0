package torfilter

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	goldenfile "github.com/hostroute/hostroute/internal/golden"
)

var update = flag.Bool("update", false, "rewrite routing/torfilter/testdata/*.golden from the current output")

func node(name string, addrs []string, as string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range addrs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	if as != "" {
		n.Annotations = map[string]string{v1alpha1.AnnotationASNumber: as}
	}
	return n
}

func block(cidr, nodeName string) *v1alpha1.IPAMBlock {
	b := &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: cidr, Node: nodeName}}
	b.Name = strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(cidr)
	return b
}

func pool(name, cidr string, noExport bool) *v1alpha1.IPPool {
	p := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{CIDR: cidr, DisableBGPExport: noExport}}
	p.Name = name
	return p
}

type filterCase struct {
	name, about string
	in          Inputs
}

func cases() []filterCase {
	oneAS := Inputs{
		Nodes: []*corev1.Node{node("node-2", []string{"192.0.2.2"}, ""), node("node-1", []string{"192.0.2.1"}, "")},
		Blocks: []*v1alpha1.IPAMBlock{block("10.244.0.64/26", "node-2"), block("10.244.0.0/26", "node-1"),
			block("10.244.1.0/26", "node-1"), block("10.244.0.128/26", "")},
		Pools: []*v1alpha1.IPPool{pool("default-ipv4", "10.244.0.0/16", false)},
	}
	deleting := block("10.244.0.192/26", "node-3")
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	v6only := node("node.4", []string{"fd00:192::4"}, "64603")
	v6only.Annotations[v1alpha1.AnnotationRouterID] = "192.0.2.44"
	racks := Inputs{
		Config: &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{ASNumber: 64512}},
		Nodes: []*corev1.Node{
			node("node-1", []string{"192.0.2.1", "fd00:192::1"}, "64601"), node("node-2", []string{"192.0.2.2"}, "64601"),
			node("node-3", []string{"192.0.3.3"}, "64602"), v6only,
			node("node_4", []string{"192.0.2.5"}, ""), // the cluster AS; its BIRD name collides with node.4's
			node("joining", nil, ""), node("bad-as", []string{"192.0.2.9"}, "sixty"),
			node("twin-a", []string{"192.0.2.7"}, ""), node("twin-b", []string{"192.0.2.7"}, ""),
		},
		Blocks: []*v1alpha1.IPAMBlock{
			block("10.244.0.0/26", "node-1"), block("fd00:10:244::/122", "node-1"), block("10.244.0.64/26", "node-2"),
			block("10.244.0.128/26", "node-3"), deleting, block("fd00:10:244::40/122", "node.4"),
			block("10.245.0.0/26", "node-2"), // a disableBGPExport pool
			block("172.16.0.0/26", "node-3"), // outside every pool
			block("10.244.1.0/26", "gone"), block("10.244.1.64/26", "twin-a"), block("garbage", "node-1"),
		},
		Pools: []*v1alpha1.IPPool{pool("v4", "10.244.0.0/16", false), pool("v6", "fd00:10:244::/48", false),
			pool("internal", "10.245.0.0/16", true)},
	}
	services := oneAS
	services.Config = &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{
		ServiceClusterIPs:      []v1alpha1.ServiceIPRange{{CIDR: "10.96.0.0/12"}, {CIDR: "fd00:96::/108"}},
		ServiceExternalIPs:     []v1alpha1.ServiceIPRange{{CIDR: "198.51.100.0/24"}},
		ServiceLoadBalancerIPs: []v1alpha1.ServiceIPRange{{CIDR: "203.0.113.0/24"}, {CIDR: "198.51.100.0/24"}},
	}}
	return []filterCase{
		{"one-as", "every node in AS 64512 (the default), one pool, a free block", oneAS},
		{"as-per-rack", "AS per rack, dual stack, and every input that is left out", racks},
		{"empty", "no blocks yet: each node's filter refuses everything", Inputs{Nodes: oneAS.Nodes}},
		{"services", "one-as with Service ranges: cluster IPs as a range, external IPs as range and host routes, LoadBalancer IPs as host routes", services},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	goldenfile.Check(t, name, got, *update, "go test ./routing/torfilter -update")
}

// The filters of representative clusters in both formats, against testdata/*.golden.
func TestGolden(t *testing.T) {
	for _, c := range cases() {
		for _, format := range Formats {
			t.Run(c.name+"-"+format, func(t *testing.T) {
				var b bytes.Buffer
				if err := Render(&b, format, Compute(c.in)); err != nil {
					t.Fatal(err)
				}
				golden(t, c.name+"."+format, b.Bytes())
			})
		}
	}
}

// The output does not depend on the order of the inputs.
func TestDeterministic(t *testing.T) {
	for _, c := range cases() {
		want := Compute(c.in)
		for i := range 20 {
			in := c.in
			r := rand.New(rand.NewPCG(uint64(i), 1))
			in.Nodes, in.Blocks, in.Pools = shuffled(r, in.Nodes), shuffled(r, in.Blocks), shuffled(r, in.Pools)
			if d := cmp.Diff(want, Compute(in), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); d != "" {
				t.Fatalf("%s: order changed the result:\n%s", c.name, d)
			}
		}
	}
}

func shuffled[T any](r *rand.Rand, xs []T) []T {
	out := append([]T(nil), xs...)
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// What each node may announce, read from Compute rather than from the text.
func TestCompute(t *testing.T) {
	f := Compute(cases()[1].in)
	got := map[string][]string{}
	for _, n := range f.Nodes {
		var bs []string
		for _, b := range n.Blocks {
			bs = append(bs, b.String())
		}
		got[n.Name+"/"+n.BIRDName] = append(bs, "AS"+strconv.FormatUint(uint64(n.AS), 10))
	}
	want := map[string][]string{
		"node-1/hostroute_import_node_1":   {"10.244.0.0/26", "fd00:10:244::/122", "AS64601"},
		"node-2/hostroute_import_node_2":   {"10.244.0.64/26", "AS64601"},
		"node-3/hostroute_import_node_3":   {"10.244.0.128/26", "AS64602"},
		"node.4/hostroute_import_node_4":   {"fd00:10:244::40/122", "AS64603"},
		"node_4/hostroute_import_node_4_2": {"AS64512"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("filters (-want +got):\n%s", d)
	}
	if one, err := f.Only("node-3"); err != nil || len(one.Nodes) != 1 || one.Nodes[0].Name != "node-3" {
		t.Errorf("Only(node-3) = %+v, %v", one, err)
	}
	for node, want := range map[string]string{
		"twin-a":  "node twin-a has no filter: shares address 192.0.2.7 with twin-b (hostroute peers neither)",
		"joining": "node joining has no filter: no InternalIP yet",
		"nobody":  "node nobody has no filter: no such Node",
	} {
		if _, err := f.Only(node); err == nil || err.Error() != want {
			t.Errorf("Only(%s): %v, want %q", node, err, want)
		}
	}
	if err := Render(&bytes.Buffer{}, "junos", f); err == nil {
		t.Error("Render junos: no error")
	}
}
