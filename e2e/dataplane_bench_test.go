package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/benchreport"
	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// dpPath is one way through the lab that the data-plane benchmark measures.
type dpPath struct {
	name     string
	from, to string // namespaces
	dst      string // the server's address
	baseline string // the path it is compared with ("" for a baseline)
}

// Overlay addresses of the VXLAN baseline (see setupVXLAN).
const (
	vxPodA, vxPodB = "10.98.1.1", "10.98.2.1"
	dpRRPort       = 7000
	iperfPort      = "5201"
)

// BenchmarkDataPlane measures what a user compares first: how fast pods talk. In the
// lab topology (two nodes on one segment behind the BIRD ToR, an external host behind the
// ToR), with iperf3 (1 and 4 TCP streams, 2 s each) and a 1-byte TCP request/response:
// pod → pod across nodes, on one node, pod → external, against node → node and node →
// external over the same path (the baselines), and against the same two pods over a VXLAN
// overlay set up here (the overlay a pod network without routing would use: MTU 1450).
// Everything twice, offloads on and off on every interface of the lab (offloads on is
// what users run; off is what keeps runs comparable). Paths are interleaved round by
// round so that noise falls on all alike. Rounds: $HOSTROUTE_BENCH_ROUNDS (default 3).
func BenchmarkDataPlane(b *testing.B) {
	for _, tool := range []string{"iperf3", "ethtool"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Fatalf("%s is needed (make deps installs it): %v", tool, err)
		}
	}
	rounds := benchRounds()
	l := harness.NewLab(b, bin, netns.OwnedPrefix(harness.NSPrefix), harness.LabOptions{Nodes: 2, PodsPerNode: 2})
	l.WaitMesh(30 * time.Second)
	n1, n2 := l.Nodes[0], l.Nodes[1]
	podA, podA2, podB := l.Pods[0], l.Pods[1], l.Pods[2]
	setupVXLAN(b, n1, n2, podA, podB)
	paths := []dpPath{
		{name: "node → node", from: n1.NS, to: n2.NS, dst: n2.Addr},
		{name: "pod → pod, across nodes", from: podA.NS, to: podB.NS, dst: podB.IP, baseline: "node → node"},
		{name: "pod → pod, VXLAN overlay", from: podA.NS, to: podB.NS, dst: vxPodB, baseline: "node → node"},
		{name: "pod → pod, same node", from: podA.NS, to: podA2.NS, dst: podA2.IP, baseline: "node → node"},
		{name: "node → external", from: n1.NS, to: l.ExtNS, dst: harness.ExtAddr},
		{name: "pod → external", from: podA.NS, to: l.ExtNS, dst: harness.ExtAddr, baseline: "node → external"},
	}
	for _, ns := range []string{n2.NS, podB.NS, podA2.NS, l.ExtNS} {
		startIperfServer(b, ns)
		startRRServer(b, ns)
	}
	all := append([]string{l.TorNS, l.ExtNS}, nsOf(l)...)
	b.ResetTimer()
	for _, offloads := range []bool{true, false} {
		setOffloads(b, all, offloads)
		group := "Data plane, offloads on"
		if !offloads {
			group = "Data plane, offloads off"
		}
		tput := map[string][]float64{} // path + streams → Gbit/s per round
		rr := map[string][]float64{}   // path → p50 µs per round
		for round := 0; round < rounds; round++ {
			order := slices.Clone(paths)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, p := range order {
				for _, streams := range []int{1, 4} {
					tput[key(p.name, streams)] = append(tput[key(p.name, streams)], iperf(b, p, streams))
				}
				rr[p.name] = append(rr[p.name], rrP50(b, p))
			}
		}
		for _, p := range paths {
			for _, streams := range []int{1, 4} {
				f := benchreport.Figure{Group: group, Name: key(p.name, streams), Unit: "Gbit/s", Runs: tput[key(p.name, streams)]}
				if p.baseline != "" {
					f.Baseline = key(p.baseline, streams)
				}
				if offloads && p.name == "pod → pod, across nodes" {
					f.Target = &benchreport.Target{Of: "ratio", Op: ">=", Value: map[int]float64{1: 0.90, 4: 0.95}[streams]}
				}
				benchreport.Record(b, f)
				b.ReportMetric(benchreport.Summarize(f.Runs).Median, fmt.Sprintf("%s/%s-Gbit/s", shortOffloads(offloads), short(p.name, streams)))
			}
			f := benchreport.Figure{Group: group, Name: p.name + ", 1-byte TCP request/response p50", Unit: "µs", Runs: rr[p.name], LowerIsBetter: true}
			if p.baseline != "" {
				f.Baseline = p.baseline + ", 1-byte TCP request/response p50"
			}
			benchreport.Record(b, f)
		}
		// The targets that are not plain ratios.
		for _, streams := range []int{1, 4} {
			f := benchreport.Figure{Group: group, Name: key("pod → pod, across nodes", streams) + " (vs VXLAN)", Unit: "Gbit/s",
				Runs: tput[key("pod → pod, across nodes", streams)], Baseline: key("pod → pod, VXLAN overlay", streams)}
			if !offloads {
				f.Target = &benchreport.Target{Of: "ratio", Op: ">=", Value: 2}
			}
			benchreport.Record(b, f)
		}
		added := make([]float64, rounds)
		for i := range added {
			added[i] = rr["pod → pod, across nodes"][i] - rr["node → node"][i]
		}
		f := benchreport.Figure{Group: group, Name: "pod → pod, across nodes: added request/response p50", Unit: "µs", Runs: added, LowerIsBetter: true}
		if offloads {
			f.Target = &benchreport.Target{Of: "value", Op: "<=", Value: 2}
		}
		benchreport.Record(b, f)
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
}

