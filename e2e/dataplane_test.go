package e2e_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/netns"
	"github.com/hostroute/hostroute/node/routes"
)

func newNode(t *testing.T, cidr string, blockSize int32) (*harness.Env, *harness.Node) {
	t.Helper()
	e := harness.NewEnv(t, bin)
	e.Pool("pods", cidr, blockSize, true)
	e.RunController(controller.Config{})
	n := e.AddNode("node-a", "192.0.2.1")
	n.WaitReady(20 * time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", n.Log())
		}
	})
	return e, n
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// noLoss checks the output of a finished ping: it logs what was sent and received
// during what, and fails the test when a packet was lost.
func noLoss(t *testing.T, out, during string) {
	t.Helper()
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ping output: %s", out)
	}
	t.Logf("%s: %s packets sent, %s received", during, m[1], m[2])
	if m[1] != m[2] {
		t.Errorf("lost packets %s: %s", during, lastLines(out, 3))
	}
}

func ping(t *testing.T, ns, dst string) {
	t.Helper()
	if out, err := netns.Output(ns, "ping", "-c1", "-W2", dst); err != nil {
		t.Errorf("ping %s from %s: %v\n%s", dst, ns, err, out)
	}
}

// tcpCheck connects from pod `from` to pod `to` over TCP and checks that the server saw
// the sender's own address (no NAT between pods).
func tcpCheck(t *testing.T, from, to *harness.Pod) {
	t.Helper()
	if got := tcpSeen(t, to.NS, to.IP+":8080", from.NS, to.IP+":8080"); got != from.IP {
		t.Fatalf("tcp %s → %s: server saw source %q, want the pod's own %s (no NAT)", from.Name, to.Name, got, from.IP)
	}
}

// tcpSeen runs a one-shot TCP server in serverNS on listen, connects from clientNS to
// dial, and returns the source address the server saw.
func tcpSeen(t *testing.T, serverNS, listen, clientNS, dial string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	srv := exec.Command("ip", "netns", "exec", serverNS, self)
	srv.Env = append(os.Environ(), "HOSTROUTE_E2E_HELPER=tcp-serve", "HOSTROUTE_E2E_ADDR="+listen)
	out, _ := srv.StdoutPipe()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	if line, _ := bufio.NewReader(out).ReadString('\n'); strings.TrimSpace(line) != "listening" {
		t.Fatalf("tcp server in %s: %q", serverNS, line)
	}
	cl := exec.Command("ip", "netns", "exec", clientNS, self)
	cl.Env = append(os.Environ(), "HOSTROUTE_E2E_HELPER=tcp-dial", "HOSTROUTE_E2E_ADDR="+dial)
	got, err := cl.Output()
	if err != nil {
		t.Fatalf("tcp %s → %s: %v %s", clientNS, dial, err, got)
	}
	return string(got)
}

func hostRoutes(t *testing.T, n *harness.Node) string {
	out, err := netns.Output(n.NS, "ip", "route", "show", "proto", strconv.Itoa(routes.CNIProtocol))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func hostVeths(t *testing.T, n *harness.Node) []string {
	t.Helper()
	out, err := netns.Output(n.NS, "ip", "-j", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		t.Fatal(err)
	}
	var out2 []string
	for _, l := range links {
		if strings.HasPrefix(l.Name, "hr") {
			out2 = append(out2, l.Name)
		}
	}
	return out2
}

func inUse(t *testing.T, n *harness.Node) int {
	t.Helper()
	st, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, b := range st.GetBlocks() {
		total += int(b.GetInUse())
	}
	return total
}

// addPods wires count pods with `parallel` concurrent ADDs; it returns them and the errors.
func addPods(n *harness.Node, prefix string, count, parallel int) ([]*harness.Pod, []error) {
	pods := make([]*harness.Pod, count)
	errs := make([]error, count)
	for i := range pods {
		pods[i] = n.NewPod(fmt.Sprintf("%s-%03d", prefix, i))
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = p.Add()
		}()
	}
	wg.Wait()
	return pods, errs
}

