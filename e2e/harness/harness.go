// Package harness builds hostroute's binaries and runs them the way a cluster does, inside
// network namespaces the test owns: a real control plane (internal/testenv/cluster), the controller,
// node agents as their own processes in node namespaces, and pods wired by invoking the
// real CNI binary with the runtime's environment and stdin.
package harness

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/internal/testenv"
	"github.com/hostroute/hostroute/internal/testenv/cluster"
	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// NSPrefix starts the name of every namespace the tests create; LabPrefix those of
// `make lab`. Each sweeps only its own, so a running lab and a test run never collide.
const (
	NSPrefix  = "hre2e-"
	LabPrefix = "hrlab-"
)

// RepoRoot is the repository's root directory.
func RepoRoot() string { return testenv.RepoRoot() }

// Build compiles every command into dir.
func Build(dir string) error {
	// The flags of `make build`: what the tests run is what ships.
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace", "-ldflags", "-s -w", "-o", dir+"/", "./cmd/...")
	cmd.Dir = RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/...: %w\n%s", err, out)
	}
	return nil
}

// TB is what the harness needs of a test; *testing.T and *testing.B have it, and so does
// the lab's own implementation for `make lab`.
type TB interface {
	testenv.TB
	Fatal(args ...any)
}

// Env is one test's cluster.
type Env struct {
	T       TB
	Ctx     context.Context
	Bin     string
	Cluster *cluster.Cluster
	Kube    kubernetes.Interface
	HR      *client.Client
	Log     *slog.Logger
	// Fabric is the ToR namespace with the nodes' L2 segment (bridge br0), once made.
	Fabric string
	// AgentArgs are extra flags for every hostroute-node.
	AgentArgs []string
	// Prefix starts every namespace name (NSPrefix unless set).
	Prefix string
	// NodeAnnotations are set on the Node objects AddNode creates, by node name.
	NodeAnnotations map[string]map[string]string
	// NodeLabels are set on them too (beside SegmentLabel), by node name.
	NodeLabels map[string]map[string]string
	// DeferStart makes AddNode prepare the node (namespace, Node object, identity) but
	// not start its agent: the caller calls Start, e.g. for all nodes at once.
	DeferStart bool
	// DualStack gives the fabric's first segment FabricGateway6/64 and every node on it
	// an IPv6 address too (NodeAddr6 of its IPv4 one), as a second InternalIP, with an
	// IPv6 default route via the ToR. Set it before MakeFabric.
	DualStack bool
	// IPv6Only is DualStack without the IPv4 side on the nodes: their uplink has only the
	// IPv6 address, which is their one InternalIP (Node.Addr), and their BGP router ID is
	// the IPv4 address they were given, as the hostroute.io/router-id annotation.
	IPv6Only bool
}

// FabricGateway6 is the ToR's IPv6 address on the first node segment (2001:db8:2::/64).
const FabricGateway6 = "2001:db8:2::fe"

// NodeAddr6 is the IPv6 address a dual-stack node at IPv4 address 192.0.2.i has:
// 2001:db8:2::i.
func NodeAddr6(addr4 string) string {
	return "2001:db8:2::" + strconv.FormatInt(int64(mustLastOctet(addr4)), 16)
}

func mustLastOctet(addr string) int {
	i, err := strconv.Atoi(addr[strings.LastIndex(addr, ".")+1:])
	if err != nil {
		panic(fmt.Sprintf("address %q has no last octet: %v", addr, err))
	}
	return i
}

// FabricGateway is the ToR's address on the first node segment (192.0.2.0/24, br0).
const FabricGateway = "192.0.2.254"

// SegmentLabel is the Node label AddNodeOn sets to the node's segment (its bridge in the
// ToR), so that a BGPPeer can select the nodes of one segment.
const SegmentLabel = "hostroute.test/segment"

