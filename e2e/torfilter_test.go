package e2e_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/netns"
)

const (
	tfPool  = "10.244.0.0/16"
	tfPool6 = "fd00:10:244::/56"
)

// tfLab is a fabric with a ToR of the given kind whose node sessions get the filters
// the real routectl binary prints, and nodes behind it.
type tfLab struct {
	e      *harness.Env
	v6     bool // the ToR's sessions are IPv6 ones, carrying the IPv6 blocks
	tor    filterTor
	nodes  []*harness.Node
	blocks map[string]string // node name → its block (of the sessions' family)
}

// sessionAddr is node i's (from 1) address on the ToR sessions' family.
func (l *tfLab) sessionAddr(i int) string {
	if l.v6 {
		return harness.NodeAddr6(harness.NodeAddr(i))
	}
	return harness.NodeAddr(i)
}

// newTFLab starts the ToR (AS 65000, a session per node address in nodeAS, nothing
// imported yet), the nodes (annotated with their AS when perNodeAS), waits for their
// blocks, then installs the generated filters and waits until the ToR holds every
// block from its owner alone. With v6 the nodes are dual-stack and the ToR's sessions
// go to their IPv6 addresses (from FabricGateway6), carrying IPv6 only.
func newTFLab(t *testing.T, kind string, v6 bool, nodeAS []uint32, perNodeAS bool, conf *v1alpha1.BGPConfiguration, peer *v1alpha1.BGPPeer) *tfLab {
	t.Helper()
	e := harness.NewEnv(t, bin)
	e.DualStack = v6
	torNS := e.MakeFabric()
	e.Pool("pods", tfPool, 26, false)
	if v6 {
		e.Pool("pods6", tfPool6, 122, false)
	}
	if conf != nil {
		conf.Name = "default"
		if _, err := e.HR.BGPConfigurations.Create(e.Ctx, conf); err != nil {
			t.Fatal(err)
		}
	}
	peer.Name, peer.Spec.PeerIP, peer.Spec.ASNumber = "tor", harness.FabricGateway, harness.TorAS
	if v6 {
		peer.Name, peer.Spec.PeerIP = "tor6", harness.FabricGateway6
	}
	if _, err := e.HR.BGPPeers.Create(e.Ctx, peer); err != nil {
		t.Fatal(err)
	}
	l := &tfLab{e: e, v6: v6, blocks: map[string]string{}}
	neighbors, names, routeMaps := map[string]uint32{}, map[string]string{}, map[string]string{}
	e.NodeAnnotations = map[string]map[string]string{}
	for i, as := range nodeAS {
		addr, name := l.sessionAddr(i+1), fmt.Sprintf("node-%d", i+1)
		neighbors[addr], names[addr], routeMaps[addr] = as, "hostroute_import_"+strings.ReplaceAll(name, "-", "_"), "hostroute-"+name
		if perNodeAS {
			e.NodeAnnotations[name] = map[string]string{v1alpha1.AnnotationASNumber: fmt.Sprint(as)}
		}
	}
	switch kind {
	case "bird":
		l.tor = startBIRDTor(t, e, torNS, harness.TorAS, v6, neighbors)
	case "frr":
		l.tor = startFRRTor(t, torNS, harness.TorAS, v6, neighbors, routeMaps)
	}
	e.RunController(controller.Config{})
	for i := range nodeAS {
		l.nodes = append(l.nodes, e.AddNode(fmt.Sprintf("node-%d", i+1), harness.NodeAddr(i+1)))
	}
	for _, n := range l.nodes {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("agent log of %s:\n%s", n.Name, lastLines(n.Log(), 40))
			}
		})
		n.WaitReady(20 * time.Second)
	}
	e.Eventually(10*time.Second, "a block for every node", func() string {
		bs, err := e.HR.IPAMBlocks.List(e.Ctx, metav1.ListOptions{})
		if err != nil {
			return err.Error()
		}
		for _, b := range bs.Items {
			if netip.MustParsePrefix(b.Spec.CIDR).Addr().Is6() == v6 {
				l.blocks[b.Spec.Node] = b.Spec.CIDR
			}
		}
		if len(l.blocks) < len(nodeAS) {
			return fmt.Sprint(l.blocks)
		}
		return ""
	})
	filters := l.torFilters(t)
	t.Logf("$ routectl tor-filters --format %s\n%s", kind, filters)
	l.tor.install(t, filters, names)
	l.waitOwnersOnly(t, 20*time.Second)
	return l
}

