package gobgp

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"

	"github.com/hostroute/hostroute/routing"
)

// checkAgreement compares, for every route n received from its neighbours, GoBGP's
// import decision with routing.Policy.Accepts. A route passed the import policy when
// GoBGP's Loc-RIB holds it from that neighbour. (ListPath of the Adj-RIB-In with
// EnableFiltered would say so directly, but GoBGP v3.37 then re-inserts the paths into
// the live Adj-RIB-In, rewriting their timestamps while the speaker's rejected-route
// scan reads the same paths: a data race inside GoBGP.)
func checkAgreement(t *testing.T, n *gbNode, p routing.Policy) {
	t.Helper()
	n.s.mu.Lock()
	peers := make(map[netip.Addr]routing.PeerKind, len(n.s.peers))
	for a, pc := range n.s.peers {
		peers[a] = pc.Kind
	}
	n.s.mu.Unlock()
	type from struct {
		prefix   netip.Prefix
		neighbor netip.Addr
	}
	inRIB := map[from]bool{}
	for _, fam := range []*api.Family{familyIPv4, familyIPv6} {
		err := n.s.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: fam},
			func(d *api.Destination) {
				for _, path := range d.GetPaths() {
					if dp, err := decodePath(path); err == nil && !dp.local {
						inRIB[from{dp.prefix, dp.neighbor}] = true
					}
				}
			})
		if err != nil {
			t.Fatal(err)
		}
	}
	checked := 0
	for a, kind := range peers {
		for _, fam := range []*api.Family{familyIPv4, familyIPv6} {
			err := n.s.srv.ListPath(context.Background(), &api.ListPathRequest{
				TableType: api.TableType_ADJ_IN, Name: a.String(), Family: fam,
				EnableNlriBinary: true, EnableAttributeBinary: true,
			}, func(d *api.Destination) {
				for _, path := range d.GetPaths() {
					dp, err := decodePath(path)
					if err != nil {
						t.Error(err)
						continue
					}
					// The rejected-route scan reads the binary form: it must agree.
					if pfx, nh, err := decodeBinaryPath(path); err != nil || pfx != dp.prefix || nh != dp.nextHop {
						t.Errorf("decodeBinaryPath = %v via %v (%v), decodePath = %v via %v", pfx, nh, err, dp.prefix, dp.nextHop)
					}
					if pfx, nh, local, err := decodeWatchPath(path); err != nil || pfx != dp.prefix || nh != dp.nextHop || local != dp.local {
						t.Errorf("decodeWatchPath = %v via %v local=%v (%v), decodePath = %+v", pfx, nh, local, err, dp)
					}
					if o := binaryOriginAS(path); o != dp.originAS {
						t.Errorf("%v: binaryOriginAS = %d, decodePath's origin AS = %d", dp.prefix, o, dp.originAS)
					}
					ok, reason := p.Accepts(kind, a, dp.prefix, dp.nextHop, dp.originAS)
					if accepted := inRIB[from{dp.prefix, a}]; ok != accepted {
						t.Errorf("%s: %v from %v via %v: GoBGP accepted=%v, Accepts=%v (%s)",
							n.name, dp.prefix, a, dp.nextHop, accepted, ok, reason)
					}
					checked++
				}
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%s: GoBGP's import policy and Accepts agree on %d received routes", n.name, checked)
}

// Node c judges its neighbours: a's block from a is accepted, b's claim on a's block is
// rejected (and logged once), c's own block echoed back is rejected, an external
// neighbour gets only its listed prefix in. c exports its own block and extra export to
// nodes, keeps the no-export prefix and learned routes from the external neighbour.
// Policy changes re-judge routes already received (soft reset), and a prefix that stops
// being exported is withdrawn from the neighbour.
func TestGoBGPPolicy(t *testing.T) {
	port := gbFreePort(t)
	a := gbStart(t, "a", "127.0.7.11", gbAS, port, true)
	b := gbStart(t, "b", "127.0.7.12", gbAS, port, true)
	c := gbStart(t, "c", "127.0.7.13", gbAS, port, true)
	e := gbStart(t, "e", "127.0.7.21", 65001, port, false)
	const blockA, blockB, blockC, extra = "10.244.1.0/26", "10.244.2.0/26", "10.244.3.0/26", "10.245.0.7/32"
	pol := routing.Policy{
		OwnBlocks:    []netip.Prefix{gbPfx(blockC)},
		ExtraExports: []netip.Prefix{gbPfx(extra)},
		BlockOwners: map[netip.Prefix]netip.Addr{
			gbPfx(blockA): a.addr, gbPfx(blockB): b.addr, gbPfx(blockC): c.addr,
		},
		Pools:              []netip.Prefix{gbPfx("10.244.0.0/16")},
		ExternalImports:    map[netip.Addr][]routing.PrefixRange{e.addr: {{Prefix: gbPfx("198.51.100.0/24")}}},
		NoExportToExternal: []netip.Prefix{gbPfx("10.245.0.0/16")},
	}
	c.setPolicy(pol) // policy, then own routes, then peers
	c.advertise(blockC, c.addr)
	c.advertise(extra, c.addr)
	a.advertise(blockA, a.addr)
	a.advertise(blockC, c.addr) // c's own block coming back, even with c's next hop
	b.advertise(blockA, b.addr) // hijack
	b.advertise(blockB, b.addr)
	e.advertise("198.51.100.0/24", e.addr)
	e.advertise("203.0.113.0/24", e.addr)

	a.setPeers(a.peerOf(c, routing.KindMesh))
	b.setPeers(b.peerOf(c, routing.KindMesh))
	e.setPeers(e.peerOf(c, routing.KindExternal))
	c.setPeers(c.peerOf(a, routing.KindMesh), c.peerOf(b, routing.KindMesh), c.peerOf(e, routing.KindExternal))

	c.waitBest(blockB, 10*time.Second, b.addr)
	c.waitBest("198.51.100.0/24", 10*time.Second, e.addr)
	c.waitBest(blockA, 10*time.Second, a.addr)
	e.waitBest(blockC, 10*time.Second, c.addr)
	a.waitBest(extra, 10*time.Second, c.addr)
	for _, miss := range []struct {
		n      *gbNode
		prefix string
	}{{c, "203.0.113.0/24"}, {c, blockC}, {e, extra}, {e, blockA}, {e, blockB}} {
		if hops := miss.n.best(miss.prefix); hops != nil {
			t.Errorf("%s has %s via %v", miss.n.name, miss.prefix, hops)
		}
	}
	hijack := fmt.Sprintf("%s is assigned to %s, not to next hop %s: hijack rejected", blockA, a.addr, b.addr)
	for _, want := range []string{hijack, blockC + " is our own block", "203.0.113.0/24 is not in the import list"} {
		gbWaitFor(t, 2*time.Second, "log: "+want, func() bool { return c.logs.count("route rejected", want) > 0 })
	}
	checkAgreement(t, c, pol)

	// The same policy again changes nothing: nothing re-installed, logged or reset.
	applied, since := c.s.applied, c.peerState(a.addr).Since
	c.setPolicy(pol)
	if c.s.applied != applied || c.peerState(a.addr).Since != since {
		t.Error("SetPolicy with the same policy re-installed it")
	}
	if n := c.logs.count("route rejected", hijack); n != 1 {
		t.Errorf("hijack logged %d times, want once", n)
	}
	if got := c.s.Rejected(); len(got) != 3 || got[a.addr] != 1 || got[b.addr] != 1 || got[e.addr] != 1 {
		t.Errorf("Rejected() = %v", got)
	}

	// Block A is reassigned to b: the routes c already holds are judged again.
	pol2 := pol.Clone()
	pol2.BlockOwners[gbPfx(blockA)] = b.addr
	start := time.Now()
	c.setPolicy(pol2)
	c.waitBest(blockA, 5*time.Second, b.addr)
	t.Logf("re-judged after a policy change in %v", time.Since(start))
	gbWaitFor(t, 2*time.Second, "a now rejected", func() bool {
		return c.logs.count("route rejected", fmt.Sprintf("%s is assigned to %s, not to next hop %s", blockA, b.addr, a.addr)) == 1
	})
	checkAgreement(t, c, pol2)

	// Exports: allowing the no-export prefix sends it; forbidding it again withdraws it.
	pol3 := pol2.Clone()
	pol3.NoExportToExternal = nil
	c.setPolicy(pol3)
	e.waitBest(extra, 5*time.Second, c.addr)
	c.setPolicy(pol2)
	e.waitBest(extra, 5*time.Second)
	a.waitBest(extra, 5*time.Second, c.addr) // still exported to nodes
	if _, ok := c.s.adv[gbPfx(extra)]; !ok {
		t.Error("the re-originated prefix is no longer ours")
	}
}

// Route reflection: a client's block reaches the other client through the reflector
// with the originator's next hop; the reflector's export policy lets reflected pool
// prefixes through; a client's hijack stops at the reflector. (y's own hijack route
// shadows x's at y itself: local routes win, and BestPaths leaves them out.)
func TestGoBGPRouteReflector(t *testing.T) {
	port := gbFreePort(t)
	r := gbStart(t, "r", "127.0.8.1", gbAS, port, true)
	x := gbStart(t, "x", "127.0.8.2", gbAS, port, false)
	y := gbStart(t, "y", "127.0.8.3", gbAS, port, false)
	owners := map[netip.Prefix]netip.Addr{
		gbPfx("10.244.1.0/26"): r.addr, gbPfx("10.244.2.0/26"): x.addr, gbPfx("10.244.3.0/26"): y.addr,
	}
	for _, n := range []*gbNode{r, x, y} {
		var own []netip.Prefix
		for b, o := range owners {
			if o == n.addr {
				own = append(own, b)
			}
		}
		n.setPolicy(routing.Policy{OwnBlocks: own, BlockOwners: owners, Pools: []netip.Prefix{gbPfx("10.244.0.0/16")}})
		n.advertise(own[0].String(), n.addr)
	}
	// y hijacks x's block; its own export policy would stop that, so y exports it as
	// an extra (a misconfigured or malicious node).
	rogue := routing.Policy{OwnBlocks: []netip.Prefix{gbPfx("10.244.3.0/26")}, ExtraExports: []netip.Prefix{gbPfx("10.244.2.0/26")},
		BlockOwners: owners, Pools: []netip.Prefix{gbPfx("10.244.0.0/16")}}
	y.setPolicy(rogue)
	y.advertise("10.244.2.0/26", y.addr)
	client := func(other *gbNode) routing.PeerConfig {
		pc := r.peerOf(other, routing.KindReflectorClient)
		pc.RouteReflectorClient, pc.ClusterID = true, r.addr.String()
		return pc
	}
	r.setPeers(client(x), client(y))
	wy := y.watch()
	start := time.Now()
	x.setPeers(x.peerOf(r, routing.KindReflector))
	y.setPeers(y.peerOf(r, routing.KindReflector))
	x.waitBest("10.244.3.0/26", 10*time.Second, y.addr)
	x.waitBest("10.244.1.0/26", 5*time.Second, r.addr)
	r.waitBest("10.244.2.0/26", 5*time.Second, x.addr) // not y's claim
	t.Logf("client→reflector→client routes in place %v after SetPeers", time.Since(start))

	sent := time.Now()
	x.advertise("10.244.2.64/26", x.addr) // unassigned: the reflector drops it
	owners[gbPfx("10.244.2.128/26")] = x.addr
	for n, own := range map[*gbNode][]string{r: {"10.244.1.0/26"}, x: {"10.244.2.0/26", "10.244.2.128/26"}} {
		p := routing.Policy{BlockOwners: owners, Pools: []netip.Prefix{gbPfx("10.244.0.0/16")}}
		for _, o := range own {
			p.OwnBlocks = append(p.OwnBlocks, gbPfx(o))
		}
		n.setPolicy(p) // every node learns the new assignment
	}
	rogue.BlockOwners = owners
	y.setPolicy(rogue)
	x.advertise("10.244.2.128/26", x.addr)
	at := wy.waitSet(t, sent, "10.244.2.128/26", 5*time.Second, x.addr)
	t.Logf("propagation client→reflector→client: %v (including three policy installs)", at.Sub(sent))
	if hops := y.best("10.244.2.64/26"); hops != nil {
		t.Errorf("unassigned block reflected: %v", hops)
	}
	gbWaitFor(t, 2*time.Second, "the reflector logs y's hijack", func() bool {
		return r.logs.count("route rejected", "hijack rejected", y.addr.String()) == 1
	})
	checkAgreement(t, r, routing.Policy{OwnBlocks: []netip.Prefix{gbPfx("10.244.1.0/26")}, BlockOwners: owners, Pools: []netip.Prefix{gbPfx("10.244.0.0/16")}})
	if ps := r.peerState(y.addr); !strings.Contains(ps.State, "Established") || ps.Received != 2 || ps.Accepted != 2 {
		t.Errorf("reflector's view of y: %+v", ps)
	}
}
