package e2e_test

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// TestBFDOutlivesAgentCrash: with BFD on every session (node mesh and the BIRD ToR),
// node-2's agent is killed with SIGKILL and started again while a pod on node-1 pings a
// pod on node-2 every 10 ms. The node's BFD daemon keeps its sessions Up (C bit), so
// neither node-1 nor BIRD takes the crash for a dead node: graceful restart keeps the
// routes, not a packet is lost, and BIRD has node-2's block the whole time. A restart of
// the BFD daemon itself (its goodbye is AdminDown) loses nothing on the mesh either. Then
// node-2 dies for real (agent killed and its uplink down): node-1's kernel and BIRD drop
// its block within a second.
func TestBFDOutlivesAgentCrash(t *testing.T) {
	l := newLab(t, 2, true, 0)
	cfg := &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{BFD: &v1alpha1.BFDSettings{Enabled: true}}}
	cfg.Name = "default"
	if _, err := l.e.HR.BGPConfigurations.Create(l.e.Ctx, cfg); err != nil {
		t.Fatal(err)
	}
	n1, n2 := l.nodes[0], l.nodes[1]
	a, b := n1.NewPod("a"), n2.NewPod("b")
	for _, p := range []*harness.Pod{a, b} {
		if err := p.Add(); err != nil {
			t.Fatal(err)
		}
	}
	block := l.blocks(t)["node-2"]
	allUp := func() string {
		for _, n := range l.nodes {
			ss, err := routingSessions(n)
			if err != nil {
				return err.Error()
			}
			if len(ss) != 2 {
				return fmt.Sprintf("%s has %d sessions, want 2", n.Name, len(ss))
			}
			for _, s := range ss {
				if s.State != "Established" || s.BfdState != "Up" {
					return fmt.Sprintf("%s session to %s: BGP %s, BFD %q", n.Name, s.Peer, s.State, s.BfdState)
				}
			}
		}
		if len(kernelRoute(t, n1.NS, block)) == 0 {
			return "node-1 has no route to " + block
		}
		if out, err := l.bird.Query("show route for " + block); err != nil || !strings.Contains(out, "192.0.2.2") {
			return "BIRD has no route to " + block + " via node-2"
		}
		return ""
	}
	l.e.Eventually(30*time.Second, "every session Established with BFD Up, node-1 and BIRD routing to node-2's block", allUp)
	ping(t, a.NS, b.IP)

	// BIRD's view, sampled every 20 ms while the agent restarts.
	var torMiss []string
	var mu sync.Mutex
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if out, err := l.bird.Query("show route for " + block); err != nil || !strings.Contains(out, "192.0.2.2") {
				mu.Lock()
				torMiss = append(torMiss, time.Now().Format("15:04:05.000")+" "+lastLines(out, 3))
				mu.Unlock()
			}
		}
	}()
	pinger := exec.Command("ip", "netns", "exec", a.NS, "ping", "-i", "0.01", "-c", "800", "-W", "1", b.IP)
	outCh := make(chan string, 1)
	go func() { out, _ := pinger.CombinedOutput(); outCh <- string(out) }()
	time.Sleep(time.Second)
	n2.Kill()
	time.Sleep(2 * time.Second) // longer than any BFD detection time: the daemon must hold
	n2.Start()
	n2.WaitReady(20 * time.Second)
	out := <-outCh
	close(stopWatch)
	<-watched
	noLoss(t, out, "during the SIGKILL of node-2's agent with BFD on")
	if len(torMiss) > 0 {
		t.Errorf("BIRD lost node-2's block %d times during the crash, first: %s", len(torMiss), torMiss[0])
	}
	if bfdLog := n2.BFDLog(); !strings.Contains(bfdLog, "agent connected") {
		t.Errorf("the restarted agent never reached the BFD daemon:\n%s", lastLines(bfdLog, 20))
	}

	// The BFD daemon itself is restarted (SIGTERM, as deleting its pod does): it says
	// AdminDown first, which hostroute peers do not take for a failure (RFC 5882 3.2), so
	// the mesh loses nothing. (BIRD 2.0.12 drops BGP on AdminDown; it is not on this path.)
	l.e.Eventually(30*time.Second, "sessions back after the agent restart", allUp)
	pinger = exec.Command("ip", "netns", "exec", a.NS, "ping", "-i", "0.01", "-c", "400", "-W", "1", b.IP)
	go func() { out, _ := pinger.CombinedOutput(); outCh <- string(out) }()
	time.Sleep(time.Second)
	n2.StopBFD()
	time.Sleep(500 * time.Millisecond)
	n2.StartBFD()
	out = <-outCh
	noLoss(t, out, "during the restart of node-2's BFD daemon")
	l.e.Eventually(30*time.Second, "sessions back after the BFD daemon restart", allUp)

	// A real death: the agent is gone and so is the link.
	n2.Kill()
	down := time.Now()
	if err := netns.Exec(n2.NS, "ip", "link", "set", "up0", "down"); err != nil {
		t.Fatal(err)
	}
	var kernelGone, torGone time.Duration
	for deadline := down.Add(5 * time.Second); time.Now().Before(deadline) && (kernelGone == 0 || torGone == 0); time.Sleep(5 * time.Millisecond) {
		if kernelGone == 0 && len(kernelRoute(t, n1.NS, block)) == 0 {
			kernelGone = time.Since(down)
		}
		if out, _ := l.bird.Query("show route for " + block); torGone == 0 && !strings.Contains(out, "192.0.2.2") {
			torGone = time.Since(down)
		}
	}
	t.Logf("node-2 dead (agent killed, uplink down): gone from node-1's kernel after %s, from BIRD after %s",
		kernelGone.Round(time.Millisecond), torGone.Round(time.Millisecond))
	if kernelGone == 0 || kernelGone > time.Second {
		t.Errorf("node-1 still routed to the dead node-2 after %s (want < 1s)", time.Since(down).Round(time.Millisecond))
	}
	if torGone == 0 || torGone > time.Second {
		t.Errorf("BIRD still routed to the dead node-2 (want < 1s)")
	}
}
