package e2e_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/benchreport"
	"github.com/hostroute/hostroute/internal/testenv/bird"
	"github.com/hostroute/hostroute/internal/testenv/netns"
	"github.com/hostroute/hostroute/node/routes"
)

// Names in this file start with bb (BGP bench) so they never collide with helpers that
// other files of the package define; the routing tests' helpers take *testing.T, these
// take testing.TB.

const (
	bbExtNet = "198.51.100.0/24" // the ToR's own prefix: proves a session is up
	// bbBenchNet holds the N prefixes the ToR originates for BenchmarkBGPToKernel: /25s,
	// since a /8 has only 65,536 /24s and the largest size is 100,000.
	bbBenchNet = "203.0.0.0/8"
	bbBenchLen = 25
	// bbBirdNode is the address of the baseline node: BIRD as the node's BGP daemon
	// (what Calico runs), installing the same routes into its own kernel.
	bbBirdNode = "192.0.2.200"
	// bbProtoBIRD is the route protocol BIRD's kernel protocol writes (RTPROT_BIRD).
	bbProtoBIRD = 12
	bbProtoHR   = routes.Protocol
	bbPoll      = 20 * time.Millisecond
)

type bbLab struct {
	e    *harness.Env
	bird *bird.BIRD
	node *harness.Node
}

// bbLabConfig is what differs between the benchmarks' labs.
type bbLabConfig struct {
	bfd     bool
	hold    time.Duration
	imports []v1alpha1.PrefixMatch
	// torConf renders the ToR's BIRD configuration (default: harness.TorConfig).
	torConf func(harness.TorConfig) string
	// agentArgs are extra flags for node-1's agent.
	agentArgs []string
}

// bbNewLab is newLab (routing_test.go) for one node and a testing.TB: a BIRD ToR
// (AS 65000) on the fabric bridge, node-1 (AS 64512, 192.0.2.1) peering with it through
// a BGPPeer, and the agent ready.
func bbNewLab(tb testing.TB, c bbLabConfig) *bbLab {
	tb.Helper()
	e := harness.NewEnv(tb, bin)
	e.AgentArgs = append(e.AgentArgs, c.agentArgs...)
	tor := e.MakeFabric()
	e.Pool("pods", "10.200.0.0/16", 26, true)
	peer := &v1alpha1.BGPPeer{Spec: v1alpha1.BGPPeerSpec{
		PeerIP: harness.FabricGateway, ASNumber: 65000,
		Import: append([]v1alpha1.PrefixMatch{{CIDR: bbExtNet}}, c.imports...),
		BFD:    &v1alpha1.BFDSettings{Enabled: c.bfd},
	}}
	peer.Name = "tor"
	tc := harness.TorConfig{AS: 65000, Neighbors: map[string]uint32{"192.0.2.1": 64512}, BFD: c.bfd, Originate: []string{bbExtNet}}
	if c.hold > 0 {
		peer.Spec.Timers = &v1alpha1.BGPTimers{HoldTime: &metav1.Duration{Duration: c.hold}}
		tc.HoldTime = int(c.hold.Seconds())
	}
	if _, err := e.HR.BGPPeers.Create(e.Ctx, peer); err != nil {
		tb.Fatal(err)
	}
	conf := tc.Config()
	if c.torConf != nil {
		conf = c.torConf(tc)
	}
	l := &bbLab{e: e}
	l.bird = e.StartBIRD(tor, conf)
	e.RunController(controller.Config{})
	l.node = e.AddNode("node-1", "192.0.2.1")
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("agent log of node-1:\n%s", bbTail(l.node.Log(), 60))
		}
	})
	l.node.WaitReady(20 * time.Second)
	return l
}

func bbTail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func bbPtr[T any](v T) *T { return &v }

// bbCounter counts the routes of one protocol inside one prefix in a namespace's main
// table with one netlink dump (RouteListFilteredIter filtered by protocol: the same dump
// as RouteListFiltered without building the slice).
type bbCounter struct {
	h      *netlink.Handle
	proto  int
	within netip.Prefix
	// polls and pollTime add up every dump, for the poll-ms metric.
	polls    int
	pollTime time.Duration
}

func bbNewCounter(tb testing.TB, ns string, proto int, within string) *bbCounter {
	tb.Helper()
	h, err := netns.Handle(ns)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(h.Close)
	return &bbCounter{h: h, proto: proto, within: netip.MustParsePrefix(within)}
}