func TestHundredPodsOnOneNode(t *testing.T) {
	_, n := newNode(t, "10.100.0.0/16", 24)
	pods, errs := addPods(n, "web", 100, 10)
	seen := map[string]string{}
	for i, p := range pods {
		if errs[i] != nil {
			t.Fatalf("ADD %s: %v", p.Name, errs[i])
		}
		if other, dup := seen[p.IP]; dup {
			t.Fatalf("%s and %s both got %s", other, p.Name, p.IP)
		}
		seen[p.IP] = p.Name
		if !netip.MustParsePrefix("10.100.0.0/16").Contains(netip.MustParseAddr(p.IP)) {
			t.Fatalf("%s got %s, outside the pool", p.Name, p.IP)
		}
	}
	if got := inUse(t, n); got != 100 {
		t.Fatalf("agent reports %d addresses in use, want 100", got)
	}
	// pod ↔ pod on the node (ICMP and TCP, no NAT), pod ↔ host.
	for _, pair := range [][2]int{{0, 1}, {1, 0}, {17, 99}, {99, 42}} {
		ping(t, pods[pair[0]].NS, pods[pair[1]].IP)
	}
	tcpCheck(t, pods[3], pods[77])
	ping(t, pods[5].NS, n.Addr)
	ping(t, n.NS, pods[5].IP)
	if got := tcpSeen(t, n.NS, n.Addr+":9100", pods[5].NS, n.Addr+":9100"); got != pods[5].IP {
		t.Fatalf("pod → host TCP: the host saw %q, want the pod's %s", got, pods[5].IP)
	}
	if got := tcpSeen(t, pods[6].NS, pods[6].IP+":9101", n.NS, pods[6].IP+":9101"); got != n.Addr {
		t.Fatalf("host → pod TCP: the pod saw %q, want the node's %s", got, n.Addr)
	}

	// The block's blackhole route is in the kernel with hostroute's protocol.
	if out, _ := netns.Output(n.NS, "ip", "route", "show", "proto", strconv.Itoa(routes.Protocol)); !strings.Contains(out, "blackhole 10.100.0.0/24") {
		t.Errorf("no blackhole for the block: %q", out)
	}

	// CHECK passes, then detects a deleted host route.
	p := pods[10]
	if out, err := n.CNI("CHECK", p, n.NetConf()); err != nil {
		t.Fatalf("CHECK on a healthy pod: %v %s", err, out)
	}
	if err := netns.Exec(n.NS, "ip", "route", "del", p.IP+"/32"); err != nil {
		t.Fatal(err)
	}
	out, err := n.CNI("CHECK", p, n.NetConf())
	if err == nil || !strings.Contains(string(out), p.IP) {
		t.Fatalf("CHECK after deleting the host route: err=%v out=%s", err, out)
	}
	t.Logf("CHECK with the route deleted: %s", out)

	// DEL removes veth, route and allocation; a second DEL succeeds.
	for _, p := range pods {
		if err := p.Del(); err != nil {
			t.Fatal(err)
		}
	}
	if err := pods[0].Del(); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	if v := hostVeths(t, n); len(v) != 0 {
		t.Fatalf("veths left after DEL: %v", v)
	}
	if r := hostRoutes(t, n); strings.TrimSpace(r) != "" {
		t.Fatalf("pod routes left after DEL: %s", r)
	}
	if got := inUse(t, n); got != 0 {
		t.Fatalf("%d allocations left after DEL", got)
	}
}

