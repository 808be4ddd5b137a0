package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/hostroute/hostroute/internal/image"
	"github.com/hostroute/hostroute/internal/testenv"
	"github.com/hostroute/hostroute/internal/testenv/cluster"
	"github.com/hostroute/hostroute/internal/testenv/kubenode"
	"github.com/hostroute/hostroute/internal/testenv/netns"
	"github.com/hostroute/hostroute/node/install"
)

// KubeletNode is the lab node that a real kubelet runs (LabOptions.KubeletNode): Debian's
// containerd and runc and kubelet v1.35 in the node's namespace, and hostroute installed
// on it from the shipped manifests with `kubectl apply -k --server-side` of the lab
// overlay (kubelet_overlay.go). Its agent is the DaemonSet's pod; pods created through the
// API get their network from the runtime calling hostroute-cni.
//
// The namespace, uplink, fabric port, BIRD neighbour and API forwarder are made as for
// every lab node; the embedded Node's Socket is the DaemonSet agent's socket, so
// Status and WaitReady work on it as on any node.
type KubeletNode struct {
	*Node
	Kube *kubenode.Node
	// Tag is the hostroute image tag the DaemonSet was last applied with.
	Tag string

	overlayDir string
	imageDir   string
}

// kubeletNodeName: the kubelet node is the lab's last node.
func kubeletNodeName(o LabOptions) string { return fmt.Sprintf("node-%d", o.Nodes) }

// clusterOptions is the control plane a lab needs: with a kubelet node, its static
// token identity, pod-bound ServiceAccount tokens, the DaemonSet controller and the
// scheduler (a DaemonSet's pods are bound by the scheduler).
func (o LabOptions) clusterOptions() cluster.Options {
	if !o.KubeletNode {
		return cluster.Options{}
	}
	return cluster.Options{
		Users:                   []cluster.User{{Name: cluster.NodeUser(kubeletNodeName(o)), Groups: []string{cluster.NodesGroup}}},
		ServiceAccountAdmission: true,
		Controllers:             cluster.MinimalControllers(),
		Scheduler:               true,
	}
}

