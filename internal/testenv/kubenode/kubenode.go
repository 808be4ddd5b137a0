package kubenode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/hostroute/hostroute/internal/testenv/netns"
	"github.com/hostroute/hostroute/internal/testenv/proc"
)

// ErrToolMissing is returned (wrapped) by Start when containerd, runc, ctr,
// nsenter or the kubelet is not installed, so a test can fail with the reason.
var ErrToolMissing = errors.New("kubelet node tool missing")

// DirPrefix marks node directories in the temp dir; the sweep only ever looks at
// directories carrying it, and the node's cgroup is named after its directory.
const DirPrefix = "hostroute-kubenode-"

// Config describes one kubelet node.
type Config struct {
	// Name is the Node's name (--hostname-override).
	Name string
	// NetNS names the node's network namespace under /run/netns. containerd,
	// the kubelet, every hostNetwork pod and every CNI plugin run in it.
	NetNS string
	// NodeIP becomes the Node's InternalIP.
	NodeIP string
	// Kubeconfig is the kubelet's: a NodeUser(Name) token in group system:nodes,
	// for a server address reachable from inside NetNS.
	Kubeconfig string
	// KubeletBin is the kubelet binary.
	KubeletBin string
	// Labels are set on the Node at registration (--node-labels).
	Labels map[string]string
	// Images are docker-archive tarballs imported before the kubelet starts. The
	// sandbox image PauseImage must be among them (see BuildPause).
	Images []string
	// CNIPlugins are host plugin binaries linked into the node's CNI bin dir.
	// containerd runs "loopback" for every sandbox itself. Default:
	// /usr/lib/cni/loopback and /usr/lib/cni/portmap.
	CNIPlugins []string
}

// Node is a running containerd + kubelet. Its fields are read-only.
type Node struct {
	Name string
	// Dir holds everything of the node; Stop removes it.
	Dir string
	// HostRoot stands in for the machine's / for hostPath volumes that must not
	// touch the real one: HostPath("/etc/cni/net.d") is the runtime's CNI conf dir.
	HostRoot string
	// Socket is containerd's CRI socket.
	Socket string

	l          layout
	netns      string
	spawner    *proc.Spawner
	containerd *proc.Proc
	kubelet    *proc.Proc
	logFile    *os.File
	conn       *grpc.ClientConn
	rt         cri.RuntimeServiceClient

	stopOnce sync.Once
	stopErr  error
}

// HostPath maps a host path (e.g. /run/hostroute) into the node's HostRoot.
func (n *Node) HostPath(p string) string { return filepath.Join(n.HostRoot, p) }

// CNIBinDir and CNIConfDir are the runtime's CNI directories (under HostRoot).
func (n *Node) CNIBinDir() string  { return n.l.CNIBinDir }
func (n *Node) CNIConfDir() string { return n.l.CNIConfDir }

// LogPath is the file both daemons log to.
func (n *Node) LogPath() string { return filepath.Join(n.Dir, "node.log") }

// CheckTools reports the first missing tool or CNI plugin, wrapped in ErrToolMissing.
func CheckTools(kubeletBin string, cniPlugins ...string) error {
	for _, t := range []struct{ bin, pkg string }{
		{"containerd", "Debian package containerd"},
		{"ctr", "Debian package containerd"},
		{"runc", "Debian package runc"},
		{"containerd-shim-runc-v2", "Debian package containerd"},
		{"nsenter", "Debian package util-linux"},
	} {
		if _, err := exec.LookPath(t.bin); err != nil {
			return fmt.Errorf("%w: %s not found (%s; `make deps` installs it): %w", ErrToolMissing, t.bin, t.pkg, err)
		}
	}
	if st, err := os.Stat(kubeletBin); err != nil || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%w: kubelet %q is not an executable (`make tools` builds it): %v", ErrToolMissing, kubeletBin, err)
	}
	for _, p := range cniPlugins {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w: CNI plugin %s (Debian package containernetworking-plugins; `make deps` installs it): %w", ErrToolMissing, p, err)
		}
	}
	return nil
}

