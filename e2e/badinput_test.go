package e2e_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/e2e/harness"
)

// cniError runs a CNI command that must fail and returns the error the kubelet would log.
func cniError(t *testing.T, n *harness.Node, command string, p *harness.Pod, conf []byte) harness.CNIResult {
	t.Helper()
	out, err := n.CNI(command, p, conf)
	if err == nil {
		t.Fatalf("%s succeeded, want an error: %s", command, out)
	}
	var r harness.CNIResult
	if jerr := json.Unmarshal(out, &r); jerr != nil || r.Code == 0 {
		t.Fatalf("%s: no CNI error on stdout: %q (%v)", command, out, err)
	}
	t.Logf("%s → code %d: %s", command, r.Code, r.Msg)
	return r
}

func noPartialState(t *testing.T, n *harness.Node, wantInUse int) {
	t.Helper()
	if v := hostVeths(t, n); len(v) != 0 {
		t.Fatalf("veths left behind: %v", v)
	}
	if got := inUse(t, n); got != wantInUse {
		t.Fatalf("%d allocations, want %d", got, wantInUse)
	}
}

// TestBadInputLeavesNothing feeds the real plugin, against a running agent, the kinds of
// bad input a runtime can produce, and checks the error and that nothing was left behind.
func TestBadInputLeavesNothing(t *testing.T) {
	e := harness.NewEnv(t, bin)
	e.Pool("tiny", "10.103.0.0/30", 30, false) // one block, four addresses
	e.RunController(controller.Config{})
	n := e.AddNode("node-a", "192.0.2.1")
	n.WaitReady(20 * time.Second)

	p := n.NewPod("bad")
	if r := cniError(t, n, "ADD", p, []byte(`{"cniVersion":"1.0.0","name":`)); r.Code != 6 {
		t.Errorf("malformed JSON: code %d, want 6", r.Code)
	}
	if r := cniError(t, n, "ADD", p, []byte(`{"cniVersion":"9.9.9","name":"hostroute","type":"hostroute-cni"}`)); r.Code != 1 {
		t.Errorf("unknown version: code %d, want 1", r.Code)
	}
	noNS := &harness.Pod{Name: "nons", ContainerID: "ctr-nons", UID: "u", Node: n}
	if r := cniError(t, n, "ADD", noNS, n.NetConf()); r.Code != 4 || !strings.Contains(r.Msg, "CNI_NETNS") {
		t.Errorf("missing CNI_NETNS: code %d %q, want 4 naming CNI_NETNS", r.Code, r.Msg)
	}
	noPartialState(t, n, 0)

	// Exhausted pool: four pods fit, the fifth waits for a block that cannot come.
	for i := range 4 {
		if err := n.NewPod("fill").Add(); err != nil {
			t.Fatalf("pod %d: %v", i, err)
		}
	}
	start := time.Now()
	if r := cniError(t, n, "ADD", n.NewPod("one-too-many"), n.NetConf()); r.Code != 100 || !strings.Contains(r.Msg, "exhausted") {
		t.Errorf("exhausted pool: code %d %q, want 100", r.Code, r.Msg)
	}
	t.Logf("the exhausted ADD returned after %s (agent --alloc-wait 5s)", time.Since(start).Round(100*time.Millisecond))
	if v := hostVeths(t, n); len(v) != 4 {
		t.Fatalf("%d veths, want the 4 of the running pods: %v", len(v), v)
	}
	if got := inUse(t, n); got != 4 {
		t.Fatalf("%d allocations, want 4", got)
	}

	// Agent down.
	n.Kill()
	if r := cniError(t, n, "ADD", n.NewPod("agent-down"), n.NetConf()); r.Code != 11 || !strings.Contains(r.Msg, "is the hostroute-node pod running") {
		t.Errorf("agent down: code %d %q, want 11", r.Code, r.Msg)
	}
	n.Start()
	n.WaitReady(20 * time.Second)
	if v := hostVeths(t, n); len(v) != 4 {
		t.Fatalf("%d veths after the failed ADDs, want 4: %v", len(v), v)
	}
	if got := inUse(t, n); got != 4 {
		t.Fatalf("%d allocations after the failed ADDs, want 4", got)
	}
}
