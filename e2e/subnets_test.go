package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/netns"
	"github.com/hostroute/hostroute/node/routes"
)

// The second node segment behind the ToR. 192.0.2.0/24 is the first (br0),
// 198.51.100.0/24 is what the ToR originates in the routing tests and 203.0.113.0/24 the
// lab's external host, so this one comes from the benchmarking range (RFC 2544).
const (
	segment2        = "br1"
	segment2Gateway = "198.18.1.254"
)

// TestNodesInTwoSubnets: node-1 and node-2 on 192.0.2.0/24, node-3 on 198.18.1.0/24,
// each with its default route via its own segment's ToR address; the ToR (BIRD) routes
// between the segments and peers with every node on its segment's address; the nodes
// form their iBGP mesh across the subnets (BFD off: it is single-hop). A block's BGP
// next hop is its node's address, which for a node in the other subnet is not on a
// connected network, so the agent must install the route via the gateway that reaches
// that node: the node's own ToR address. Pods on node-1 and node-3 then talk both ways,
// without NAT.
func TestNodesInTwoSubnets(t *testing.T) {
	e := harness.NewEnv(t, bin)
	e.MakeFabric()
	e.AddSegment(segment2, segment2Gateway)
	e.Pool("pods", "10.200.0.0/16", 26, true)
	// One BGPPeer per segment: a node peers with the ToR address on its own segment
	// (eBGP, single hop), chosen by the segment label AddNodeOn sets.
	for _, s := range []struct{ name, bridge, gw string }{{"tor-br0", "br0", harness.FabricGateway}, {"tor-br1", segment2, segment2Gateway}} {
		peer := &v1alpha1.BGPPeer{Spec: v1alpha1.BGPPeerSpec{PeerIP: s.gw, ASNumber: 65000,
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{harness.SegmentLabel: s.bridge}}}}
		peer.Name = s.name
		if _, err := e.HR.BGPPeers.Create(e.Ctx, peer); err != nil {
			t.Fatal(err)
		}
	}
	placement := []struct{ segment, name, addr string }{
		{"br0", "node-1", "192.0.2.1"},
		{"br0", "node-2", "192.0.2.2"},
		{segment2, "node-3", "198.18.1.3"},
	}
	tc := harness.TorConfig{AS: 65000, Neighbors: map[string]uint32{}}
	for _, p := range placement {
		tc.Neighbors[p.addr] = 64512
	}
	l := &lab{e: e, bird: e.StartBIRD(e.Fabric, tc.Config())}
	e.RunController(controller.Config{})
	segmentOf := map[string]string{}
	for _, p := range placement {
		n := e.AddNodeOn(p.segment, p.name, p.addr)
		segmentOf[n.Name] = p.segment
		l.nodes = append(l.nodes, n)
	}
	l.waitReady(t)
	blocks := l.blocks(t)

	// The ToR carries every block, each via its own node: what it forwards between the
	// segments.
	e.Eventually(30*time.Second, "BIRD holds every block via its node", func() string {
		got := l.torRoutes(t)
		for _, n := range l.nodes {
			if got[blocks[n.Name]] != n.Addr {
				return fmt.Sprintf("BIRD: %s via %q, want via %s (table %v)", blocks[n.Name], got[blocks[n.Name]], n.Addr, got)
			}
		}
		return ""
	})

	// Every node: one protocol-196 route to each other node's block, via that node
	// on the same segment and via the node's own ToR address across segments.
	want := func(n, o *harness.Node) string {
		if segmentOf[n.Name] == segmentOf[o.Name] {
			return o.Addr
		}
		return harness.Gateway(n.Addr)
	}
	e.Eventually(30*time.Second, "every node routes to every other node's block", func() string {
		for _, n := range l.nodes {
			for _, o := range l.nodes {
				if o == n {
					continue
				}
				if hops := kernelRoute(t, n.NS, blocks[o.Name]); len(hops) != 1 || hops[0] != want(n, o) {
					return fmt.Sprintf("%s: route to %s's block %s via %v, want via %s", n.Name, o.Name, blocks[o.Name], hops, want(n, o))
				}
			}
		}
		return ""
	})
	// The cross-segment routes come from the mesh with the other node's own address as
	// BGP next hop (not from the ToR, whose copy the nodes drop as an AS-path loop), and
	// are Established sessions across the subnets: the kernel's gateway is the agent's
	// resolution of that next hop.
	for _, n := range l.nodes {
		st := routing(t, n)
		for _, o := range l.nodes {
			if o == n || segmentOf[n.Name] == segmentOf[o.Name] {
				continue
			}
			r := st.routes[blocks[o.Name]]
			if r == nil || !slices.Equal(r.GetRibNextHops(), []string{o.Addr}) ||
				!slices.Equal(r.GetKernelNextHops(), []string{want(n, o)}) || r.GetState() != "ok" {
				t.Errorf("%s: agent's route to %s's block: %v, want BGP next hop %s, kernel next hop %s, state ok", n.Name, o.Name, r, o.Addr, want(n, o))
			}
			if s := st.sessions[o.Addr]; s == nil || s.GetKind() != "mesh" || s.GetState() != "Established" {
				t.Errorf("%s: mesh session with %s (%s): %v", n.Name, o.Name, o.Addr, s)
			}
		}
		if s := st.sessions[harness.Gateway(n.Addr)]; s == nil || s.GetKind() != "external" || s.GetState() != "Established" {
			t.Errorf("%s: session with its segment's ToR address %s: %v", n.Name, harness.Gateway(n.Addr), s)
		}
		t.Logf("%s (%s): %s", n.Name, n.Addr, routeSummary(t, n.NS))
	}
	out, _ := l.bird.Query("show route")
	t.Logf("the ToR's table:\n%s", out)

	pods := map[string]*harness.Pod{}
	for _, n := range []*harness.Node{l.nodes[0], l.nodes[2]} {
		p := n.NewPod("web-" + n.Name)
		if err := p.Add(); err != nil {
			t.Fatal(err)
		}
		pods[n.Name] = p
	}
	p1, p3 := pods["node-1"], pods["node-3"]
	ping(t, p1.NS, p3.IP)
	ping(t, p3.NS, p1.IP)
	tcpCheck(t, p1, p3)
	tcpCheck(t, p3, p1)
}

