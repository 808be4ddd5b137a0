package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/netns"
)

func newTestLab(t *testing.T, o harness.LabOptions) *harness.Lab {
	t.Helper()
	l := harness.NewLab(t, bin, netns.OwnedPrefix(harness.NSPrefix), o)
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range l.Nodes {
				t.Logf("agent log of %s:\n%s", n.Name, lastLines(n.Log(), 40))
			}
		}
	})
	l.WaitMesh(30 * time.Second)
	return l
}

// TestLabTraffic: pod↔pod across nodes without NAT, pod↔host, pod→external with NAT
// (the external host sees the node), external→pod through the ToR without NAT, hostPort
// through the chained portmap plugin, and the ToR's table holding exactly the blocks.
func TestLabTraffic(t *testing.T) {
	l := newTestLab(t, harness.LabOptions{Nodes: 3, PodsPerNode: 2, BFD: true})
	p1, p2, p3 := l.Pods[0], l.Pods[2], l.Pods[4] // on node-1, node-2, node-3
	ping(t, p1.NS, p2.IP)
	ping(t, p3.NS, p1.IP)
	tcpCheck(t, p1, p3)
	ping(t, p2.NS, l.Nodes[0].Addr)
	ping(t, l.Nodes[2].NS, p1.IP)

	if got := tcpSeen(t, l.ExtNS, harness.ExtAddr+":9000", p1.NS, harness.ExtAddr+":9000"); got != l.Nodes[0].Addr {
		t.Fatalf("pod → external: the external host saw %q, want node-1's address %s (NAT outgoing)", got, l.Nodes[0].Addr)
	}
	if got := tcpSeen(t, p2.NS, p2.IP+":9001", l.ExtNS, p2.IP+":9001"); got != harness.ExtAddr {
		t.Fatalf("external → pod: the pod saw %q, want the external address %s (no NAT)", got, harness.ExtAddr)
	}

	// The ToR holds exactly the assigned blocks, each via its node.
	bs, err := l.HR.IPAMBlocks.List(l.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := l.Tor.Query("show route")
	for _, b := range bs.Items {
		var addr string
		for i, n := range l.Nodes {
			if n.Name == b.Spec.Node {
				addr = harness.NodeAddr(i + 1)
			}
		}
		if !strings.Contains(out, b.Spec.CIDR) || !strings.Contains(out, "via "+addr) {
			t.Errorf("ToR lacks %s via %s:\n%s", b.Spec.CIDR, addr, out)
		}
	}
	if n := strings.Count(out, "unicast"); n != len(bs.Items) {
		t.Errorf("ToR has %d routes, want exactly the %d blocks:\n%s", n, len(bs.Items), out)
	}

	// hostPort: chain portmap after hostroute-cni as the conflist does.
	hp := l.Nodes[1].NewPod("hostport")
	conf := l.Nodes[1].NetConf()
	res, err := l.Nodes[1].CNI("ADD", hp, conf)
	if err != nil {
		t.Fatalf("ADD: %v %s", err, res)
	}
	var r harness.CNIResult
	_ = json.Unmarshal(res, &r)
	hp.IP = strings.Split(r.IPs[0].Address, "/")[0]
	pm := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"hostroute","type":"portmap","capabilities":{"portMappings":true},"snat":true,
		"runtimeConfig":{"portMappings":[{"hostPort":8081,"containerPort":8080,"protocol":"tcp"}]},"prevResult":%s}`, res)
	cmd := exec.Command("ip", "netns", "exec", l.Nodes[1].NS, "/usr/lib/cni/portmap")
	cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID="+hp.ContainerID, "CNI_NETNS=/run/netns/"+hp.NS,
		"CNI_IFNAME=eth0", "CNI_PATH=/usr/lib/cni")
	cmd.Stdin = bytes.NewReader([]byte(pm))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("portmap ADD: %v %s", err, out)
	}
	if got := tcpSeen(t, hp.NS, hp.IP+":8080", l.ExtNS, l.Nodes[1].Addr+":8081"); got == "" {
		t.Fatal("hostPort 8081 on node-2 did not reach the pod")
	} else {
		t.Logf("external → node-2:8081 (hostPort) reached the pod; the pod saw %s", got)
	}
}

// TestLabNodeJoinsAndDies: a new node's pod is reachable from every node within 2 s of its
// ADD; a node that dies (agent SIGKILL and its link down) leaves every other node's kernel
// within 1 s (BFD), and once its Node object is deleted the controller releases its block
// after the grace period.
func TestLabNodeJoinsAndDies(t *testing.T) {
	l := newTestLab(t, harness.LabOptions{Nodes: 2, PodsPerNode: 1, BFD: true, Controllers: 2})
	// The ToR peers with .3 only once it exists: add it to BIRD's neighbours first.
	n3 := l.AddNodeToLab(t, 3)
	p := n3.NewPod("late")
	if err := p.Add(); err != nil {
		t.Fatal(err)
	}
	added := time.Now()
	l.Eventually(5*time.Second, "new pod reachable from every node", func() string {
		for _, n := range l.Nodes[:2] {
			if _, ok := harness.Ping(n.NS, p.IP); !ok {
				return n.Name + " cannot reach " + p.IP
			}
		}
		return ""
	})
	took := time.Since(added)
	t.Logf("a joining node's pod was reachable from every node %s after its ADD", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Fatalf("took %s, want ≤ 2s", took)
	}

	// node-3 dies.
	block := n3Block(t, l)
	n3.Kill()
	if err := netns.Exec(n3.NS, "ip", "link", "set", "up0", "down"); err != nil {
		t.Fatal(err)
	}
	died := time.Now()
	l.Eventually(3*time.Second, "dead node's routes gone from every node", func() string {
		for _, n := range l.Nodes[:2] {
			if hops := kernelRoute(t, n.NS, block); len(hops) > 0 {
				return fmt.Sprintf("%s still routes %s via %v", n.Name, block, hops)
			}
		}
		return ""
	})
	gone := time.Since(died)
	t.Logf("with BFD, the dead node's block left every other node's kernel %s after it died", gone.Round(time.Millisecond))
	if gone > time.Second {
		t.Fatalf("took %s, want < 1s", gone)
	}
	if err := l.Kube.CoreV1().Nodes().Delete(l.Ctx, n3.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	l.Eventually(30*time.Second, "block released after the grace period", func() string {
		bs, _ := l.HR.IPAMBlocks.List(l.Ctx, metav1.ListOptions{})
		for _, b := range bs.Items {
			if b.Spec.Node == n3.Name {
				return "block of node-3 still assigned"
			}
		}
		return ""
	})

	// The controller leader dies; the other replica assigns node-4's block.
	leader := l.Leader()
	for i, c := range l.Controllers {
		if fmt.Sprintf("controller-%d", i) == leader {
			_ = c.Process.Signal(syscall.SIGKILL)
		}
	}
	n4 := l.AddNodeToLab(t, 4)
	n4.WaitReady(30 * time.Second)
	if now := l.Leader(); now == leader {
		t.Fatalf("leader still %s after it was killed", now)
	}
}

func n3Block(t *testing.T, l *harness.Lab) string {
	t.Helper()
	bs, err := l.HR.IPAMBlocks.List(l.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs.Items {
		if b.Spec.Node == "node-3" {
			return b.Spec.CIDR
		}
	}
	t.Fatal("node-3 has no block")
	return ""
}

// TestLabIPAMChurn creates and deletes 300 pods across the nodes and checks that no
// address was ever in use twice and that nothing leaks.
func TestLabIPAMChurn(t *testing.T) {
	l := newTestLab(t, harness.LabOptions{Nodes: 3, PodsPerNode: 0})
	var mu sync.Mutex
	inUse := map[string]string{}
	var wg sync.WaitGroup
	errs := make(chan error, 300)
	for w, n := range l.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var live []*harness.Pod
			for i := range 100 {
				p := n.NewPod(fmt.Sprintf("churn-%d-%d", w, i))
				if err := p.Add(); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if other, dup := inUse[p.IP]; dup {
					errs <- fmt.Errorf("%s handed out twice: %s and %s", p.IP, other, p.Name)
				}
				inUse[p.IP] = p.Name
				mu.Unlock()
				live = append(live, p)
				if len(live) > 10 { // keep ~10 pods per node alive: addresses get reused
					old := live[0]
					live = live[1:]
					if err := old.Del(); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					delete(inUse, old.IP)
					mu.Unlock()
				}
			}
			for _, p := range live {
				if err := p.Del(); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// No leak: the agents hold nothing and the published copy says so too.
	l.Eventually(10*time.Second, "no allocation left anywhere", func() string {
		for _, n := range l.Nodes {
			if got := inUseOf(n); got != 0 {
				return fmt.Sprintf("%s agent holds %d", n.Name, got)
			}
		}
		bs, _ := l.HR.IPAMBlocks.List(l.Ctx, metav1.ListOptions{})
		for _, b := range bs.Items {
			if len(b.Status.Allocations) != 0 {
				return fmt.Sprintf("block %s still lists %d allocations", b.Spec.CIDR, len(b.Status.Allocations))
			}
			if _, err := netip.ParsePrefix(b.Spec.CIDR); err != nil {
				return err.Error()
			}
		}
		return ""
	})
}

func inUseOf(n *harness.Node) int {
	st, err := n.Status()
	if err != nil {
		return -1
	}
	total := 0
	for _, b := range st.GetBlocks() {
		total += int(b.GetInUse())
	}
	return total
}

// TestLabASPerRack: two racks, each node in its rack's AS, eBGP to the ToR and no mesh:
// the ToR carries each rack's blocks to the other and pods talk across racks.
func TestLabASPerRack(t *testing.T) {
	l := newTestLab(t, harness.LabOptions{Nodes: 2, PodsPerNode: 1, ASPerRack: true})
	out, _ := l.Tor.Query("show route")
	t.Logf("the ToR's table (AS per rack):\n%s", out)
	if !strings.Contains(out, "AS64601") || !strings.Contains(out, "AS64602") {
		t.Fatalf("ToR did not learn both racks' blocks over eBGP:\n%s", out)
	}
	ping(t, l.Pods[0].NS, l.Pods[1].IP)
	tcpCheck(t, l.Pods[1], l.Pods[0])
	if st, _ := netns.Output(l.Nodes[0].NS, "ss", "-tn", "state", "established", "( dport = :179 or sport = :179 )"); strings.Contains(st, harness.NodeAddr(2)+":") {
		t.Fatalf("node-1 has a BGP session with node-2 though the mesh is off:\n%s", st)
	}

	// The ToR itself originates node-2's block (a misconfigured or hijacked ToR): its
	// static route wins in BIRD and goes to node-1 with AS path [65000], which does not
	// originate in node-2's AS. node-1 refuses it instead of sending node-2's pods'
	// traffic to the ToR's blackhole.
	var block2 string
	bs, err := l.HR.IPAMBlocks.List(l.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs.Items {
		if b.Spec.Node == "node-2" {
			block2 = b.Spec.CIDR
		}
	}
	tc := harness.TorConfig{AS: harness.TorAS, Neighbors: map[string]uint32{harness.NodeAddr(1): harness.RackAS(1), harness.NodeAddr(2): harness.RackAS(2)},
		Originate: []string{block2}}
	if err := l.Tor.Reconfigure(tc.Config()); err != nil {
		t.Fatal(err)
	}
	l.Eventually(10*time.Second, "the ToR announcing its own route for node-2's block to node-1", func() string {
		out, _ := l.Tor.Query("show route export n_192_0_2_1 for " + block2 + " all")
		if !strings.Contains(out, "static") && !strings.Contains(out, "originated") {
			return out
		}
		return ""
	})
	l.Eventually(10*time.Second, "node-1 logging the refusal", func() string {
		if log := l.Nodes[0].Log(); !strings.Contains(log, "route rejected") || !strings.Contains(log, "prefix="+block2) {
			return "no log line about " + block2
		}
		return ""
	})
	time.Sleep(time.Second)
	for _, hop := range kernelRoute(t, l.Nodes[0].NS, block2) {
		if hop == harness.FabricGateway {
			t.Fatalf("node-1 routes node-2's block %s to the ToR: the ToR's own origination was accepted", block2)
		}
	}
}

// TestLabRacks: AS per rack with a rack of two nodes (node-1 and node-2 in AS 64601,
// node-3 in 64602) behind one eBGP ToR, no mesh: every pod, node and the external host
// reach each other (the ping matrix is all ✔). The rack-mates do not learn each other's
// blocks (their AS is in the path) and reach each other through the ToR; each learns
// the other rack's block from the ToR.
func TestLabRacks(t *testing.T) {
	l := newTestLab(t, harness.LabOptions{Nodes: 3, PodsPerNode: 1, ASPerRack: true, NodesPerRack: 2})
	out, _ := l.Tor.Query("show route")
	t.Logf("the ToR's table:\n%s", out)
	if strings.Count(out, "AS64601i") != 2 || strings.Count(out, "AS64602i") != 1 {
		t.Errorf("the ToR should hold two blocks from AS 64601 and one from 64602:\n%s", out)
	}
	blocks := map[string]string{}
	bs, err := l.HR.IPAMBlocks.List(l.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs.Items {
		blocks[b.Spec.Node] = b.Spec.CIDR
	}
	if hops := kernelRoute(t, l.Nodes[0].NS, blocks["node-3"]); !slices.Equal(hops, []string{l.Nodes[2].Addr}) {
		t.Errorf("node-1 routes node-3's block (the other rack) via %v, want %s", hops, l.Nodes[2].Addr)
	}
	if hops := kernelRoute(t, l.Nodes[0].NS, blocks["node-2"]); len(hops) != 0 {
		t.Errorf("node-1 routes its rack-mate's block via %v: BGP should refuse a path with its own AS", hops)
	}
	m, ok := l.Matrix()
	t.Logf("connectivity:\n%s", m)
	if !ok {
		t.Error("the ping matrix has failures")
	}
}
