package gobgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"

	"github.com/hostroute/hostroute/routing"
)

// SetPeers makes GoBGP's neighbours equal to peers, by address:
//   - new ones are added first, and when neighbours are also removed SetPeers waits (up
//     to Options.MakeBeforeBreak) for the new sessions to come up and deliver their
//     routes before it deletes the old ones (make before break: a node moving from one
//     reflector to another keeps a path meanwhile);
//   - a neighbour whose session settings changed is deleted and re-added (GoBGP cannot
//     change them in place); that session drops;
//   - changes of Name, Kind, Import, BFD and LocalRestarting alone touch no session
//     (LocalRestarting only matters when the neighbour is created: clearing it after the
//     first sync must not reset every session);
//   - a neighbour shut down by ShutdownPeer stays down when re-created.
//
// The import/export policy follows the neighbour kinds; it is updated before the new
// neighbours are added (their first routes must pass the right policy) and again after
// removals.
func (g *Speaker) SetPeers(peers []routing.PeerConfig) error {
	g.op.Lock()
	defer g.op.Unlock()
	if !g.isStarted() {
		return errors.New("bgp: set peers: not started")
	}
	want := make(map[netip.Addr]routing.PeerConfig, len(peers))
	for _, pc := range peers {
		pc.Address = pc.Address.Unmap()
		if !pc.Address.IsValid() {
			return fmt.Errorf("bgp: set peers: peer %q has no address", pc.Name)
		}
		if _, dup := want[pc.Address]; dup {
			return fmt.Errorf("bgp: set peers: %v listed twice", pc.Address)
		}
		want[pc.Address] = pc
	}

	g.mu.Lock()
	var added, changed, removed []netip.Addr
	union := g.kindsLocked()
	for a, pc := range want {
		union[a] = pc.Kind
		old, ok := g.apiPeers[a]
		switch {
		case !ok:
			added = append(added, a)
		case !proto.Equal(sessionKey(old), sessionKey(g.apiPeer(pc, false))):
			changed = append(changed, a)
		default:
			g.peers[a] = pc // same session: only our record changes
		}
	}
	for a := range g.peers {
		if _, ok := want[a]; !ok {
			removed = append(removed, a)
		}
	}
	g.mu.Unlock()
	slices.SortFunc(added, netip.Addr.Compare)
	slices.SortFunc(changed, netip.Addr.Compare)
	slices.SortFunc(removed, netip.Addr.Compare)

	var errs []error
	if err := g.installPolicy(union); err != nil {
		errs = append(errs, err)
	}
	for _, a := range added {
		errs = append(errs, g.addPeer(want[a]))
	}
	if len(added) > 0 && len(removed) > 0 && g.opts.MakeBeforeBreak > 0 {
		g.waitUp(added, g.opts.MakeBeforeBreak)
	}
	for _, a := range removed {
		errs = append(errs, g.deletePeer(a, true))
	}
	for _, a := range changed {
		if err := g.deletePeer(a, false); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, g.addPeer(want[a]))
	}
	if len(removed)+len(changed) > 0 {
		errs = append(errs, g.installPolicy(g.kinds()))
	}
	return errors.Join(errs...)
}

func (g *Speaker) addPeer(pc routing.PeerConfig) error {
	g.mu.Lock()
	_, down := g.down[pc.Address]
	p := g.apiPeer(pc, down)
	g.mu.Unlock()
	if err := g.srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: p}); err != nil {
		return fmt.Errorf("bgp: add peer %v (%s): %w", pc.Address, pc.Name, err)
	}
	g.mu.Lock()
	g.peers[pc.Address], g.apiPeers[pc.Address] = pc, p
	g.mu.Unlock()
	return nil
}

