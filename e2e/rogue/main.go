// Command rogue is a misbehaving node for the end-to-end tests: a BGP speaker (hostroute's
// own, with no policy, so it announces whatever it is told) that takes a node's place
// in the node's namespace and announces prefixes it does not own, such as another
// node's block or a more specific inside one. It runs until SIGTERM or SIGINT.
//
//	rogue -as 64512 -local 192.0.2.1 -peer 192.0.2.254 -peer-as 65000 -announce 10.244.0.64/26,10.244.0.80/28
//
// Over IPv6, -local is the IPv6 source and next hop and -router-id the IPv4-form ID:
//
//	rogue -local 2001:db8:2::1 -router-id 192.0.2.1 -peer 2001:db8:2::fe -announce fd00:10:244::40/122
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hostroute/hostroute/routing"
	"github.com/hostroute/hostroute/routing/gobgp"
)

func main() {
	as := flag.Uint("as", 64512, "local AS")
	local := flag.String("local", "", "local address: source address, next hop and (if IPv4 and -router-id is unset) router ID")
	routerID := flag.String("router-id", "", "router ID (an IPv4 address); default: -local")
	peer := flag.String("peer", "", "the neighbour's address (it must accept our connection)")
	peerAS := flag.Uint("peer-as", 65000, "the neighbour's AS")
	announce := flag.String("announce", "", "comma-separated prefixes to announce")
	flag.Parse()
	if err := run(uint32(*as), *local, *routerID, *peer, uint32(*peerAS), *announce); err != nil {
		fmt.Fprintln(os.Stderr, "rogue:", err)
		os.Exit(1)
	}
}

func run(as uint32, local, routerID, peer string, peerAS uint32, announce string) error {
	me, err := netip.ParseAddr(local)
	if err != nil {
		return fmt.Errorf("-local: %w", err)
	}
	if routerID == "" {
		routerID = local
	}
	id, err := netip.ParseAddr(routerID)
	if err != nil || !id.Is4() {
		return fmt.Errorf("-router-id %q: want an IPv4 address (give -router-id when -local is IPv6)", routerID)
	}
	nb, err := netip.ParseAddr(peer)
	if err != nil {
		return fmt.Errorf("-peer: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sp := gobgp.NewWithOptions(log, gobgp.Options{LocalAddresses: []netip.Addr{me}})
	if err := sp.Start(ctx, routing.GlobalConfig{AS: as, RouterID: id, ListenPort: -1}); err != nil {
		return err
	}
	defer sp.Stop()
	for _, s := range strings.Split(announce, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("-announce %q: %w", s, err)
		}
		if err := sp.Advertise(p, me); err != nil {
			return err
		}
	}
	err = sp.SetPeers([]routing.PeerConfig{{Address: nb, PeerAS: peerAS, LocalAS: as, Kind: routing.KindExternal, Name: "victim",
		HoldTime: 9 * time.Second, KeepaliveInterval: 3 * time.Second, ConnectRetry: time.Second, IPv4: nb.Is4(), IPv6: nb.Is6()}})
	if err != nil {
		return err
	}
	fmt.Println("rogue: announcing", announce, "to", nb)
	<-ctx.Done()
	return nil
}