// count returns the number of matching routes; ok is false when the dump was interrupted
// by concurrent changes (its count may be off), which happens whenever routes are being
// written during the dump.
func (c *bbCounter) count(tb testing.TB) (n int, ok bool) {
	tb.Helper()
	start := time.Now()
	err := c.h.RouteListFilteredIter(netlink.FAMILY_V4, &netlink.Route{Protocol: netlink.RouteProtocol(c.proto)},
		netlink.RT_FILTER_PROTOCOL, func(r netlink.Route) bool {
			if r.Dst != nil {
				if a, ok := netip.AddrFromSlice(r.Dst.IP); ok && c.within.Contains(a.Unmap()) {
					n++
				}
			}
			return true
		})
	c.polls++
	c.pollTime += time.Since(start)
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		return n, false
	}
	if err != nil {
		tb.Fatal(err)
	}
	return n, true
}

// wait polls every bbPoll from start until an uninterrupted dump counts want routes and
// returns how long that took from start and when the count first moved off from.
func (c *bbCounter) wait(tb testing.TB, start time.Time, from, want int, limit time.Duration) (done, first time.Duration) {
	tb.Helper()
	last := from
	for {
		n, ok := c.count(tb)
		now := time.Since(start)
		if n != from && first == 0 {
			first = now
		}
		if ok && n == want {
			return now, first
		}
		if ok {
			last = n
		}
		if now > limit {
			tb.Fatalf("%d of %d routes (protocol %d, in %s) after %s", last, want, c.proto, c.within, limit)
		}
		time.Sleep(bbPoll)
	}
}

// bbPID finds the process running the program named prog whose command line contains s
// (a path only that process has).
func bbPID(tb testing.TB, prog, s string) int {
	tb.Helper()
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		args := strings.Split(string(cl), "\x00")
		if err == nil && filepath.Base(args[0]) == prog && strings.Contains(string(cl), s) {
			return pid
		}
	}
	tb.Fatalf("no %s process with %q in its command line", prog, s)
	return 0
}

// bbCPU is the CPU time (user + system) a process has used so far.
func bbCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14 of stat(5), counted from field 3
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func bbPrefix(i int) string {
	a := uint32(203)<<24 | uint32(i)<<(32-bbBenchLen)
	return fmt.Sprintf("%d.%d.%d.%d/%d", byte(a>>24), byte(a>>16), byte(a>>8), byte(a), bbBenchLen)
}

