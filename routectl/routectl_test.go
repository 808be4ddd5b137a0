package routectl

import (
	"bytes"
	"encoding/json"
	"flag"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/v1alpha1"
	goldenfile "github.com/hostroute/hostroute/internal/golden"
)

var update = flag.Bool("update", false, "rewrite routectl/testdata/*.golden from the current output")

// now is the fixtures' clock: every age in the goldens is relative to it.
var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	goldenfile.Check(t, name, got, *update, "go test ./routectl -update")
}

// routingFixture is an agent's answer on node-1: the ToR session down, one route missing.
func routingFixture() *agentv1.RoutingResponse {
	up := now.Add(-95 * time.Minute).Unix()
	return &agentv1.RoutingResponse{
		Node: "node-1", Ready: true, RouterId: "192.0.2.1", AsNumber: 64512,
		Sessions: []*agentv1.Session{
			{Peer: "192.0.2.2", Kind: "mesh", Name: "node-2", LocalAs: 64512, PeerAs: 64512, State: "Established", SinceUnix: up, BfdState: "Up", Received: 1, Accepted: 1, Advertised: 1},
			{Peer: "192.0.2.254", Kind: "external", Name: "tor", LocalAs: 64512, PeerAs: 65000, State: "Active", SinceUnix: now.Add(-42 * time.Second).Unix(), BfdState: "Down", LastError: "hold timer expired"},
			{Peer: "192.0.2.3", Kind: "mesh", Name: "node-3", LocalAs: 64512, PeerAs: 64512, State: "Established", SinceUnix: up, BfdState: "Up", Received: 1, Accepted: 1, Advertised: 1},
		},
		Blocks: []*agentv1.BlockUsage{{Cidr: "10.244.0.0/26", InUse: 17, Capacity: 64}, {Cidr: "10.244.1.0/26", InUse: 2, Capacity: 64}},
		Routes: []*agentv1.Route{
			{Prefix: "10.244.0.0/26", WantBlackhole: true, KernelBlackhole: true, State: "ok"},
			{Prefix: "10.244.0.64/26", WantNextHops: []string{"192.0.2.2"}, RibNextHops: []string{"192.0.2.2"}, KernelNextHops: []string{"192.0.2.2"}, State: "ok"},
			{Prefix: "10.244.0.128/26", WantNextHops: []string{"192.0.2.3"}, RibNextHops: []string{"192.0.2.3"}, State: "missing"},
			{Prefix: "10.244.1.0/26", WantBlackhole: true, KernelBlackhole: true, State: "ok"},
			{Prefix: "10.244.9.0/26", KernelNextHops: []string{"192.0.2.9"}, State: "stale"},
		},
		Problems: []string{"BGPPeer route-server: peerIP \"x\" is not an IP address; peer skipped"},
	}
}

func healthyFixture() *agentv1.RoutingResponse {
	r := routingFixture()
	r.Sessions[1].State, r.Sessions[1].BfdState, r.Sessions[1].LastError = "Established", "Up", ""
	r.Routes = r.Routes[:2]
	r.Problems = nil
	return r
}

func nodesFixture() []v1alpha1.NodeNetworkStatus {
	a := nodeStatusOf(healthyFixture(), now.Add(-3*time.Second))
	b := nodeStatusOf(routingFixture(), now.Add(-2*time.Second))
	b.Name = "node-2"
	c := nodeStatusOf(healthyFixture(), now.Add(-10*time.Minute)) // stopped reporting
	c.Name = "node-3"
	return []v1alpha1.NodeNetworkStatus{*a, *b, *c}
}

