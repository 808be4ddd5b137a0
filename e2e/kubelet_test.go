package e2e_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/netns"
	"github.com/hostroute/hostroute/node/install"
	"github.com/hostroute/hostroute/node/routes"
)

// TestKubeletNode installs hostroute on a real kubelet node the way a user does —
// `kubectl apply -k --server-side` of the shipped manifests (through the lab overlay) —
// and checks what the runtime makes of it: the DaemonSet's init steps install the CNI
// plugin and conflist into the node's CNI dirs, the agent pod becomes Ready, a Pod created
// through the API gets its address from hostroute (inside the node's block), reaches a pod
// on another node and the external host, shows in `routectl ipam show`, and frees its
// address when deleted. Then the DaemonSet is rolled to a new image while a pod on the
// kubelet node and one on another node exchange 100 packets a second; the loss is logged.
func TestKubeletNode(t *testing.T) {
	forward := readSysctl(t, "/proc/sys/net/ipv4/ip_forward")
	hostFiles := map[string]bool{}
	for _, p := range []string{"/etc/cni/net.d/" + install.ConflistName, "/opt/cni/bin/" + install.PluginName, "/run/hostroute", "/var/lib/hostroute"} {
		_, err := os.Stat(p)
		hostFiles[p] = err == nil
	}
	l := newKubeletLab(t, true)
	k := l.Kubelet

	t.Run("install", func(t *testing.T) {
		l.Eventually(60*time.Second, "DaemonSet rolled out on "+k.Name, k.DaemonSetRolledOut)
		bin := k.Kube.HostPath("/opt/cni/bin/" + install.PluginName)
		if st, err := os.Stat(bin); err != nil || st.Mode().Perm()&0o111 == 0 {
			t.Errorf("install-cni: plugin %s: %v", bin, err)
		}
		conf, err := os.ReadFile(filepath.Join(k.Kube.CNIConfDir(), install.ConflistName))
		if err != nil {
			t.Fatalf("install-cni: conflist: %v", err)
		}
		if name, err := install.NetworkOf(conf); err != nil || name != install.NetworkName {
			t.Errorf("installed conflist is network %q (%v), want %q", name, err, install.NetworkName)
		}
		want, _ := k.LabConflist()
		if !jsonEqual(conf, want) {
			t.Errorf("installed conflist:\n%s\nwant the lab conflist:\n%s", conf, want)
		}
		if got := netnsSysctl(t, k.NS, "net.ipv4.ip_forward"); got != "1" {
			t.Errorf("sysctls init container: ip_forward in the node namespace is %q, want 1", got)
		}
		if got := readSysctl(t, "/proc/sys/net/ipv4/ip_forward"); got != forward {
			t.Errorf("ip_forward of the root namespace changed from %s to %s", forward, got)
		}
		for p, existed := range hostFiles {
			if _, err := os.Stat(p); err == nil && !existed {
				t.Errorf("the machine's %s was created; the lab node must write only its own dirs", p)
			}
		}
	})

	t.Run("pod", func(t *testing.T) { kubeletPod(t, l) })
	t.Run("rolling-update", func(t *testing.T) { kubeletRollout(t, l, true) })
}

// TestKubeletRollingUpdateNoBFD measures the rolling update's loss without BFD: peers
// then keep the restarting node's routes under graceful restart.
func TestKubeletRollingUpdateNoBFD(t *testing.T) {
	l := newKubeletLab(t, false)
	l.Eventually(60*time.Second, "DaemonSet rolled out on "+l.Kubelet.Name, l.Kubelet.DaemonSetRolledOut)
	kubeletRollout(t, l, false)
}

// newKubeletLab is a two-node lab whose node-2 is the kubelet node; on failure it logs
// the kubelet node's agent (container) log too.
func newKubeletLab(t *testing.T, bfd bool) *harness.Lab {
	t.Helper()
	start := time.Now()
	l := newTestLab(t, harness.LabOptions{Nodes: 2, PodsPerNode: 1, BFD: bfd, KubeletNode: true})
	t.Logf("lab with a kubelet node up in %v", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("DaemonSet agent log on %s:\n%s", l.Kubelet.Name, lastLines(l.Kubelet.AgentLog(), 60))
		}
	})
	return l
}

