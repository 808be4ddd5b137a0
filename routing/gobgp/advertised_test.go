package gobgp

import (
	"testing"
	"time"

	"github.com/hostroute/hostroute/routing"
)

// Peers has GoBGP count advertised routes (every best path through the export policy for
// every neighbour) only when something it depends on changed, not on every call: the
// agent's status asks every second. The count stays right across those changes.
func TestAdvertisedCountedOnlyOnChange(t *testing.T) {
	port := gbFreePort(t)
	a := gbStart(t, "a", "127.0.9.31", gbAS, port, true)
	b := gbStart(t, "b", "127.0.9.32", gbAS, port, true)
	a.setPeers(a.peerOf(b, routing.KindMesh))
	b.setPeers(b.peerOf(a, routing.KindMesh))
	a.advertise("10.244.9.0/26", a.addr)
	a.waitEstablished(b, 10*time.Second)
	b.waitBest("10.244.9.0/26", 10*time.Second, a.addr)
	advertised := func() uint64 {
		t.Helper()
		if st := a.peerState(b.addr); st.State == "Established" {
			return st.Advertised
		}
		return 0
	}
	gbWaitFor(t, 5*time.Second, "a counts 1 advertised route", func() bool { return advertised() == 1 })
	if count, _ := a.s.countAdvertised(); count {
		t.Fatal("nothing changed since the last Peers, yet it would count again")
	}
	a.advertise("10.244.9.64/26", a.addr)
	if count, _ := a.s.countAdvertised(); !count {
		t.Fatal("a new route of ours did not call for a new count")
	}
	gbWaitFor(t, 5*time.Second, "a counts 2 advertised routes", func() bool { return advertised() == 2 })
}
