package e2e_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/e2e/netns"
	"github.com/hostroute/hostroute/internal/kubenode"
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
	start := time.Now()
	l := newTestLab(t, harness.LabOptions{Nodes: 2, PodsPerNode: 1, BFD: true, KubeletNode: true})
	k := l.Kubelet
	t.Logf("lab with a kubelet node up in %v", time.Since(start).Round(time.Millisecond))

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

var (
	_ = bufio.NewReader
	_ = fmt.Sprint
	_ = net.Dial
	_ = netip.ParseAddr
	_ sync.Mutex
	_ = netlink.RouteList
	_ corev1.Pod
	_ metav1.GetOptions
	_ v1alpha1.IPAMBlock
	_ = kubenode.PauseImage
	_ = routes.CNIProtocol
)
