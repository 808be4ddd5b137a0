package e2e_test

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/bird"
	"github.com/hostroute/hostroute/internal/testenv/netns"
	"github.com/hostroute/hostroute/node/routes"
)

const extNet = "198.51.100.0/24" // what the ToR originates

type lab struct {
	e     *harness.Env
	bird  *bird.BIRD
	nodes []*harness.Node
}

// newLab builds the single-segment topology: a BIRD ToR (AS 65000) on a bridge, nodes in
// AS 64512 in a full mesh, each peering with the ToR through a BGPPeer.
func newLab(t *testing.T, nodes int, bfd bool, holdTime time.Duration) *lab {
	t.Helper()
	e := harness.NewEnv(t, bin)
	tor := e.MakeFabric()
	e.Pool("pods", "10.200.0.0/16", 26, true)
	peer := &v1alpha1.BGPPeer{Spec: v1alpha1.BGPPeerSpec{
		PeerIP: harness.FabricGateway, ASNumber: 65000,
		Import: []v1alpha1.PrefixMatch{{CIDR: extNet}},
		BFD:    &v1alpha1.BFDSettings{Enabled: bfd},
	}}
	peer.Name = "tor"
	tc := harness.TorConfig{AS: 65000, Neighbors: map[string]uint32{}, BFD: bfd, Originate: []string{extNet}}
	if holdTime > 0 {
		peer.Spec.Timers = &v1alpha1.BGPTimers{HoldTime: &metav1.Duration{Duration: holdTime}}
		tc.HoldTime = int(holdTime.Seconds())
	}
	if _, err := e.HR.BGPPeers.Create(e.Ctx, peer); err != nil {
		t.Fatal(err)
	}
	l := &lab{e: e}
	for i := 1; i <= nodes; i++ {
		tc.Neighbors[fmt.Sprintf("192.0.2.%d", i)] = 64512
	}
	l.bird = e.StartBIRD(tor, tc.Config())
	e.RunController(controller.Config{})
	for i := 1; i <= nodes; i++ {
		n := e.AddNode(fmt.Sprintf("node-%d", i), fmt.Sprintf("192.0.2.%d", i))
		l.nodes = append(l.nodes, n)
	}
	l.waitReady(t)
	return l
}

