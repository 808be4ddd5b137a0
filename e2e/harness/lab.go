package harness

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/internal/testenv/bird"
	"github.com/hostroute/hostroute/internal/testenv/netns"
	"github.com/hostroute/hostroute/node/routes"
)

// Lab addresses: nodes on 192.0.2.0/24 behind the ToR, the external host on
// 203.0.113.0/24 behind it too, pods from 10.244.0.0/16.
const (
	LabPool    = "10.244.0.0/16"
	ExtAddr    = "203.0.113.2"
	extTorAddr = "203.0.113.1"
	TorAS      = 65000
	ClusterAS  = 64512
	// With LabOptions.DualStack: the IPv6 pool (no NAT66) and the external host's IPv6.
	LabPool6    = "fd00:10:244::/56"
	ExtAddr6    = "2001:db8:ff::2"
	extTorAddr6 = "2001:db8:ff::1"
)

// LabOptions shapes the lab.
type LabOptions struct {
	Nodes       int
	PodsPerNode int
	// BFD on the node↔ToR sessions and the mesh.
	BFD bool
	// Controllers is how many controller processes run (leader election); 0 = in-process.
	Controllers int
	// ASPerRack puts each node in a rack of its own AS (64600+i), eBGP to the ToR, no
	// node-to-node mesh; the ToR carries the blocks between racks.
	ASPerRack bool
	// NodesPerRack, with ASPerRack, puts that many consecutive nodes in each rack (one AS
	// behind the one ToR): node-1..N in AS 64601, the next N in 64602. 0 means 1.
	NodesPerRack int
	// KubeletNode makes the last node a real kubelet node (kubelet.go): hostroute runs
	// there as the shipped DaemonSet; PodsPerNode does not apply to it.
	KubeletNode bool
	// DualStack gives nodes, pods and the external host IPv6 addresses too: an IPv6 pool
	// (LabPool6, no NAT66), IPv4 and IPv6 sessions to the ToR (BGPPeers tor and tor6),
	// the mesh carrying both families over its IPv4 sessions.
	DualStack bool
}

// Lab is the topology of docs/architecture.md: a control plane, a BIRD ToR, nodes, pods and an
// external host reachable only through the ToR.
type Lab struct {
	*Env
	Tor         *bird.BIRD
	TorNS       string
	ExtNS       string
	Nodes       []*Node
	Pods        []*Pod
	Controllers []*exec.Cmd
	// Kubelet is the kubelet node (LabOptions.KubeletNode), also in Nodes.
	Kubelet *KubeletNode
	bfd     bool
	// rackOf is node-i's rack (AS) with LabOptions.ASPerRack; nil without racks.
	rackOf func(i int) uint32
}