// MakeFabric creates the ToR namespace, forwarding on (in the ToR namespace only), with
// the first node segment: bridge br0 with FabricGateway/24, which AddNode plugs nodes
// into.
func (e *Env) MakeFabric() string {
	e.T.Helper()
	ns := netns.ForTest(e.T, e.Prefix+"tor-")
	if err := netns.Exec(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		e.T.Fatal(err)
	}
	e.Fabric = ns
	e.AddSegment("br0", FabricGateway)
	if e.DualStack || e.IPv6Only {
		for _, c := range [][]string{
			{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
			{"ip", "addr", "add", FabricGateway6 + "/64", "dev", "br0", "nodad"},
		} {
			if err := netns.Exec(ns, c...); err != nil {
				e.T.Fatal(err)
			}
		}
	}
	return ns
}

// AddSegment adds a node segment to the fabric: a bridge in the ToR namespace with
// gateway/24, the ToR's address on it, so the ToR routes between the segments. Nodes
// AddNodeOn puts on it have their default route via the .254 of their own /24, so
// gateway must be that address.
func (e *Env) AddSegment(bridge, gateway string) {
	e.T.Helper()
	if e.Fabric == "" {
		e.T.Fatalf("AddSegment %s: no fabric (MakeFabric first)", bridge)
	}
	for _, c := range [][]string{
		{"ip", "link", "add", bridge, "type", "bridge"},
		{"ip", "link", "set", bridge, "up"},
		{"ip", "addr", "add", gateway + "/24", "dev", bridge},
	} {
		if err := netns.Exec(e.Fabric, c...); err != nil {
			e.T.Fatal(err)
		}
	}
}

// NewEnv starts a control plane and the controller. bin holds the built commands.
func NewEnv(t TB, bin string) *Env { return NewEnvWith(t, bin, cluster.Options{}) }

// NewEnvWith is NewEnv with control-plane options (e.g. those a kubelet node needs).
func NewEnvWith(t TB, bin string, o cluster.Options) *Env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("end-to-end tests create network namespaces and must run as root (uid %d)", os.Geteuid())
	}
	cl := cluster.StartForTest(t, o)
	cfg := cl.RESTConfig()
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hr, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &Env{T: t, Ctx: ctx, Bin: bin, Cluster: cl, Kube: kube, HR: hr, Prefix: netns.OwnedPrefix(NSPrefix),
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	e.InstallAccess()
	return e
}

// RunController runs an in-process controller until the test ends, with the shipped
// controller ServiceAccount's permissions.
func (e *Env) RunController(cfg controller.Config) {
	tok, err := e.ServiceAccountToken("hostroute-controller")
	if err != nil {
		e.T.Fatal(err)
	}
	kube, hr, err := e.Clients(tok)
	if err != nil {
		e.T.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.Ctx)
	c := controller.New(e.Log, kube, hr, cfg)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	e.T.Cleanup(func() { cancel(); <-done })
}

// Pool creates an IPPool.
func (e *Env) Pool(name, cidr string, blockSize int32, nat bool) {
	e.T.Helper()
	p := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{CIDR: cidr, BlockSize: &blockSize, NATOutgoing: nat}}
	p.Name = name
	if _, err := e.HR.IPPools.Create(e.Ctx, p); err != nil {
		e.T.Fatalf("create pool: %v", err)
	}
}

// Eventually polls cond until it returns "" or timeout passes.
func (e *Env) Eventually(timeout time.Duration, what string, cond func() string) {
	e.T.Helper()
	testenv.Eventually(e.T, timeout, what, cond)
}

// Node is a node namespace running hostroute-node.
type Node struct {
	env        *Env
	Name       string
	NS         string
	Addr       string // the node's address (on its uplink)
	Dir        string // state dir, socket, kubeconfig, log
	Socket     string
	Kubeconfig string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	// bfd is the node's `hostroute-node bfd`, which outlives agent restarts as on a cluster.
	bfd     *exec.Cmd
	bfdDone chan struct{}
}

// AddNode creates the Node object and the node's namespace, gives the namespace a
// loopback path to the API server, and starts the agent. addr is the node's address, on
// the first segment (br0) when there is a fabric.
func (e *Env) AddNode(name, addr string) *Node {
	e.T.Helper()
	return e.AddNodeOn("br0", name, addr)
}

