package e2e_test

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/bird"
)

const (
	svcClusterRange = "10.96.0.0/16"   // the test API server's Service cluster IP range
	svcLBRange      = "203.0.113.0/24" // where LoadBalancer IPs are announced
	svcLBIP         = "203.0.113.10"
	svcOutsideIP    = "100.64.0.1" // a LoadBalancer IP outside every range: never announced
)

// svcLab is two nodes in AS 64512 behind a BIRD ToR that imports everything, with the
// Service ranges configured and communities on the pool, the cluster IP range and the
// ToR's BGPPeer.
type svcLab struct {
	e     *harness.Env
	bird  *bird.BIRD
	nodes []*harness.Node
}

func newSvcLab(t *testing.T) *svcLab {
	t.Helper()
	e := harness.NewEnv(t, bin)
	tor := e.MakeFabric()
	e.Pool("pods", "10.210.0.0/16", 26, false)
	pool, err := e.HR.IPPools.Get(e.Ctx, "pods")
	if err != nil {
		t.Fatal(err)
	}
	pool.Spec.Communities, pool.Spec.LargeCommunities = []string{"65000:100"}, []string{"64512:1:1"}
	if _, err := e.HR.IPPools.Update(e.Ctx, pool); err != nil {
		t.Fatal(err)
	}
	conf := &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{
		ServiceClusterIPs:      []v1alpha1.ServiceIPRange{{CIDR: svcClusterRange, RouteAttributes: v1alpha1.RouteAttributes{Communities: []string{"65000:300"}}}},
		ServiceLoadBalancerIPs: []v1alpha1.ServiceIPRange{{CIDR: svcLBRange}},
	}}
	conf.Name = "default"
	if _, err := e.HR.BGPConfigurations.Create(e.Ctx, conf); err != nil {
		t.Fatal(err)
	}
	peer := &v1alpha1.BGPPeer{Spec: v1alpha1.BGPPeerSpec{PeerIP: harness.FabricGateway, ASNumber: harness.TorAS,
		Export: &v1alpha1.PeerExport{RouteAttributes: v1alpha1.RouteAttributes{Communities: []string{"65000:200"}}}}}
	peer.Name = "tor"
	if _, err := e.HR.BGPPeers.Create(e.Ctx, peer); err != nil {
		t.Fatal(err)
	}
	l := &svcLab{e: e}
	tc := harness.TorConfig{AS: harness.TorAS, Neighbors: map[string]uint32{harness.NodeAddr(1): harness.ClusterAS, harness.NodeAddr(2): harness.ClusterAS}}
	l.bird = e.StartBIRD(tor, tc.Config())
	e.RunController(controller.Config{})
	for i := 1; i <= 2; i++ {
		l.nodes = append(l.nodes, e.AddNode(fmt.Sprintf("node-%d", i), harness.NodeAddr(i)))
	}
	(&lab{e: e, bird: l.bird, nodes: l.nodes}).waitReady(t)
	return l
}

var svcBIRDPath = regexp.MustCompile(`unicast \[n_([0-9_]+) `)

// paths lists the nodes (by address) the ToR holds a path for exactly prefix from, and
// BIRD's whole answer.
func (l *svcLab) paths(t *testing.T, prefix string) ([]string, string) {
	t.Helper()
	out, err := l.bird.Query("show route " + prefix + " all")
	if err != nil && !strings.Contains(out, "Network not found") {
		t.Fatal(err)
	}
	var from []string
	for _, m := range svcBIRDPath.FindAllStringSubmatch(out, -1) {
		from = append(from, strings.ReplaceAll(m[1], "_", "."))
	}
	slices.Sort(from)
	return from, out
}

func (l *svcLab) waitPaths(t *testing.T, timeout time.Duration, prefix string, want ...string) time.Duration {
	t.Helper()
	start := time.Now()
	l.e.Eventually(timeout, fmt.Sprintf("the ToR holds %s from %v", prefix, want), func() string {
		if got, out := l.paths(t, prefix); !slices.Equal(got, want) {
			return fmt.Sprintf("from %v\n%s", got, out)
		}
		return ""
	})
	return time.Since(start)
}

// endpointSlice is what the EndpointSlice controller writes for a Service without a
// selector's pods: one endpoint per node given, ready as given.
func endpointSlice(svc string, ready map[string]bool) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, node := range slices.Sorted(maps.Keys(ready)) {
		r := ready[node]
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.210.9.%d", i+1)},
			NodeName: &node, Conditions: discoveryv1.EndpointConditions{Ready: &r}})
	}
	return s
}

