package gobgp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/hostroute/hostroute/routing"
)

// advertiseFrom makes n originate prefix as if it had learned it from originAS: its
// AS path is [originAS], and n prepends its own AS on the way out (eBGP).
func (n *gbNode) advertiseFrom(prefix string, originAS uint32) {
	n.t.Helper()
	p, err := localPath(gbPfx(prefix), n.addr)
	if err != nil {
		n.t.Fatal(err)
	}
	asPath, err := anypb.New(&api.AsPathAttribute{Segments: []*api.AsSegment{{Type: 2, Numbers: []uint32{originAS}}}})
	if err != nil {
		n.t.Fatal(err)
	}
	p.Pattrs = append(p.Pattrs, asPath)
	if _, err := n.s.srv.AddPath(context.Background(), &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p}); err != nil {
		n.t.Fatalf("%s: add path %s: %v", n.name, prefix, err)
	}
}

// A ToR (AS 65001) carries blocks between racks: node c accepts a pool block from it
// only with its owner's AS as the path's origin, logs the others with the reason, and
// judges again when an owner moves to another AS. GoBGP's decision agrees with
// routing.Policy.Accepts on every received route.
func TestGoBGPPolicyOriginAS(t *testing.T) {
	port := gbFreePort(t)
	c := gbStart(t, "c", "127.0.9.13", gbAS, port, true)
	tor := gbStart(t, "tor", "127.0.9.254", 65001, port, false)
	const blockA, blockB, blockC, unassigned, ext = "10.244.1.0/26", "10.244.2.0/26", "10.244.3.0/26", "10.244.9.0/26", "198.51.100.0/24"
	pol := routing.Policy{
		OwnBlocks:    []netip.Prefix{gbPfx(blockC)},
		BlockOwners:  map[netip.Prefix]netip.Addr{gbPfx(blockA): netip.MustParseAddr("127.0.9.11"), gbPfx(blockB): netip.MustParseAddr("127.0.9.12"), gbPfx(blockC): c.addr},
		BlockOwnerAS: map[netip.Prefix]uint32{gbPfx(blockA): 64601, gbPfx(blockB): 64602, gbPfx(blockC): gbAS},
		Pools:        []netip.Prefix{gbPfx("10.244.0.0/16")},
		ExternalImports: map[netip.Addr][]routing.PrefixRange{tor.addr: {
			{Prefix: gbPfx("10.244.0.0/16"), MaxLen: 28}, {Prefix: gbPfx(ext)},
		}},
	}
	c.setPolicy(pol)
	c.advertise(blockC, c.addr)
	tor.advertiseFrom(blockA, 64601)           // from its owner's rack
	tor.advertiseFrom(blockB, 64601)           // rack 64601 claims rack 64602's block
	tor.advertiseFrom("10.244.1.16/28", 64601) // a more specific of A's block, from A's rack
	tor.advertiseFrom(unassigned, 64601)
	tor.advertise(ext, tor.addr) // the ToR's own, outside the pools
	tor.setPeers(tor.peerOf(c, routing.KindExternal))
	c.setPeers(c.peerOf(tor, routing.KindExternal))

	c.waitBest(blockA, 10*time.Second, tor.addr)
	c.waitBest(ext, 5*time.Second, tor.addr)
	for _, want := range []string{
		"10.244.2.0/26 is assigned to a node in AS 64602, but the path from 127.0.9.254 originates in AS 64601: hijack rejected",
		"10.244.1.16/28 (pool 10.244.0.0/16) from external neighbour 127.0.9.254 is not an assigned block",
		"10.244.9.0/26 (pool 10.244.0.0/16) from external neighbour 127.0.9.254 is not an assigned block",
	} {
		gbWaitFor(t, 3*time.Second, "log: "+want, func() bool { return c.logs.count("route rejected", want) == 1 })
	}
	for _, p := range []string{blockB, "10.244.1.16/28", unassigned} {
		if hops := c.best(p); hops != nil {
			t.Errorf("c has %s via %v", p, hops)
		}
	}
	checkAgreement(t, c, pol)

	// Block B's node moves into rack 64601: the route c already holds is judged again.
	pol2 := pol.Clone()
	pol2.BlockOwnerAS[gbPfx(blockB)] = 64601
	c.setPolicy(pol2)
	c.waitBest(blockB, 5*time.Second, tor.addr)
	checkAgreement(t, c, pol2)

	// Without owner ASes the import list alone decides (every node in one AS, or a
	// caller that does not know them).
	pol3 := pol.Clone()
	pol3.BlockOwnerAS = nil
	c.setPolicy(pol3)
	c.waitBest(unassigned, 5*time.Second, tor.addr)
	checkAgreement(t, c, pol3)
}