// torFilters runs the built routectl as an operator would, with the admin kubeconfig.
func (l *tfLab) torFilters(t *testing.T) string {
	t.Helper()
	out, code := outputAndCode(t, exec.Command(filepath.Join(bin, "routectl"), "--kubeconfig", l.e.Cluster.Kubeconfig,
		"tor-filters", "--format", l.tor.format()))
	if code != 0 {
		t.Fatalf("routectl tor-filters: exit %d\n%s", code, out)
	}
	return out
}

// waitOwnersOnly waits until the ToR holds each node's block from that node alone.
func (l *tfLab) waitOwnersOnly(t *testing.T, timeout time.Duration) {
	t.Helper()
	l.e.Eventually(timeout, "the ToR holds each block from its owner only", func() string {
		for i, n := range l.nodes {
			if got := l.tor.paths(t, l.blocks[n.Name]); !slices.Equal(got, []string{l.sessionAddr(i + 1)}) {
				return fmt.Sprintf("%s (%s) from %v\n%s", l.blocks[n.Name], n.Name, got, l.tor.dump(t))
			}
		}
		return ""
	})
}

// TestTorFilterBIRD: a BIRD ToR with the generated filters; node-1 turns rogue (a BGP
// speaker with node-1's address and AS in place of its agent) and announces node-2's
// block and a more specific of each block, beside its own. The ToR takes only node-1's
// own block from it and keeps node-2 as the only path for node-2's block.
func TestTorFilterBIRD(t *testing.T) { torFilterRogue(t, "bird", false) }

// TestTorFilterFRR is TestTorFilterBIRD with FRR 8.4 as the ToR.
func TestTorFilterFRR(t *testing.T) { torFilterRogue(t, "frr", false) }

// TestTorFilterBIRD6 is TestTorFilterBIRD over IPv6: dual-stack nodes, IPv6 sessions to
// the ToR, and the rogue announces IPv6 blocks (/122) and more specifics (/124).
func TestTorFilterBIRD6(t *testing.T) { torFilterRogue(t, "bird", true) }

// TestTorFilterFRR6 is TestTorFilterBIRD6 with FRR 8.4 as the ToR.
func TestTorFilterFRR6(t *testing.T) { torFilterRogue(t, "frr", true) }

func torFilterRogue(t *testing.T, kind string, v6 bool) {
	rogue := buildRogue(t)
	// Over IPv6, Service ranges of both families too: the filters carry them and the ToR
	// loads them (BIRD: prefix sets guarded by net.type) and takes the cluster IP range.
	var conf *v1alpha1.BGPConfiguration
	const svc6 = "fd00:96::/108"
	if v6 {
		conf = &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{
			ServiceClusterIPs:      []v1alpha1.ServiceIPRange{{CIDR: svc6}},
			ServiceLoadBalancerIPs: []v1alpha1.ServiceIPRange{{CIDR: "203.0.113.0/24"}, {CIDR: "2001:db8:99::/64"}},
		}}
	}
	l := newTFLab(t, kind, v6, []uint32{harness.ClusterAS, harness.ClusterAS}, false, conf, &v1alpha1.BGPPeer{})
	n1, n2 := l.nodes[0], l.nodes[1]
	if v6 {
		l.e.Eventually(10*time.Second, "the ToR takes the IPv6 cluster IP range from both nodes", func() string {
			if got := l.tor.paths(t, svc6); !slices.Equal(got, []string{l.sessionAddr(1), l.sessionAddr(2)}) {
				return fmt.Sprintf("from %v\n%s", got, l.tor.dump(t))
			}
			return ""
		})
	}
	n1Addr, peer := l.sessionAddr(1), harness.FabricGateway
	if v6 {
		peer = harness.FabricGateway6
	}
	own, other := l.blocks[n1.Name], l.blocks[n2.Name]
	claims := []string{own, other, moreSpecific(t, own), moreSpecific(t, other)}

	n1.Kill()
	logPath := filepath.Join(t.TempDir(), "rogue.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := netns.Command(n1.NS, rogue, "-as", fmt.Sprint(harness.ClusterAS), "-local", n1Addr, "-router-id", n1.Addr,
		"-peer", peer, "-peer-as", fmt.Sprint(harness.TorAS), "-announce", strings.Join(claims, ","))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("rogue log:\n%s", lastLines(string(b), 30))
		}
	})

	l.e.Eventually(30*time.Second, "the rogue's announcements reach the ToR and 3 of 4 are refused", func() string {
		rec, acc := l.tor.counts(t, n1Addr)
		if rec-acc < 3 || acc < 1 {
			return fmt.Sprintf("received %d, accepted %d from %s", rec, acc, n1Addr)
		}
		return ""
	})
	rec, acc := l.tor.counts(t, n1Addr)
	t.Logf("%s: the ToR received %d routes from %s and accepted %d", kind, rec, n1Addr, acc)
	if kind == "bird" {
		t.Log("(BIRD's counters include the agent's session before the rogue's)")
	}
	l.waitOwnersOnly(t, 5*time.Second)
	for _, p := range claims[2:] {
		if got := l.tor.paths(t, p); len(got) != 0 {
			t.Errorf("the ToR holds the more specific %s from %v", p, got)
		}
	}
	t.Logf("the ToR's table:\n%s", l.tor.dump(t))
}

