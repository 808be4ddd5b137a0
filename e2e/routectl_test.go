package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// routectl runs routectl inside the node's namespace, as an operator on the node would,
// and returns its output and exit code.
func routectl(t *testing.T, n *harness.Node, args ...string) (string, int) {
	t.Helper()
	full := append([]string{filepath.Join(bin, "routectl"), "--socket", n.Socket, "--kubeconfig", n.Kubeconfig}, args...)
	return outputAndCode(t, netns.Command(n.NS, full...))
}

// outputAndCode runs cmd and returns its combined output and exit code; a command that
// cannot run at all fails the test.
func outputAndCode(t *testing.T, cmd *exec.Cmd) (string, int) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("%v: %v", cmd.Args, err)
	return "", -1
}

// TestRoutectl: routectl reports a healthy lab as healthy; a ToR session taken down (BIRD
// drops the neighbour) makes `status` on that node name it and exit 1, and `status --all`
// list that node first; a leaked allocation (a pod UID that does not exist) is found by
// `ipam check` and cleared by `ipam release --yes`.
func TestRoutectl(t *testing.T) {
	l := newTestLab(t, harness.LabOptions{Nodes: 2})
	n1, n2 := l.Nodes[0], l.Nodes[1]

	var out string
	var code int
	l.Eventually(30*time.Second, "routectl status healthy on node-2", func() string {
		if out, code = routectl(t, n2, "status"); code != 0 {
			return out
		}
		return ""
	})
	t.Logf("routectl status on a healthy node-2 (exit %d):\n%s", code, out)
	if out, code := routectl(t, n2, "routes"); code != 0 {
		t.Fatalf("routectl routes on a healthy node: exit %d\n%s", code, out)
	}

	// The ToR forgets node-2: its session goes down (BIRD sends a Cease).
	tc := harness.TorConfig{AS: harness.TorAS, Neighbors: map[string]uint32{harness.NodeAddr(1): harness.ClusterAS}}
	if err := l.Tor.Reconfigure(tc.Config()); err != nil {
		t.Fatal(err)
	}
	l.Eventually(20*time.Second, "routectl status names the ToR session on node-2", func() string {
		out, code = routectl(t, n2, "status")
		if code != 1 || !strings.Contains(out, "tor (192.0.2.254)") {
			return out
		}
		return ""
	})
	t.Logf("routectl status on node-2 with its ToR session down (exit %d):\n%s", code, out)
	if wide, code := routectl(t, n2, "status", "-o", "wide"); code != 1 {
		t.Errorf("status -o wide: exit %d, want 1\n%s", code, wide)
	}
	// The same in the agent's metrics, and as a Warning Event on the Node.
	l.Eventually(10*time.Second, "metrics show the ToR session down and its flap", func() string {
		m, status := scrape(t, n2, "/metrics")
		for _, want := range []string{
			`hostroute_bgp_session_up{kind="external",name="tor",peer="192.0.2.254"} 0`,
			`hostroute_bgp_session_flaps_total{kind="external",name="tor",peer="192.0.2.254"} 1`,
			`hostroute_kernel_routes{state="ok"} 2`,
		} {
			if status != http.StatusOK || !strings.Contains(m, want) {
				return fmt.Sprintf("HTTP %d, no %s in:\n%s", status, want, grepLines(m, "hostroute_"))
			}
		}
		return ""
	})
	if body, status := scrape(t, n2, "/healthz"); status != http.StatusOK {
		t.Errorf("/healthz: %d %s", status, body)
	}
	l.Eventually(10*time.Second, "BGPSessionDown Event on node-2", func() string {
		evs, err := l.Kube.CoreV1().Events("").List(l.Ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=node-2,reason=BGPSessionDown"})
		if err != nil || len(evs.Items) == 0 {
			return fmt.Sprint("no event yet ", err)
		}
		return ""
	})

	l.Eventually(20*time.Second, "routectl status --all lists node-2 first", func() string {
		out, code = routectl(t, n1, "status", "--all")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 1 || len(lines) < 3 || !strings.HasPrefix(lines[1], "node-2 ") || !strings.Contains(lines[1], "False") {
			return out
		}
		return ""
	})
	t.Logf("routectl status --all (exit %d):\n%s", code, out)

	// A leak: an allocation for a pod UID that does not exist.
	conn, err := n1.Agent()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(l.Ctx, 5*time.Second)
	defer cancel()
	resp, err := agentv1.NewAgentClient(conn).Allocate(ctx, &agentv1.AllocateRequest{
		Attachment: &agentv1.Attachment{ContainerId: "ctr-routectl-leak", Ifname: "eth0"},
		PodUid:     "00000000-dead-beef-0000-000000000000", Namespace: "default", PodName: "vanished"})
	if err != nil {
		t.Fatal(err)
	}
	leaked := strings.Split(resp.GetAddresses()[0], "/")[0]
	l.Eventually(10*time.Second, "ipam check finds the leak", func() string {
		out, code = routectl(t, n1, "ipam", "check")
		if code != 1 || !strings.Contains(out, "leak") || !strings.Contains(out, leaked) {
			return out
		}
		return ""
	})
	t.Logf("routectl ipam check (exit %d):\n%s", code, out)

	out, code = routectl(t, n1, "ipam", "release")
	if code != 0 || !strings.Contains(out, leaked) || !strings.Contains(out, "dry run") {
		t.Fatalf("ipam release (dry run): exit %d\n%s", code, out)
	}
	if got := inUse(t, n1); got != 1 {
		t.Fatalf("the dry run released something: node-1 holds %d allocations, want the leaked 1", got)
	}
	out, code = routectl(t, n1, "ipam", "release", "--yes")
	if code != 0 || !strings.Contains(out, "released "+leaked) {
		t.Fatalf("ipam release --yes: exit %d\n%s", code, out)
	}
	t.Logf("routectl ipam release --yes (exit %d):\n%s", code, out)
	if m, _ := scrape(t, n1, "/metrics"); !strings.Contains(m, `hostroute_cni_request_duration_seconds_count{code="OK",method="Allocate"} 1`) {
		t.Errorf("no Allocate latency in node-1's metrics:\n%s", grepLines(m, "hostroute_cni"))
	}
	l.Eventually(10*time.Second, "ipam check clean after the release", func() string {
		if out, code = routectl(t, n1, "ipam", "check"); code != 0 {
			return out
		}
		return ""
	})
}

// scrape GETs path from the agent's metrics address (default :9402) inside the node's
// namespace.
func scrape(t *testing.T, n *harness.Node, path string) (string, int) {
	t.Helper()
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return netns.DialIn(ctx, n.NS, "tcp", "127.0.0.1:9402")
		}}}
	resp, err := c.Get("http://agent" + path)
	if err != nil {
		return err.Error(), 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