func blocksFixture() []v1alpha1.IPAMBlock {
	mk := func(cidr, node string, allocs ...v1alpha1.Allocation) v1alpha1.IPAMBlock {
		b := v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: cidr, Pool: "default-ipv4", Node: node}}
		b.Name = "b-" + node
		b.Status = v1alpha1.IPAMBlockStatus{Allocations: allocs, InUse: int32(len(allocs)), Capacity: 64}
		return b
	}
	al := func(addr, uid, pod string) v1alpha1.Allocation {
		return v1alpha1.Allocation{Address: addr, PodUID: uid, Namespace: "default", Pod: pod, ContainerID: "ctr-" + pod, Interface: "eth0"}
	}
	return []v1alpha1.IPAMBlock{
		mk("10.244.0.0/26", "node-1", al("10.244.0.1", "uid-a", "web-1"), al("10.244.0.2", "uid-gone", "old-1")),
		mk("10.244.0.64/26", "node-2", al("10.244.0.65", "uid-b", "web-2"), al("10.244.0.1", "uid-c", "dup-1")),
		mk("10.244.0.128/26", "node-9"),
	}
}

func poolsFixture() []v1alpha1.IPPool {
	size := int32(26)
	p := v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16", BlockSize: &size, NATOutgoing: true}}
	p.Name = "default-ipv4"
	return []v1alpha1.IPPool{p}
}

func nodeObjs(names ...string) []corev1.Node {
	var out []corev1.Node
	for i, n := range names {
		node := corev1.Node{}
		node.Name = n
		node.UID = types.UID("node-uid-" + n)
		node.Labels = map[string]string{"rack": "r1"}
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2." + string(rune('1'+i))}}
		out = append(out, node)
	}
	return out
}

func TestGoldenStatus(t *testing.T) {
	for _, c := range []struct {
		name string
		r    *agentv1.RoutingResponse
		wide bool
	}{{"status-healthy", healthyFixture(), false}, {"status-unhealthy", routingFixture(), false}, {"status-unhealthy-wide", routingFixture(), true}} {
		var b bytes.Buffer
		renderStatus(&b, nodeStatusOf(c.r, now), c.r.GetProblems(), true, c.wide, now)
		golden(t, c.name, b.Bytes())
	}
	var b bytes.Buffer
	renderStatus(&b, &nodesFixture()[1], nil, false, false, now)
	golden(t, "status-from-api", b.Bytes())
}

func TestGoldenNodes(t *testing.T) {
	rows := nodeRows(nodesFixture(), []string{"node-1", "node-2", "node-3", "node-4"}, now)
	if rows[0].name != "node-2" || rows[len(rows)-1].name != "node-1" {
		t.Errorf("unhealthy nodes must come first, healthy last: got %s ... %s", rows[0].name, rows[len(rows)-1].name)
	}
	for _, wide := range []bool{false, true} {
		var b bytes.Buffer
		renderNodes(&b, rows, wide, now)
		golden(t, map[bool]string{false: "nodes", true: "nodes-wide"}[wide], b.Bytes())
	}
}

func TestGoldenRoutes(t *testing.T) {
	for _, wide := range []bool{false, true} {
		var b bytes.Buffer
		renderRoutes(&b, routingFixture().GetRoutes(), wide)
		golden(t, map[bool]string{false: "routes", true: "routes-wide"}[wide], b.Bytes())
	}
}

func TestGoldenIPAM(t *testing.T) {
	var b bytes.Buffer
	renderPools(&b, poolsFixture(), blocksFixture())
	golden(t, "ipam-pools", b.Bytes())
	for _, wide := range []bool{false, true} {
		b.Reset()
		renderBlocks(&b, blocksFixture(), wide)
		golden(t, map[bool]string{false: "ipam-blocks", true: "ipam-blocks-wide"}[wide], b.Bytes())
	}
	fs := checkIPAM(blocksFixture(), poolsFixture(), nodeObjs("node-1", "node-2", "node-3"), map[string]bool{"uid-a": true, "uid-b": true, "uid-c": true})
	kinds := map[string]int{}
	for _, f := range fs {
		kinds[f.Kind]++
	}
	want := map[string]int{FindingLeak: 1, FindingDuplicate: 1, FindingOrphanBlock: 1, FindingNodeNoBlocks: 1, FindingOutside: 1}
	if d := cmp.Diff(want, kinds); d != "" {
		t.Errorf("findings by kind (-want +got):\n%s\n%+v", d, fs)
	}
	for _, wide := range []bool{false, true} {
		b.Reset()
		renderFindings(&b, fs, wide)
		golden(t, map[bool]string{false: "ipam-check", true: "ipam-check-wide"}[wide], b.Bytes())
	}
	b.Reset()
	renderFindings(&b, nil, false)
	golden(t, "ipam-check-clean", b.Bytes())
}