// deletePeer sends the neighbour a Cease and forgets it; a shutdown (ShutdownPeer) is
// forgotten too when the neighbour is gone for good rather than being re-created.
func (g *Speaker) deletePeer(a netip.Addr, gone bool) error {
	if err := g.srv.DeletePeer(context.Background(), &api.DeletePeerRequest{Address: a.String()}); err != nil {
		return fmt.Errorf("bgp: delete peer %v: %w", a, err)
	}
	g.mu.Lock()
	delete(g.peers, a)
	delete(g.apiPeers, a)
	delete(g.lastErr, a)
	if gone {
		delete(g.down, a)
	}
	g.mu.Unlock()
	g.hj.forget(a)
	return nil
}

// waitUp waits until every neighbour in addrs is Established and has sent its routes
// (End-of-RIB for each family when graceful restart is negotiated; without it BGP has no
// such signal, so one more poll interval), or until timeout.
func (g *Speaker) waitUp(addrs []netip.Addr, timeout time.Duration) {
	const poll = 100 * time.Millisecond
	deadline := time.Now().Add(timeout)
	seen := map[netip.Addr]int{}
	for time.Now().Before(deadline) {
		done := true
		for _, a := range addrs {
			p, err := g.listPeer(a)
			if err != nil || p.GetState().GetSessionState() != api.PeerState_ESTABLISHED {
				done = false
				continue
			}
			seen[a]++
			if grNegotiated(p) {
				for _, af := range p.GetAfiSafis() {
					if af.GetMpGracefulRestart().GetState().GetReceived() && !af.GetMpGracefulRestart().GetState().GetEndOfRibReceived() {
						done = false
					}
				}
			} else if seen[a] < 2 {
				done = false
			}
		}
		if done {
			return
		}
		time.Sleep(poll)
	}
	g.log.Warn("bgp: new neighbours not up in time, removing the old ones anyway", "waited", timeout, "new", addrs)
}

func (g *Speaker) listPeer(a netip.Addr) (*api.Peer, error) {
	var out *api.Peer
	err := g.srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: a.String()}, func(p *api.Peer) { out = p })
	if err == nil && out == nil {
		err = fmt.Errorf("bgp: no peer %v", a)
	}
	return out, err
}

// grNegotiated: GoBGP's API shows the configured GR flag only; the peer's restart time or
// a per-family "received" flag shows the capability was exchanged.
func grNegotiated(p *api.Peer) bool {
	if !p.GetGracefulRestart().GetEnabled() {
		return false
	}
	if p.GetGracefulRestart().GetPeerRestartTime() > 0 {
		return true
	}
	for _, af := range p.GetAfiSafis() {
		if af.GetMpGracefulRestart().GetState().GetReceived() {
			return true
		}
	}
	return false
}

// apiPeer translates a PeerConfig. Timers are whole seconds in GoBGP (rounded up).
func (g *Speaker) apiPeer(pc routing.PeerConfig, adminDown bool) *api.Peer {
	connectRetry := pc.ConnectRetry
	if connectRetry <= 0 {
		connectRetry = 5 * time.Second // GoBGP's 120s default leaves a failed dial idle for minutes
	}
	p := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: pc.Address.String(),
			PeerAsn:         pc.PeerAS,
			LocalAsn:        pc.LocalAS,
			AuthPassword:    pc.Password,
			AdminDown:       adminDown,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:               seconds(pc.HoldTime),
			KeepaliveInterval:      seconds(pc.KeepaliveInterval),
			ConnectRetry:           seconds(connectRetry),
			IdleHoldTimeAfterReset: 1,
		}},
		Transport: &api.Transport{PassiveMode: pc.Passive, RemotePort: uint32(g.opts.PeerPort)},
	}
	for _, l := range g.opts.LocalAddresses {
		if l.Unmap().Is4() == pc.Address.Is4() {
			p.Transport.LocalAddress = l.Unmap().String()
			break
		}
	}
	if pc.EBGPMultihopTTL > 0 {
		p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(pc.EBGPMultihopTTL)}
	}
	if pc.RouteReflectorClient {
		p.RouteReflector = &api.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: pc.ClusterID}
	}
	if pc.GracefulRestart {
		p.GracefulRestart = &api.GracefulRestart{
			Enabled:         true,
			RestartTime:     uint32(seconds(pc.RestartTime)),
			LocalRestarting: pc.LocalRestarting,
		}
	}
	for _, f := range peerFamilies(pc) {
		af := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		if pc.GracefulRestart {
			// Per family, or the helper drops everything at once when we restart.
			af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		p.AfiSafis = append(p.AfiSafis, af)
	}
	return p
}

