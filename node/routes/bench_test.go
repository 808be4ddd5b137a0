package routes

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hostroute/hostroute/internal/benchreport"
)

// BenchmarkKernelRoutes measures how fast hostroute's Netlink kernel writes and reads
// routes in a namespace of its own: N routes installed one Replace at a time (what the
// agent does per BGP best-path event), a full Reconcile with all N already present (the
// periodic resync: it must change nothing), and N Deletes. The baseline in the same run
// is iproute2 installing (and deleting) the same N routes from one `ip -batch` file.
//
// Metrics: netlink-routes/s, ipbatch-routes/s and their ratio (netlink/ipbatch) for the
// install; the same for deletion (del-); resync-ms for the no-op Reconcile and dump-ms
// for the List (kernel dump) alone.
func BenchmarkKernelRoutes(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) { benchKernelRoutes(b, n) })
	}
}

// benchPrefix is the i-th /26 in 10.0.0.0/8 (262,144 of them), the size of a pod block.
func benchPrefix(i int) netip.Prefix {
	a := uint32(10)<<24 | uint32(i)<<6
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), 26)
}

func benchKernelRoutes(b *testing.B, n int) {
	k, ns := kernelNS(b)
	gw := netip.MustParseAddr("192.0.2.2")
	want := make([]Route, n)
	var add, del strings.Builder
	for i := range want {
		want[i] = Route{Dst: benchPrefix(i), NextHops: []netip.Addr{gw}}
		fmt.Fprintf(&add, "route replace %s via %s proto %d\n", want[i].Dst, gw, Protocol)
		fmt.Fprintf(&del, "route del %s via %s proto %d\n", want[i].Dst, gw, Protocol)
	}
	dir := b.TempDir()
	addFile, delFile := filepath.Join(dir, "add.batch"), filepath.Join(dir, "del.batch")
	if err := os.WriteFile(addFile, []byte(add.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(delFile, []byte(del.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	count := func(what string, wantN int) {
		b.Helper()
		rs, err := k.List()
		if err != nil {
			b.Fatal(err)
		}
		if len(rs) != wantN {
			b.Fatalf("%s: %d routes with protocol %d in the kernel, want %d", what, len(rs), Protocol, wantN)
		}
	}
	ipBatch := func(file string) time.Duration {
		b.Helper()
		start := time.Now()
		if out, err := exec.Command("ip", "-n", ns, "-batch", file).CombinedOutput(); err != nil {
			b.Fatalf("ip -n %s -batch %s: %v: %.500s", ns, file, err, out)
		}
		return time.Since(start)
	}

	var nlAdd, nlDel, ipAdd, ipDel, resync, dump time.Duration
	ours := func() {
		start := time.Now()
		for _, r := range want {
			if err := k.Replace(r); err != nil {
				b.Fatalf("replace %s: %v", r, err)
			}
		}
		nlAdd += time.Since(start)
		b.StopTimer()
		count("after Replace", n)
		b.StartTimer()

		start = time.Now()
		if _, err := k.List(); err != nil {
			b.Fatal(err)
		}
		dump += time.Since(start)

		start = time.Now()
		d, err := Reconcile(k, want)
		resync += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if !d.Empty() {
			b.Fatalf("a resync with every route present changed %d/%d routes", len(d.Replace), len(d.Delete))
		}

		start = time.Now()
		for _, r := range want {
			if err := k.Delete(r); err != nil {
				b.Fatalf("delete %s: %v", r, err)
			}
		}
		nlDel += time.Since(start)
		b.StopTimer()
		count("after Delete", 0)
		b.StartTimer()
	}
	baseline := func() {
		ipAdd += ipBatch(addFile)
		b.StopTimer()
		count("after ip -batch replace", n)
		b.StartTimer()
		ipDel += ipBatch(delFile)
		b.StopTimer()
		count("after ip -batch del", 0)
		b.StartTimer()
	}

	var nlRates, ipRates []float64 // per iteration, for the report
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		nl0, ip0 := nlAdd, ipAdd
		// Alternate which goes first, so a cold FIB (first allocation of trie nodes)
		// does not always fall on the same side.
		if i%2 == 0 {
			ours()
			baseline()
		} else {
			baseline()
			ours()
		}
		nlRates = append(nlRates, float64(n)/(nlAdd-nl0).Seconds())
		ipRates = append(ipRates, float64(n)/(ipAdd-ip0).Seconds())
	}
	b.StopTimer()
	group := "Kernel route writes (one netlink Replace per route)"
	benchreport.Record(b, benchreport.Figure{Group: group, Name: fmt.Sprintf("ip -batch, %dk routes", n/1000), Unit: "routes/s", Runs: ipRates})
	benchreport.Record(b, benchreport.Figure{Group: group, Name: fmt.Sprintf("hostroute, %dk routes", n/1000), Unit: "routes/s", Runs: nlRates,
		Baseline: fmt.Sprintf("ip -batch, %dk routes", n/1000)})

	rate := func(d time.Duration) float64 { return float64(n) * float64(b.N) / d.Seconds() }
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(rate(nlAdd), "netlink-routes/s")
	b.ReportMetric(rate(ipAdd), "ipbatch-routes/s")
	b.ReportMetric(rate(nlAdd)/rate(ipAdd), "ratio")
	b.ReportMetric(rate(nlDel), "netlink-del-routes/s")
	b.ReportMetric(rate(ipDel), "ipbatch-del-routes/s")
	b.ReportMetric(rate(nlDel)/rate(ipDel), "del-ratio")
	b.ReportMetric(ms(resync), "resync-ms")
	b.ReportMetric(ms(dump), "dump-ms")
	b.ReportMetric(0, "ns/op")
}