// agentRouting is a node agent's Routing answer, by prefix and by peer address.
type agentRouting struct {
	routes   map[string]*agentv1.Route
	sessions map[string]*agentv1.Session
}

// routing asks the node's agent over its socket what it wants, has learned and finds in
// the kernel.
func routing(t *testing.T, n *harness.Node) agentRouting {
	t.Helper()
	c, err := n.Agent()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := agentv1.NewAgentClient(c).Routing(ctx, &agentv1.RoutingRequest{})
	if err != nil {
		t.Fatalf("%s: Routing: %v", n.Name, err)
	}
	out := agentRouting{routes: map[string]*agentv1.Route{}, sessions: map[string]*agentv1.Session{}}
	for _, r := range resp.GetRoutes() {
		out.routes[r.GetPrefix()] = r
	}
	for _, s := range resp.GetSessions() {
		out.sessions[s.GetPeer()] = s
	}
	return out
}

// routeSummary lists the namespace's protocol-196 routes as "prefix via gateway (link
// index)", read with netlink.
func routeSummary(t *testing.T, ns string) string {
	t.Helper()
	h, err := netns.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routes.Protocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, r := range rs {
		dst, gw := "default", "-"
		if r.Dst != nil {
			dst = r.Dst.String()
		}
		if r.Gw != nil {
			gw = r.Gw.String()
		}
		if r.Type == 6 { // RTN_BLACKHOLE: the node's own block
			gw = "blackhole"
		}
		s = append(s, fmt.Sprintf("%s via %s (link %d)", dst, gw, r.LinkIndex))
	}
	return fmt.Sprint(s)
}
