package e2e_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/benchreport"
	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// podPlugin is one CNI implementation the pod start-up benchmark drives.
type podPlugin struct {
	name     string
	add, del func(*harness.Pod) error
	// objects, when set, creates the batch's Pod objects before its ADDs (untimed, as the
	// scheduler's binding precedes a kubelet's ADD) and deletes them after its DELs.
	objects func(pods []*harness.Pod, create bool) error
}

// BenchmarkPodStartup measures pod start-up as the runtime sees it: CNI ADD and DEL of the
// real hostroute-cni binary against a running agent, against Debian's ptp + host-local and
// bridge + host-local on the same node namespace, in the same run, interleaved round by
// round; with 1 request at a time and with 8 concurrent (pods/s is pods over wall time).
// hostroute's pods are Pod objects bound to the node, as on a cluster (the agent reads them
// from its cache); a second hostroute series has every pod's pool named by a pod annotation
// in a namespace whose annotation names another, against the first as its baseline.
// Every plugin is started in the node's namespace with setns alone (nsenter --net), as
// close as a namespace lab gets to a runtime calling it on the host. Then the time from a returned ADD until another node's TCP
// connect to the new pod succeeds: hostroute routes a node's whole block, so no route has
// to travel per pod. Rounds: $HOSTROUTE_BENCH_ROUNDS (default 3).
func BenchmarkPodStartup(b *testing.B) {
	rounds := benchRounds()
	e := harness.NewEnv(b, bin)
	e.MakeFabric()
	e.Pool("pods", "10.110.0.0/16", 24, true)
	e.RunController(controller.Config{})
	n := e.AddNode("bench", "192.0.2.1")
	other := e.AddNode("other", "192.0.2.2")
	n.WaitReady(20 * time.Second)
	other.WaitReady(20 * time.Second)
	for _, p := range []string{"/usr/lib/cni/ptp", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local"} {
		if _, err := os.Stat(p); err != nil {
			b.Fatalf("the baselines need Debian's containernetworking-plugins (make deps): %v", err)
		}
	}
	other4 := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench-annotated",
		Annotations: map[string]string{v1alpha1.AnnotationIPv4Pools: "pods-other"}}}
	if _, err := e.Kube.CoreV1().Namespaces().Create(e.Ctx, other4, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	e.Pool("pods-other", "10.111.0.0/16", 24, true)
	hr := execPlugin(n, "hostroute", filepath.Join(bin, "hostroute-cni"), n.NetConf(), bin+":/usr/lib/cni")
	hr.objects = podObjects(e, "default", nil)
	annotated := execPlugin(n, "hostroute with pool annotations", filepath.Join(bin, "hostroute-cni"), n.NetConf(), bin+":/usr/lib/cni")
	annotated.objects = podObjects(e, "bench-annotated", map[string]string{v1alpha1.AnnotationIPv4Pools: `["pods"]`})
	plugins := []podPlugin{
		hr, annotated,
		debianPlugin(b, n, "ptp+host-local", `"type":"ptp","ipMasq":false,"mtu":1500`, "10.120.0.0/16"),
		debianPlugin(b, n, "bridge+host-local", `"type":"bridge","bridge":"hrbench0","isGateway":true,"ipMasq":false`, "10.130.0.0/16"),
	}
	b.ResetTimer()
	for _, conc := range []int{1, 8} {
		perRound := 60
		if conc > 1 {
			perRound = 8 * 12
		}
		nss := make([]string, conc)
		for i := range nss {
			nss[i] = netns.ForTest(b, e.Prefix+"p-")
		}
		type acc struct{ addP50, addP99, delP50, delP99, rate []float64 }
		res := map[string]*acc{}
		for r := 0; r < rounds; r++ {
			for j := range plugins {
				pl := plugins[(r+j)%len(plugins)]
				if res[pl.name] == nil {
					res[pl.name] = &acc{}
				}
				adds, dels, wall := runPods(b, n, pl, nss, perRound, r)
				a, d := benchreport.Summarize(adds), benchreport.Summarize(dels)
				res[pl.name].addP50 = append(res[pl.name].addP50, a.Median)
				res[pl.name].addP99 = append(res[pl.name].addP99, quantile(adds, 0.99))
				res[pl.name].delP50 = append(res[pl.name].delP50, d.Median)
				res[pl.name].delP99 = append(res[pl.name].delP99, quantile(dels, 0.99))
				res[pl.name].rate = append(res[pl.name].rate, float64(perRound)/wall.Seconds())
			}
		}
		group := fmt.Sprintf("Pod start-up, %d at a time", conc)
		for _, pl := range plugins {
			x := res[pl.name]
			base := ""
			switch pl.name {
			case "hostroute":
				base = "ptp+host-local"
			case annotated.name:
				base = "hostroute"
			}
			fig := func(what, unit string, runs []float64, lower bool, t *benchreport.Target) {
				f := benchreport.Figure{Group: group, Name: pl.name + " " + what, Unit: unit, Runs: runs, LowerIsBetter: lower, Target: t}
				if base != "" {
					f.Baseline = base + " " + what
				}
				benchreport.Record(b, f)
			}
			var p99Target, rateTarget, p50Target *benchreport.Target
			if pl.name == annotated.name {
				p50Target = &benchreport.Target{Of: "ratio", Op: "<=", Value: 1.10}
			}
			if pl.name == "hostroute" {
				p99Target = &benchreport.Target{Of: "value", Op: "<=", Value: 10}
				if conc == 8 {
					rateTarget = &benchreport.Target{Of: "value", Op: ">=", Value: 50}
				}
			}
			fig("ADD p50", "ms", x.addP50, true, p50Target)
			fig("ADD p99", "ms", x.addP99, true, p99Target)
			fig("DEL p50", "ms", x.delP50, true, nil)
			fig("DEL p99", "ms", x.delP99, true, nil)
			fig("pods/s", "pods/s", x.rate, false, rateTarget)
			b.ReportMetric(benchreport.Summarize(x.addP50).Median, fmt.Sprintf("c%d-%s-add-p50-ms", conc, strings.ReplaceAll(pl.name, " ", "-")))
		}
	}
	// ADD → routable from another node.
	var reach []float64
	ns := netns.ForTest(b, e.Prefix+"p-")
	for i := -1; i < 10*rounds; i++ { // the first (i = -1) waits for the mesh; not recorded
		p := &harness.Pod{Name: fmt.Sprintf("reach-%d", i), NS: ns, ContainerID: fmt.Sprintf("reach-%d-%s", i, ns), UID: fmt.Sprintf("uid-reach-%d", i), Node: n}
		ln, err := netns.ListenIn(ns, "tcp", ":7100")
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		if err := p.Add(); err != nil {
			b.Fatal(err)
		}
		done := time.Now()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			c, err := netns.DialIn(ctx, other.NS, "tcp", net.JoinHostPort(p.IP, "7100"))
			cancel()
			if err == nil {
				c.Close()
				break
			}
			if time.Since(done) > 30*time.Second {
				b.Fatalf("pod %s not reachable from the other node 30s after ADD: %v", p.IP, err)
			}
		}
		if i >= 0 {
			reach = append(reach, float64(time.Since(done).Microseconds())/1000)
		}
		ln.Close()
		if err := p.Del(); err != nil {
			b.Fatal(err)
		}
	}
	benchreport.Record(b, benchreport.Figure{Group: "Pod start-up, 1 at a time", Name: "hostroute ADD returned → reachable from another node", Unit: "ms",
		Runs: reach, LowerIsBetter: true, Note: "one TCP connect per try; no per-pod route travels (the block is routed)"})
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
}

