package routingtest

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hostroute/hostroute/routing"
)

var (
	ptA   = netip.MustParseAddr("192.0.2.11")
	ptB   = netip.MustParseAddr("192.0.2.12")
	ptC   = netip.MustParseAddr("192.0.2.13")
	ptToR = netip.MustParseAddr("192.0.2.1")
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestFake(t *testing.T) {
	f := NewFake()
	if err := f.Advertise(pfx("10.244.0.0/26"), ptA); err == nil {
		t.Error("Advertise before Start succeeded")
	}
	if err := f.SetPolicy(routing.Policy{OwnBlocks: []netip.Prefix{pfx("10.244.0.0/26")}}); err != nil {
		t.Errorf("SetPolicy before Start: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Start(ctx, routing.GlobalConfig{AS: 64512, RouterID: ptA}); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.Advertise(pfx("10.244.0.0/26"), ptA))
	if err := f.Advertise(pfx("fd00::/64"), ptA); err == nil {
		t.Error("IPv6 prefix via an IPv4 next hop accepted")
	}
	must(f.SetPeers([]routing.PeerConfig{{Address: ptB, Kind: routing.KindMesh, Name: "b"}, {Address: ptToR, Kind: routing.KindExternal}}))
	if err := f.SetPeers([]routing.PeerConfig{{Address: ptB}, {Address: ptB}}); err == nil {
		t.Error("duplicate peers accepted")
	}
	f.SetPeerState(ptToR, routing.PeerState{State: "Active", LastError: "connection refused"})
	must(f.ShutdownPeer(ptB, "bfd down"))
	ps, err := f.Peers()
	must(err)
	if len(ps) != 2 || ps[0].State != "Active" || ps[0].Config.Address != ptToR ||
		ps[1].State != "Idle" || ps[1].LastError != "shut down: bfd down" || ps[1].Config.Name != "b" {
		t.Errorf("Peers() = %+v", ps)
	}
	must(f.EnablePeer(ptB))
	if ps, _ := f.Peers(); ps[1].State != "Established" {
		t.Errorf("after EnablePeer: %+v", ps[1])
	}

	f.SetBestPath(routing.BestPath{Prefix: pfx("10.244.1.0/26"), NextHops: []netip.Addr{ptC, ptB}})
	var mu sync.Mutex
	var got []routing.BestPath
	must(f.WatchBestPaths(ctx, func(bp routing.BestPath) {
		mu.Lock()
		got = append(got, bp)
		mu.Unlock()
	}))
	f.SetBestPath(routing.BestPath{Prefix: pfx("10.244.1.0/26"), NextHops: []netip.Addr{ptB, ptC}}) // same set: nothing
	f.SetBestPath(routing.BestPath{Prefix: pfx("10.244.1.0/26"), NextHops: []netip.Addr{ptB}})
	f.SetBestPath(routing.BestPath{Prefix: pfx("10.244.2.0/26")}) // never there: nothing
	f.SetBestPath(routing.BestPath{Prefix: pfx("10.244.1.0/26")})
	must(f.Sync(ctx))
	mu.Lock()
	want := []routing.BestPath{
		{Prefix: pfx("10.244.1.0/26"), NextHops: []netip.Addr{ptB, ptC}},
		{Prefix: pfx("10.244.1.0/26"), NextHops: []netip.Addr{ptB}},
		{Prefix: pfx("10.244.1.0/26")},
	}
	if !slices.EqualFunc(got, want, func(a, b routing.BestPath) bool {
		return a.Prefix == b.Prefix && slices.Equal(a.NextHops, b.NextHops) && a.Stale == b.Stale
	}) {
		t.Errorf("watched %v, want %v", got, want)
	}
	mu.Unlock()

	f.FailNext("Withdraw", errors.New("injected"))
	if err := f.Withdraw(pfx("10.244.0.0/26")); err == nil || len(f.Advertised()) != 1 {
		t.Errorf("injected failure: err %v, advertised %v", err, f.Advertised())
	}
	must(f.Withdraw(pfx("10.244.0.0/26")))
	if pol, ok := f.CurrentPolicy(); !ok || len(pol.OwnBlocks) != 1 {
		t.Errorf("policy %+v %v", pol, ok)
	}
	must(f.Stop())
	if f.Started() || len(f.PeerConfigs()) != 0 {
		t.Error("Stop kept state")
	}
}