// AddNodeOn is AddNode with the node on segment (a bridge MakeFabric or AddSegment
// made); the Node carries SegmentLabel.
func (e *Env) AddNodeOn(segment, name, addr string) *Node {
	e.T.Helper()
	ns := netns.ForTest(e.T, e.Prefix+"n-")
	dir := e.T.TempDir()
	n := &Node{env: e, Name: name, NS: ns, Addr: addr, Dir: dir, Socket: filepath.Join(dir, "agent.sock")}
	e.plumbNode(ns, segment, name, addr)
	node := &corev1.Node{}
	node.Name = name
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}
	if e.DualStack && segment == "br0" {
		node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: NodeAddr6(addr)})
	}
	node.Annotations = maps.Clone(e.NodeAnnotations[name])
	if e.IPv6Only {
		n.Addr = NodeAddr6(addr)
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.Addr}}
		if node.Annotations == nil {
			node.Annotations = map[string]string{}
		}
		node.Annotations[v1alpha1.AnnotationRouterID] = addr
	}
	node.Labels = maps.Clone(e.NodeLabels[name])
	if e.Fabric != "" {
		if node.Labels == nil {
			node.Labels = map[string]string{}
		}
		node.Labels[SegmentLabel] = segment
	}
	if _, err := e.Kube.CoreV1().Nodes().Create(e.Ctx, node, metav1.CreateOptions{}); err != nil {
		e.T.Fatalf("create node %s: %v", name, err)
	}
	n.proxyAPI()
	if !e.DeferStart {
		n.Start()
	}
	e.T.Cleanup(func() { n.Kill(); n.KillBFD() })
	return n
}

// gateway is the ToR's address on addr's /24: the .254, the lab's convention.
func gateway(addr string) string {
	i := strings.LastIndex(addr, ".")
	return addr[:i] + ".254"
}

// Gateway is the ToR address a node at addr routes through (its default route).
func Gateway(addr string) string { return gateway(addr) }

// plumbNode gives a node namespace its uplink into the fabric's segment bridge (or a
// stub without a fabric), its address and default route. The host side of every pod veth answers ARP for
// 169.254.1.1 by proxy only when the node has a route to it through another interface,
// as on a real host, hence the uplink even without a fabric.
func (e *Env) plumbNode(ns, segment, name, addr string) {
	e.T.Helper()
	setup := [][]string{
		{"ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1"},
		{"ip", "link", "set", "up0", "up"}, {"ip", "link", "set", "up1", "up"},
	}
	var torSide [][]string
	if e.Fabric != "" {
		// The uplink's far end goes into the ToR and onto its bridge.
		port := "p-" + name
		setup = [][]string{
			{"ip", "link", "add", "up0", "type", "veth", "peer", "name", port, "netns", e.Fabric},
			{"ip", "link", "set", "up0", "up"},
		}
		torSide = [][]string{{"ip", "link", "set", port, "master", segment}, {"ip", "link", "set", port, "up"}}
	}
	if !e.IPv6Only {
		setup = append(setup,
			[]string{"ip", "addr", "add", addr + "/24", "dev", "up0"},
			[]string{"ip", "route", "add", "default", "via", gateway(addr), "dev", "up0"})
	}
	if (e.DualStack || e.IPv6Only) && segment == "br0" {
		setup = append(setup,
			[]string{"ip", "addr", "add", NodeAddr6(addr) + "/64", "dev", "up0", "nodad"},
			[]string{"ip", "-6", "route", "add", "default", "via", FabricGateway6, "dev", "up0"})
	}
	for _, c := range setup {
		if err := netns.Exec(ns, c...); err != nil {
			ls, _ := os.ReadDir("/run/netns")
			var names []string
			for _, l := range ls {
				names = append(names, l.Name())
			}
			e.T.Fatalf("%v (namespaces: %v)", err, names)
		}
	}
	for _, c := range torSide {
		if err := netns.Exec(e.Fabric, c...); err != nil {
			e.T.Fatal(err)
		}
	}
}

// forwardAPI makes https://127.0.0.1:6443 inside the node namespace ns lead to the API
// server: a listener in there, served from the test process, so no route or forwarding
// in the root namespace is needed.
func (e *Env) forwardAPI(ns string) {
	e.T.Helper()
	u, err := url.Parse(e.Cluster.URL)
	if err != nil {
		e.T.Fatal(err)
	}
	netns.ForwardForTest(e.T, ns, "127.0.0.1:6443", u.Host)
}

