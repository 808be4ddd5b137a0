package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/e2e/harness"
)

// BenchmarkCNIAdd measures CNI ADD latency of the real hostroute-cni binary against a
// running agent, and of Debian's ptp + host-local plugins in the same node namespace in
// the same run, as the baseline. Only the ADD is timed; namespace creation and DEL are not.
func BenchmarkCNIAdd(b *testing.B) {
	e := harness.NewEnv(b, bin)
	e.Pool("pods", "10.110.0.0/16", 24, true)
	e.RunController(controller.Config{})
	n := e.AddNode("bench", "192.0.2.1")
	n.WaitReady(20 * time.Second)

	ptpConf := []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ptp","type":"ptp","ipMasq":false,"mtu":1500,
		"ipam":{"type":"host-local","subnet":"10.120.0.0/16","dataDir":%q}}`, filepath.Join(b.TempDir(), "host-local")))
	ptp := func(command string, p *harness.Pod) error {
		cmd := exec.Command("ip", "netns", "exec", n.NS, "/usr/lib/cni/ptp")
		cmd.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_CONTAINERID="+p.ContainerID,
			"CNI_NETNS=/run/netns/"+p.NS, "CNI_IFNAME=eth0", "CNI_PATH=/usr/lib/cni")
		cmd.Stdin = bytesReader(ptpConf)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("ptp %s: %w: %s", command, err, out)
		}
		return nil
	}
	if _, err := os.Stat("/usr/lib/cni/ptp"); err != nil {
		b.Fatalf("the baseline needs Debian's containernetworking-plugins (make deps): %v", err)
	}

	impls := []struct {
		name     string
		add, del func(*harness.Pod) error
		lat      []time.Duration
	}{
		{name: "hostroute", add: (*harness.Pod).Add, del: (*harness.Pod).Del},
		{name: "ptp+host-local", add: func(p *harness.Pod) error { return ptp("ADD", p) }, del: func(p *harness.Pod) error { return ptp("DEL", p) }},
	}
	// The two plugins alternate (in alternating order) within one loop, so noise from
	// the machine falls on both alike and the ratio is meaningful.
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range impls {
			impl := &impls[(i+j)%len(impls)]
			b.StopTimer()
			p := n.NewPod(fmt.Sprintf("b-%d-%d", i, j))
			b.StartTimer()
			start := time.Now()
			if err := impl.add(p); err != nil {
				b.Fatal(err)
			}
			impl.lat = append(impl.lat, time.Since(start))
			b.StopTimer()
			if err := impl.del(p); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
	b.StopTimer()
	var p50 []float64
	for _, impl := range impls {
		sort.Slice(impl.lat, func(i, j int) bool { return impl.lat[i] < impl.lat[j] })
		ms := func(q int) float64 { return float64(impl.lat[len(impl.lat)*q/100].Microseconds()) / 1000 }
		b.ReportMetric(ms(50), impl.name+"-p50-ms")
		b.ReportMetric(ms(99), impl.name+"-p99-ms")
		p50 = append(p50, ms(50))
	}
	b.ReportMetric(p50[0]/p50[1], "p50-ratio")
	b.ReportMetric(0, "ns/op")
}