// waitReady waits for every node's agent and, if the test fails, logs the end of each
// agent's log.
func (l *lab) waitReady(t *testing.T) {
	t.Helper()
	for _, n := range l.nodes {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("agent log of %s:\n%s", n.Name, lastLines(n.Log(), 60))
			}
		})
	}
	for _, n := range l.nodes {
		n.WaitReady(20 * time.Second)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// blocks returns each node's block prefix.
func (l *lab) blocks(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	bs, err := l.e.HR.IPAMBlocks.List(l.e.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs.Items {
		out[b.Spec.Node] = b.Spec.CIDR
	}
	return out
}

// kernelRoute returns the next hops of hostroute's route to dst in the node's kernel.
func kernelRoute(t *testing.T, ns, dst string) []string {
	t.Helper()
	h, err := netns.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p := netip.MustParsePrefix(dst)
	fam := netlink.FAMILY_V4
	if p.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	rs, err := h.RouteListFiltered(fam, &netlink.Route{
		Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, Protocol: routes.Protocol,
	}, netlink.RT_FILTER_DST|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	var hops []string
	for _, r := range rs {
		if r.Gw != nil {
			hops = append(hops, r.Gw.String())
		}
		for _, nh := range r.MultiPath {
			hops = append(hops, nh.Gw.String())
		}
	}
	return hops
}

var birdRoute = regexp.MustCompile(`(?m)^(\d+\.\d+\.\d+\.\d+/\d+)\s+unicast.*\n\s+via (\S+)`)

// torRoutes parses `birdc show route` into prefix → next hop.
func (l *lab) torRoutes(t *testing.T) map[string]string {
	t.Helper()
	out, err := l.bird.Query("show route")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, g := range birdRoute.FindAllStringSubmatch(out, -1) {
		m[g[1]] = g[2]
	}
	return m
}

// TestMeshAndToR: every node learns every other node's block with the right next hop and
// the ToR's prefix as its BGPPeer says; BIRD holds exactly the assigned blocks; pods on
// different nodes talk without NAT.
func TestMeshAndToR(t *testing.T) {
	l := newLab(t, 3, false, 0)
	blocks := l.blocks(t)
	l.e.Eventually(20*time.Second, "BIRD holds every block with its node as next hop", func() string {
		got := l.torRoutes(t)
		for _, n := range l.nodes {
			if got[blocks[n.Name]] != n.Addr {
				return fmt.Sprintf("BIRD: %s via %q, want via %s (table %v)", blocks[n.Name], got[blocks[n.Name]], n.Addr, got)
			}
		}
		count := 0
		for p := range got {
			if strings.HasPrefix(p, "10.200.") {
				count++
			}
		}
		if count != len(l.nodes) {
			return fmt.Sprintf("BIRD has %d pool routes, want exactly %d: %v", count, len(l.nodes), got)
		}
		return ""
	})
	out, _ := l.bird.Query("show route")
	t.Logf("the ToR's table:\n%s", out)
	l.e.Eventually(20*time.Second, "every node routes to the others' blocks and to the ToR's prefix", func() string {
		for _, n := range l.nodes {
			for _, o := range l.nodes {
				if o == n {
					continue
				}
				if hops := kernelRoute(t, n.NS, blocks[o.Name]); len(hops) != 1 || hops[0] != o.Addr {
					return fmt.Sprintf("%s: route to %s via %v, want %s", n.Name, blocks[o.Name], hops, o.Addr)
				}
			}
			if hops := kernelRoute(t, n.NS, extNet); len(hops) != 1 || hops[0] != harness.FabricGateway {
				return fmt.Sprintf("%s: route to %s via %v, want the ToR", n.Name, extNet, hops)
			}
		}
		return ""
	})
	rt, _ := netns.Output(l.nodes[0].NS, "ip", "route")
	t.Logf("node-1's kernel:\n%s", rt)
	var pods []*harness.Pod
	for _, n := range l.nodes {
		p := n.NewPod("web-" + n.Name)
		if err := p.Add(); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	ping(t, pods[0].NS, pods[1].IP)
	ping(t, pods[2].NS, pods[0].IP)
	tcpCheck(t, pods[1], pods[2])
}

// detect freezes BIRD and returns how long until node-1's route to the ToR's prefix left
// the kernel.
func (l *lab) detect(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	n := l.nodes[0]
	l.e.Eventually(20*time.Second, "route to the ToR's prefix installed", func() string {
		if len(kernelRoute(t, n.NS, extNet)) == 0 {
			return "missing"
		}
		return ""
	})
	time.Sleep(time.Second) // let BFD settle on its fast interval
	if err := l.bird.Freeze(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for len(kernelRoute(t, n.NS, extNet)) > 0 {
		if time.Since(start) > limit {
			t.Fatalf("route to %s still in the kernel %s after freezing the ToR", extNet, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	if err := l.bird.Thaw(); err != nil {
		t.Fatal(err)
	}
	return took
}

func TestBFDDetectsFrozenToR(t *testing.T) {
	l := newLab(t, 1, true, 0)
	l.e.Eventually(20*time.Second, "BFD session up in BIRD", func() string {
		out, _ := l.bird.Query("show bfd sessions")
		if !strings.Contains(out, "Up") {
			return out
		}
		return ""
	})
	took := l.detect(t, 5*time.Second)
	t.Logf("BFD: the frozen ToR's routes left the kernel %s after SIGSTOP", took.Round(time.Millisecond))
	if took > time.Second {
		t.Fatalf("detection took %s, want under 1s", took)
	}
}

func TestHoldTimerWithoutBFD(t *testing.T) {
	l := newLab(t, 1, false, 3*time.Second)
	took := l.detect(t, 10*time.Second)
	t.Logf("hold timer (3s): the frozen ToR's routes left the kernel %s after SIGSTOP", took.Round(time.Millisecond))
	if took < 2*time.Second {
		t.Fatalf("routes left after %s: sooner than a 3s hold timer allows", took)
	}
}

// TestAgentRestartLosesNoPackets restarts node-2's agent (SIGKILL and start) while a pod
// on node-1 pings a pod on node-2 every 10 ms.
func TestAgentRestartLosesNoPackets(t *testing.T) {
	l := newLab(t, 2, false, 0)
	a, b := l.nodes[0].NewPod("a"), l.nodes[1].NewPod("b")
	for _, p := range []*harness.Pod{a, b} {
		if err := p.Add(); err != nil {
			t.Fatal(err)
		}
	}
	blocks := l.blocks(t)
	l.e.Eventually(20*time.Second, "node-1 routes to node-2's block", func() string {
		if len(kernelRoute(t, l.nodes[0].NS, blocks["node-2"])) == 0 {
			return "missing"
		}
		return ""
	})
	ping(t, a.NS, b.IP)
	pinger := exec.Command("ip", "netns", "exec", a.NS, "ping", "-i", "0.01", "-c", "800", "-W", "1", b.IP)
	outCh := make(chan string, 1)
	go func() { out, _ := pinger.CombinedOutput(); outCh <- string(out) }()
	time.Sleep(time.Second)
	l.nodes[1].Kill()
	time.Sleep(500 * time.Millisecond)
	l.nodes[1].Start()
	l.nodes[1].WaitReady(20 * time.Second)
	out := <-outCh
	noLoss(t, out, "during the agent restart")
}

// TestBGPBadInput: a BGPPeer whose password Secret is missing becomes a Warning Event on
// the node and is skipped; a connection that sends garbage to the BGP port, and one that
// resets, leave the node's other sessions and routes alone.
func TestBGPBadInput(t *testing.T) {
	l := newLab(t, 2, false, 0)
	blocks := l.blocks(t)
	n1 := l.nodes[0]
	routed := func() string {
		if hops := kernelRoute(t, n1.NS, blocks["node-2"]); len(hops) != 1 {
			return fmt.Sprintf("node-1 route to node-2's block: %v", hops)
		}
		if hops := kernelRoute(t, n1.NS, extNet); len(hops) != 1 {
			return fmt.Sprintf("node-1 route to the ToR's prefix: %v", hops)
		}
		return ""
	}
	l.e.Eventually(20*time.Second, "routes in place", routed)

	bad := &v1alpha1.BGPPeer{Spec: v1alpha1.BGPPeerSpec{PeerIP: "192.0.2.200", ASNumber: 65001,
		PasswordSecretRef: &v1alpha1.SecretKeyRef{Namespace: "hostroute-system", Name: "missing-md5", Key: "password"}}}
	bad.Name = "needs-password"
	if _, err := l.e.HR.BGPPeers.Create(l.e.Ctx, bad); err != nil {
		t.Fatal(err)
	}
	l.e.Eventually(20*time.Second, "Warning Event on node-1", func() string {
		evs, err := l.e.Kube.CoreV1().Events("").List(l.e.Ctx, metav1.ListOptions{})
		if err != nil {
			return err.Error()
		}
		for _, ev := range evs.Items {
			if ev.InvolvedObject.Name == "node-1" && ev.Reason == "BGPConfigProblem" && strings.Contains(ev.Message, "needs-password") {
				t.Logf("Event on node-1: %s: %s", ev.Reason, ev.Message)
				return ""
			}
		}
		return "no BGPConfigProblem event naming the peer"
	})

	// Garbage, then a reset, on node-1's BGP port from the ToR's namespace.
	c, err := netns.DialIn(t.Context(), l.bird.NS, "tcp", n1.Addr+":179")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\n\r\nthis is not BGP\xff\xff\xff\xff"))
	time.Sleep(200 * time.Millisecond)
	c.Close()
	c, err = netns.DialIn(t.Context(), l.bird.NS, "tcp", n1.Addr+":179")
	if err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).SetLinger(0) // close with RST
	c.Close()
	time.Sleep(2 * time.Second)
	if msg := routed(); msg != "" {
		t.Fatalf("after garbage and a reset: %s", msg)
	}
	out, _ := l.bird.Query("show protocols")
	if !regexp.MustCompile(`(?m)^n_\S+\s+BGP.*Established`).MatchString(out) {
		t.Fatalf("ToR sessions disturbed:\n%s", out)
	}
}
