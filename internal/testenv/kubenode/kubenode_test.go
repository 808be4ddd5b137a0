package kubenode_test

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hostroute/hostroute/internal/testenv"
	"github.com/hostroute/hostroute/internal/testenv/cluster"
	"github.com/hostroute/hostroute/internal/testenv/kubenode"
	"github.com/hostroute/hostroute/internal/testenv/netns"
	"github.com/hostroute/hostroute/internal/testenv/proc"
)

// TestKubeletRunsPod runs a real kubelet with containerd in a node namespace, with a
// CNI network installed by hand (ptp + host-local, in the node's own CNI dirs), and
// checks that a Pod created through the API runs, is networked, logs, and that Stop
// leaves no process, mount, cgroup or directory behind.
func TestKubeletRunsPod(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("this test runs containerd and a kubelet and must run as root (uid %d)", os.Geteuid())
	}
	const name = "kn-test"
	c := cluster.StartForTest(t, cluster.Options{
		CRDDir:                  "-",
		Users:                   []cluster.User{{Name: cluster.NodeUser(name), Groups: []string{cluster.NodesGroup}}},
		ServiceAccountAdmission: true,
		Controllers:             cluster.MinimalControllers(),
	})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	kube := kubernetes.NewForConfigOrDie(c.RESTConfig())

	ns := netns.ForTest(t, "hrkn-"+fmt.Sprint(os.Getpid())+"-")
	for _, cmd := range [][]string{
		{"ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1"},
		{"ip", "link", "set", "up0", "up"}, {"ip", "link", "set", "up1", "up"},
		{"ip", "addr", "add", "192.0.2.77/24", "dev", "up0"},
		{"ip", "route", "add", "default", "via", "192.0.2.254", "dev", "up0"},
	} {
		if err := netns.Exec(ns, cmd...); err != nil {
			t.Fatal(err)
		}
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	netns.ForwardForTest(t, ns, "127.0.0.1:6443", u.Host)

	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubelet.kubeconfig")
	if err := c.WriteKubeconfig(kubeconfig, "https://127.0.0.1:6443", cluster.NodeUser(name)); err != nil {
		t.Fatal(err)
	}
	pause, err := kubenode.BuildPause(dir)
	if err != nil {
		t.Fatal(err)
	}
	app, err := kubenode.BuildTestApp(dir)
	if err != nil {
		t.Fatal(err)
	}
	tools := os.Getenv("HOSTROUTE_TOOLS_DIR")
	if tools == "" {
		tools = filepath.Join(os.Getenv("HOME"), ".cache", "hostroute", cluster.KubernetesVersion)
	}
	n := kubenode.StartForTest(t, kubenode.Config{
		Name: name, NetNS: ns, NodeIP: "192.0.2.77", Kubeconfig: kubeconfig,
		KubeletBin: filepath.Join(tools, "kubelet"),
		Labels:     map[string]string{"hostroute.io/lab-kubelet": "true"},
		Images:     []string{pause, app},
		CNIPlugins: []string{"/usr/lib/cni/loopback", "/usr/lib/cni/portmap", "/usr/lib/cni/ptp", "/usr/lib/cni/host-local"},
	})
	conflist := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"handmade","plugins":[{"type":"ptp","ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.99.0.0/24"}]]}}]}`,
		filepath.Join(n.Dir, "ipam"))
	if err := os.WriteFile(filepath.Join(n.CNIConfDir(), "10-handmade.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}

	testenv.Eventually(t, time.Minute, "Node "+name+" Ready with InternalIP 192.0.2.77", func() string {
		node, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		if node.Labels["hostroute.io/lab-kubelet"] != "true" {
			return fmt.Sprintf("labels %v", node.Labels)
		}
		if len(node.Status.Addresses) == 0 || node.Status.Addresses[0].Address != "192.0.2.77" {
			return fmt.Sprintf("addresses %v", node.Status.Addresses)
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return ""
			}
		}
		return "not Ready"
	})
	testenv.Eventually(t, time.Minute, "ServiceAccount default/default", func() string {
		_, err := kube.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return testenv.ErrText(err)
	})

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName: name,
			Containers: []corev1.Container{{
				Name: "app", Image: kubenode.TestAppImage, ImagePullPolicy: corev1.PullNever,
				Args: []string{"-listen", ":8080"},
			}},
		},
	}
	start := time.Now()
	if _, err := kube.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *corev1.Pod
	testenv.Eventually(t, time.Minute, "pod running with an address from the handmade network", func() string {
		got, err = kube.CoreV1().Pods("default").Get(ctx, "app", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		if got.Status.Phase != corev1.PodRunning || !strings.HasPrefix(got.Status.PodIP, "10.99.0.") {
			return fmt.Sprintf("phase %s, IP %q", got.Status.Phase, got.Status.PodIP)
		}
		return ""
	})
	t.Logf("pod running at %s %v after create", got.Status.PodIP, time.Since(start).Round(time.Millisecond))

	// From the node namespace to the pod: TCP to the test app, whose first answer is
	// the caller's address as it saw it.
	conn, err := netns.DialIn(ctx, ns, "tcp", got.Status.PodIP+":8080")
	if err != nil {
		t.Fatalf("TCP from the node to the pod: %v", err)
	}
	fmt.Fprintln(conn, "hi")
	line, err := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if err != nil || strings.TrimSpace(line) != "10.99.0.1" {
		t.Errorf("TCP echo from the pod: %q, %v; want the ptp gateway 10.99.0.1", line, err)
	}
	// From inside the pod's network namespace, found through the CRI.
	sb, err := n.PodSandbox(ctx, string(got.UID))
	if err != nil {
		t.Fatal(err)
	}
	if sb.HostNetwork {
		t.Errorf("sandbox %s reports host network", sb.ID)
	}
	if out, err := exec.Command("nsenter", "--net="+sb.NetNSPath(), "ip", "-4", "-o", "addr", "show", "eth0").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), got.Status.PodIP+"/") {
		t.Errorf("pod namespace %s: eth0 %q (%v), want %s", sb.NetNSPath(), out, err, got.Status.PodIP)
	}
	if len(got.Status.ContainerStatuses) == 1 {
		pid, err := n.ContainerPID(ctx, got.Status.ContainerStatuses[0].ContainerID)
		if err != nil || !strings.HasSuffix(strings.Join(proc.Cmdline(pid), " "), "-listen :8080") {
			t.Errorf("container PID %d (%v): cmdline %q", pid, err, proc.Cmdline(pid))
		}
	}
	testenv.Eventually(t, time.Minute, "container log", func() string {
		log, err := n.ContainerLog("default", "app", string(got.UID), "app")
		if err != nil {
			return err.Error()
		}
		if !strings.Contains(log, "listening :8080") {
			return "log: " + log
		}
		return ""
	})

	// Stop with the pod still running: teardown must stop it itself.
	dirGone := n.Dir
	if err := n.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(dirGone); !os.IsNotExist(err) {
		t.Errorf("node dir %s still there after Stop (%v)", dirGone, err)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), dirGone) {
		t.Errorf("mounts under %s remain after Stop", dirGone)
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/" + filepath.Base(dirGone)); !os.IsNotExist(err) {
		t.Errorf("cgroup %s remains after Stop (%v)", filepath.Base(dirGone), err)
	}
	if pids := pidsMentioning(dirGone); len(pids) > 0 {
		t.Errorf("processes still use %s after Stop: %v", dirGone, pids)
	}
	if pid := got.Status.ContainerStatuses; len(pid) == 1 {
		if _, err := n.ContainerPID(context.Background(), pid[0].ContainerID); err == nil {
			t.Errorf("CRI still answers after Stop")
		}
	}
}

// pidsMentioning lists processes with dir in their command line (daemons, shims).
func pidsMentioning(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil || pid == os.Getpid() {
			continue
		}
		if strings.Contains(strings.Join(proc.Cmdline(pid), " "), dir) {
			out = append(out, pid)
		}
	}
	return out
}