// peerFamilies lists only the families really used: graceful restart makes a peer wait
// for an End-of-RIB in every family listed.
func peerFamilies(pc routing.PeerConfig) []*api.Family {
	v4, v6 := pc.Families()
	var out []*api.Family
	if v4 {
		out = append(out, familyIPv4)
	}
	if v6 {
		out = append(out, familyIPv6)
	}
	return out
}

// sessionKey is the part of a peer whose change needs a new session.
func sessionKey(p *api.Peer) *api.Peer {
	k := proto.Clone(p).(*api.Peer)
	k.Conf.AdminDown = false
	if k.GracefulRestart != nil {
		k.GracefulRestart.LocalRestarting = false
	}
	return k
}

func seconds(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64((d + time.Second - 1) / time.Second)
}

// Peers lists the neighbours. Counters are summed over families; Advertised is 0 unless
// Established and leaves out the End-of-RIB marker GoBGP counts with graceful restart.
// Advertised is counted again only when our own routes or the policy changed, a session
// came up, or advertisedRefresh passed: counting makes GoBGP run every best path through
// the export policy for every neighbour, O(neighbours × routes) — at 100 nodes the main
// idle CPU of a route reflector that was asked every second. LastError is
// the ShutdownPeer reason while shut down, else why the session last went down (or the
// last dial error when GoBGP logs at debug level).
func (g *Speaker) Peers() ([]routing.PeerState, error) {
	if !g.isStarted() {
		return nil, errors.New("bgp: peers: not started")
	}
	var list []*api.Peer
	count, gen := g.countAdvertised()
	err := g.srv.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: count}, func(p *api.Peer) {
		list = append(list, p)
	})
	if err != nil {
		return nil, fmt.Errorf("bgp: list peers: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if count {
		g.advCounted, g.advCounts, g.advCountedGen = time.Now(), map[netip.Addr]uint64{}, gen
	}
	out := make([]routing.PeerState, 0, len(list))
	for _, p := range list {
		a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			continue
		}
		a = a.Unmap()
		cfg, ok := g.peers[a]
		if !ok {
			cfg = routing.PeerConfig{Address: a, PeerAS: p.GetConf().GetPeerAsn()}
		}
		st := routing.PeerState{Config: cfg, State: stateName(p.GetState().GetSessionState()), LastError: g.lastErr[a]}
		if reason, down := g.down[a]; down {
			st.LastError = "shut down: " + reason
		}
		ts := p.GetTimers().GetState()
		if st.State == "Established" {
			st.Since = ts.GetUptime().AsTime()
		} else if ts.GetDowntime() != nil {
			st.Since = ts.GetDowntime().AsTime()
		}
		gr := grNegotiated(p)
		var advertised uint64
		for _, af := range p.GetAfiSafis() {
			s := af.GetState()
			st.Received += s.GetReceived()
			st.Accepted += s.GetAccepted()
			adv := s.GetAdvertised() // what would be sent, even to a session that is down
			if gr && adv > 0 {
				adv--
			}
			if st.State == "Established" {
				advertised += adv
			}
		}
		if count {
			g.advCounts[a] = advertised
		}
		st.Advertised = g.advCounts[a]
		if st.State != "Established" {
			st.Advertised = 0
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(x, y routing.PeerState) int { return x.Config.Address.Compare(y.Config.Address) })
	return out, nil
}

func stateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_IDLE:
		return "Idle"
	case api.PeerState_CONNECT:
		return "Connect"
	case api.PeerState_ACTIVE:
		return "Active"
	case api.PeerState_OPENSENT:
		return "OpenSent"
	case api.PeerState_OPENCONFIRM:
		return "OpenConfirm"
	case api.PeerState_ESTABLISHED:
		return "Established"
	}
	return "Unknown"
}

// ShutdownPeer takes the session down at once with a Cease (administrative shutdown,
// carrying reason as the RFC 8203 communication, truncated to 128 bytes), which drops
// the neighbour's routes here without graceful restart, and keeps it down until
// EnablePeer. (GoBGP's ShutdownPeer would reconnect after 5s, so DisablePeer is used.)
func (g *Speaker) ShutdownPeer(addr netip.Addr, reason string) error {
	g.op.Lock()
	defer g.op.Unlock()
	addr = addr.Unmap()
	g.mu.Lock()
	_, known := g.peers[addr]
	_, already := g.down[addr]
	if known {
		g.down[addr] = reason
	}
	g.mu.Unlock()
	if !known {
		return fmt.Errorf("bgp: shutdown peer %v: not a neighbour", addr)
	}
	if already {
		return nil
	}
	if err := g.srv.DisablePeer(context.Background(), &api.DisablePeerRequest{Address: addr.String(), Communication: reason}); err != nil {
		g.mu.Lock()
		delete(g.down, addr)
		g.mu.Unlock()
		return fmt.Errorf("bgp: shutdown peer %v: %w", addr, err)
	}
	return nil
}

// EnablePeer lets a neighbour shut down by ShutdownPeer connect again; enabling an
// enabled peer does nothing. The session comes back after the neighbour's idle hold
// (GoBGP waits a fixed 5s after any drop before it dials or accepts again).
//
// It re-creates the GoBGP peer rather than calling GoBGP's EnablePeer: re-establishing
// the same GoBGP peer rewrites its shared PeerInfo while watcher goroutines may still
// read it from the neighbour's earlier paths, a data race in GoBGP v3.37
// (osrg/gobgp#2705); a fresh peer has a fresh PeerInfo.
func (g *Speaker) EnablePeer(addr netip.Addr) error {
	g.op.Lock()
	defer g.op.Unlock()
	addr = addr.Unmap()
	g.mu.Lock()
	pc, known := g.peers[addr]
	_, isDown := g.down[addr]
	g.mu.Unlock()
	if !known {
		return fmt.Errorf("bgp: enable peer %v: not a neighbour", addr)
	}
	if !isDown {
		return nil
	}
	if err := g.deletePeer(addr, true); err != nil {
		return fmt.Errorf("bgp: enable peer: %w", err)
	}
	return g.addPeer(pc)
}

// kinds returns the neighbour kinds by address.
func (g *Speaker) kinds() map[netip.Addr]routing.PeerKind {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.kindsLocked()
}

func (g *Speaker) kindsLocked() map[netip.Addr]routing.PeerKind {
	m := make(map[netip.Addr]routing.PeerKind, len(g.peers))
	for a, pc := range g.peers {
		m[a] = pc.Kind
	}
	return m
}

// advertisedRefresh bounds how stale Peers' Advertised may be (routes a reflector
// reflects change without our knowing).
const advertisedRefresh = 15 * time.Second

// countAdvertised reports whether Peers should have GoBGP count advertised routes now,
// and the change generation that count will reflect.
func (g *Speaker) countAdvertised() (bool, uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.advCounts == nil || g.advGen != g.advCountedGen || time.Since(g.advCounted) >= advertisedRefresh {
		return true, g.advGen
	}
	for a := range g.peers {
		if _, ok := g.advCounts[a]; !ok {
			return true, g.advGen
		}
	}
	return false, g.advGen
}