// TestServiceAdvertisement: the cluster IP range goes to the ToR from both nodes with the
// range's and the BGPPeer's communities, the pool's blocks with the pool's and the
// BGPPeer's; a LoadBalancer IP of a Service with externalTrafficPolicy Local is announced
// only by the nodes with a ready endpoint, and withdrawn when they go (measured); a
// LoadBalancer IP outside the configured ranges is never announced; a BGPPeer export
// filter stops the cluster IP range while the blocks still go.
func TestServiceAdvertisement(t *testing.T) {
	l := newSvcLab(t)
	n1, n2 := l.nodes[0].Addr, l.nodes[1].Addr
	l.waitPaths(t, 20*time.Second, svcClusterRange, n1, n2)
	_, out := l.paths(t, svcClusterRange)
	t.Logf("the ToR's route for the cluster IP range:\n%s", out)
	for _, c := range []string{"(65000,200)", "(65000,300)"} {
		if !strings.Contains(out, c) {
			t.Errorf("the cluster IP range lacks community %s at the ToR:\n%s", c, out)
		}
	}
	blocks := (&lab{e: l.e}).blocks(t)
	_, out = l.paths(t, blocks["node-1"])
	t.Logf("the ToR's route for node-1's block:\n%s", out)
	for _, c := range []string{"(65000,100)", "(65000,200)", "(64512, 1, 1)"} {
		if !strings.Contains(out, c) {
			t.Errorf("node-1's block lacks community %s at the ToR:\n%s", c, out)
		}
	}
	if strings.Contains(out, "(65000,300)") {
		t.Errorf("node-1's block carries the cluster IP range's community:\n%s", out)
	}

	// A LoadBalancer Service with externalTrafficPolicy Local and one outside the ranges.
	for name, ip := range map[string]string{"web": svcLBIP, "outside": svcOutsideIP} {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		}}
		svc, err := l.e.Kube.CoreV1().Services("default").Create(l.e.Ctx, svc, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
		if _, err := l.e.Kube.CoreV1().Services("default").UpdateStatus(l.e.Ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	if got, out := l.paths(t, svcLBIP+"/32"); len(got) != 0 {
		t.Errorf("the LoadBalancer IP is announced with no endpoint anywhere:\n%s", out)
	}
	eps := l.e.Kube.DiscoveryV1().EndpointSlices("default")
	for _, name := range []string{"web", "outside"} {
		if _, err := eps.Create(l.e.Ctx, endpointSlice(name, map[string]bool{"node-1": true}), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	l.waitPaths(t, 10*time.Second, svcLBIP+"/32", n1)
	update := func(ready map[string]bool) time.Time {
		t.Helper()
		s, err := eps.Get(l.e.Ctx, "web-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Endpoints = endpointSlice("web", ready).Endpoints
		at := time.Now()
		if _, err := eps.Update(l.e.Ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return at
	}
	update(map[string]bool{"node-1": true, "node-2": true})
	l.waitPaths(t, 10*time.Second, svcLBIP+"/32", n1, n2)
	_, out = l.paths(t, svcLBIP+"/32")
	t.Logf("the ToR's routes for the LoadBalancer IP with a ready endpoint on each node:\n%s", out)
	adv, code := routectl(t, l.nodes[0], "routes", "--advertised")
	t.Logf("$ routectl routes --advertised   (node-1)\n%s", adv)
	if code != 0 {
		t.Errorf("routectl routes --advertised: exit %d", code)
	}
	for _, want := range []string{
		blocks["node-1"] + " ", "192.0.2.254 (tor)", "communities 65000:100 65000:200, large 64512:1:1",
		svcLBIP + "/32", "LoadBalancer IP of default/web (externalTrafficPolicy Local, 1 ready endpoint here)",
		"Service address: exported to external neighbours only", "communities 65000:200 65000:300",
	} {
		if !strings.Contains(adv, want) {
			t.Errorf("routectl routes --advertised lacks %q", want)
		}
	}

	// node-1's endpoint stops being ready: node-1 withdraws within a second.
	start := update(map[string]bool{"node-1": false, "node-2": true})
	l.waitPaths(t, 5*time.Second, svcLBIP+"/32", n2)
	took := time.Since(start)
	t.Logf("node-1's endpoint not ready → its path gone from the ToR in %s (from the EndpointSlice update)", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("node-1 withdrew the LoadBalancer IP %s after its last endpoint went; want within 1s", took)
	}
	// The last endpoint goes: the address leaves the ToR.
	start = time.Now()
	if err := eps.Delete(l.e.Ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	l.waitPaths(t, 5*time.Second, svcLBIP+"/32")
	t.Logf("the last endpoint's slice deleted → the address gone from the ToR in %s", time.Since(start).Round(time.Millisecond))
	if got, out := l.paths(t, svcOutsideIP+"/32"); len(got) != 0 {
		t.Errorf("a LoadBalancer IP outside serviceLoadBalancerIPs is announced:\n%s", out)
	}

	// An export filter on the ToR's BGPPeer stops the cluster IP range; the blocks still go.
	peer, err := l.e.HR.BGPPeers.Get(l.e.Ctx, "tor")
	if err != nil {
		t.Fatal(err)
	}
	peer.Spec.Export.Filters = []v1alpha1.RouteFilter{{CIDR: svcClusterRange, Action: v1alpha1.FilterReject}}
	if _, err := l.e.HR.BGPPeers.Update(l.e.Ctx, peer); err != nil {
		t.Fatal(err)
	}
	l.waitPaths(t, 10*time.Second, svcClusterRange)
	for _, n := range l.nodes {
		if got, out := l.paths(t, blocks[n.Name]); !slices.Equal(got, []string{n.Addr}) {
			t.Errorf("after the export filter the ToR holds %s (%s's block) from %v:\n%s", blocks[n.Name], n.Name, got, out)
		}
	}
	out, _ = l.bird.Query("show route")
	t.Logf("the ToR's table after the export filter:\n%s", out)
}
