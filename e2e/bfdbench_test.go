package e2e_test

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hostroute/hostroute/internal/benchreport"
	birdtest "github.com/hostroute/hostroute/internal/testenv/bird"
	"github.com/hostroute/hostroute/internal/testenv/netns"
	"github.com/hostroute/hostroute/node/bfdd"
	"github.com/hostroute/hostroute/routing/bfd"
)

// BenchmarkBFDIdleCPU measures what BFD costs while nothing happens: N sessions at
// 100 ms × 3 between hostroute's BFD daemon (hostroute-node bfd) in one namespace and
// BIRD's BFD in another, each side's CPU over the same 20 s, so both do the same work
// (send 10 packets/s per session, receive as many). Session i runs between 10.77.0.i
// (ours) and 10.77.128.i (BIRD's), one veth between the namespaces. N = 25 and 100.
func BenchmarkBFDIdleCPU(b *testing.B) {
	for _, n := range []int{25, 100} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchBFDIdle(b, n) })
	}
}

func benchBFDIdle(b *testing.B, n int) {
	prefix := netns.OwnedPrefix("hrb-")
	ours, theirs := netns.ForTest(b, prefix+"a-"), netns.ForTest(b, prefix+"b-")
	cmds := [][]string{
		{ours, "ip", "link", "add", "a0", "type", "veth", "peer", "name", "b0", "netns", theirs},
		{ours, "ip", "link", "set", "a0", "up"}, {theirs, "ip", "link", "set", "b0", "up"},
	}
	var conf strings.Builder
	conf.WriteString("log stderr all;\nrouter id 10.77.128.1;\nprotocol device {}\nprotocol bfd {\n  interface \"b0\" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };\n")
	for i := 1; i <= n; i++ {
		a, p := bfdBenchAddr(0, i), bfdBenchAddr(1, i)
		cmds = append(cmds, []string{ours, "ip", "addr", "add", a.String() + "/16", "dev", "a0"}, []string{theirs, "ip", "addr", "add", p.String() + "/16", "dev", "b0"})
		fmt.Fprintf(&conf, "  neighbor %s dev \"b0\" local %s;\n", a, p)
	}
	conf.WriteString("}\n")
	for _, c := range cmds {
		if err := netns.Exec(c[0], c[1:]...); err != nil {
			b.Fatal(err)
		}
	}
	bird := birdtest.Start(b, theirs, conf.String())
	sock := filepath.Join(b.TempDir(), "bfd.sock")
	daemon := exec.Command("ip", "netns", "exec", ours, filepath.Join(bin, "hostroute-node"), "bfd", "--socket", sock, "--log-level", "warn")
	if err := daemon.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = daemon.Process.Kill(); _ = daemon.Wait() })
	c := bfdd.Dial(slog.New(slog.DiscardHandler), sock)
	defer c.Close()
	for i := 1; i <= n; i++ {
		if err := c.Add(bfdBenchAddr(1, i), bfdBenchAddr(0, i), bfd.Config{}); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		up := 0
		for _, s := range c.Sessions() {
			if s.State == bfd.Up && s.TxInterval == 100*time.Millisecond {
				up++
			}
		}
		if up == n {
			break
		}
		if time.Now().After(deadline) {
			out, _ := bird.Query("show bfd sessions")
			b.Fatalf("%d of %d sessions Up at 100 ms after 60 s; BIRD:\n%s", up, n, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // settle on the fast interval
	rounds := benchRounds()
	var oursPct, birdPct []float64
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		o0, b0, t0 := bbCPU(b, daemon.Process.Pid), bbCPU(b, bird.PID()), time.Now()
		time.Sleep(20 * time.Second / time.Duration(rounds))
		el := time.Since(t0)
		// CPU as % of one core, per session.
		oursPct = append(oursPct, 100*(bbCPU(b, daemon.Process.Pid)-o0).Seconds()/el.Seconds()/float64(n))
		birdPct = append(birdPct, 100*(bbCPU(b, bird.PID())-b0).Seconds()/el.Seconds()/float64(n))
	}
	b.StopTimer()
	for _, s := range c.Sessions() {
		if s.State != bfd.Up {
			b.Fatalf("session %s left Up while idle: %v", s.Peer, s.State)
		}
	}
	group := "BFD idle CPU (100 ms × 3, % of one core per session)"
	name := func(who string) string { return fmt.Sprintf("%s, %d sessions", who, n) }
	benchreport.Record(b, benchreport.Figure{Group: group, Name: name("BIRD 2 bfd"), Unit: "% core", Runs: birdPct, LowerIsBetter: true})
	benchreport.Record(b, benchreport.Figure{Group: group, Name: name("hostroute-node bfd"), Unit: "% core", Runs: oursPct, LowerIsBetter: true,
		Baseline: name("BIRD 2 bfd"), Target: &benchreport.Target{Of: "ratio", Op: "<=", Value: 1}})
	b.ReportMetric(benchreport.Summarize(oursPct).Median, "hostroute-pct/session")
	b.ReportMetric(benchreport.Summarize(birdPct).Median, "bird-pct/session")
	b.ReportMetric(0, "ns/op")
}

// bfdBenchAddr is session i's address on side 0 (ours: 10.77.0.i) or 1 (BIRD's: 10.77.128.i).
func bfdBenchAddr(side, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 77, byte(side*128 + i/256), byte(i % 256)})
}
