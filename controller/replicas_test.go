package controller_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// buildController builds cmd/hostroute-controller into a temporary directory.
func buildController(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	bin := filepath.Join(t.TempDir(), "hostroute-controller")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/hostroute-controller")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build controller: %v\n%s", err, out)
	}
	return bin
}

// TestTwoReplicasKillLeader runs two controller processes, lets 50 nodes join at once,
// SIGKILLs the leader while it is assigning, and checks that the other replica finishes
// the job without any block assigned twice.
func TestTwoReplicasKillLeader(t *testing.T) {
	e := newEnv(t)
	bin := buildController(t)
	e.mustPool("default", "10.80.0.0/16", 26)

	kubeconfig := e.controllerKubeconfig()
	procs := map[string]*exec.Cmd{}
	for _, id := range []string{"replica-a", "replica-b"} {
		logf, err := os.Create(filepath.Join(t.TempDir(), id+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "--kubeconfig", kubeconfig, "--identity", id,
			"--lease-duration", "3s", "--renew-deadline", "2s", "--retry-period", "500ms")
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[id] = cmd
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				t.Logf("%s log:\n%s", id, b)
			}
		})
	}
	leader := func() string {
		l, err := e.kube.CoordinationV1().Leases("hostroute-system").Get(e.ctx, "hostroute-controller", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	var first string
	e.eventually(20*time.Second, "a leader is elected", func() string {
		if first = leader(); first == "" {
			return "no lease holder"
		}
		return ""
	})

	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() { defer wg.Done(); e.createNode(fmt.Sprintf("node-%02d", i)) }()
	}
	// Kill the leader as soon as it has started assigning.
	e.eventually(20*time.Second, "leader starts assigning", func() string {
		if len(e.blocks()) == 0 {
			return "no blocks yet"
		}
		return ""
	})
	killedAt := len(e.blocks())
	if err := procs[first].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed leader %s with %d of 50 blocks assigned", first, killedAt)
	wg.Wait()

	e.eventually(45*time.Second, "the other replica assigns the rest", func() string {
		m := perNode(e.blocks())
		if len(m) != 50 {
			return fmt.Sprintf("%d of 50 nodes have blocks (leader %q)", len(m), leader())
		}
		return ""
	})
	time.Sleep(2 * time.Second)
	checkOneBlockEach(t, e.blocks(), 50)
	if now := leader(); now == first || !strings.HasPrefix(now, "replica-") {
		t.Fatalf("lease holder %q after killing %q", now, first)
	}
}
