package routing

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

func ownerNode(name string, addrs []string, as string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range addrs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	if as != "" {
		n.Annotations = map[string]string{v1alpha1.AnnotationASNumber: as}
	}
	return n
}

func ownerBlock(cidr, node string) *v1alpha1.IPAMBlock {
	return &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: cidr, Node: node}}
}

// Each block gets its node's next hop of the block's family and its AS (annotation or
// cluster default); blocks without a usable node are left out.
func TestBlockOwnersOf(t *testing.T) {
	nodes := []*corev1.Node{
		ownerNode("a", []string{"192.0.2.1", "fd00::1"}, "64601"),
		ownerNode("b", []string{"192.0.2.2"}, ""),
		ownerNode("bad-as", []string{"192.0.2.3"}, "x"),
		ownerNode("joining", nil, ""),
	}
	cfg := &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{ASNumber: 64700}}
	blocks := []*v1alpha1.IPAMBlock{
		ownerBlock("10.0.0.64/26", "b"), ownerBlock("10.0.0.0/26", "a"), ownerBlock("fd00:10::/122", "a"),
		ownerBlock("fd00:10::40/122", "b"), // IPv6 block of an IPv4-only node: its IPv4 next hop
		ownerBlock("10.0.0.128/26", ""), ownerBlock("10.0.0.192/26", "gone"), ownerBlock("10.0.1.0/26", "bad-as"),
		ownerBlock("10.0.2.0/26", "joining"), ownerBlock("garbage", "a"), nil,
	}
	owners := BlockOwnersOf(nodes, cfg, blocks)
	addrs, ases := OwnerMaps(owners)
	wantAddrs := map[netip.Prefix]netip.Addr{
		gbPfx("10.0.0.0/26"): netip.MustParseAddr("192.0.2.1"), gbPfx("10.0.0.64/26"): netip.MustParseAddr("192.0.2.2"),
		gbPfx("fd00:10::/122"): netip.MustParseAddr("fd00::1"), gbPfx("fd00:10::40/122"): netip.MustParseAddr("192.0.2.2"),
	}
	wantAS := map[netip.Prefix]uint32{gbPfx("10.0.0.0/26"): 64601, gbPfx("10.0.0.64/26"): 64700,
		gbPfx("fd00:10::/122"): 64601, gbPfx("fd00:10::40/122"): 64700}
	if !reflect.DeepEqual(addrs, wantAddrs) || !reflect.DeepEqual(ases, wantAS) {
		t.Errorf("OwnerMaps = %v, %v; want %v, %v", addrs, ases, wantAddrs, wantAS)
	}
	var order []string
	for _, o := range owners {
		order = append(order, o.Block.String()+"@"+o.Node.Name)
	}
	want := []string{"10.0.0.0/26@a", "10.0.0.64/26@b", "fd00:10::/122@a", "fd00:10::40/122@b"}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
}
