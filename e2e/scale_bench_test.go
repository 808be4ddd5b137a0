package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/benchreport"
	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// BenchmarkScale runs real agents — one hostroute-node and its BFD daemon per node
// namespace, all on one segment, against one API server — at 25 nodes in a full mesh and
// at 25 and 100 nodes through two route reflectors (BFD off: its cost is
// BenchmarkBFDIdleCPU's). Per topology: cold start (the first node created until every
// node routes every other node's block), then rounds of one new block on a client node
// until every other node routes it (median node and slowest node), and the agents' CPU for
// that block change, per agent. A block change must cost the same per agent at 100 nodes
// as at 25: the ratio of the two is the scaling figure.
func BenchmarkScale(b *testing.B) {
	for _, tc := range []struct {
		name       string
		nodes      int
		reflectors bool
	}{{"mesh, 25 nodes", 25, false}, {"2 reflectors, 25 nodes", 25, true}, {"2 reflectors, 100 nodes", 100, true}} {
		b.Run(fmt.Sprintf("%d-%v", tc.nodes, tc.reflectors), func(b *testing.B) {
			benchScale(b, tc.name, tc.nodes, tc.reflectors)
		})
	}
}

func benchScale(b *testing.B, name string, nodes int, reflectors bool) {
	group := "Control plane at scale (real agents, one API server)"
	e := harness.NewEnv(b, bin)
	e.MakeFabric()
	e.Pool("pods", "10.200.0.0/16", 26, true)
	if reflectors {
		cfg := &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{NodeToNodeMesh: bbPtr(false)}}
		cfg.Name = "default"
		if _, err := e.HR.BGPConfigurations.Create(e.Ctx, cfg); err != nil {
			b.Fatal(err)
		}
		e.NodeLabels = map[string]map[string]string{}
		for _, rr := range []string{"node-1", "node-2"} {
			e.NodeLabels[rr] = map[string]string{v1alpha1.LabelRouteReflector: "true"}
		}
	}
	e.RunController(controller.Config{})
	profDir := os.Getenv("HOSTROUTE_BENCH_PROFILE") // CPU profiles of a client and a reflector during the rounds
	if profDir != "" {
		e.AgentArgs = append(e.AgentArgs, "--pprof")
	}
	// Every node prepared first (namespace, Node object, token), then every agent started
	// at once: the cold start of a cluster whose nodes come up together.
	e.DeferStart = true
	prep := time.Now()
	ns := make([]*harness.Node, nodes)
	for i := range ns {
		ns[i] = e.AddNode(fmt.Sprintf("node-%d", i+1), fmt.Sprintf("192.0.2.%d", i+1))
	}
	created := time.Since(prep)
	start := time.Now()
	for _, n := range ns {
		n.Start()
	}
	handles := nodeHandles(b, ns)
	// learned counts node i's routes of ours with a gateway (other nodes' blocks).
	learned := func(i int) int {
		rs, err := handles[i].RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: bbProtoHR}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return -1
		}
		c := 0
		for _, r := range rs {
			if r.Gw != nil || len(r.MultiPath) > 0 {
				c++
			}
		}
		return c
	}
	for {
		done := 0
		for i := range ns {
			if learned(i) == nodes-1 {
				done++
			}
		}
		if done == nodes {
			break
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("%s: %d of %d nodes route every other node's block after %s", name, done, nodes, time.Since(start))
		}
		time.Sleep(100 * time.Millisecond)
	}
	cold := time.Since(start)
	b.Logf("%s: %d nodes prepared in %s; all routing every block %s after their agents started together", name, nodes, created.Round(time.Millisecond), cold.Round(time.Millisecond))
	var coldT *benchreport.Target
	if nodes == 100 {
		coldT = &benchreport.Target{Of: "value", Op: "<=", Value: 30}
	}
	benchreport.Record(b, benchreport.Figure{Group: group, Name: name + ": cold start, all agents started → every node routes every block", Unit: "s",
		Runs: []float64{cold.Seconds()}, LowerIsBetter: true, Target: coldT})

	// Idle: what the agents use with nothing changing (status snapshots, keepalives,
	// BFD off), per agent, so that it can be taken out of the block-change figure.
	time.Sleep(3 * time.Second)
	idle0, idleT := agentsCPU(b, ns), time.Now()
	time.Sleep(5 * time.Second)
	idleRate := float64((agentsCPU(b, ns) - idle0).Microseconds()) / 1000 / float64(nodes) / time.Since(idleT).Seconds() // ms per agent per s
	benchreport.Record(b, benchreport.Figure{Group: group, Name: name + ": idle agent CPU", Unit: "% core", Runs: []float64{idleRate / 10}, LowerIsBetter: true})

	// One new block on a client node, rounds times.
	owner := nodes - 1
	rounds := 5 * benchRounds()
	var p50s, maxs, cpus []float64
	var profiles sync.WaitGroup
	if profDir != "" {
		for _, i := range []int{0, nodes / 2} {
			profiles.Add(1)
			go func() {
				defer profiles.Done()
				fetchProfile(b, ns[i], "profile?seconds=8", filepath.Join(profDir, fmt.Sprintf("%d-nodes-%s.pprof", nodes, ns[i].Name)))
			}()
		}
	}
	defer profiles.Wait()
	for r := 0; r < rounds; r++ {
		pfx := netip.MustParsePrefix(fmt.Sprintf("10.200.%d.0/26", 200+r%50))
		blk := &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: pfx.String(), Pool: "pods", Node: ns[owner].Name}}
		blk.Name = controller.BlockName(pfx)
		cpu0 := agentsCPU(b, ns)
		t0 := time.Now()
		if _, err := e.HR.IPAMBlocks.Create(e.Ctx, blk); err != nil {
			b.Fatal(err)
		}
		seen := waitAll(b, handles, owner, pfx, true, t0)
		time.Sleep(500 * time.Millisecond) // the tail of the work (status writes, resets) counts too
		window := time.Since(t0).Seconds()
		cpus = append(cpus, max(0, float64((agentsCPU(b, ns)-cpu0).Microseconds())/1000/float64(nodes)-idleRate*window))
		p50s = append(p50s, benchreport.Summarize(seen).Median)
		maxs = append(maxs, slices.Max(seen))
		if err := e.HR.IPAMBlocks.Delete(e.Ctx, blk.Name, metav1.DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
		waitAll(b, handles, owner, pfx, false, time.Now())
	}
	fig := func(what, unit string, runs []float64, t *benchreport.Target) {
		f := benchreport.Figure{Group: group, Name: name + ": " + what, Unit: unit, Runs: runs, LowerIsBetter: true, Target: t}
		if name == "2 reflectors, 100 nodes" {
			f.Baseline = "2 reflectors, 25 nodes: " + what
		}
		benchreport.Record(b, f)
	}
	var p50T, maxT *benchreport.Target
	if nodes == 100 {
		p50T = &benchreport.Target{Of: "value", Op: "<=", Value: 100}
		maxT = &benchreport.Target{Of: "value", Op: "<=", Value: 200}
	}
	fig("a new block on the median node", "ms", p50s, p50T)
	fig("a new block on the slowest node", "ms", maxs, maxT)
	fig("agent CPU per block change, per agent (idle use taken out)", "ms", cpus, nil)
	b.ReportMetric(benchreport.Summarize(maxs).Median, "slowest-ms")
	b.ReportMetric(0, "ns/op")
}

