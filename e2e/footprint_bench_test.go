package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/benchreport"
	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// BenchmarkFootprint measures what hostroute costs a node when it does nothing special:
// the binaries' sizes (as `make build` makes them), and the resident memory of the agent,
// its BFD daemon and the controller in a two-node lab, idle and with 100 pods on the
// node. (RSS with 10k and 100k learned routes is in BenchmarkBGPToKernel.)
func BenchmarkFootprint(b *testing.B) {
	group := "Footprint"
	for _, name := range []string{"hostroute-node", "hostroute-cni", "hostroute-controller", "routectl"} {
		fi, err := os.Stat(filepath.Join(bin, name))
		if err != nil {
			b.Fatal(err)
		}
		benchreport.Record(b, benchreport.Figure{Group: group, Name: name + " binary", Unit: "MB", Runs: []float64{float64(fi.Size()) / 1e6}, LowerIsBetter: true})
	}
	l := harness.NewLab(b, bin, netns.OwnedPrefix(harness.NSPrefix), harness.LabOptions{Nodes: 2, Controllers: 1})
	l.WaitMesh(30 * time.Second)
	n := l.Nodes[0]
	rounds := benchRounds()
	sample := func() (agent, bfdd, ctl float64) {
		return rssMB(b, n.PID()), rssMB(b, n.BFDPID()), rssMB(b, l.Controllers[0].Process.Pid)
	}
	var agentIdle, bfdIdle, ctlIdle []float64
	time.Sleep(5 * time.Second)
	for r := 0; r < rounds; r++ {
		a, d, c := sample()
		agentIdle, bfdIdle, ctlIdle = append(agentIdle, a), append(bfdIdle, d), append(ctlIdle, c)
		time.Sleep(2 * time.Second)
	}
	// 100 pods, 8 at a time.
	pods := make([]*harness.Pod, 100)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	errs := make(chan error, len(pods))
	for i := range pods {
		pods[i] = n.NewPod(fmt.Sprintf("fp-%d", i))
		wg.Add(1)
		go func(p *harness.Pod) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := p.Add(); err != nil {
				errs <- err
			}
		}(pods[i])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	var agent100 []float64
	for r := 0; r < rounds; r++ {
		a, _, _ := sample()
		agent100 = append(agent100, a)
		time.Sleep(time.Second)
	}
	benchreport.Record(b, benchreport.Figure{Group: group, Name: "agent RSS, idle", Unit: "MB", Runs: agentIdle, LowerIsBetter: true,
		Target: &benchreport.Target{Of: "value", Op: "<=", Value: 50}})
	benchreport.Record(b, benchreport.Figure{Group: group, Name: "agent RSS, 100 pods", Unit: "MB", Runs: agent100, LowerIsBetter: true})
	benchreport.Record(b, benchreport.Figure{Group: group, Name: "BFD daemon RSS, idle", Unit: "MB", Runs: bfdIdle, LowerIsBetter: true})
	benchreport.Record(b, benchreport.Figure{Group: group, Name: "controller RSS, 2 nodes", Unit: "MB", Runs: ctlIdle, LowerIsBetter: true})
	b.ReportMetric(benchreport.Summarize(agentIdle).Median, "agent-idle-MB")
	b.ReportMetric(0, "ns/op")
}

// rssMB is a process's resident set in MB (VmRSS).
func rssMB(tb testing.TB, pid int) float64 {
	tb.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	tb.Fatalf("no VmRSS for pid %d", pid)
	return 0
}