// TestTorFilterASPerRack: node-1 and node-2 in rack AS 64601, node-3 in 64602, no
// node-to-node mesh, one eBGP BIRD ToR with the generated filters that carries blocks
// between racks (the BGPPeer imports the pool's blocks). A pod on node-1 reaches a pod
// on node-3 with the route the ToR passed on. node-1 does not learn node-2's block from
// the ToR (its own AS is in the path: loop prevention), and reaches node-2's pod through
// its default route, which leads to the ToR.
func TestTorFilterASPerRack(t *testing.T) {
	mesh, blockLen := false, int32(26)
	conf := &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{ASNumber: harness.ClusterAS, NodeToNodeMesh: &mesh,
		ServiceClusterIPs: []v1alpha1.ServiceIPRange{{CIDR: "10.96.0.0/16"}}}}
	peer := &v1alpha1.BGPPeer{Spec: v1alpha1.BGPPeerSpec{Import: []v1alpha1.PrefixMatch{{CIDR: tfPool, MaxLength: &blockLen}}}}
	racks := []uint32{64601, 64601, 64602}
	l := newTFLab(t, "bird", false, racks, true, conf, peer)
	n1, n2, n3 := l.nodes[0], l.nodes[1], l.nodes[2]

	// node-1's only BGP neighbour is the ToR; on the shared segment BIRD passes node-3's
	// own address on as the next hop (RFC 4271 5.1.3), so the packets go straight there.
	l.e.Eventually(20*time.Second, "node-1 routes node-3's block, learned from the ToR", func() string {
		if hops := kernelRoute(t, n1.NS, l.blocks[n3.Name]); !slices.Equal(hops, []string{n3.Addr}) {
			return fmt.Sprintf("via %v", hops)
		}
		return ""
	})
	if hops := kernelRoute(t, n1.NS, l.blocks[n2.Name]); len(hops) != 0 {
		t.Errorf("node-1 routes node-2's block (same rack AS) via %v: the ToR's path carries AS 64601 and should be dropped", hops)
	}
	pods := map[string]string{}
	podNS := map[string]string{}
	for _, n := range l.nodes {
		p := n.NewPod("web-" + n.Name)
		if err := p.Add(); err != nil {
			t.Fatal(err)
		}
		pods[n.Name], podNS[n.Name] = p.IP, p.NS
	}
	// The Service range passes the generated filters from every rack's nodes.
	l.e.Eventually(10*time.Second, "the ToR takes the cluster IP range from every node", func() string {
		if got := l.tor.paths(t, "10.96.0.0/16"); len(got) != 3 {
			return fmt.Sprintf("from %v", got)
		}
		return ""
	})
	ping(t, podNS[n1.Name], pods[n3.Name]) // across racks, on the route from the ToR
	ping(t, podNS[n3.Name], pods[n1.Name])
	ping(t, podNS[n1.Name], pods[n2.Name]) // same rack: node-1's default route, the ToR's route to node-2
	if out, code := routectl(t, n1, "status"); code != 0 {
		t.Errorf("routectl status on node-1: exit %d\n%s", code, out)
	} else {
		t.Logf("routectl status on node-1:\n%s", out)
	}
}