// runPods starts perRound pods through pl, len(nss) at a time (each in one of nss, reused
// once the previous pod there is deleted), and returns each ADD's and DEL's latency in ms
// and the wall time of the ADDs.
func runPods(b *testing.B, n *harness.Node, pl podPlugin, nss []string, perRound, round int) (adds, dels []float64, wall time.Duration) {
	b.Helper()
	var mu sync.Mutex
	var firstErr error
	var addWall time.Duration
	for batch := 0; batch < perRound/len(nss); batch++ {
		pods := make([]*harness.Pod, len(nss))
		for i, ns := range nss {
			id := fmt.Sprintf("%s-r%d-b%d-%d", strings.NewReplacer("+", "-", " ", "-").Replace(pl.name), round, batch, i)
			pods[i] = &harness.Pod{Name: id, NS: ns, ContainerID: "ctr-" + id, UID: "uid-" + id, Node: n}
		}
		if pl.objects != nil {
			if err := pl.objects(pods, true); err != nil {
				b.Fatal(err)
			}
		}
		timed := func(f func(*harness.Pod) error, out *[]float64) time.Duration {
			var wg sync.WaitGroup
			start := time.Now()
			for _, p := range pods {
				wg.Add(1)
				go func() {
					defer wg.Done()
					t0 := time.Now()
					err := f(p)
					mu.Lock()
					defer mu.Unlock()
					*out = append(*out, float64(time.Since(t0).Microseconds())/1000)
					if err != nil && firstErr == nil {
						firstErr = fmt.Errorf("%s: %w", pl.name, err)
					}
				}()
			}
			wg.Wait()
			return time.Since(start)
		}
		addWall += timed(pl.add, &adds)
		timed(pl.del, &dels)
		if firstErr != nil {
			b.Fatal(firstErr)
		}
		if pl.objects != nil {
			if err := pl.objects(pods, false); err != nil {
				b.Fatal(err)
			}
		}
	}
	return adds, dels, addWall
}