func TestGoldenPeers(t *testing.T) {
	tor := v1alpha1.BGPPeer{Spec: v1alpha1.BGPPeerSpec{PeerIP: "192.0.2.254", ASNumber: 65000, BFD: &v1alpha1.BFDSettings{Enabled: true}}}
	tor.Name = "tor"
	rs := v1alpha1.BGPPeer{Spec: v1alpha1.BGPPeerSpec{PeerIP: "198.51.100.1", ASNumber: 65100, EBGPMultihop: 4,
		NodeSelector:      &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "r2"}},
		PasswordSecretRef: &v1alpha1.SecretKeyRef{Namespace: "hostroute-system", Name: "bgp", Key: "rs"}}}
	rs.Name = "route-server"
	nodes := nodeObjs("node-1", "node-2", "node-3")
	nodes[2].Labels["rack"] = "r2"
	sel := selectPeers([]v1alpha1.BGPPeer{rs, tor}, nodes, nil)
	if got := sel[0].Nodes; len(got) != 1 || got[0] != "node-3" {
		t.Errorf("route-server selects %v, want [node-3] (password assumed present)", got)
	}
	for _, wide := range []bool{false, true} {
		var b bytes.Buffer
		renderPeers(&b, sel, len(nodes), wide)
		golden(t, map[bool]string{false: "peers", true: "peers-wide"}[wide], b.Bytes())
	}
}

// TestJSONRoundTrip: what -o json prints decodes into the API types unchanged.
func TestJSONRoundTrip(t *testing.T) {
	nns := nodeStatusOf(routingFixture(), now)
	var b bytes.Buffer
	if err := printObject(&b, "json", nns); err != nil {
		t.Fatal(err)
	}
	var back v1alpha1.NodeNetworkStatus
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(nns, &back); d != "" {
		t.Errorf("NodeNetworkStatus round trip (-printed +decoded):\n%s", d)
	}
	if back.Kind != "NodeNetworkStatus" || back.APIVersion != "hostroute.io/v1alpha1" {
		t.Errorf("type meta %q %q", back.APIVersion, back.Kind)
	}

	list := v1alpha1.NodeNetworkStatusList{Items: nodesFixture()}
	b.Reset()
	if err := printObject(&b, "json", &list); err != nil {
		t.Fatal(err)
	}
	var backList v1alpha1.NodeNetworkStatusList
	if err := json.Unmarshal(b.Bytes(), &backList); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(list, backList); d != "" {
		t.Errorf("NodeNetworkStatusList round trip:\n%s", d)
	}

	blocks := v1alpha1.IPAMBlockList{Items: blocksFixture()}
	b.Reset()
	if err := printObject(&b, "yaml", &blocks); err != nil {
		t.Fatal(err)
	}
	var backBlocks v1alpha1.IPAMBlockList
	if err := yaml.Unmarshal(b.Bytes(), &backBlocks); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(blocks, backBlocks); d != "" {
		t.Errorf("IPAMBlockList (yaml) round trip:\n%s", d)
	}

	r := routingFixture()
	b.Reset()
	if err := printProto(&b, "json", r); err != nil {
		t.Fatal(err)
	}
	var backR agentv1.RoutingResponse
	if err := protojson.Unmarshal(b.Bytes(), &backR); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(r, &backR) {
		t.Errorf("RoutingResponse round trip differs:\n%v\n%v", r, &backR)
	}
}