// waitAll waits until every node but owner has (or, want false, no longer has) a route
// to pfx, and returns when each got it, in ms since t0.
func waitAll(b *testing.B, handles []*netlink.Handle, owner int, pfx netip.Prefix, want bool, t0 time.Time) []float64 {
	seen := make([]float64, len(handles))
	left := len(handles) - 1
	for left > 0 {
		now := time.Since(t0)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i, h := range handles {
			if i == owner || seen[i] != 0 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: prefixNet(pfx), Protocol: bbProtoHR}, netlink.RT_FILTER_DST|netlink.RT_FILTER_PROTOCOL)
				if err == nil && (len(rs) > 0) == want {
					mu.Lock()
					seen[i] = float64(now.Microseconds())/1000 + 0.001
					left--
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if now > time.Minute {
			b.Fatalf("block %s (want %v): %d nodes not there after %s", pfx, want, left, now)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return slices.Delete(seen, owner, owner+1)
}

// agentsCPU is the CPU time of every node's agent so far.
func agentsCPU(b *testing.B, ns []*harness.Node) time.Duration {
	var d time.Duration
	for _, n := range ns {
		d += bbCPU(b, n.PID())
	}
	return d
}

// prefixNet is p as a *net.IPNet for netlink filters.
func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// fetchProfile saves one of n's agent's /debug/pprof/ profiles (its --pprof), e.g.
// "profile?seconds=8" (CPU over the next 8 s) or "heap".
func fetchProfile(b *testing.B, n *harness.Node, which, path string) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return netns.DialIn(ctx, n.NS, network, addr)
	}}}
	resp, err := c.Get("http://127.0.0.1:9402/debug/pprof/" + which)
	if err != nil {
		b.Errorf("profile of %s: %v", n.Name, err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if err := os.WriteFile(path, body, 0o644); err != nil {
		b.Error(err)
	}
}

// nodeHandles opens a netlink handle in every node's namespace, closed when b ends.
func nodeHandles(b *testing.B, ns []*harness.Node) []*netlink.Handle {
	handles := make([]*netlink.Handle, len(ns))
	for i, n := range ns {
		h, err := netns.Handle(n.NS)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(h.Close)
		handles[i] = h
	}
	return handles
}