// proxyAPI makes https://127.0.0.1:6443 inside the node's namespace lead to the API server.
func (n *Node) proxyAPI() {
	e := n.env
	e.forwardAPI(n.NS)
	// The agent's own identity: a token bound to its Pod object on this node, with the
	// shipped RBAC and admission policy, as on a cluster.
	tok, err := e.AgentToken(n.Name)
	if err != nil {
		e.T.Fatal(err)
	}
	n.Kubeconfig = filepath.Join(n.Dir, "kubeconfig")
	if err := WriteKubeconfig(n.Kubeconfig, "https://127.0.0.1:6443", tok); err != nil {
		e.T.Fatal(err)
	}
}

// PID is the agent's process ID (0 when it is not running). `ip netns exec` executes
// the agent in its own place, so this is hostroute-node's PID.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// BFDPID is the node's BFD daemon's process ID (0 when it is not running).
func (n *Node) BFDPID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.bfd == nil {
		return 0
	}
	return n.bfd.Process.Pid
}

// BFDSocket is where the node's BFD daemon listens.
func (n *Node) BFDSocket() string { return filepath.Join(n.Dir, "bfd.sock") }

// Start starts the agent in the node's namespace, and the node's BFD daemon first if it
// is not running (StartBFD).
func (n *Node) Start() {
	n.StartBFD()
	n.mu.Lock()
	defer n.mu.Unlock()
	cmd, done := n.run("agent.log", "--kubeconfig", n.Kubeconfig, "--node-name", n.Name, "--state-dir", filepath.Join(n.Dir, "state"),
		"--socket", n.Socket, "--bfd-socket", n.BFDSocket(), "--alloc-wait", "5s", "--publish-interval", "200ms", "--log-level", "info")
	n.cmd, n.done = cmd, done
}

// run starts hostroute-node with args (and the Env's AgentArgs for the agent) in the
// node's namespace, logging to logName in the node's dir; done closes when it exits.
func (n *Node) run(logName string, args ...string) (*exec.Cmd, chan struct{}) {
	logf, err := os.OpenFile(filepath.Join(n.Dir, logName), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		n.env.T.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.NS, filepath.Join(n.env.Bin, "hostroute-node")}, args...)...)
	if logName == "agent.log" {
		cmd.Args = append(cmd.Args, n.env.AgentArgs...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		n.env.T.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	return cmd, done
}

// StartBFD starts the node's `hostroute-node bfd` unless it runs.
func (n *Node) StartBFD() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.bfd != nil {
		return
	}
	n.bfd, n.bfdDone = n.run("bfd.log", "bfd", "--socket", n.BFDSocket())
}

// KillBFD stops the node's BFD daemon with SIGKILL (no goodbye) and waits for it.
func (n *Node) KillBFD() { n.stopBFD(os.Kill) }

// StopBFD stops the node's BFD daemon with SIGTERM (AdminDown to its peers) and waits.
func (n *Node) StopBFD() { n.stopBFD(syscall.SIGTERM) }

func (n *Node) stopBFD(sig os.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.bfd == nil {
		return
	}
	_ = n.bfd.Process.Signal(sig)
	<-n.bfdDone
	n.bfd = nil
}

// Kill stops the agent with SIGKILL (a crash) and waits for it.
func (n *Node) Kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
}

// Log returns the agent's log.
func (n *Node) Log() string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, "agent.log"))
	return string(b)
}

// BFDLog returns the node's BFD daemon's log.
func (n *Node) BFDLog() string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, "bfd.log"))
	return string(b)
}

// WaitReady waits until the agent answers on its socket and has a block.
func (n *Node) WaitReady(timeout time.Duration) {
	n.env.T.Helper()
	n.env.Eventually(timeout, "agent on "+n.Name+" ready", func() string {
		st, err := n.Status()
		if err != nil {
			return err.Error()
		}
		if !st.GetReady() {
			return st.GetMessage()
		}
		return ""
	})
}

func createFile(path string) (*os.File, error) { return os.Create(path) }

func controllerDefaults() controller.Config { return controller.Config{ReleaseGrace: 10 * time.Second} }