// NewLab builds the lab and waits until every node has a block and every pod is wired.
func NewLab(t TB, bin, prefix string, o LabOptions) *Lab {
	t.Helper()
	e := NewEnvWith(t, bin, o.clusterOptions())
	e.Prefix = prefix
	e.DualStack = o.DualStack
	l := &Lab{Env: e, bfd: o.BFD}
	if o.ASPerRack {
		l.rackOf = func(i int) uint32 { return RackASOf(i, o.NodesPerRack) }
	}
	l.TorNS = e.MakeFabric()
	l.ExtNS = netns.ForTest(t, prefix+"ext-")
	for _, c := range []struct {
		ns   string
		args []string
	}{
		{l.ExtNS, []string{"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "ext0", "netns", l.TorNS}},
		{l.ExtNS, []string{"ip", "addr", "add", ExtAddr + "/24", "dev", "eth0"}},
		{l.ExtNS, []string{"ip", "link", "set", "eth0", "up"}},
		{l.ExtNS, []string{"ip", "route", "add", "default", "via", extTorAddr}},
		{l.TorNS, []string{"ip", "addr", "add", extTorAddr + "/24", "dev", "ext0"}},
		{l.TorNS, []string{"ip", "link", "set", "ext0", "up"}},
	} {
		if err := netns.Exec(c.ns, c.args...); err != nil {
			t.Fatal(err)
		}
	}
	if o.DualStack {
		for _, c := range []struct {
			ns   string
			args []string
		}{
			{l.ExtNS, []string{"ip", "addr", "add", ExtAddr6 + "/64", "dev", "eth0", "nodad"}},
			{l.ExtNS, []string{"ip", "-6", "route", "add", "default", "via", extTorAddr6}},
			{l.TorNS, []string{"ip", "addr", "add", extTorAddr6 + "/64", "dev", "ext0", "nodad"}},
		} {
			if err := netns.Exec(c.ns, c.args...); err != nil {
				t.Fatal(err)
			}
		}
		e.Pool("default-ipv6", LabPool6, 122, false)
	}
	e.Pool("default-ipv4", LabPool, 26, true)
	conf := &v1alpha1.BGPConfiguration{}
	conf.Name = "default"
	conf.Spec.ASNumber = ClusterAS
	if o.ASPerRack {
		mesh := false
		conf.Spec.NodeToNodeMesh = &mesh
		e.NodeAnnotations = map[string]map[string]string{}
		for i := 1; i <= o.Nodes; i++ {
			e.NodeAnnotations[fmt.Sprintf("node-%d", i)] = map[string]string{v1alpha1.AnnotationASNumber: fmt.Sprint(RackASOf(i, o.NodesPerRack))}
		}
	}
	if o.BFD {
		conf.Spec.BFD = &v1alpha1.BFDSettings{Enabled: true}
	}
	if _, err := e.HR.BGPConfigurations.Create(e.Ctx, conf); err != nil {
		t.Fatal(err)
	}
	peer := &v1alpha1.BGPPeer{Spec: v1alpha1.BGPPeerSpec{PeerIP: FabricGateway, ASNumber: TorAS, BFD: &v1alpha1.BFDSettings{Enabled: o.BFD}}}
	if o.ASPerRack {
		blockLen := int32(26)
		peer.Spec.Import = []v1alpha1.PrefixMatch{{CIDR: LabPool, MaxLength: &blockLen}}
	}
	peer.Name = "tor"
	if _, err := e.HR.BGPPeers.Create(e.Ctx, peer); err != nil {
		t.Fatal(err)
	}
	if o.DualStack {
		peer6 := peer.DeepCopy()
		peer6.Name, peer6.Spec.PeerIP = "tor6", FabricGateway6
		if _, err := e.HR.BGPPeers.Create(e.Ctx, peer6); err != nil {
			t.Fatal(err)
		}
	}
	tc := l.torConfig(o.Nodes, o.ASPerRack, o.NodesPerRack)
	l.Tor = e.StartBIRD(l.TorNS, tc.Config())
	l.startControllers(o.Controllers)
	for i := 1; i <= o.Nodes; i++ {
		if o.KubeletNode && i == o.Nodes {
			l.Kubelet = l.addKubeletNode(kubeletNodeName(o), NodeAddr(i))
			l.Nodes = append(l.Nodes, l.Kubelet.Node)
			continue
		}
		l.Nodes = append(l.Nodes, e.AddNode(fmt.Sprintf("node-%d", i), NodeAddr(i)))
	}
	for _, n := range l.Nodes {
		n.WaitReady(30 * time.Second)
	}
	for _, n := range l.Nodes {
		if l.Kubelet != nil && n == l.Kubelet.Node {
			continue // its pods are real Pods, made by the tests
		}
		for j := 1; j <= o.PodsPerNode; j++ {
			p := n.NewPod(fmt.Sprintf("%s-pod-%d", n.Name, j))
			// A Pod object, as the kubelet's: the allocation names a live pod's UID, so
			// `routectl ipam check` judges the lab's pods as it would a cluster's.
			if err := e.PodObject(p); err != nil {
				t.Fatal(err)
			}
			if err := p.Add(); err != nil {
				t.Fatal(err)
			}
			l.Pods = append(l.Pods, p)
		}
	}
	return l
}

// torConfig is the ToR's configuration for nodes 1..n (IPv6 sessions too when dual-stack).
func (l *Lab) torConfig(n int, asPerRack bool, perRack int) TorConfig {
	tc := TorConfig{AS: TorAS, Neighbors: map[string]uint32{}, BFD: l.bfd}
	if l.DualStack {
		tc.Neighbors6 = map[string]uint32{}
	}
	for i := 1; i <= n; i++ {
		as := uint32(ClusterAS)
		if asPerRack {
			as = RackASOf(i, perRack)
		}
		tc.Neighbors[NodeAddr(i)] = as
		if l.DualStack {
			tc.Neighbors6[NodeAddr6(NodeAddr(i))] = as
		}
	}
	return tc
}

func rackAS(i int) uint32 { return uint32(64600 + i) }

// RackAS is node-i's AS with LabOptions.ASPerRack.
func RackAS(i int) uint32 { return rackAS(i) }

// RackASOf is node-i's AS with LabOptions.ASPerRack and NodesPerRack perRack.
func RackASOf(i, perRack int) uint32 { return rackAS((i-1)/max(perRack, 1) + 1) }

// WaitMesh waits until every node routes to every other node's block; with AS per rack,
// to the blocks of the other racks' nodes (a node reaches its own rack's blocks by its
// default route through the ToR: its rack's AS in their path makes BGP refuse them).
func (l *Lab) WaitMesh(timeout time.Duration) {
	l.Eventually(timeout, "every node routes to every other node's block", func() string {
		for i, n := range l.Nodes {
			want := len(l.Nodes) - 1
			if l.rackOf != nil {
				want = 0
				for j := range l.Nodes {
					if l.rackOf(j+1) != l.rackOf(i+1) {
						want++
					}
				}
			}
			out, _ := netns.Output(n.NS, "ip", "route", "show", "proto", strconv.Itoa(routes.Protocol))
			if strings.Count(out, " via ") < want {
				return n.Name + ": " + out
			}
		}
		return ""
	})
}

// NodeAddr is node i's address on the fabric.
func NodeAddr(i int) string { return fmt.Sprintf("192.0.2.%d", i) }

// startControllers runs n controller processes with leader election, or one in-process
// controller when n is 0.
func (l *Lab) startControllers(n int) {
	e := l.Env
	if n == 0 {
		e.RunController(controllerDefaults())
		return
	}
	tok, err := e.ServiceAccountToken("hostroute-controller")
	if err != nil {
		e.T.Fatal(err)
	}
	kubeconfig := filepath.Join(e.T.TempDir(), "controller.kubeconfig")
	if err := WriteKubeconfig(kubeconfig, e.Cluster.URL, tok); err != nil {
		e.T.Fatal(err)
	}
	for i := range n {
		cmd := exec.Command(filepath.Join(e.Bin, "hostroute-controller"), "--kubeconfig", kubeconfig,
			"--identity", fmt.Sprintf("controller-%d", i), "--lease-duration", "4s", "--renew-deadline", "3s",
			"--retry-period", "500ms", "--release-grace", "10s")
		logf := filepath.Join(e.T.TempDir(), "controller.log")
		if f, err := createFile(logf); err == nil {
			cmd.Stdout, cmd.Stderr = f, f
		}
		if err := cmd.Start(); err != nil {
			e.T.Fatal(err)
		}
		l.Controllers = append(l.Controllers, cmd)
		e.T.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
}

// Leader returns the holder of the controller Lease.
func (l *Lab) Leader() string {
	lease, err := l.Kube.CoordinationV1().Leases("hostroute-system").Get(l.Ctx, "hostroute-controller", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *lease.Spec.HolderIdentity
}

// PodObject creates the Pod object a kubelet would have for a sandbox (bound to its node,
// in its namespace), with the given annotations.
func (e *Env) PodObject(p *Pod, annotations ...map[string]string) error {
	pod := &corev1.Pod{}
	pod.Name, pod.Namespace = p.Name, p.KubeNamespace()
	pod.Spec.NodeName = p.Node.Name
	pod.Spec.Containers = []corev1.Container{{Name: "app", Image: "registry.invalid/app"}}
	for _, a := range annotations {
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		for k, v := range a {
			pod.Annotations[k] = v
		}
	}
	got, err := e.Kube.CoreV1().Pods(pod.Namespace).Create(e.Ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	p.UID = string(got.UID)
	return nil
}

var pingTime = regexp.MustCompile(`time=([0-9.]+) ms`)

// Ping pings dst once from the namespace and returns the round-trip time.
func Ping(ns, dst string) (string, bool) {
	out, err := netns.Output(ns, "ping", "-c1", "-W1", dst)
	if err != nil {
		return "", false
	}
	if m := pingTime.FindStringSubmatch(out); m != nil {
		return m[1] + "ms", true
	}
	return "", true
}

// Matrix pings every pod, node and the external host from every pod, node and the
// external host, and renders a ✔/✘ table with latencies; in a dual-stack lab a second
// table does the same over IPv6. ok is true when all pass.
func (l *Lab) Matrix() (string, bool) {
	type ep = Endpoint
	var eps []ep
	for _, p := range l.Pods {
		eps = append(eps, ep{p.Name, p.NS, p.IP})
	}
	for _, n := range l.Nodes {
		eps = append(eps, ep{n.Name, n.NS, n.Addr})
	}
	eps = append(eps, ep{"external", l.ExtNS, ExtAddr})
	out, ok := PingMatrix(eps)
	if !l.DualStack {
		return out, ok
	}
	var eps6 []ep
	for _, p := range l.Pods {
		eps6 = append(eps6, ep{p.Name, p.NS, p.IP6})
	}
	for _, n := range l.Nodes {
		eps6 = append(eps6, ep{n.Name, n.NS, NodeAddr6(n.Addr)})
	}
	eps6 = append(eps6, ep{"external", l.ExtNS, ExtAddr6})
	out6, ok6 := PingMatrix(eps6)
	return "IPv4\n" + out + "\nIPv6\n" + out6, ok && ok6
}

// Endpoint is one row and column of a connectivity matrix: a name, the namespace pings
// start from, the address pings go to.
type Endpoint struct{ Name, NS, Addr string }

// PingMatrix pings every endpoint from every endpoint (one packet) and renders a ✔/✘
// table with latencies. ok is true when all pass.
func PingMatrix(eps []Endpoint) (string, bool) {
	cells := make([][]string, len(eps))
	allOK := true
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, src := range eps {
		cells[i] = make([]string, len(eps))
		for j, dst := range eps {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				rtt, ok := Ping(src.NS, dst.Addr)
				cell := "✔ " + rtt
				if !ok {
					cell = "✘"
				}
				mu.Lock()
				cells[i][j] = cell
				allOK = allOK && ok
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	var b strings.Builder
	fmt.Fprintf(&b, "%-16s", "from \\ to")
	for _, d := range eps {
		fmt.Fprintf(&b, " %-14s", d.Name)
	}
	b.WriteString("\n")
	for i, s := range eps {
		fmt.Fprintf(&b, "%-16s", s.Name)
		for j := range eps {
			fmt.Fprintf(&b, " %-14s", cells[i][j])
		}
		b.WriteString("\n")
	}
	return b.String(), allOK
}

// AddNodeToLab adds node i: BIRD learns the new neighbour (birdc configure), then the node
// joins like any other.
func (l *Lab) AddNodeToLab(t TB, i int) *Node {
	t.Helper()
	tc := l.torConfig(i, false, 0)
	if err := l.Tor.Reconfigure(tc.Config()); err != nil {
		t.Fatal(err)
	}
	n := l.AddNode(fmt.Sprintf("node-%d", i), NodeAddr(i))
	l.Nodes = append(l.Nodes, n)
	n.WaitReady(30 * time.Second)
	return n
}
