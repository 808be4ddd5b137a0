package e2e_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/bird"
	"github.com/hostroute/hostroute/internal/testenv/netns"
	"github.com/hostroute/hostroute/node/nat"
)

// Dual-stack lab addresses: the external host behind the ToR.
const (
	dsExt4, dsExtTor4 = "203.0.113.2", "203.0.113.1"
	dsExt6, dsExtTor6 = "2001:db8:ff::2", "2001:db8:ff::1"
)

// dsPod is a dual-stack pod: one address per family.
type dsPod struct {
	*harness.Pod
	v4, v6 string
}

// TestDualStack: two dual-stack nodes in the mesh (one IPv4 session carrying both
// families), IPv4 and IPv6 sessions to a BIRD ToR, pods with an address of each family
// from a pool of each. Every pod, node and the external host reaches every other over both
// families (the connectivity matrix), through MP-BGP routes in the nodes' and the ToR's
// kernels; NAT66 is off (the external host sees the pod's own IPv6 address) while the IPv4
// pool masquerades; routectl shows the blocks of both families.
func TestDualStack(t *testing.T) {
	e := harness.NewEnv(t, bin)
	e.DualStack = true
	tor := e.MakeFabric()
	ext := dsExternal(t, e, tor, true)
	e.Pool("v4", "10.140.0.0/16", 26, true)      // NAT44 for the external host
	e.Pool("v6", "fd00:10:140::/56", 122, false) // NAT66 off: pods keep their addresses
	tc := harness.TorConfig{AS: harness.TorAS, Neighbors: map[string]uint32{}, Neighbors6: map[string]uint32{}, BFD: true}
	for i := 1; i <= 2; i++ {
		tc.Neighbors[harness.NodeAddr(i)] = harness.ClusterAS
		tc.Neighbors6[harness.NodeAddr6(harness.NodeAddr(i))] = harness.ClusterAS
	}
	bird, nodes := dsStart(t, e, tor, tc, map[string]string{"tor": harness.FabricGateway, "tor6": harness.FabricGateway6}, false)
	var pods []dsPod
	for _, n := range nodes {
		for j := 1; j <= 2; j++ {
			p := n.NewPod(fmt.Sprintf("%s-pod-%d", n.Name, j))
			if err := e.PodObject(p); err != nil {
				t.Fatal(err)
			}
			if err := p.Add(); err != nil {
				t.Fatal(err)
			}
			dp := dsPod{Pod: p, v4: p.IP, v6: p.IP6}
			if dp.v6 == "" || dp.v4 == dp.v6 || !netip.MustParsePrefix("fd00:10:140::/56").Contains(netip.MustParseAddr(dp.v6)) {
				t.Fatalf("pod %s got %q and %q, want one address of each family (IPv6 from fd00:10:140::/56)", p.Name, p.IP, p.IP6)
			}
			pods = append(pods, dp)
		}
	}

	var eps []dsEndpoint
	for _, p := range pods {
		eps = append(eps, dsEndpoint{p.Name, p.NS, p.v4, p.v6})
	}
	for _, n := range nodes {
		eps = append(eps, dsEndpoint{n.Name, n.NS, n.Addr, harness.NodeAddr6(n.Addr)})
	}
	eps = append(eps, dsEndpoint{"external", ext, dsExt4, dsExt6})
	// The routes travel first: wait until the farthest pair answers over IPv6.
	e.Eventually(30*time.Second, "pod on node-1 reaches pod on node-2 over IPv6", func() string {
		if _, ok := harness.Ping(pods[0].NS, pods[len(pods)-1].v6); !ok {
			return "no answer"
		}
		return ""
	})
	e.Eventually(30*time.Second, "the external host reaches a pod over IPv6 and IPv4", func() string {
		for _, a := range []string{pods[0].v6, pods[0].v4} {
			if _, ok := harness.Ping(ext, a); !ok {
				return "no answer from " + a
			}
		}
		return ""
	})
	for _, fam := range []string{"IPv4", "IPv6"} {
		pingMatrix(t, fam, eps)
	}

	// BFD runs on the IPv6 session as on the IPv4 one, on both ends.
	e.Eventually(20*time.Second, "node-1's sessions to the ToR Established with BFD Up, over IPv4 and IPv6", func() string {
		ss, err := routingSessions(nodes[0])
		if err != nil {
			return err.Error()
		}
		up := map[string]bool{}
		for _, s := range ss {
			if s.GetState() == "Established" && s.GetBfdState() == "Up" {
				up[s.GetPeer()] = true
			}
		}
		if !up[harness.FabricGateway] || !up[harness.FabricGateway6] {
			return fmt.Sprintf("sessions %v", ss)
		}
		if out, _ := bird.Query("show bfd sessions"); !strings.Contains(out, harness.NodeAddr6(nodes[0].Addr)) || !strings.Contains(out, "Up") {
			return "BIRD's BFD: " + out
		}
		return ""
	})
	out6, _ := bird.Query("show bfd sessions")
	t.Logf("the ToR's BFD sessions:\n%s", out6)

	// NAT66 off: the external host sees the pod's own IPv6 address; NAT44 on: the node's.
	src := pods[0]
	if got := tcpSeen(t, ext, net.JoinHostPort(dsExt6, "8080"), src.NS, net.JoinHostPort(dsExt6, "8080")); got != src.v6 {
		t.Errorf("pod → external over IPv6: the server saw %q, want the pod's own %s (no NAT66)", got, src.v6)
	}
	if got := tcpSeen(t, ext, net.JoinHostPort(dsExt4, "8081"), src.NS, net.JoinHostPort(dsExt4, "8081")); got != nodes[0].Addr {
		t.Errorf("pod → external over IPv4: the server saw %q, want the node's %s (NAT44)", got, nodes[0].Addr)
	}

	// The ToR learned both families' blocks over their sessions.
	out, err := bird.Query("show route protocol n6_" + strings.ReplaceAll(harness.NodeAddr6(nodes[1].Addr), ":", "_"))
	if err != nil || !strings.Contains(out, "fd00:10:140:") {
		t.Errorf("the ToR has no IPv6 block from node-2 over IPv6: %v\n%s", err, out)
	}
	// routectl shows the other node's blocks of both families.
	rc, code := routectl(t, nodes[0], "routes")
	if code != 0 {
		t.Fatalf("routectl routes: exit %d\n%s", code, rc)
	}
	t.Logf("routectl routes on node-1:\n%s", rc)
	if !strings.Contains(rc, "fd00:10:140:") || !strings.Contains(rc, "10.140.") {
		t.Errorf("routectl routes does not show both families' blocks:\n%s", rc)
	}

	// IPv6 spoofing from a pod: pod-1 of node-1 sends from node-2's pod-1's address to
	// node-2's pod-2. The node's pod guard drops it (the source is not routed back over the
	// pod's veth), as it does for IPv4.
	victim, target := pods[2], pods[3]
	pre := nftDrops(t, nodes[0].NS, nat.ChainPodPrerouting)
	if err := netns.Exec(src.NS, "ip", "addr", "add", victim.v6+"/128", "dev", "eth0", "nodad"); err != nil {
		t.Fatal(err)
	}
	if out, err := netns.Output(src.NS, "ping", "-c3", "-i0.2", "-W1", "-I", victim.v6, target.v6); err == nil {
		t.Errorf("a pod's packets from a forged IPv6 source reached %s:\n%s", target.v6, out)
	}
	if err := netns.Exec(src.NS, "ip", "addr", "del", victim.v6+"/128", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	if got := nftDrops(t, nodes[0].NS, nat.ChainPodPrerouting); got < pre+3 {
		t.Errorf("node-1's pod guard dropped %d packets from the forged IPv6 source, want ≥ 3", got-pre)
	}

	// IPv6 route hijack: the ToR originates node-2's IPv6 block, and a more specific route
	// inside it, over its IPv6 session to node-1. node-1 accepts neither: a block is
	// accepted only from the node that holds it, per the API.
	var block6 string
	for _, b := range blocksOf(t, e, "node-2") {
		if strings.Contains(b, ":") {
			block6 = b
		}
	}
	inside := netip.MustParsePrefix(block6)
	more := netip.PrefixFrom(inside.Addr(), 126).String()
	tc.Originate = []string{block6, more}
	if err := bird.Reconfigure(tc.Config()); err != nil {
		t.Fatal(err)
	}
	peer6 := "n6_" + strings.ReplaceAll(harness.NodeAddr6(nodes[0].Addr), ":", "_")
	e.Eventually(10*time.Second, "the ToR announcing node-2's IPv6 block and a more specific one to node-1", func() string {
		for _, p := range []string{block6, more} {
			if out, _ := bird.Query("show route export " + peer6 + " for " + p + " all"); !strings.Contains(out, "originated6") {
				return p + ": " + out
			}
		}
		return ""
	})
	e.Eventually(10*time.Second, "node-1 logging both refusals", func() string {
		log := nodes[0].Log()
		for _, p := range []string{block6, more} {
			if !strings.Contains(log, "route rejected") || !strings.Contains(log, "prefix="+p) {
				return "no log line about " + p
			}
		}
		return ""
	})
	time.Sleep(time.Second)
	if hops := kernelRoute(t, nodes[0].NS, block6); len(hops) != 1 || hops[0] != harness.NodeAddr6(nodes[1].Addr) {
		t.Errorf("node-1 routes node-2's IPv6 block %s via %v, want only node-2's %s", block6, hops, harness.NodeAddr6(nodes[1].Addr))
	}
	if hops := kernelRoute(t, nodes[0].NS, more); len(hops) != 0 {
		t.Errorf("node-1 installed the ToR's more specific %s via %v", more, hops)
	}
	if _, ok := harness.Ping(pods[0].NS, target.v6); !ok {
		t.Errorf("pod-to-pod IPv6 broken after the hijack attempt")
	}
}

// blocksOf lists the CIDRs of a node's blocks.
func blocksOf(t *testing.T, e *harness.Env, node string) []string {
	t.Helper()
	bl, err := e.HR.IPAMBlocks.List(e.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range bl.Items {
		if b.Spec.Node == node {
			out = append(out, b.Spec.CIDR)
		}
	}
	return out
}

// dsExternal makes the external host behind the ToR: IPv6, and IPv4 too when v4.
func dsExternal(t *testing.T, e *harness.Env, tor string, v4 bool) string {
	t.Helper()
	ext := netns.ForTest(t, e.Prefix+"ext-")
	cmds := []struct {
		ns   string
		args []string
	}{
		{ext, []string{"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "ext0", "netns", tor}},
		{ext, []string{"ip", "addr", "add", dsExt6 + "/64", "dev", "eth0", "nodad"}},
		{ext, []string{"ip", "link", "set", "eth0", "up"}},
		{ext, []string{"ip", "-6", "route", "add", "default", "via", dsExtTor6}},
		{tor, []string{"ip", "addr", "add", dsExtTor6 + "/64", "dev", "ext0", "nodad"}},
		{tor, []string{"ip", "link", "set", "ext0", "up"}},
	}
	if v4 {
		cmds = append(cmds, []struct {
			ns   string
			args []string
		}{
			{ext, []string{"ip", "addr", "add", dsExt4 + "/24", "dev", "eth0"}},
			{ext, []string{"ip", "route", "add", "default", "via", dsExtTor4}},
			{tor, []string{"ip", "addr", "add", dsExtTor4 + "/24", "dev", "ext0"}},
		}...)
	}
	for _, c := range cmds {
		if err := netns.Exec(c.ns, c.args...); err != nil {
			t.Fatal(err)
		}
	}
	return ext
}

// dsEndpoint is a row and column of the connectivity matrix.
type dsEndpoint struct{ name, ns, v4, v6 string }

// pingMatrix pings every endpoint from every endpoint over one family (one packet each),
// logs the table and fails the test on any ✘.
func pingMatrix(t *testing.T, fam string, eps []dsEndpoint) {
	t.Helper()
	list := make([]harness.Endpoint, len(eps))
	for i, e := range eps {
		list[i] = harness.Endpoint{Name: e.name, NS: e.ns, Addr: e.v4}
		if fam == "IPv6" {
			list[i].Addr = e.v6
		}
	}
	out, ok := harness.PingMatrix(list)
	t.Logf("connectivity, %s:\n%s", fam, out)
	if !ok {
		t.Errorf("the %s matrix has failures", fam)
	}
}

// TestIPv6Only: nodes with only IPv6 addresses (router IDs from the annotation), an IPv6
// pool, the mesh and the ToR session over IPv6 with BFD on both: pods get one IPv6
// address, and every pod, node and the external host reaches every other.
func TestIPv6Only(t *testing.T) {
	e := harness.NewEnv(t, bin)
	e.IPv6Only = true
	tor := e.MakeFabric()
	ext := dsExternal(t, e, tor, false)
	e.Pool("v6", "fd00:10:150::/56", 122, false)
	tc := harness.TorConfig{AS: harness.TorAS, Neighbors6: map[string]uint32{}, BFD: true}
	for i := 1; i <= 2; i++ {
		tc.Neighbors6[harness.NodeAddr6(harness.NodeAddr(i))] = harness.ClusterAS
	}
	_, nodes := dsStart(t, e, tor, tc, map[string]string{"tor6": harness.FabricGateway6}, true)
	var eps []dsEndpoint
	for _, n := range nodes {
		for j := 1; j <= 2; j++ {
			p := n.NewPod(fmt.Sprintf("%s-pod-%d", n.Name, j))
			if err := e.PodObject(p); err != nil {
				t.Fatal(err)
			}
			if err := p.Add(); err != nil {
				t.Fatal(err)
			}
			if p.IP6 == "" || p.IP != p.IP6 || !netip.MustParsePrefix("fd00:10:150::/56").Contains(netip.MustParseAddr(p.IP6)) {
				t.Fatalf("pod %s got %q / %q, want one IPv6 address from fd00:10:150::/56 and no IPv4", p.Name, p.IP, p.IP6)
			}
			eps = append(eps, dsEndpoint{name: p.Name, ns: p.NS, v6: p.IP6})
		}
	}
	for _, n := range nodes {
		eps = append(eps, dsEndpoint{name: n.Name, ns: n.NS, v6: n.Addr})
	}
	eps = append(eps, dsEndpoint{name: "external", ns: ext, v6: dsExt6})
	e.Eventually(30*time.Second, "node-1's mesh and ToR sessions Established over IPv6 with BFD Up", func() string {
		ss, err := routingSessions(nodes[0])
		if err != nil {
			return err.Error()
		}
		up := map[string]bool{}
		for _, s := range ss {
			if s.GetState() == "Established" && s.GetBfdState() == "Up" {
				up[s.GetPeer()] = true
			}
		}
		if !up[nodes[1].Addr] || !up[harness.FabricGateway6] || len(ss) != 2 {
			return fmt.Sprintf("sessions %v", ss)
		}
		return ""
	})
	e.Eventually(30*time.Second, "the farthest pods reach each other", func() string {
		if _, ok := harness.Ping(eps[0].ns, eps[3].v6); !ok {
			return "no answer"
		}
		return ""
	})
	pingMatrix(t, "IPv6", eps)
	rc, code := routectl(t, nodes[0], "status")
	t.Logf("routectl status on node-1:\n%s", rc)
	if code != 0 || !strings.Contains(rc, "2/2 Established") {
		t.Errorf("routectl status: exit %d, want both sessions Established:\n%s", code, rc)
	}
}

// dsStart configures BGP (the cluster AS, BFD on the mesh when meshBFD), one BGPPeer with
// BFD per name → ToR address, starts the ToR with tc and the controller, and brings up
// node-1 and node-2; a failing test logs their agents and the ToR.
func dsStart(t *testing.T, e *harness.Env, tor string, tc harness.TorConfig, peers map[string]string, meshBFD bool) (*bird.BIRD, []*harness.Node) {
	t.Helper()
	conf := &v1alpha1.BGPConfiguration{}
	conf.Name = "default"
	conf.Spec.ASNumber = harness.ClusterAS
	if meshBFD {
		conf.Spec.BFD = &v1alpha1.BFDSettings{Enabled: true}
	}
	if _, err := e.HR.BGPConfigurations.Create(e.Ctx, conf); err != nil {
		t.Fatal(err)
	}
	for name, ip := range peers {
		p := &v1alpha1.BGPPeer{Spec: v1alpha1.BGPPeerSpec{PeerIP: ip, ASNumber: harness.TorAS, BFD: &v1alpha1.BFDSettings{Enabled: true}}}
		p.Name = name
		if _, err := e.HR.BGPPeers.Create(e.Ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	b := e.StartBIRD(tor, tc.Config())
	e.RunController(controller.Config{})
	var nodes []*harness.Node
	for i := 1; i <= 2; i++ {
		nodes = append(nodes, e.AddNode(fmt.Sprintf("node-%d", i), harness.NodeAddr(i)))
	}
	for _, n := range nodes {
		n.WaitReady(30 * time.Second)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range nodes {
				t.Logf("agent log of %s:\n%s", n.Name, lastLines(n.Log(), 40))
			}
			out, _ := b.Query("show protocols")
			t.Logf("ToR protocols:\n%s", out)
		}
	})
	return b, nodes
}
