package agent

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/hostroute/hostroute/routing"
	"github.com/hostroute/hostroute/routing/routingtest"
)

// TestPeerSetterHoldsKindChanges: a session whose kind changes keeps its applied
// configuration for the holdoff (a pass is asked for when it ends); a new session and
// any other change go through at once.
func TestPeerSetterHoldsKindChanges(t *testing.T) {
	sp := routingtest.NewFake()
	if err := sp.Start(context.Background(), routing.GlobalConfig{AS: 64512, RouterID: netip.MustParseAddr("192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	var kicked []time.Duration
	ps := &peerSetter{sp: sp, holdoff: 5 * time.Second, now: func() time.Time { return now },
		kick: func(d time.Duration) { kicked = append(kicked, d) }}
	a6, a2 := netip.MustParseAddr("192.0.2.6"), netip.MustParseAddr("192.0.2.2")
	pass := func(peers ...routing.PeerConfig) map[netip.Addr]routing.PeerKind {
		t.Helper()
		if err := ps.reconcile(context.Background(), bgpInputs{set: routing.PeerSet{Peers: peers}}); err != nil {
			t.Fatal(err)
		}
		got := map[netip.Addr]routing.PeerKind{}
		for _, pc := range sp.PeerConfigs() {
			got[pc.Address] = pc.Kind
		}
		return got
	}
	pass(routing.PeerConfig{Address: a6, Kind: routing.KindReflector})
	got := pass(routing.PeerConfig{Address: a6, Kind: routing.KindMesh}, routing.PeerConfig{Address: a2, Kind: routing.KindReflectorClient})
	if got[a6] != routing.KindReflector || got[a2] != routing.KindReflectorClient {
		t.Fatalf("right after the change: %v; want 192.0.2.6 still reflector, the new client session added", got)
	}
	if len(kicked) != 1 || kicked[0] < 5*time.Second {
		t.Fatalf("asked for a pass after %v; want one after the holdoff", kicked)
	}
	now = now.Add(3 * time.Second)
	if got := pass(routing.PeerConfig{Address: a6, Kind: routing.KindMesh}, routing.PeerConfig{Address: a2, Kind: routing.KindReflectorClient}); got[a6] != routing.KindReflector {
		t.Fatalf("3s into the holdoff: %v", got)
	}
	now = now.Add(2 * time.Second)
	if got := pass(routing.PeerConfig{Address: a6, Kind: routing.KindMesh}, routing.PeerConfig{Address: a2, Kind: routing.KindReflectorClient}); got[a6] != routing.KindMesh {
		t.Fatalf("after the holdoff: %v; want the new kind", got)
	}
	// A change that is not of kind (a timer) goes through at once.
	pass(routing.PeerConfig{Address: a6, Kind: routing.KindMesh, HoldTime: 9 * time.Second}, routing.PeerConfig{Address: a2, Kind: routing.KindReflectorClient})
	for _, pc := range sp.PeerConfigs() {
		if pc.Address == a6 && pc.HoldTime != 9*time.Second {
			t.Fatalf("a timer change was held: %+v", pc)
		}
	}
}