// Start runs containerd and the kubelet in cfg.NetNS and returns once the kubelet
// answers its /healthz. The Node object then appears in the API within a second or
// two. On error nothing is left running.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if len(cfg.CNIPlugins) == 0 {
		cfg.CNIPlugins = []string{"/usr/lib/cni/loopback", "/usr/lib/cni/portmap"}
	}
	if err := CheckTools(cfg.KubeletBin, cfg.CNIPlugins...); err != nil {
		return nil, err
	}
	if cfg.Name == "" || cfg.NetNS == "" || cfg.NodeIP == "" || cfg.Kubeconfig == "" {
		return nil, errors.New("kubenode: Name, NetNS, NodeIP and Kubeconfig are required")
	}
	Sweep()
	dir, err := proc.MakeDir(DirPrefix)
	if err != nil {
		return nil, err
	}
	l := newLayout(dir)
	n := &Node{Name: cfg.Name, Dir: dir, HostRoot: filepath.Join(dir, "host"), Socket: l.Socket, l: l, netns: cfg.NetNS, spawner: proc.NewSpawner()}
	ok := false
	defer func() {
		if !ok {
			_ = n.Stop()
		}
	}()
	if err := n.prepare(cfg); err != nil {
		return nil, err
	}
	if n.logFile, err = os.Create(n.LogPath()); err != nil {
		return nil, err
	}
	if err := n.startContainerd(ctx); err != nil {
		return nil, err
	}
	for _, img := range cfg.Images {
		if err := n.Import(ctx, img); err != nil {
			return nil, err
		}
	}
	if n.kubelet, err = n.spawn("kubelet", cfg.KubeletBin,
		kubeletArgs(l, cfg.Name, cfg.NodeIP, cfg.Kubeconfig, cfg.Labels)...); err != nil {
		return nil, err
	}
	if err := n.waitKubelet(ctx); err != nil {
		return nil, err
	}
	ok = true
	return n, nil
}

// prepare writes the configuration files, the fake host dirs and the cgroup root.
func (n *Node) prepare(cfg Config) error {
	l := n.l
	for _, d := range []string{l.CNIBinDir, l.CNIConfDir, l.KubeletDir, l.PodLogDir, l.Root, l.State} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, p := range cfg.CNIPlugins {
		if err := os.Symlink(p, filepath.Join(l.CNIBinDir, filepath.Base(p))); err != nil {
			return fmt.Errorf("CNI plugin %s: %w", p, err)
		}
	}
	files := map[string]string{
		"containerd.toml": containerdConfig(l, PauseImage),
		"kubelet.yaml":    kubeletConfig(l),
		// Pods with dnsPolicy Default get this; nothing in the lab serves DNS.
		"resolv.conf": "nameserver 127.0.0.1\noptions ndots:1 timeout:1 attempts:1\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(n.Dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	if err := recordMissingHostDirs(n.Dir); err != nil {
		return err
	}
	return createCgroupRoot(lastElem(n.Dir))
}

func (n *Node) startContainerd(ctx context.Context) error {
	var err error
	n.containerd, err = n.spawn("containerd", "containerd", "--config", filepath.Join(n.Dir, "containerd.toml"))
	if err != nil {
		return err
	}
	n.conn, err = grpc.NewClient("unix://"+n.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("CRI client: %w", err)
	}
	n.rt = cri.NewRuntimeServiceClient(n.conn)
	return n.poll(ctx, 30*time.Second, n.containerd, "containerd's CRI", func() error {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := n.rt.Version(cctx, &cri.VersionRequest{})
		return err
	})
}

// waitKubelet polls the kubelet's /healthz, which listens on 127.0.0.1 inside the
// node namespace: the client's sockets are opened in there.
func (n *Node) waitKubelet(ctx context.Context) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return netns.DialIn(ctx, n.netns, network, addr)
		},
	}}
	return n.poll(ctx, 60*time.Second, n.kubelet, "kubelet /healthz", func() error {
		resp, err := hc.Get("http://127.0.0.1:10248/healthz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
		}
		return nil
	})
}

// spawn starts a daemon of the node in its namespace, logging to the node's log, with
// its PID file in Dir.
func (n *Node) spawn(name, bin string, args ...string) (*proc.Proc, error) {
	return n.spawner.Spawn(proc.Spec{Name: name, NetNS: n.netns, Dir: n.Dir, Out: n.logFile, Bin: bin, Args: args})
}

// poll calls f until it succeeds, p exits, or timeout passes.
func (n *Node) poll(ctx context.Context, timeout time.Duration, p *proc.Proc, what string, f func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s exited while waiting for %s (%v); log %s:\n%s", p.Name, what, err, n.LogPath(), n.LogTail(30))
		}
		if last = f(); last == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not up after %v: %w; log:\n%s", what, timeout, last, n.LogTail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Import loads a docker-archive tarball into the k8s.io namespace, where the CRI
// looks for images.
func (n *Node) Import(ctx context.Context, tarball string) error {
	out, err := exec.CommandContext(ctx, "ctr", "--address", n.Socket, "--namespace", "k8s.io",
		"images", "import", tarball).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %w: %s", tarball, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// LogTail returns the last lines of the daemons' log.
func (n *Node) LogTail(lines int) string {
	b, _ := os.ReadFile(n.LogPath())
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// PodLogDir is the kubelet's podLogsDir: NAMESPACE_POD_UID/CONTAINER/N.log.
func (n *Node) PodLogDir() string { return n.l.PodLogDir }

// ContainerLog returns the log file the kubelet keeps of a container (first run).
func (n *Node) ContainerLog(namespace, pod, uid, container string) (string, error) {
	b, err := os.ReadFile(filepath.Join(n.l.PodLogDir, namespace+"_"+pod+"_"+uid, container, "0.log"))
	return string(b), err
}
