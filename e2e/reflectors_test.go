package e2e_test

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/e2e/harness"
)

// TestReflectorElection: ten nodes in two racks (label topology.kubernetes.io/zone), no
// node-to-node mesh, BGPConfiguration routeReflectors.count 2. The controller elects one
// reflector per rack, every other node peers with both, and pods on two client nodes
// reach each other. Killing one reflector's agent makes the controller elect another
// node of the same rack once its clients report the session down; the clients move to
// it while a ping between the two client pods runs, losing nothing.
func TestReflectorElection(t *testing.T) {
	const nodes = 10
	e := harness.NewEnv(t, bin)
	e.MakeFabric()
	e.Pool("pods", "10.220.0.0/16", 26, false)
	mesh := false
	conf := &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{NodeToNodeMesh: &mesh,
		RouteReflectors: &v1alpha1.RouteReflectorElection{Count: 2}}}
	conf.Name = "default"
	if _, err := e.HR.BGPConfigurations.Create(e.Ctx, conf); err != nil {
		t.Fatal(err)
	}
	e.NodeLabels = map[string]map[string]string{}
	for i := 1; i <= nodes; i++ {
		rack := "rack-a"
		if i > nodes/2 {
			rack = "rack-b"
		}
		e.NodeLabels[fmt.Sprintf("node-%d", i)] = map[string]string{controller.DefaultTopologyKey: rack}
	}
	e.RunController(controller.Config{ReflectorDownGrace: 2 * time.Second})
	var ns []*harness.Node
	for i := 1; i <= nodes; i++ {
		ns = append(ns, e.AddNode(fmt.Sprintf("node-%d", i), harness.NodeAddr(i)))
	}
	byName := map[string]*harness.Node{}
	for _, n := range ns {
		byName[n.Name] = n
	}
	(&lab{e: e, nodes: ns}).waitReady(t)

	elected := func() []string {
		c, err := e.HR.BGPConfigurations.Get(e.Ctx, "default")
		if err != nil {
			t.Fatal(err)
		}
		return c.Status.RouteReflectors
	}
	// Every client has an Established reflector session to each of want, and nothing else.
	waitSessions := func(what string, want []string, dead string) {
		t.Helper()
		e.Eventually(45*time.Second, what, func() string {
			var addrs []string
			for _, r := range want {
				addrs = append(addrs, byName[r].Addr)
			}
			slices.Sort(addrs)
			for _, n := range ns {
				if slices.Contains(want, n.Name) || n.Name == dead {
					continue
				}
				ss, err := routingSessions(n)
				if err != nil {
					return fmt.Sprintf("%s: %v", n.Name, err)
				}
				var up []string
				for _, s := range ss {
					if s.GetKind() != "reflector" {
						return fmt.Sprintf("%s: a %s session to %s", n.Name, s.GetKind(), s.GetPeer())
					}
					if s.GetState() == "Established" {
						up = append(up, s.GetPeer())
					}
				}
				slices.Sort(up)
				if !slices.Equal(up, addrs) {
					return fmt.Sprintf("%s: reflector sessions Established to %v, want %v", n.Name, up, addrs)
				}
			}
			return ""
		})
	}
	rackOf := func(name string) string { return e.NodeLabels[name][controller.DefaultTopologyKey] }
	var first []string
	e.Eventually(30*time.Second, "two reflectors elected, one per rack", func() string {
		first = elected()
		if len(first) != 2 || rackOf(first[0]) == rackOf(first[1]) {
			return fmt.Sprintf("elected %v", first)
		}
		return ""
	})
	t.Logf("elected: %v", first)
	waitSessions("every client peers with both reflectors", first, "")
	// The client pods: one node of each rack that is no reflector.
	var clients []string
	for _, rack := range []string{"rack-a", "rack-b"} {
		for _, n := range ns {
			if rackOf(n.Name) == rack && !slices.Contains(first, n.Name) {
				clients = append(clients, n.Name)
				break
			}
		}
	}
	a, b := byName[clients[0]].NewPod("a"), byName[clients[1]].NewPod("b")
	for _, p := range []*harness.Pod{a, b} {
		if err := p.Add(); err != nil {
			t.Fatal(err)
		}
	}
	e.Eventually(20*time.Second, "pod a reaches pod b through the reflected routes", func() string {
		if out, ok := harness.Ping(a.NS, b.IP); !ok {
			return out
		}
		return ""
	})
	// Past the election's probation (the clients' reports count against a reflector
	// only from 15s after an election): the replacement time below is the steady state's.
	if c, err := e.HR.BGPConfigurations.Get(e.Ctx, "default"); err == nil && c.Status.Changed != nil {
		time.Sleep(time.Until(c.Status.Changed.Add(16 * time.Second)))
	}
	pinger := exec.Command("ip", "netns", "exec", a.NS, "ping", "-i", "0.02", "-w", "40", "-W", "1", b.IP)
	outCh := make(chan string, 1)
	go func() { out, _ := pinger.CombinedOutput(); outCh <- string(out) }()
	time.Sleep(time.Second)

	victim, keep := first[0], first[1]
	if rackOf(victim) != "rack-a" {
		victim, keep = keep, victim
	}
	killed := time.Now()
	byName[victim].Kill()
	var second []string
	e.Eventually(30*time.Second, "another rack-a node replaces "+victim, func() string {
		second = elected()
		if len(second) != 2 || !slices.Contains(second, keep) || slices.Contains(second, victim) ||
			rackOf(second[0]) == rackOf(second[1]) || slices.Contains(clients, second[0]) && slices.Contains(clients, second[1]) {
			return fmt.Sprintf("elected %v", second)
		}
		return ""
	})
	t.Logf("%s's agent killed → %v elected in %s", victim, second, time.Since(killed).Round(100*time.Millisecond))
	waitSessions("every client peers with the new pair", second, victim)
	t.Logf("%s's agent killed → every client Established with the new pair in %s", victim, time.Since(killed).Round(100*time.Millisecond))
	c, _ := e.HR.BGPConfigurations.Get(e.Ctx, "default")
	t.Logf("status.message: %s", c.Status.Message)

	out := <-outCh
	noLoss(t, out, "pod a → pod b while the clients moved reflectors")
	if st, code := routectl(t, byName[clients[0]], "status"); code == 0 || code == 1 {
		t.Logf("routectl status on %s:\n%s", clients[0], st)
	}
	if !strings.Contains(c.Status.Message, victim+" is no longer a route reflector") {
		t.Errorf("status.message does not say node-1 was replaced: %q", c.Status.Message)
	}
}
