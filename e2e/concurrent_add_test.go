package e2e_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// TestConcurrentAddOneAttachment fires 20 ADDs for the same container ID and interface
// at once, as a buggy runtime does (the CNI spec forbids it). Whatever succeeds must
// report one address, and the pod must end up wired with exactly that address: a late
// ADD must never tear down or re-address what an earlier one finished.
func TestConcurrentAddOneAttachment(t *testing.T) {
	_, n := newNode(t, "10.104.0.0/24", 26)
	p := n.NewPod("racy")

	const parallel = 20
	type outcome struct {
		out []byte
		err error
	}
	results := make([]outcome, parallel)
	var wg sync.WaitGroup
	for i := range parallel {
		wg.Go(func() {
			out, err := n.CNI("ADD", p, n.NetConf())
			results[i] = outcome{out, err}
		})
	}
	wg.Wait()

	addrs := map[string]int{}
	for i, r := range results {
		var res harness.CNIResult
		if jerr := json.Unmarshal(r.out, &res); jerr != nil {
			t.Fatalf("ADD %d: stdout is not CNI JSON: %q (%v)", i, r.out, r.err)
		}
		if r.err != nil {
			t.Logf("ADD %d failed: code %d: %s", i, res.Code, res.Msg)
			continue
		}
		if len(res.IPs) != 1 {
			t.Fatalf("ADD %d: %d addresses, want 1: %s", i, len(res.IPs), r.out)
		}
		addrs[res.IPs[0].Address]++
	}
	t.Logf("successful ADDs by address: %v", addrs)
	if len(addrs) != 1 {
		t.Fatalf("successful ADDs reported %d different addresses (%v), want exactly one", len(addrs), addrs)
	}
	var want string
	for a := range addrs {
		want = a
	}
	p.IP = strings.Split(want, "/")[0]

	if got := podAddrs(t, p.NS, "eth0"); len(got) != 1 || got[0] != want {
		t.Fatalf("pod eth0 has %v, want exactly [%s]", got, want)
	}
	ping(t, p.NS, n.Addr)
	ping(t, n.NS, p.IP)
	if got := inUse(t, n); got != 1 {
		t.Fatalf("the agent holds %d allocations, want 1", got)
	}
	if v := hostVeths(t, n); len(v) != 1 {
		t.Fatalf("host veths %v, want exactly one", v)
	}

	if err := p.Del(); err != nil {
		t.Fatal(err)
	}
	if got := inUse(t, n); got != 0 {
		t.Fatalf("after DEL the agent holds %d allocations, want 0", got)
	}
	if v := hostVeths(t, n); len(v) != 0 {
		t.Fatalf("host veths left after DEL: %v", v)
	}
}

// podAddrs lists the non-link-local addresses (with prefix length) on dev in ns.
func podAddrs(t *testing.T, ns, dev string) []string {
	t.Helper()
	out, err := netns.Output(ns, "ip", "-j", "addr", "show", "dev", dev)
	if err != nil {
		t.Fatalf("ip addr in %s: %v: %s", ns, err, out)
	}
	var links []struct {
		Addrs []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		t.Fatalf("ip -j addr: %v: %s", err, out)
	}
	var got []string
	for _, l := range links {
		for _, a := range l.Addrs {
			if strings.HasPrefix(a.Local, "fe80:") {
				continue // the kernel's own link-local address
			}
			got = append(got, a.Local+"/"+strconv.Itoa(a.PrefixLen))
		}
	}
	return got
}

// TestConcurrentAddDelOneAttachment races ADDs against DELs of one attachment. Whatever
// order they run in, the end state must be whole: either the attachment is wired (one
// allocation, one host veth, the address on eth0) or it is gone entirely, and a final
// DEL leaves nothing.
func TestConcurrentAddDelOneAttachment(t *testing.T) {
	_, n := newNode(t, "10.105.0.0/24", 26)
	p := n.NewPod("racy-del")
	var wg sync.WaitGroup
	for i := range 16 {
		cmd := "ADD"
		if i%2 == 1 {
			cmd = "DEL"
		}
		wg.Go(func() { _, _ = n.CNI(cmd, p, n.NetConf()) })
	}
	wg.Wait()

	allocs, veths := inUse(t, n), hostVeths(t, n)
	t.Logf("after the race: %d allocation(s), host veths %v", allocs, veths)
	switch {
	case allocs == 0 && len(veths) == 0:
	case allocs == 1 && len(veths) == 1:
		if got := podAddrs(t, p.NS, "eth0"); len(got) != 1 {
			t.Fatalf("wired attachment, but pod eth0 has %v", got)
		}
	default:
		t.Fatalf("half an attachment: %d allocation(s), host veths %v", allocs, veths)
	}
	if err := p.Del(); err != nil {
		t.Fatal(err)
	}
	if got, v := inUse(t, n), hostVeths(t, n); got != 0 || len(v) != 0 {
		t.Fatalf("after DEL: %d allocation(s), host veths %v", got, v)
	}
}