// BenchmarkBGPToKernel measures the whole path from BGP to the kernel: the ToR (BIRD)
// starts originating N prefixes, and the clock runs until node-1's kernel holds all N with
// hostroute's protocol (196); then the ToR withdraws them, until none is left. The
// baseline in the same run is BIRD as the node's daemon (what Calico runs) on a second
// node of the same fabric, receiving the same N prefixes from the same ToR and installing
// them with its kernel protocol (route protocol 12).
//
// The ToR is started with every prefix set in a disabled static protocol; `birdc enable`
// starts the clock, so the time covers route propagation only, not session set-up or
// BIRD parsing its configuration. Export filters on the ToR send a set to one node only,
// and the two daemons are measured one after the other, never at the same time.
//
// Metrics per size: <impl>-routes/s (N / time until the kernel held all N),
// <impl>-first-ms (time to the first route), <impl>-withdraw-routes/s, <impl>-cpu-us/route
// (CPU time of the node's daemon during the install, per route; /proc resolution is
// 10 ms), ratio (hostroute/BIRD routes/s), poll-ms (the mean time of one counting dump:
// the poller shares the machine's cores with what it measures). Times are found by
// polling every 20 ms; a dump interrupted by concurrent route writes does not count, so
// the end is seen up to one dump plus 20 ms late. The 100k size takes about 10-20 s of
// the run (install and withdrawal, both daemons), so it always runs; set-up (control
// plane, agent, two BIRDs, the ToR parsing 222,000 static routes) takes about 15 s.
func BenchmarkBGPToKernel(b *testing.B) {
	sizes := []struct {
		name string
		n    int
	}{{"1k", 1_000}, {"10k", 10_000}, {"100k", 100_000}}

	var statics strings.Builder
	for _, s := range sizes {
		for _, impl := range []string{"hr", "bd"} {
			fmt.Fprintf(&statics, "protocol static %s%s { disabled; ipv4;\n", impl, s.name)
			for i := range s.n {
				fmt.Fprintf(&statics, " route %s blackhole;\n", bbPrefix(i))
			}
			statics.WriteString("}\n")
		}
	}
	torConf := func(tc harness.TorConfig) string {
		var c strings.Builder
		fmt.Fprintf(&c, "log stderr all;\nrouter id %s;\nprotocol device {}\n", harness.FabricGateway)
		c.WriteString("protocol kernel { ipv4 { export where source = RTS_BGP; }; merge paths on; }\n")
		fmt.Fprintf(&c, "protocol static originated { ipv4; route %s blackhole; }\n", bbExtNet)
		c.WriteString(statics.String())
		fmt.Fprintf(&c, "template bgp node {\n  local %s as %d;\n  passive on;\n  error wait time 1, 5;\n}\n", harness.FabricGateway, tc.AS)
		// hostroute's node gets the hr* sets, the BIRD node the bd* sets.
		for _, n := range []struct{ name, addr, sets string }{{"hr", "192.0.2.1", "hr*"}, {"bd", bbBirdNode, "bd*"}} {
			fmt.Fprintf(&c, "protocol bgp %s from node { neighbor %s as 64512;\n  ipv4 { import all; export where source = RTS_BGP || proto = \"originated\" || proto ~ %q; };\n}\n",
				n.name, n.addr, n.sets)
		}
		return c.String()
	}
	// HOSTROUTE_BENCH_PROFILE=dir saves the agent's CPU profile over the first 100k install
	// and its heap with the 100k routes held (bgp-to-kernel-100k-{cpu,heap}.pprof).
	profDir := os.Getenv("HOSTROUTE_BENCH_PROFILE")
	var agentArgs []string
	if profDir != "" {
		agentArgs = []string{"--pprof"}
	}
	setup := time.Now()
	l := bbNewLab(b, bbLabConfig{
		imports:   []v1alpha1.PrefixMatch{{CIDR: bbBenchNet, MaxLength: bbPtr(int32(bbBenchLen))}},
		torConf:   torConf,
		agentArgs: agentArgs,
	})

	// The baseline node: a namespace on the fabric bridge running BIRD as its daemon.
	bdNS := netns.ForTest(b, l.e.Prefix+"bd-")
	for _, cmd := range [][]string{
		{"ip", "link", "add", "up0", "type", "veth", "peer", "name", "p-birdnode", "netns", l.e.Fabric},
		{"ip", "link", "set", "up0", "up"},
		{"ip", "addr", "add", bbBirdNode + "/24", "dev", "up0"},
	} {
		if err := netns.Exec(bdNS, cmd...); err != nil {
			b.Fatal(err)
		}
	}
	for _, cmd := range [][]string{{"ip", "link", "set", "p-birdnode", "master", "br0"}, {"ip", "link", "set", "p-birdnode", "up"}} {
		if err := netns.Exec(l.e.Fabric, cmd...); err != nil {
			b.Fatal(err)
		}
	}
	bdBIRD := l.e.StartBIRD(bdNS, fmt.Sprintf(`log stderr all;
router id %s;
protocol device {}
protocol kernel { ipv4 { import none; export all; }; merge paths on; }
protocol bgp tor { local %s as 64512; neighbor %s as 65000; error wait time 1, 5; ipv4 { import all; export none; }; }
`, bbBirdNode, bbBirdNode, harness.FabricGateway))

	impls := []struct {
		name, set string
		c         *bbCounter
		pid       int // the node's daemon, for its CPU time
	}{
		{name: "hostroute", set: "hr", c: bbNewCounter(b, l.node.NS, bbProtoHR, bbBenchNet), pid: bbPID(b, "hostroute-node", l.node.Socket)},
		{name: "bird", set: "bd", c: bbNewCounter(b, bdNS, bbProtoBIRD, bbBenchNet), pid: bdBIRD.PID()},
	}
	torPID := l.bird.PID()
	ext := []*bbCounter{bbNewCounter(b, l.node.NS, bbProtoHR, bbExtNet), bbNewCounter(b, bdNS, bbProtoBIRD, bbExtNet)}
	for _, c := range ext {
		c.wait(b, time.Now(), -1, 1, 30*time.Second) // both sessions up, the ToR's prefix installed
	}
	setupTook := time.Since(setup)

	for _, s := range sizes {
		b.Run(s.name, func(b *testing.B) {
			limit := 60*time.Second + time.Duration(s.n)*time.Millisecond // generous: a failure, not a measurement
			b.Logf("lab set up in %s (apiserver, controller, agent, two BIRDs; the ToR parsed %d static routes)",
				setupTook.Round(time.Millisecond), 2*(1_000+10_000+100_000))
			type res struct {
				add, first, del, cpu time.Duration
				// per iteration, for the report: routes/s in and out, CPU µs per route
				addRates, delRates, cpuPer []float64
				rss                        []float64 // the daemon's MB with all N routes
			}
			results := make([]res, len(impls))
			var polls int
			var pollTime time.Duration
			for i := 0; i < b.N; i++ {
				for j := range impls {
					impl := &impls[(i+j)%len(impls)]
					r := &results[(i+j)%len(impls)]
					proto := impl.set + s.name
					impl.c.polls, impl.c.pollTime = 0, 0
					profile := profDir != "" && impl.name == "hostroute" && s.n == 100_000 && i == 0
					var prof sync.WaitGroup
					if profile {
						prof.Add(1)
						go func() {
							defer prof.Done()
							fetchProfile(b, l.node, "profile?seconds=3", filepath.Join(profDir, "bgp-to-kernel-100k-cpu.pprof"))
						}()
					}
					cpu0, tor0 := bbCPU(b, impl.pid), bbCPU(b, torPID)
					start := time.Now()
					if out, err := l.bird.Query("enable " + proto); err != nil || !strings.Contains(out, "enabled") {
						b.Fatalf("birdc enable %s: %v: %s", proto, err, out)
					}
					add, first := impl.c.wait(b, start, 0, s.n, limit)
					cpu, torCPU := bbCPU(b, impl.pid)-cpu0, bbCPU(b, torPID)-tor0
					r.rss = append(r.rss, rssMB(b, impl.pid))
					if profile {
						prof.Wait()
						fetchProfile(b, l.node, "heap", filepath.Join(profDir, "bgp-to-kernel-100k-heap.pprof"))
					}
					start = time.Now()
					if out, err := l.bird.Query("disable " + proto); err != nil || !strings.Contains(out, "disabled") {
						b.Fatalf("birdc disable %s: %v: %s", proto, err, out)
					}
					del, _ := impl.c.wait(b, start, s.n, 0, limit)
					r.add += add
					r.addRates = append(r.addRates, float64(s.n)/add.Seconds())
					r.delRates = append(r.delRates, float64(s.n)/del.Seconds())
					r.cpuPer = append(r.cpuPer, float64(cpu.Nanoseconds())/1000/float64(s.n))
					r.first += first
					r.del += del
					r.cpu += cpu
					polls += impl.c.polls
					pollTime += impl.c.pollTime
					b.Logf("%s, %d prefixes: all in the kernel after %s (first after %s; the daemon used %s CPU, the ToR %s), all gone %s after the withdrawal",
						impl.name, s.n, add.Round(time.Millisecond), first.Round(time.Millisecond), cpu, torCPU, del.Round(time.Millisecond))
				}
			}
			rate := func(d time.Duration) float64 { return float64(s.n) * float64(b.N) / d.Seconds() }
			for j, impl := range impls {
				b.ReportMetric(rate(results[j].add), impl.name+"-routes/s")
				b.ReportMetric(float64(results[j].first.Microseconds())/1000/float64(b.N), impl.name+"-first-ms")
				b.ReportMetric(rate(results[j].del), impl.name+"-withdraw-routes/s")
				// CPU time the node's daemon spent per route installed (10 ms resolution).
				b.ReportMetric(float64(results[j].cpu.Nanoseconds())/1000/float64(s.n*b.N), impl.name+"-cpu-us/route")
			}
			group := "BGP → kernel (a BIRD ToR announces N prefixes)"
			for j, impl := range impls {
				base := ""
				var t *benchreport.Target
				if impl.name == "hostroute" {
					base = "bird"
					t = &benchreport.Target{Of: "ratio", Op: ">=", Value: map[int]float64{1_000: 0, 10_000: 1, 100_000: 0.5}[s.n]}
					if t.Value == 0 {
						t = nil
					}
				}
				name := func(what string, who string) string { return fmt.Sprintf("%s %s, %s prefixes", who, what, s.name) }
				fig := func(what, unit string, runs []float64, lower bool, t *benchreport.Target) {
					f := benchreport.Figure{Group: group, Name: name(what, impl.name), Unit: unit, Runs: runs, LowerIsBetter: lower, Target: t}
					if base != "" {
						f.Baseline = name(what, base)
					}
					benchreport.Record(b, f)
				}
				fig("install rate", "routes/s", results[j].addRates, false, t)
				fig("withdraw rate", "routes/s", results[j].delRates, false, nil)
				fig("CPU per route", "µs", results[j].cpuPer, true, nil)
				var rt *benchreport.Target
				if impl.name == "hostroute" && s.n == 100_000 {
					rt = &benchreport.Target{Of: "value", Op: "<=", Value: 150}
				}
				fig("RSS", "MB", results[j].rss, true, rt)
			}
			b.ReportMetric(rate(results[0].add)/rate(results[1].add), "ratio")
			b.ReportMetric(float64(pollTime.Microseconds())/1000/float64(max(polls, 1)), "poll-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// bbDetect freezes the ToR (SIGSTOP) and returns how long until node-1's route to the
// ToR's prefix left the kernel; then thaws it. Like (*lab).detect in routing_test.go.
func (l *bbLab) bbDetect(tb testing.TB, c *bbCounter, limit time.Duration) time.Duration {
	tb.Helper()
	c.wait(tb, time.Now(), -1, 1, 30*time.Second) // the session is (back) up
	time.Sleep(time.Second)                       // let BFD settle on its fast interval
	if err := l.bird.Freeze(); err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	for {
		if n, ok := c.count(tb); ok && n == 0 {
			break
		}
		if time.Since(start) > limit {
			_ = l.bird.Thaw()
			tb.Fatalf("route to %s still in the kernel %s after freezing the ToR", bbExtNet, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	if err := l.bird.Thaw(); err != nil {
		tb.Fatal(err)
	}
	return took
}

// BenchmarkWithdrawalBFDvsHold measures how long the routes of a ToR that freezes
// (SIGSTOP: the process hangs, the link stays up) stay in node-1's kernel: with BFD
// (100 ms × 3) and, as the baseline, with a 3 s BGP hold timer and no BFD. Each lab runs
// 3 rounds per b.N; the metrics are mean-ms, min-ms and max-ms per mode, and the parent
// logs the ratio. Polling is every 5 ms on a one-route table.
func BenchmarkWithdrawalBFDvsHold(b *testing.B) {
	const rounds = 3
	modes := []struct {
		name  string
		bfd   bool
		hold  time.Duration
		limit time.Duration
	}{
		{"bfd-100msx3", true, 0, 5 * time.Second},
		{"hold-3s", false, 3 * time.Second, 10 * time.Second},
	}
	means := map[string]float64{}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			setup := time.Now()
			l := bbNewLab(b, bbLabConfig{bfd: m.bfd, hold: m.hold})
			if m.bfd {
				l.e.Eventually(20*time.Second, "BFD session up in BIRD", func() string {
					out, _ := l.bird.Query("show bfd sessions")
					if !strings.Contains(out, "Up") {
						return out
					}
					return ""
				})
			}
			c := bbNewCounter(b, l.node.NS, bbProtoHR, bbExtNet)
			b.Logf("lab ready in %s", time.Since(setup).Round(time.Millisecond))
			var all []time.Duration
			for i := 0; i < b.N; i++ {
				for range rounds {
					took := l.bbDetect(b, c, m.limit)
					all = append(all, took)
				}
			}
			var sum, lo, hi time.Duration
			for i, d := range all {
				sum += d
				if i == 0 || d < lo {
					lo = d
				}
				hi = max(hi, d)
			}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			mean := ms(sum) / float64(len(all))
			means[m.name] = mean
			b.Logf("%s: %v", m.name, all)
			f := benchreport.Figure{Group: "Failure detection (the ToR freezes: SIGSTOP)", Name: "routes gone, " + m.name, Unit: "ms", Runs: durMs(all), LowerIsBetter: true}
			if m.bfd {
				f.Baseline = "routes gone, " + modes[1].name
				f.Target = &benchreport.Target{Of: "value", Op: "<=", Value: 1000}
			}
			benchreport.Record(b, f)
			b.ReportMetric(mean, "mean-ms")
			b.ReportMetric(ms(lo), "min-ms")
			b.ReportMetric(ms(hi), "max-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
	if bfd, hold := means[modes[0].name], means[modes[1].name]; bfd > 0 && hold > 0 {
		b.Logf("withdrawal after a frozen ToR: BFD %.0f ms, hold timer %.0f ms: BFD is %.1fx faster", bfd, hold, hold/bfd)
	}
}

// BenchmarkReflectorPropagation measures how long a new block takes to reach every other
// node: an IPAMBlock is assigned to node-1 (created in the API as the controller does),
// and the clock runs until the other 4 nodes of a 5-node cluster route it to node-1 (a
// kernel route with protocol 196 via node-1). With route reflection (node-5 reflects,
// nodeToNodeMesh off) and, as the baseline, with the full node-to-node mesh. Each lab
// runs 10 blocks per b.N, one at a time (each is deleted and withdrawn everywhere before
// the next). The path includes the control plane: every agent must see the
// block (the receivers' import policy accepts a block only from the node it is assigned
// to) and node-1 must advertise it; origin-ms is how long until node-1 itself had the
// block's blackhole, i.e. the API → agent part.
//
// Metrics: mean-ms and max-ms until all 4 receivers had the route, origin-ms, spread-ms
// (from the first node that had it, node-1 included, to the last: the BGP part). Polling
// is every 2 ms: the tables are tiny.
func BenchmarkReflectorPropagation(b *testing.B) {
	const (
		nodes  = 5
		rounds = 10
		rrPoll = 2 * time.Millisecond // tiny tables: a dump costs microseconds
	)
	modes := []struct {
		name      string
		reflector bool
	}{{"mesh-5nodes", false}, {"reflector-5nodes", true}}
	means := map[string]float64{}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			setup := time.Now()
			e := harness.NewEnv(b, bin)
			e.MakeFabric()
			e.Pool("pods", "10.200.0.0/16", 26, true)
			if m.reflector {
				cfg := &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{NodeToNodeMesh: bbPtr(false)}}
				cfg.Name = "default"
				if _, err := e.HR.BGPConfigurations.Create(e.Ctx, cfg); err != nil {
					b.Fatal(err)
				}
			}
			e.RunController(controller.Config{})
			var ns []*harness.Node
			for i := 1; i <= nodes; i++ {
				n := e.AddNode(fmt.Sprintf("node-%d", i), fmt.Sprintf("192.0.2.%d", i))
				ns = append(ns, n)
				b.Cleanup(func() {
					if b.Failed() {
						b.Logf("agent log of %s:\n%s", n.Name, bbTail(n.Log(), 40))
					}
				})
			}
			if m.reflector {
				patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}}}`, v1alpha1.LabelRouteReflector)
				if _, err := e.Kube.CoreV1().Nodes().Patch(e.Ctx, ns[nodes-1].Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			for _, n := range ns {
				n.WaitReady(30 * time.Second)
			}
			handles := nodeHandles(b, ns)
			// has reports whether node i routes dst (blackhole when via is empty).
			has := func(i int, dst netip.Prefix, via string) bool {
				rs, err := handles[i].RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{
					Dst: prefixNet(dst), Protocol: bbProtoHR,
				}, netlink.RT_FILTER_DST|netlink.RT_FILTER_PROTOCOL)
				if err != nil {
					return false // an interrupted dump: ask again
				}
				for _, r := range rs {
					if via == "" && r.Type == unix.RTN_BLACKHOLE || via != "" && r.Gw != nil && r.Gw.String() == via {
						return true
					}
				}
				return false
			}
			// The sessions are up once every node routes every other node's first block.
			e.Eventually(60*time.Second, "every node routes every other node's block", func() string {
				bs, err := e.HR.IPAMBlocks.List(e.Ctx, metav1.ListOptions{})
				if err != nil {
					return err.Error()
				}
				for _, blk := range bs.Items {
					owner := -1
					for j, n := range ns {
						if n.Name == blk.Spec.Node {
							owner = j
						}
					}
					if owner < 0 {
						return "block of an unknown node: " + blk.Spec.Node
					}
					for i := range ns {
						if i != owner && !has(i, netip.MustParsePrefix(blk.Spec.CIDR), ns[owner].Addr) {
							return fmt.Sprintf("%s has no route to %s via %s", ns[i].Name, blk.Spec.CIDR, ns[owner].Addr)
						}
					}
				}
				if len(bs.Items) < nodes {
					return fmt.Sprintf("%d blocks, want %d", len(bs.Items), nodes)
				}
				return ""
			})
			b.Logf("lab ready in %s", time.Since(setup).Round(time.Millisecond))

			var all, origin, spread []time.Duration
			for i := 0; i < b.N; i++ {
				for r := range rounds {
					pfx := netip.MustParsePrefix(fmt.Sprintf("10.200.%d.0/26", 200+(i*rounds+r)%50))
					blk := &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: pfx.String(), Pool: "pods", Node: ns[0].Name}}
					blk.Name = controller.BlockName(pfx)
					start := time.Now()
					if _, err := e.HR.IPAMBlocks.Create(e.Ctx, blk); err != nil {
						b.Fatal(err)
					}
					// seen[j] is when node j first had the route (node 0: its blackhole).
					seen := make([]time.Duration, nodes)
					for left := nodes; left > 0; {
						now := time.Since(start)
						for j := range ns {
							via := ns[0].Addr
							if j == 0 {
								via = ""
							}
							if seen[j] == 0 && has(j, pfx, via) {
								seen[j] = now
								left--
							}
						}
						if now > 30*time.Second {
							b.Fatalf("block %s not on every node after %s: first seen %v", pfx, now, seen)
						}
						time.Sleep(rrPoll)
					}
					last := slices.Max(seen[1:])
					all = append(all, last)
					origin = append(origin, seen[0])
					spread = append(spread, last-min(seen[0], slices.Min(seen[1:])))
					if err := e.HR.IPAMBlocks.Delete(e.Ctx, blk.Name, metav1.DeleteOptions{}); err != nil {
						b.Fatal(err)
					}
					for j := 1; j < nodes; j++ { // withdrawn everywhere before the next round
						e.Eventually(30*time.Second, "block route withdrawn", func() string {
							if has(j, pfx, ns[0].Addr) {
								return ns[j].Name + " still routes " + pfx.String()
							}
							return ""
						})
					}
				}
			}
			mean := func(ds []time.Duration) float64 {
				var s time.Duration
				for _, d := range ds {
					s += d
				}
				return float64(s.Microseconds()) / 1000 / float64(len(ds))
			}
			var hi time.Duration
			for _, d := range all {
				hi = max(hi, d)
			}
			means[m.name] = mean(all)
			b.Logf("%s: on every node after %v (node-1's own blackhole after %v)", m.name, all, origin)
			if m.reflector {
				// Only reflector sessions: node-2 talks BGP to node-5 and no one else.
				out, err := netns.Output(ns[1].NS, "ss", "-Htn", "state", "established", "( sport = :179 or dport = :179 )")
				if err != nil {
					b.Fatal(err)
				}
				for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
					if !strings.Contains(line, ns[nodes-1].Addr+":") {
						b.Fatalf("node-2 has a BGP session with someone other than the reflector %s:\n%s", ns[nodes-1].Addr, out)
					}
				}
			}
			f := benchreport.Figure{Group: "A new block reaches every other node (5 nodes)", Name: m.name, Unit: "ms", Runs: durMs(all), LowerIsBetter: true}
			if m.reflector {
				f.Baseline = modes[0].name
			}
			benchreport.Record(b, f)
			b.ReportMetric(mean(all), "mean-ms")
			b.ReportMetric(float64(hi.Microseconds())/1000, "max-ms")
			b.ReportMetric(mean(origin), "origin-ms")
			b.ReportMetric(mean(spread), "spread-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
	if mesh, rr := means[modes[0].name], means[modes[1].name]; mesh > 0 && rr > 0 {
		b.Logf("a new block on all other nodes: full mesh %.0f ms, route reflector %.0f ms (%.2fx)", mesh, rr, rr/mesh)
	}
}

// durMs converts durations to milliseconds for the report.
func durMs(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d.Microseconds()) / 1000
	}
	return out
}
