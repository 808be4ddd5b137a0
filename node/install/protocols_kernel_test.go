package install

import (
	"strconv"
	"strings"
	"testing"

	"github.com/hostroute/hostroute/internal/testenv/netns"
	"github.com/hostroute/hostroute/node/routes"
)

// TestUninstallConfiguredProtocolsRealKernel: with configured numbers and NoLegacy, only
// routes of the configured numbers go; the defaults and the former 196/197 (FRR's, on
// such a host) stay.
func TestUninstallConfiguredProtocolsRealKernel(t *testing.T) {
	ns := netns.ForTest(t, "hrtest-uninstp-")
	for _, c := range []string{
		"ip link add v0 type veth peer name v1", "ip link set v0 up",
		"ip addr add 192.0.2.1/24 dev v0",
		"ip route add blackhole 10.9.0.0/26 proto 230",
		"ip route add 10.9.3.7/32 dev v0 proto 231 scope link",
		"ip route add blackhole 10.9.1.0/26 proto " + strconv.Itoa(routes.Protocol),
		"ip route add blackhole 10.9.2.0/26 proto 196",
		"ip route add 10.9.3.8/32 dev v0 proto 197 scope link",
	} {
		if err := netns.Exec(ns, strings.Fields(c)...); err != nil {
			t.Fatal(err)
		}
	}
	h, err := netns.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	n := newNode(t, "p")
	o := UninstallOptions{BinDir: n.bin, ConfDir: n.conf, Protocols: Protocols{Agent: 230, CNI: 231, NoLegacy: true}}
	acts, err := Uninstall(o, NetlinkRoutes{H: h}, &fakeNAT{})
	if err != nil {
		t.Fatal(err)
	}
	wantVerbs(t, acts, "removed 2 kernel routes")
	if got, want := acts[0].Detail, "protocol 230 (agent): 1 IPv4, 0 IPv6; protocol 231 (CNI plugin): 1 IPv4, 0 IPv6"; got != want {
		t.Errorf("routes %q, want %q", got, want)
	}
	var left []int
	for _, r := range dumpAll(t, h) {
		if r.protocol != 2 { // the kernel's own (connected subnet, local)
			left = append(left, r.protocol)
		}
	}
	if want := []int{196, 197, routes.Protocol}; len(left) != 3 || !sameSet(left, want) {
		t.Fatalf("protocols left %v, want %v", left, want)
	}
}

func sameSet(a, b []int) bool {
	seen := map[int]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, v := range seen {
		if v != 0 {
			return false
		}
	}
	return true
}