// podObjects creates (or deletes, at once) the Pod objects of a batch in namespace ns,
// with the annotations.
func podObjects(e *harness.Env, ns string, annotations map[string]string) func([]*harness.Pod, bool) error {
	zero := int64(0)
	return func(pods []*harness.Pod, create bool) error {
		for _, p := range pods {
			p.Namespace = ns
			if !create {
				if err := e.Kube.CoreV1().Pods(ns).Delete(e.Ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
					return fmt.Errorf("delete pod %s/%s: %w", ns, p.Name, err)
				}
				continue
			}
			if err := e.PodObject(p, annotations); err != nil {
				return fmt.Errorf("create pod %s/%s: %w", ns, p.Name, err)
			}
		}
		return nil
	}
}

// debianPlugin runs one of Debian's reference plugins with host-local IPAM on subnet in
// the node's namespace (never the root one: ptp and bridge set ip_forward where they run).
func debianPlugin(b *testing.B, n *harness.Node, name, typeFields, subnet string) podPlugin {
	conf := []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bench-%s",%s,"ipam":{"type":"host-local","subnet":%q,"dataDir":%q}}`,
		strings.ReplaceAll(name, "+", "-"), typeFields, subnet, filepath.Join(b.TempDir(), "host-local")))
	plugin := "/usr/lib/cni/" + map[bool]string{true: "ptp", false: "bridge"}[name == "ptp+host-local"]
	return execPlugin(n, name, plugin, conf, "/usr/lib/cni")
}

// execPlugin runs a CNI plugin binary as a runtime does (CNI_* environment, the config on
// stdin), in the node's network namespace by setns alone (nsenter --net): a runtime runs
// plugins in its own namespace directly, and `ip netns exec` would add a mount namespace
// and a /sys remount to every call.
func execPlugin(n *harness.Node, name, plugin string, conf []byte, cniPath string) podPlugin {
	run := func(command string, p *harness.Pod) error {
		cmd := exec.Command("nsenter", "--net=/run/netns/"+n.NS, plugin)
		cmd.Env = harness.CNIEnv(command, p, cniPath)
		cmd.Stdin = bytesReader(conf)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, command, err, out)
		}
		return nil
	}
	return podPlugin{name: name, add: func(p *harness.Pod) error { return run("ADD", p) }, del: func(p *harness.Pod) error { return run("DEL", p) }}
}

// quantile is the q-quantile of xs (nearest rank).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// benchRounds is $HOSTROUTE_BENCH_ROUNDS, default 3.
func benchRounds() int {
	var v int
	if _, err := fmt.Sscan(os.Getenv("HOSTROUTE_BENCH_ROUNDS"), &v); err == nil && v > 0 {
		return v
	}
	return 3
}