func key(path string, streams int) string {
	if streams == 1 {
		return path + ", 1 stream"
	}
	return fmt.Sprintf("%s, %d streams", path, streams)
}

func short(path string, streams int) string {
	s := []rune{}
	for _, r := range path {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			s = append(s, r)
		}
	}
	return fmt.Sprintf("%s-%dx", string(s), streams)
}

func shortOffloads(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// nsOf lists the lab's node and pod namespaces.
func nsOf(l *harness.Lab) []string {
	var out []string
	for _, n := range l.Nodes {
		out = append(out, n.NS)
	}
	for _, p := range l.Pods {
		out = append(out, p.NS)
	}
	return out
}

// startIperfServer runs iperf3 -s in ns until the benchmark ends.
func startIperfServer(b *testing.B, ns string) {
	cmd := exec.Command("ip", "netns", "exec", ns, "iperf3", "-s", "-p", iperfPort)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	time.Sleep(100 * time.Millisecond)
}

// iperf runs one iperf3 test and returns the receiver's Gbit/s.
func iperf(b *testing.B, p dpPath, streams int) float64 {
	b.Helper()
	var out []byte
	var err error
	for attempt := 0; attempt < 3; attempt++ { // the server takes one test at a time: retry if busy
		out, err = exec.Command("ip", "netns", "exec", p.from, "iperf3", "-c", p.dst, "-p", iperfPort,
			"-t", "2", "-P", strconv.Itoa(streams), "-J").Output()
		if err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		b.Fatalf("iperf3 %s: %v\n%s", p.name, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.End.SumReceived.BitsPerSecond == 0 {
		b.Fatalf("iperf3 %s: no result (%v):\n%s", p.name, err, out)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9
}

// startRRServer echoes every byte it reads, on dpRRPort in ns (all addresses).
func startRRServer(b *testing.B, ns string) {
	ln, err := netns.ListenIn(ns, "tcp", fmt.Sprintf(":%d", dpRRPort))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
}

// rrP50 sends 1 byte and waits for it back, 3000 times after 200 warm-up exchanges, and
// returns the median in µs.
func rrP50(b *testing.B, p dpPath) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := netns.DialIn(ctx, p.from, "tcp", net.JoinHostPort(p.dst, strconv.Itoa(dpRRPort)))
	if err != nil {
		b.Fatalf("request/response %s: %v", p.name, err)
	}
	defer c.Close()
	buf := []byte{1}
	lat := make([]float64, 0, 3000)
	for i := 0; i < 3200; i++ {
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		if i >= 200 {
			lat = append(lat, float64(time.Since(start).Nanoseconds())/1000)
		}
	}
	return benchreport.Summarize(lat).Median
}

// setOffloads turns TSO, GSO and GRO on or off on every interface of the namespaces
// (interfaces that cannot change a feature keep it; ethtool's complaint is ignored).
func setOffloads(b *testing.B, nss []string, on bool) {
	b.Helper()
	v := "off"
	if on {
		v = "on"
	}
	for _, ns := range nss {
		h, err := netns.Handle(ns)
		if err != nil {
			b.Fatal(err)
		}
		links, err := h.LinkList()
		h.Close()
		if err != nil {
			b.Fatal(err)
		}
		for _, lk := range links {
			if lk.Attrs().Name == "lo" {
				continue
			}
			_ = exec.Command("ip", "netns", "exec", ns, "ethtool", "-K", lk.Attrs().Name, "tso", v, "gso", v, "gro", v).Run()
		}
	}
}

// hostIf is the node-side interface of the pod at ip: the device of the node's route.
func hostIf(b *testing.B, n *harness.Node, ip string) string {
	b.Helper()
	h, err := netns.Handle(n.NS)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	rs, err := h.RouteGet(netip.MustParseAddr(ip).AsSlice())
	if err != nil || len(rs) == 0 {
		b.Fatalf("route to pod %s on %s: %v", ip, n.Name, err)
	}
	lk, err := h.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		b.Fatal(err)
	}
	return lk.Attrs().Name
}

// setupVXLAN gives podA and podB a second address each, reachable only over a VXLAN
// tunnel between their nodes (VNI 42, UDP 4789, MTU 1450 in the pods' routes): the same
// veths and nodes as the routed path, plus encapsulation.
func setupVXLAN(b *testing.B, n1, n2 *harness.Node, podA, podB *harness.Pod) {
	b.Helper()
	side := func(n, peer *harness.Node, tunAddr, peerTun string, pod *harness.Pod, podAddr, peerNet string) [][]string {
		hif := hostIf(b, n, pod.IP)
		return [][]string{
			{n.NS, "ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "local", n.Addr, "remote", peer.Addr, "dstport", "4789", "dev", "up0"},
			{n.NS, "ip", "addr", "add", tunAddr + "/24", "dev", "vx0"},
			{n.NS, "ip", "link", "set", "vx0", "up"},
			{n.NS, "ip", "route", "add", podAddr + "/32", "dev", hif},
			{n.NS, "ip", "route", "add", peerNet, "via", peerTun, "dev", "vx0"},
			{pod.NS, "ip", "addr", "add", podAddr + "/32", "dev", "eth0"},
			{pod.NS, "ip", "route", "add", peerNet, "via", "169.254.1.1", "dev", "eth0", "mtu", "1450", "src", podAddr},
		}
	}
	cmds := append(side(n1, n2, "10.99.0.1", "10.99.0.2", podA, vxPodA, "10.98.2.0/24"),
		side(n2, n1, "10.99.0.2", "10.99.0.1", podB, vxPodB, "10.98.1.0/24")...)
	for _, c := range cmds {
		if err := netns.Exec(c[0], c[1:]...); err != nil {
			b.Fatalf("vxlan set-up: %v", err)
		}
	}
	if out, err := netns.Output(podA.NS, "ping", "-c1", "-W2", vxPodB); err != nil {
		b.Fatalf("pod → pod over VXLAN: %v\n%s", err, out)
	}
}