// TestCrashDuringBurst kills the agent with SIGKILL during 200 concurrent ADDs, restarts
// it, retries the failed ADDs as the kubelet would, and checks that no address was handed
// out twice, none was lost, and nothing leaks once the pods are gone. It fails if the
// kill did not land inside the burst (every ADD had returned by then): the rest would
// then only test a clean restart.
func TestCrashDuringBurst(t *testing.T) {
	_, n := newNode(t, "10.101.0.0/16", 24)
	pods := make([]*harness.Pod, 200)
	total := int32(len(pods))
	for i := range pods {
		pods[i] = n.NewPod(fmt.Sprintf("burst-%03d", i))
	}
	errs := make([]error, len(pods))
	var wg sync.WaitGroup
	var done atomic.Int32
	started := make(chan struct{})
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-started
			errs[i] = p.Add()
			done.Add(1)
		}()
	}
	close(started)
	// Kill it mid-burst: some addresses handed out, many ADDs in flight or queued. The
	// poll is as tight as it can be, so that the kill lands early in the burst.
	const killAt = 40
	deadline := time.Now().Add(time.Minute)
	allocated := 0
	for allocated < killAt {
		if d := done.Load(); d == total {
			wg.Wait()
			t.Fatalf("all %d ADDs returned before the agent was seen holding %d addresses (last seen %d): the kill cannot land in the burst", d, killAt, allocated)
		}
		if time.Now().After(deadline) {
			n.Kill()
			wg.Wait()
			t.Fatalf("the agent did not hold %d addresses within a minute of the burst's start (last seen %d, %d of %d ADDs returned)", killAt, allocated, done.Load(), total)
		}
		if st, err := n.Status(); err == nil {
			allocated = 0
			for _, b := range st.GetBlocks() {
				allocated += int(b.GetInUse())
			}
		}
	}
	n.Kill()
	// Read after the agent is gone: an upper bound of the ADDs that had returned when the
	// kill landed.
	returned := done.Load()
	t.Logf("agent killed with SIGKILL during the burst: %d addresses allocated, at most %d of %d ADDs returned", allocated, returned, total)
	wg.Wait()
	if returned >= total {
		t.Fatalf("every ADD (%d) had returned when the agent was killed: the kill landed after the burst", returned)
	}
	failed := 0
	for _, e := range errs {
		if e != nil {
			failed++
		}
	}
	t.Logf("%d of %d ADDs failed while the agent was down", failed, total)
	if failed == 0 {
		t.Fatalf("no ADD failed although %d of %d were still out when the agent was killed", total-returned, total)
	}
	n.Start()
	n.WaitReady(20 * time.Second)
	// The kubelet retries a failed sandbox: DEL (cleanup) then ADD.
	for i, p := range pods {
		if errs[i] == nil {
			continue
		}
		if err := p.Del(); err != nil {
			t.Fatalf("DEL before retry of %s: %v", p.Name, err)
		}
		if err := p.Add(); err != nil {
			t.Fatalf("retry ADD %s: %v", p.Name, err)
		}
	}
	seen := map[string]string{}
	for _, p := range pods {
		if other, dup := seen[p.IP]; dup {
			t.Fatalf("address %s handed out twice: %s and %s", p.IP, other, p.Name)
		}
		seen[p.IP] = p.Name
		got, err := p.Exec("ip", "-4", "-o", "addr", "show", "dev", "eth0")
		if err != nil || !strings.Contains(got, " "+p.IP+"/32") {
			t.Fatalf("%s: eth0 does not hold %s: %s %v", p.Name, p.IP, got, err)
		}
	}
	if got := inUse(t, n); got != 200 {
		t.Fatalf("agent holds %d allocations for 200 pods (lost or leaked)", got)
	}
	for _, p := range pods {
		if err := p.Del(); err != nil {
			t.Fatal(err)
		}
	}
	if got := inUse(t, n); got != 0 {
		t.Fatalf("%d allocations leaked after deleting every pod", got)
	}
	if v := hostVeths(t, n); len(v) != 0 {
		t.Fatalf("veths leaked: %v", v)
	}
}

// TestNodeGetsAnotherBlockWhenFull fills a /28 block: the ADD that finds it full waits,
// the controller assigns a second block, and the ADD succeeds from it.
func TestNodeGetsAnotherBlockWhenFull(t *testing.T) {
	_, n := newNode(t, "10.102.0.0/24", 28)
	pods, errs := addPods(n, "fill", 20, 4)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ADD %s: %v", pods[i].Name, err)
		}
	}
	st, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetBlocks()) < 2 {
		t.Fatalf("node has %d blocks after 20 pods in /28 blocks, want 2", len(st.GetBlocks()))
	}
}
