package e2e_test

import (
	"flag"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/e2e/harness"
	goldenfile "github.com/hostroute/hostroute/internal/golden"
)

var updateGolden = flag.Bool("update", false, "rewrite e2e/testdata/*.golden from the current output")

// TestTrace: `routectl trace` between pods on two nodes is all ✔ (exit 0), from the
// source node (its route checked live) and from the destination node (the pod's /32 on
// its veth checked live); then node-2's agent is killed (SIGKILL, a crash) and the trace
// from node-1 names the broken hop, node-1's session to node-2, and exits 1.
func TestTrace(t *testing.T) {
	l := newTestLab(t, harness.LabOptions{Nodes: 2, PodsPerNode: 1})
	n1, n2 := l.Nodes[0], l.Nodes[1]
	p1, p2 := l.Pods[0], l.Pods[1]
	for _, p := range l.Pods {
		podRunning(t, l, p)
	}
	src, dst := p1.KubeNamespace()+"/"+p1.Name, p2.KubeNamespace()+"/"+p2.Name
	norm := traceNormaliser(t, l)

	var out string
	var code int
	l.Eventually(30*time.Second, "routectl trace all ✔ on node-1", func() string {
		if out, code = routectl(t, n1, "trace", src, dst); code != 0 {
			return out
		}
		return ""
	})
	t.Logf("routectl trace %s %s on node-1 (exit %d):\n%s", src, dst, code, out)
	goldenE2E(t, "trace-healthy", norm(out))

	out, code = routectl(t, n2, "trace", src, dst)
	t.Logf("routectl trace %s %s on node-2 (exit %d):\n%s", src, dst, code, out)
	if code != 0 || !strings.Contains(out, "(veth, proto ") {
		t.Fatalf("trace on the destination node: exit %d, want 0 and the veth checked live:\n%s", code, out)
	}
	goldenE2E(t, "trace-on-destination", norm(out))

	n2.Kill()
	l.Eventually(30*time.Second, "routectl trace on node-1 names node-1's session to node-2", func() string {
		out, code = routectl(t, n1, "trace", src, dst)
		if code != 1 || !strings.Contains(out, "✘ bgp     session "+harness.NodeAddr(2)+" (mesh, node-2) is ") {
			return out
		}
		return ""
	})
	t.Logf("routectl trace %s %s on node-1, node-2's agent killed (exit %d):\n%s", src, dst, code, out)
	goldenE2E(t, "trace-agent-killed", norm(out))
}

// podRunning sets the pod's status as its kubelet would: Running, with its address.
func podRunning(t *testing.T, l *harness.Lab, p *harness.Pod) {
	t.Helper()
	pods := l.Kube.CoreV1().Pods(p.KubeNamespace())
	pod, err := pods.Get(l.Ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.HostIP = p.Node.Addr
	pod.Status.PodIP = p.IP
	pod.Status.PodIPs = []corev1.PodIP{{IP: p.IP}}
	if _, err := pods.UpdateStatus(l.Ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// traceNormaliser replaces what differs from run to run: the pods' addresses, the
// blocks, durations, session states other than Established and their errors, veth names.
func traceNormaliser(t *testing.T, l *harness.Lab) func(string) string {
	t.Helper()
	bs, err := l.HR.IPAMBlocks.List(l.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pairs []string
	for _, b := range bs.Items {
		pairs = append(pairs, b.Spec.CIDR, "<block of "+b.Spec.Node+">")
	}
	for _, p := range l.Pods {
		pairs = append(pairs, p.IP+"/32", "<"+p.Name+">/32", p.IP+" ", "<"+p.Name+"> ", p.IP+";", "<"+p.Name+">;", p.IP+"\n", "<"+p.Name+">\n")
	}
	r := strings.NewReplacer(pairs...)
	durations := regexp.MustCompile(`\b(since|reported) \d+[smhd]\w*`)
	state := regexp.MustCompile(`\bis (Idle|Connect|Active|OpenSent|OpenConfirm) since`)
	veth := regexp.MustCompile(`dev \S+ \(veth`)
	lastErr := regexp.MustCompile(`\(last error: [^)]*\)`)
	return func(s string) string {
		s = r.Replace(s)
		s = durations.ReplaceAllString(s, "$1 <t>")
		s = state.ReplaceAllString(s, "is <not Established> since")
		s = lastErr.ReplaceAllString(s, "(last error: <e>)")
		return veth.ReplaceAllString(s, "dev <veth> (veth")
	}
}

func goldenE2E(t *testing.T, name, got string) {
	t.Helper()
	goldenfile.Check(t, name, []byte(got), *updateGolden, "go test ./e2e -run "+t.Name()+" -update")
}