// kubeletPod: a Pod through the API, networked by hostroute-cni as containerd calls it.
func kubeletPod(t *testing.T, l *harness.Lab) {
	k := l.Kubelet
	other := l.Pods[0] // a pod on node-1, wired by the harness
	echo(t, other.NS, ":8081")
	echo(t, l.ExtNS, ":9000")
	probes := other.IP + ":8081," + harness.ExtAddr + ":9000"
	start := time.Now()
	p := k.RunPod("kpod", "-listen", ":8080", "-probe", probes, "-interval", "300ms")
	t.Logf("pod %s running at %s %v after create", p.Name, p.Status.PodIP, time.Since(start).Round(time.Millisecond))
	ip := netip.MustParseAddr(p.Status.PodIP)

	// The address is hostroute's: inside a block of this node, allocated to this pod.
	l.Eventually(10*time.Second, "allocation of "+ip.String()+" in "+k.Name+"'s block", func() string {
		b, alloc := blockOf(t, l, ip)
		switch {
		case b == nil:
			return "no IPAMBlock contains " + ip.String()
		case b.Spec.Node != k.Name:
			return fmt.Sprintf("block %s belongs to %s", b.Spec.CIDR, b.Spec.Node)
		case alloc == nil || alloc.PodUID != string(p.UID) || alloc.Pod != p.Name:
			return fmt.Sprintf("block %s allocation %+v, want pod %s UID %s", b.Spec.CIDR, alloc, p.Name, p.UID)
		}
		return ""
	})
	if r := podRoute(t, k.NS, ip); r == nil {
		t.Errorf("no /32 route (protocol %d) for %s in %s", routes.CNIProtocol, ip, k.Name)
	}

	// From the pod's own process (its log): the other node's pod sees the pod's own
	// address (no NAT); the external host sees the node's (NAT outgoing).
	l.Eventually(20*time.Second, "the pod's probes answered", func() string {
		log, err := k.Kube.ContainerLog("default", p.Name, string(p.UID), "app")
		if err != nil {
			return err.Error()
		}
		for _, want := range []string{
			"probe " + other.IP + ":8081 ok " + ip.String(),
			"probe " + harness.ExtAddr + ":9000 ok " + k.Addr,
		} {
			if !strings.Contains(log, want) {
				return fmt.Sprintf("no %q in the log:\n%s", want, lastLines(log, 6))
			}
		}
		return ""
	})
	// From the pod's network namespace (found through the CRI) and into it.
	podNS, err := k.PodNetNS(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{other.IP, harness.ExtAddr, l.Nodes[0].Addr} {
		if out, err := harness.ExecIn(podNS, "ping", "-c1", "-W2", dst); err != nil {
			t.Errorf("ping %s from the pod: %v\n%s", dst, err, out)
		}
	}
	if got := dialSeen(t, other.NS, p.Status.PodIP+":8080"); got != other.IP {
		t.Errorf("TCP node-1 pod → kubelet pod: the pod saw %q, want %s (no NAT)", got, other.IP)
	}

	out, code := routectlAdmin(t, l, "ipam", "show", "--node", k.Name, "-o", "wide")
	if want := ip.String() + "=default/" + p.Name; code != 0 || !strings.Contains(out, want) {
		t.Errorf("routectl ipam show --node %s -o wide (exit %d) does not list %s:\n%s", k.Name, code, want, out)
	}
	t.Logf("routectl ipam show --node %s -o wide:\n%s", k.Name, out)

	// Deleting the Pod frees the address: the kubelet stops the sandbox, containerd
	// calls DEL, the agent releases and publishes.
	if err := l.Kube.CoreV1().Pods("default").Delete(l.Ctx, p.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	l.Eventually(30*time.Second, "pod "+p.Name+" gone, its address free and its route removed", func() string {
		if _, err := l.Kube.CoreV1().Pods("default").Get(l.Ctx, p.Name, metav1.GetOptions{}); err == nil {
			return "pod still exists"
		}
		if _, alloc := blockOf(t, l, ip); alloc != nil {
			return fmt.Sprintf("allocation %+v still in the block", alloc)
		}
		if r := podRoute(t, k.NS, ip); r != nil {
			return "route still there: " + r.String()
		}
		return ""
	})
}

// blockOf returns the IPAMBlock containing ip and ip's allocation in it, if any.
func blockOf(t *testing.T, l *harness.Lab, ip netip.Addr) (*v1alpha1.IPAMBlock, *v1alpha1.Allocation) {
	t.Helper()
	bs, err := l.HR.IPAMBlocks.List(l.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range bs.Items {
		b := &bs.Items[i]
		if pfx, err := netip.ParsePrefix(b.Spec.CIDR); err != nil || !pfx.Contains(ip) {
			continue
		}
		for j := range b.Status.Allocations {
			if b.Status.Allocations[j].Address == ip.String() {
				return b, &b.Status.Allocations[j]
			}
		}
		return b, nil
	}
	return nil, nil
}

// podRoute returns the CNI plugin's /32 route to ip in the node's namespace, if any.
func podRoute(t *testing.T, ns string, ip netip.Addr) *netlink.Route {
	t.Helper()
	h, err := netns.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{
		Dst: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Protocol: routes.CNIProtocol,
	}, netlink.RT_FILTER_DST|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) == 0 {
		return nil
	}
	return &rs[0]
}

// echo serves TCP in ns on addr until the test ends: each connection's first line is
// answered with the caller's address as seen here.
func echo(t *testing.T, ns, addr string) {
	t.Helper()
	ln, err := netns.ListenIn(ns, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					fmt.Fprintln(c, c.RemoteAddr().(*net.TCPAddr).IP)
				}
			}()
		}
	}()
}