// addKubeletNode makes node name a kubelet node and deploys hostroute onto it.
func (l *Lab) addKubeletNode(name, addr string) *KubeletNode {
	e := l.Env
	t := e.T
	t.Helper()
	ns := netns.ForTest(t, e.Prefix+"n-")
	dir := t.TempDir()
	e.plumbNode(ns, "br0", name, addr)
	e.forwardAPI(ns)
	kubeconfig := filepath.Join(dir, "kubelet.kubeconfig")
	if err := e.Cluster.WriteKubeconfig(kubeconfig, "https://127.0.0.1:6443", cluster.NodeUser(name)); err != nil {
		t.Fatal(err)
	}
	// Images are built once per test binary (e.Bin is per run) and reused.
	began := time.Now()
	imageDir := filepath.Join(e.Bin, "kubelet-images")
	if err := os.MkdirAll(imageDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var tars []string
	for _, b := range []struct {
		name  string
		build func(string) (string, error)
	}{{"pause.tar", kubenode.BuildPause}, {"testapp.tar", kubenode.BuildTestApp}} {
		p := filepath.Join(imageDir, b.name)
		if _, err := os.Stat(p); err != nil {
			if p, err = b.build(imageDir); err != nil {
				t.Fatal(err)
			}
		}
		tars = append(tars, p)
	}
	// Pods are refused until the serviceaccount controller made the namespace's
	// default ServiceAccount.
	e.Eventually(30*time.Second, "ServiceAccount default/default", func() string {
		_, err := e.Kube.CoreV1().ServiceAccounts("default").Get(e.Ctx, "default", metav1.GetOptions{})
		return testenv.ErrText(err)
	})
	nodeIP := addr
	if e.DualStack {
		nodeIP += "," + NodeAddr6(addr) // the kubelet reports both as InternalIPs
	}
	kn := kubenode.StartForTest(t, kubenode.Config{
		Name: name, NetNS: ns, NodeIP: nodeIP, Kubeconfig: kubeconfig,
		KubeletBin: filepath.Join(e.Cluster.ToolsDir, "kubelet"),
		Labels:     map[string]string{LabKubeletLabel: "true"},
		Images:     tars,
	})
	k := &KubeletNode{
		Node: &Node{env: e, Name: name, NS: ns, Addr: addr, Dir: dir, Kubeconfig: kubeconfig,
			Socket: kn.HostPath("/run/hostroute/agent.sock")},
		Kube: kn, overlayDir: t.TempDir(), imageDir: imageDir,
	}
	if ann := e.NodeAnnotations[name]; len(ann) > 0 {
		k.annotate(ann)
	}
	k.Deploy(1)
	t.Logf("kubelet node %s: images, containerd, kubelet and kubectl apply in %v", name, time.Since(began).Round(time.Millisecond))
	return k
}

// annotate sets annotations on the Node once the kubelet has registered it.
func (k *KubeletNode) annotate(ann map[string]string) {
	e := k.env
	e.Eventually(30*time.Second, "Node "+k.Name+" registered", func() string {
		_, err := e.Kube.CoreV1().Nodes().Get(e.Ctx, k.Name, metav1.GetOptions{})
		return testenv.ErrText(err)
	})
	patch := map[string]any{"metadata": map[string]any{"annotations": ann}}
	b, _ := json.Marshal(patch)
	if _, err := e.Kube.CoreV1().Nodes().Patch(e.Ctx, k.Name, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
		e.T.Fatalf("annotating node %s: %v", k.Name, err)
	}
}

// Deploy installs hostroute image number build (Import, then Apply): the first call
// installs hostroute, a later one rolls the DaemonSet to the new image.
func (k *KubeletNode) Deploy(build int) {
	k.env.T.Helper()
	k.Apply(k.Import(build))
}

// Import builds hostroute image number build — the same binaries each time; the build
// number is a label, so each build is another image — imports it into the node's
// containerd and returns its tag, lab-BUILD.
func (k *KubeletNode) Import(build int) string {
	e := k.env
	e.T.Helper()
	tag := "lab-" + strconv.Itoa(build)
	began := time.Now()
	tar, err := k.hostrouteImage(tag, build)
	if err != nil {
		e.T.Fatal(err)
	}
	if err := k.Kube.Import(e.Ctx, tar); err != nil {
		e.T.Fatal(err)
	}
	e.T.Logf("hostroute image %s:%s built and imported in %v", LabImageName, tag, time.Since(began).Round(time.Millisecond))
	return tag
}

// Apply writes the lab overlay with image tag and applies it with
// `kubectl apply -k --server-side`.
func (k *KubeletNode) Apply(tag string) {
	e := k.env
	e.T.Helper()
	conf, err := labConflist(install.ShippedConflist(), k.Socket)
	if err != nil {
		e.T.Fatal(err)
	}
	if err := writeOverlay(k.overlayDir, overlay{Manifests: filepath.Join(RepoRoot(), "manifests"), Tag: tag,
		HostRoot: k.Kube.HostRoot, Conflist: conf}); err != nil {
		e.T.Fatal(err)
	}
	// --force-conflicts: the harness applied the namespace, RBAC and admission policy
	// from these same files before (InstallAccess, another field manager), and an
	// atomic field such as the policy's matchConstraints conflicts even when equal.
	if out, err := k.Kubectl("apply", "-k", k.overlayDir, "--server-side", "--force-conflicts"); err != nil {
		e.T.Fatalf("kubectl apply -k (lab overlay, image %s): %v\n%s", tag, err, out)
	}
	k.Tag = tag
}

// LabConflist is the conflist the DaemonSet's install-cni is given on this node.
func (k *KubeletNode) LabConflist() ([]byte, error) {
	return labConflist(install.ShippedConflist(), k.Socket)
}

// Kubectl runs the cached kubectl with the admin kubeconfig.
func (k *KubeletNode) Kubectl(args ...string) (string, error) {
	e := k.env
	cmd := exec.CommandContext(e.Ctx, filepath.Join(e.Cluster.ToolsDir, "kubectl"), append([]string{"--kubeconfig", e.Cluster.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// hostrouteImage writes (once per run and tag) the hostroute image as `make image`
// builds it — the static binaries of cmd/ at the root, entrypoint /hostroute-node —
// with the label hostroute.test/build=BUILD.
func (k *KubeletNode) hostrouteImage(tag string, build int) (string, error) {
	tar := filepath.Join(k.imageDir, "hostroute-"+tag+".tar")
	if _, err := os.Stat(tar); err == nil {
		return tar, nil
	}
	static := filepath.Join(k.imageDir, "static")
	if _, err := os.Stat(filepath.Join(static, "hostroute-node")); err != nil {
		cmd := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace", "-ldflags", "-s -w", "-buildvcs=false", "-o", static+"/", "./cmd/...")
		cmd.Dir = RepoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("static build of ./cmd/...: %w\n%s", err, out)
		}
	}
	bins, err := filepath.Glob(filepath.Join(static, "*"))
	if err != nil || len(bins) == 0 {
		return "", fmt.Errorf("no binaries in %s: %v", static, err)
	}
	img, err := image.Build(image.FilesFromPaths(0o755, bins...), image.Config{
		Entrypoint: []string{"/hostroute-node"},
		Labels:     map[string]string{"hostroute.test/build": strconv.Itoa(build)},
	})
	if err != nil {
		return "", err
	}
	if err := image.WriteTarball(tar, LabImageName+":"+tag, img); err != nil {
		return "", err
	}
	return tar, nil
}

// AgentPod returns the DaemonSet's pod on this node.
func (k *KubeletNode) AgentPod() (*corev1.Pod, error) { return k.daemonPod("hostroute-node") }

// BFDPod returns hostroute-bfd's pod on this node.
func (k *KubeletNode) BFDPod() (*corev1.Pod, error) { return k.daemonPod("hostroute-bfd") }

// daemonPod returns the live pod of DaemonSet app on this node.
func (k *KubeletNode) daemonPod(app string) (*corev1.Pod, error) {
	e := k.env
	pods, err := e.Kube.CoreV1().Pods(Namespace).List(e.Ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=" + app, FieldSelector: "spec.nodeName=" + k.Name})
	if err != nil {
		return nil, err
	}
	var live []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	if len(live) != 1 {
		return nil, fmt.Errorf("%d live %s pods on %s", len(live), app, k.Name)
	}
	return &live[0], nil
}

// AgentLog returns the log of the agent container of the DaemonSet's live pod on this
// node (its latest run), or a line saying why there is none.
func (k *KubeletNode) AgentLog() string {
	p, err := k.AgentPod()
	if err != nil {
		return err.Error()
	}
	dir := filepath.Join(k.Kube.PodLogDir(), p.Namespace+"_"+p.Name+"_"+string(p.UID), "agent")
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	if len(logs) == 0 {
		return "no agent log in " + dir
	}
	sort.Slice(logs, func(i, j int) bool { return logNumber(logs[i]) < logNumber(logs[j]) })
	b, err := os.ReadFile(logs[len(logs)-1])
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// logNumber is the restart count in a kubelet container log name (N.log).
func logNumber(path string) int {
	n, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(path), ".log"))
	return n
}

// DaemonSetRolledOut reports "" once the DaemonSet's controller has seen its latest
// spec and the node's one pod runs image Tag and is Ready; otherwise what is missing.
func (k *KubeletNode) DaemonSetRolledOut() string {
	e := k.env
	ds, err := e.Kube.AppsV1().DaemonSets(Namespace).Get(e.Ctx, "hostroute-node", metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	if msg := dsStatus(ds); msg != "" {
		return msg
	}
	p, err := k.AgentPod()
	if err != nil {
		return err.Error()
	}
	want := LabImageName + ":" + k.Tag
	for _, c := range p.Spec.Containers {
		if c.Image != want {
			return fmt.Sprintf("pod %s runs %s, want %s", p.Name, c.Image, want)
		}
	}
	if !PodReady(p) {
		return fmt.Sprintf("pod %s not Ready (phase %s)", p.Name, p.Status.Phase)
	}
	// hostroute-bfd updates OnDelete: it only has to run (on whichever image).
	b, err := k.BFDPod()
	if err != nil {
		return err.Error()
	}
	if !PodReady(b) {
		return fmt.Sprintf("pod %s not Ready (phase %s)", b.Name, b.Status.Phase)
	}
	return ""
}

func dsStatus(ds *appsv1.DaemonSet) string {
	s := ds.Status
	if s.ObservedGeneration < ds.Generation || s.DesiredNumberScheduled != 1 || s.UpdatedNumberScheduled != 1 || s.NumberReady != 1 || s.NumberAvailable != 1 {
		return fmt.Sprintf("DaemonSet generation %d observed %d: desired %d updated %d ready %d available %d",
			ds.Generation, s.ObservedGeneration, s.DesiredNumberScheduled, s.UpdatedNumberScheduled, s.NumberReady, s.NumberAvailable)
	}
	return ""
}

// PodReady reports the pod's Ready condition.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// RunPod creates a pod on this node running the test app with args and waits until it
// runs with an address; imagePullPolicy Never, as nothing can be pulled here.
func (k *KubeletNode) RunPod(name string, args ...string) *corev1.Pod {
	e := k.env
	e.T.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName:                      k.Name,
			TerminationGracePeriodSeconds: ptr(int64(2)),
			Containers: []corev1.Container{{Name: "app", Image: kubenode.TestAppImage,
				ImagePullPolicy: corev1.PullNever, Args: args}},
		},
	}
	if _, err := e.Kube.CoreV1().Pods("default").Create(e.Ctx, pod, metav1.CreateOptions{}); err != nil {
		e.T.Fatalf("create pod %s: %v", name, err)
	}
	var got *corev1.Pod
	e.Eventually(60*time.Second, "pod "+name+" running on "+k.Name, func() string {
		var err error
		got, err = e.Kube.CoreV1().Pods("default").Get(e.Ctx, name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		if got.Status.Phase != corev1.PodRunning || got.Status.PodIP == "" {
			return fmt.Sprintf("phase %s, IP %q, conditions %v", got.Status.Phase, got.Status.PodIP, got.Status.Conditions)
		}
		return ""
	})
	return got
}

// PodNetNS returns a path of the pod's network namespace (through its sandbox process).
func (k *KubeletNode) PodNetNS(p *corev1.Pod) (string, error) {
	ctx, cancel := context.WithTimeout(k.env.Ctx, 10*time.Second)
	defer cancel()
	sb, err := k.Kube.PodSandbox(ctx, string(p.UID))
	if err != nil {
		return "", err
	}
	return sb.NetNSPath(), nil
}

// ExecIn runs a command of this machine inside a network namespace given by path.
func ExecIn(nsPath string, args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=" + nsPath, "--"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w: %s", nsPath, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func ptr[T any](v T) *T { return &v }
