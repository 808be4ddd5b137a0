package agent

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/node/routes"
	nodestatus "github.com/hostroute/hostroute/node/status"
)

func TestCompareRoutes(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	own, learned, missing, wrong, stale := p("10.244.0.0/26"), p("10.244.0.64/26"), p("10.244.0.128/26"), p("10.244.0.192/26"), p("10.244.9.0/26")
	want := map[netip.Prefix]routes.Route{
		own:     {Dst: own, Blackhole: true},
		learned: {Dst: learned, NextHops: []netip.Addr{a("192.0.2.3"), a("192.0.2.2")}},
		missing: {Dst: missing, NextHops: []netip.Addr{a("192.0.2.3")}},
		wrong:   {Dst: wrong, NextHops: []netip.Addr{a("192.0.2.4")}},
	}
	rib := map[netip.Prefix][]netip.Addr{learned: {a("192.0.2.2"), a("192.0.2.3")}, missing: {a("192.0.2.3")}, wrong: {a("192.0.2.4"), a("192.0.2.5")}}
	kernel := []routes.Route{
		{Dst: own, Blackhole: true},
		{Dst: learned, NextHops: []netip.Addr{a("192.0.2.2"), a("192.0.2.3")}},
		{Dst: wrong, NextHops: []netip.Addr{a("192.0.2.5")}},
		{Dst: stale, NextHops: []netip.Addr{a("192.0.2.9")}},
	}
	src := mapSource{want, rib}
	got, counts := compareRoutes(src, kernel, false, true)
	wantRoutes := []*agentv1.Route{
		{Prefix: "10.244.0.0/26", WantBlackhole: true, KernelBlackhole: true, State: nodestatus.RouteOK},
		{Prefix: "10.244.0.64/26", WantNextHops: []string{"192.0.2.2", "192.0.2.3"}, RibNextHops: []string{"192.0.2.2", "192.0.2.3"}, KernelNextHops: []string{"192.0.2.2", "192.0.2.3"}, State: nodestatus.RouteOK},
		{Prefix: "10.244.0.128/26", WantNextHops: []string{"192.0.2.3"}, RibNextHops: []string{"192.0.2.3"}, State: nodestatus.RouteMissing},
		{Prefix: "10.244.0.192/26", WantNextHops: []string{"192.0.2.4"}, RibNextHops: []string{"192.0.2.4", "192.0.2.5"}, KernelNextHops: []string{"192.0.2.5"}, State: nodestatus.RouteMissing},
		{Prefix: "10.244.9.0/26", KernelNextHops: []string{"192.0.2.9"}, State: nodestatus.RouteStale},
	}
	if d := cmp.Diff(wantRoutes, got, protocmp.Transform()); d != "" {
		t.Errorf("compareRoutes (-want +got):\n%s", d)
	}
	c := nodestatus.Counts(got)
	if c.Kernel != 4 || c.Missing != 2 || c.Stale != 1 {
		t.Errorf("counts %+v", c)
	}
	wantCounts := &agentv1.RouteCounts{Ok: 2, Missing: 2, Stale: 1, Kernel: 4}
	if d := cmp.Diff(wantCounts, counts, protocmp.Transform()); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
	// The periodic snapshot leaves out the rows in order, and counts the same.
	problems, pc := compareRoutes(src, kernel, false, false)
	if d := cmp.Diff([]*agentv1.Route{wantRoutes[2], wantRoutes[3], wantRoutes[4]}, problems, protocmp.Transform()); d != "" {
		t.Errorf("rows not ok (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantCounts, pc, protocmp.Transform()); d != "" {
		t.Errorf("counts without ok rows (-want +got):\n%s", d)
	}
	if g := nodestatus.CountsOf(&agentv1.RoutingResponse{Routes: problems, RouteCounts: pc}); g != c {
		t.Errorf("CountsOf a snapshot without ok rows: %+v, want %+v", g, c)
	}
	// During a graceful restart the unknown kernel route is kept on purpose, not stale.
	if kept, kc := compareRoutes(src, kernel, true, true); kept[4].State != nodestatus.RouteKept || kc.Kept != 1 || kc.Stale != 0 {
		t.Errorf("restart: state %q (counts %v), want kept", kept[4].State, kc)
	}
	// Kernel next hops in another order, or repeated, are compared as sets with counts.
	if !sameAddrs([]netip.Addr{a("192.0.2.2"), a("192.0.2.3")}, []netip.Addr{a("192.0.2.3"), a("192.0.2.2")}) ||
		sameAddrs([]netip.Addr{a("192.0.2.2")}, []netip.Addr{a("192.0.2.2"), a("192.0.2.2")}) {
		t.Error("sameAddrs")
	}
}

// mapSource is a route table as two maps: wanted routes (next hops sorted) and the RIB.
type mapSource struct {
	want map[netip.Prefix]routes.Route
	rib  map[netip.Prefix][]netip.Addr
}

func (m mapSource) EachWanted(fn func(routes.Route, []netip.Addr)) {
	for p, r := range m.want {
		r.NextHops = slices.SortedFunc(slices.Values(r.NextHops), netip.Addr.Compare)
		fn(r, m.rib[p])
	}
}

func (m mapSource) LearnedFor(p netip.Prefix) []netip.Addr { return m.rib[p] }

func TestHealthAndChange(t *testing.T) {
	r := &agentv1.RoutingResponse{Node: "n", Ready: true,
		Sessions: []*agentv1.Session{{Peer: "192.0.2.254", Name: "tor", State: "Established"}},
		Blocks:   []*agentv1.BlockUsage{{Cidr: "10.244.0.0/26", Capacity: 64}}}
	a := nodestatus.FromRouting(r, time.Unix(100, 0))
	b := nodestatus.FromRouting(r, time.Unix(200, 0))
	if !sameStatus(a, b) {
		t.Error("statuses that differ only in time must count as unchanged (no API write)")
	}
	if a.Conditions[0].Status != "True" {
		t.Errorf("healthy node: %+v", a.Conditions)
	}
	// Counters alone (routes learned as other nodes' blocks come and go, addresses in
	// use) wait for the heartbeat: no API write per block change per node.
	r.Sessions[0].Received, r.Sessions[0].Accepted, r.Blocks[0].InUse = 40, 40, 7
	r.Routes = append(r.Routes, &agentv1.Route{Prefix: "10.244.9.0/26", State: nodestatus.RouteOK})
	if counted := nodestatus.FromRouting(r, time.Unix(250, 0)); !sameStatus(a, counted) {
		t.Error("a status that differs only in counters must count as unchanged until the heartbeat")
	}
	r.Sessions[0].State = "Active"
	c := nodestatus.FromRouting(r, time.Unix(300, 0))
	if sameStatus(a, c) || c.Conditions[0].Reason != nodestatus.ReasonSessionDown {
		t.Errorf("session down: %+v", c.Conditions)
	}
}

// daemonBFD is a heldBFD that may have lost its daemon.
type daemonBFD struct {
	heldBFD
	connected bool
}

func (d *daemonBFD) Connected() bool { return d.connected }

// The status says Up or Down for what BFD knows, Down for a session it lacks, and
// Unreachable for every peer while the BFD daemon is not reachable (not a guessed Down).
func TestBFDStates(t *testing.T) {
	up, none := netip.MustParseAddr("192.0.2.254"), netip.MustParseAddr("192.0.2.9")
	d := &daemonBFD{heldBFD: heldBFD{fakeBFD{sessions: map[netip.Addr]netip.Addr{up: netip.MustParseAddr("192.0.2.1")}}}, connected: true}
	st := bfdStates(d)
	if st(up) != "Up" || st(none) != "Down" {
		t.Fatalf("connected: %s %s, want Up Down", st(up), st(none))
	}
	d.connected = false
	st = bfdStates(d)
	if st(up) != BFDUnreachable || st(none) != BFDUnreachable {
		t.Fatalf("daemon unreachable: %s %s, want %s for both", st(up), st(none), BFDUnreachable)
	}
	if st := bfdStates(nil); st(up) != "Down" {
		t.Fatalf("no BFD: %s", st(up))
	}
}