// dialSeen connects from ns to addr (a test app) and returns the address it saw.
func dialSeen(t *testing.T, ns, addr string) string {
	t.Helper()
	c, err := netns.DialIn(t.Context(), ns, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ns, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintln(c, "hello")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading from %s: %v", addr, err)
	}
	return strings.TrimSpace(line)
}

// routectlAdmin runs the built routectl on the machine with the admin kubeconfig and
// the kubelet node's agent socket (a host path).
func routectlAdmin(t *testing.T, l *harness.Lab, args ...string) (string, int) {
	t.Helper()
	full := append([]string{"--kubeconfig", l.Cluster.Kubeconfig, "--socket", l.Kubelet.Socket}, args...)
	return outputAndCode(t, exec.Command(filepath.Join(bin, "routectl"), full...))
}

func readSysctl(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func netnsSysctl(t *testing.T, ns, key string) string {
	t.Helper()
	out, err := netns.Output(ns, "cat", "/proc/sys/"+strings.ReplaceAll(key, ".", "/"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// kubeletRollout rolls the DaemonSet to a new image (same binaries, another label, so
// another image and a new pod template) while a pod on node-1 sends 100 UDP datagrams a
// second to a pod on the kubelet node, which echoes them. The rollout must complete with
// the new pod Ready; the loss is measured on the echoes (both directions).
func kubeletRollout(t *testing.T, l *harness.Lab, bfd bool) {
	k := l.Kubelet
	other := l.Pods[0]
	tag := k.Import(2)
	p := k.RunPod("echo", "-listen", ":8080")
	dst := netip.AddrPortFrom(netip.MustParseAddr(p.Status.PodIP), 8080)
	s := startStream(t, other.NS, dst, 10*time.Millisecond)
	// The same from the external host: through the BIRD ToR (BFD there too when on).
	x := startStream(t, l.ExtNS, dst, 10*time.Millisecond)
	l.Eventually(10*time.Second, "UDP echo from the kubelet pod", func() string {
		if s.received() == 0 || x.received() == 0 {
			return fmt.Sprintf("echoes: %d from the pod, %d from the external host", s.received(), x.received())
		}
		return ""
	})
	old, err := k.AgentPod()
	if err != nil {
		t.Fatal(err)
	}
	oldBFD, err := k.BFDPod()
	if err != nil {
		t.Fatal(err)
	}
	if bfd { // the sessions are hostroute-bfd's, running without any capability
		l.Eventually(30*time.Second, "BFD Up on every session of "+k.Name, func() string {
			ss, err := routingSessions(k.Node)
			if err != nil {
				return err.Error()
			}
			for _, s := range ss {
				if s.BfdState != "Up" {
					return fmt.Sprintf("session to %s: BGP %s, BFD %q", s.Peer, s.State, s.BfdState)
				}
			}
			return ""
		})
	}
	time.Sleep(time.Second)
	start := time.Now()
	k.Apply(tag)
	l.Eventually(120*time.Second, "DaemonSet rolled out to "+k.Tag, k.DaemonSetRolledOut)
	took := time.Since(start)
	cur, err := k.AgentPod()
	if err != nil {
		t.Fatal(err)
	}
	if cur.UID == old.UID {
		t.Fatalf("the agent pod %s was not replaced", old.Name)
	}
	// The BFD daemon (OnDelete) is not part of the roll: its sessions stay Up throughout.
	if curBFD, err := k.BFDPod(); err != nil || curBFD.UID != oldBFD.UID || restarts(curBFD) != restarts(oldBFD) {
		t.Errorf("hostroute-bfd's pod was restarted by the agent's rollout (%v)", err)
	}
	k.WaitReady(30 * time.Second)
	// Traffic must flow again after the rollout: wait for a clean stretch.
	l.Eventually(30*time.Second, "loss-free traffic after the rollout", func() string {
		for _, st := range []*stream{s, x} {
			if gap := st.sinceLastEcho(); gap > 100*time.Millisecond {
				return fmt.Sprintf("last echo %v ago", gap)
			}
		}
		return ""
	})
	time.Sleep(2 * time.Second)
	r, rx := s.stop(), x.stop()
	t.Logf("rolling update %s → %s (pod %s → %s) took %v; BFD %v: from a pod sent %d, lost %d (%.1f%%), longest outage %v; "+
		"from the external host through the ToR sent %d, lost %d, longest outage %v",
		old.Spec.Containers[0].Image, k.Tag, old.Name, cur.Name, took.Round(time.Millisecond), bfd,
		r.sent, r.lost, 100*float64(r.lost)/float64(max(r.sent, 1)), r.longestGap, rx.sent, rx.lost, rx.longestGap)
	if r.sent < 100 || rx.sent < 100 {
		t.Errorf("only %d and %d datagrams sent", r.sent, rx.sent)
	}
	if rx.lost > 10 {
		t.Errorf("the rollout lost %d datagrams from the external host (BFD %v, longest outage %v): the ToR dropped the node's routes", rx.lost, bfd, rx.longestGap)
	}
	// Measured here: nothing is lost either way. Without BFD the peers keep the node's
	// routes under graceful restart and its kernel routes stay; with BFD the sessions
	// belong to hostroute-bfd, which the roll leaves running, so the peers see BFD Up
	// throughout and graceful restart applies too. (With BFD inside the agent and no
	// goodbye, BFD peers withdrew the node's block until the new agent was up: one
	// outage of 3.7–4.3 s.)
	if r.lost > 10 {
		t.Errorf("the rollout lost %d datagrams (BFD %v, longest outage %v); graceful restart should keep traffic flowing", r.lost, bfd, r.longestGap)
	}
}

// restarts sums the restart counts of a pod's containers.
func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, c := range p.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return n
}
