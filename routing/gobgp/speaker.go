package gobgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/hostroute/hostroute/routing"
)

// Options are settings of the embedded speaker that the routing.Speaker interface does
// not carry (see NewWithOptions).
type Options struct {
	// LocalAddresses are the source addresses of the sessions this node dials, at most
	// one per family (the node's address, which is also its next hop). Empty = the
	// kernel's choice, which on a multi-homed host may not be the address neighbours
	// know us by: passive neighbours then refuse the connection.
	LocalAddresses []netip.Addr
	// PeerPort is the TCP port neighbours listen on; 0 = 179.
	PeerPort uint16
	// MakeBeforeBreak bounds how long SetPeers waits for new neighbours to come up before
	// it removes the ones that are gone; 0 = 5s, negative = do not wait.
	MakeBeforeBreak time.Duration
	// RejectScanInterval is how often the pre-policy Adj-RIB-In is checked for routes the
	// import policy rejects, to log them (see Rejected); 0 = 5s. A policy change triggers
	// a check at once.
	RejectScanInterval time.Duration
}

// Speaker is the routing.Speaker backed by an embedded GoBGP v3 BgpServer.
//
// Order of calls: Start, SetPolicy, Advertise the own blocks, then SetPeers. Hazards:
//   - GoBGP keeps package-level state (table.UseMultiplePaths, table.SelectionOptions)
//     that every StartBgp overwrites: run one speaker per process, or several with the
//     same settings (tests). Start always enables multipath (ECMP).
//   - Peers added before our blocks are advertised get End-of-RIB with an empty table:
//     with graceful restart they drop everything we had, then relearn it.
//   - TCP-MD5 (routing.PeerConfig.Password) needs `//go:debug multipathtcp=0` in package
//     main: with a go >= 1.24 main module the listener is MPTCP, where TCP_MD5SIG (and
//     GoBGP's listener TTL) fail and the session never comes up.
//   - The BgpServer's Serve goroutine never returns: a Speaker lives as long as the
//     process.
type Speaker struct {
	log  *slog.Logger
	opts Options
	srv  *server.BgpServer
	hj   *hijackLog

	// op serialises the mutating Speaker calls (SetPeers may wait seconds holding it);
	// mu guards the maps below and is only held briefly, so Peers and BestPaths never
	// wait for a SetPeers.
	op sync.Mutex
	mu sync.Mutex

	started   bool
	global    routing.GlobalConfig
	stopWatch context.CancelFunc
	adv       map[netip.Prefix]advert
	peers     map[netip.Addr]routing.PeerConfig
	apiPeers  map[netip.Addr]*api.Peer     // session settings as last added (change detection)
	down      map[netip.Addr]string        // shut down by ShutdownPeer: the reason
	lastErr   map[netip.Addr]string        // why the session last failed, from GoBGP's log
	leaving   map[netip.Addr]chan struct{} // closed when the session leaves Established (Stop)
	// Guarded by op, not mu.
	policy       routing.Policy
	hasPolicy    bool
	applied      *api.SetPoliciesRequest         // the GoBGP policy installed last (nil = none)
	appliedPol   routing.Policy                  // the Policy it was built from
	appliedKinds map[netip.Addr]routing.PeerKind // and the neighbour kinds
	// Advertised counts as of advCounted (Peers); advGen counts changes of our routes,
	// the policy and sessions that came up, advCountedGen is advGen at the last count.
	advCounts             map[netip.Addr]uint64
	advCounted            time.Time
	advGen, advCountedGen uint64
	// onReset, when set (tests), hears every soft reset the policy code asks for: the
	// neighbour's address, "" for all of them.
	onReset func(addr string)
}

// advert is one of our own routes in GoBGP's RIB.
type advert struct {
	nextHop netip.Addr
	uuid    []byte // AddPath's handle; re-adding the prefix makes a new one
}

var _ routing.Speaker = (*Speaker)(nil)

// New returns a speaker with default options; call Start before anything else.
func New(log *slog.Logger) *Speaker { return NewWithOptions(log, Options{}) }

// NewWithOptions returns a speaker; its BgpServer is already serving (every GoBGP
// API call is queued to that loop and would block forever without it).
func NewWithOptions(log *slog.Logger, opts Options) *Speaker {
	if log == nil {
		log = slog.Default()
	}
	if opts.MakeBeforeBreak == 0 {
		opts.MakeBeforeBreak = 5 * time.Second
	}
	if opts.RejectScanInterval <= 0 {
		opts.RejectScanInterval = defaultRejectScanInterval
	}
	g := &Speaker{
		log:      log,
		opts:     opts,
		adv:      map[netip.Prefix]advert{},
		peers:    map[netip.Addr]routing.PeerConfig{},
		apiPeers: map[netip.Addr]*api.Peer{},
		down:     map[netip.Addr]string{},
		lastErr:  map[netip.Addr]string{},
	}
	g.hj = newHijackLog(log)
	g.srv = server.NewBgpServer(server.LoggerOption(newSlogLogger(log, g.notePeerError)))
	go g.srv.Serve()
	return g
}

// notePeerError records why a session failed. It runs on GoBGP's FSM goroutines, so it
// only touches g.mu, never the server.
func (g *Speaker) notePeerError(addr, reason string) {
	a, err := netip.ParseAddr(addr)
	if err != nil || reason == "" {
		return
	}
	g.mu.Lock()
	g.lastErr[a.Unmap()] = reason
	g.mu.Unlock()
}

// Start starts the speaker (ctx bounds the call, not the speaker's life). A policy set
// before Start is installed before any route can arrive.
func (g *Speaker) Start(ctx context.Context, gc routing.GlobalConfig) error {
	g.op.Lock()
	defer g.op.Unlock()
	if g.isStarted() {
		return errors.New("bgp: already started")
	}
	if !gc.RouterID.Is4() {
		return fmt.Errorf("bgp: router ID %v is not an IPv4 address", gc.RouterID)
	}
	if gc.AS == 0 {
		return errors.New("bgp: AS number 0")
	}
	err := g.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:              gc.AS,
		RouterId:         gc.RouterID.String(),
		ListenPort:       gc.ListenPort,
		ListenAddresses:  gc.ListenAddresses,
		UseMultiplePaths: true,
	}})
	if err != nil {
		return fmt.Errorf("bgp: start: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	err = g.srv.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, g.onPeerEvent)
	if err != nil {
		cancel()
		_ = g.srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		return fmt.Errorf("bgp: watch peers: %w", err)
	}
	go g.scanRejected(wctx, g.opts.RejectScanInterval)
	g.mu.Lock()
	g.started, g.global, g.stopWatch = true, gc, cancel
	g.mu.Unlock()
	if g.hasPolicy {
		if err := g.installPolicy(g.kinds()); err != nil {
			return err
		}
	}
	return nil
}

// Stop sends a Cease to every neighbour (they withdraw our routes at once, graceful
// restart or not), waits for GoBGP to end the sessions (see drainPeers) and stops.
// GoBGP forgets peers, routes and policy: a later Start begins from scratch. Exiting
// without Stop makes graceful-restart peers keep our routes.
func (g *Speaker) Stop() error {
	g.op.Lock()
	defer g.op.Unlock()
	if !g.isStarted() {
		return nil
	}
	g.drainPeers()
	err := g.srv.StopBgp(context.Background(), &api.StopBgpRequest{})
	g.mu.Lock()
	g.stopWatch()
	g.started = false
	g.adv = map[netip.Prefix]advert{}
	g.peers = map[netip.Addr]routing.PeerConfig{}
	g.apiPeers = map[netip.Addr]*api.Peer{}
	g.down = map[netip.Addr]string{}
	g.lastErr = map[netip.Addr]string{}
	g.policy, g.hasPolicy, g.applied, g.appliedPol, g.appliedKinds = routing.Policy{}, false, nil, routing.Policy{}, nil
	g.mu.Unlock()
	g.hj.reset()
	if err != nil {
		return fmt.Errorf("bgp: stop: %w", err)
	}
	return nil
}

// stopDrainTimeout bounds how long Stop waits for GoBGP's sessions to end.
const stopDrainTimeout = 2 * time.Second

// drainPeers deletes every neighbour, which sends the same Cease StopBgp would, and waits
// (up to stopDrainTimeout) until GoBGP has ended the sessions that were Established.
// Hazard it defuses: StopBgp in GoBGP v3.37 clears the global configuration while the
// receive goroutine of a session may still read it for an UPDATE in flight, a data race;
// GoBGP reports a deleted Established session as Idle only after that goroutine ended.
func (g *Speaker) drainPeers() {
	ctx := context.Background()
	g.mu.Lock()
	g.leaving = make(map[netip.Addr]chan struct{}, len(g.peers))
	for a := range g.peers {
		g.leaving[a] = make(chan struct{})
	}
	leaving := maps.Clone(g.leaving) // onPeerEvent deletes from g.leaving
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.leaving = nil
		g.mu.Unlock()
	}()
	var list []*api.Peer
	if err := g.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) { list = append(list, p) }); err != nil {
		g.log.Debug("bgp: stop: list peers", "err", err)
	}
	var wait []chan struct{}
	for _, p := range list {
		addr := p.GetConf().GetNeighborAddress()
		if err := g.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr}); err != nil {
			g.log.Debug("bgp: stop: delete peer", "neighbor", addr, "err", err)
			continue
		}
		a, err := netip.ParseAddr(addr)
		if ch, ok := leaving[a.Unmap()]; err == nil && ok && p.GetState().GetSessionState() == api.PeerState_ESTABLISHED {
			wait = append(wait, ch)
		}
	}
	timeout := time.NewTimer(stopDrainTimeout)
	defer timeout.Stop()
	for _, ch := range wait {
		select {
		case <-ch:
		case <-timeout.C:
			g.log.Warn("bgp: stop: sessions still ending, stopping anyway", "waited", stopDrainTimeout)
			return
		}
	}
}

// onPeerEvent handles GoBGP's session state changes (on GoBGP's watcher goroutine).
// GoBGP reports the end of a deleted session as Idle with event type UNKNOWN, not STATE.
func (g *Speaker) onPeerEvent(r *api.WatchEventResponse) {
	g.hj.onPeerEvent(r)
	pe := r.GetPeer()
	switch pe.GetType() {
	case api.WatchEventResponse_PeerEvent_STATE, api.WatchEventResponse_PeerEvent_UNKNOWN:
	default:
		return
	}
	g.mu.Lock()
	g.advGen++ // a session came up or went down: count Advertised again
	g.mu.Unlock()
	if pe.GetPeer().GetState().GetSessionState() == api.PeerState_ESTABLISHED {
		return
	}
	a, err := netip.ParseAddr(pe.GetPeer().GetState().GetNeighborAddress())
	if err != nil {
		return
	}
	g.mu.Lock()
	if ch, ok := g.leaving[a.Unmap()]; ok {
		close(ch)
		delete(g.leaving, a.Unmap())
	}
	g.mu.Unlock()
}

func (g *Speaker) isStarted() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.started
}

// Advertise originates prefix with nextHop. Advertising it again with the same next hop
// does nothing; with another next hop it replaces the route (one UPDATE, no withdrawal).
func (g *Speaker) Advertise(prefix netip.Prefix, nextHop netip.Addr) error {
	g.op.Lock()
	defer g.op.Unlock()
	if !g.isStarted() {
		return errors.New("bgp: advertise: not started")
	}
	prefix, nextHop = prefix.Masked(), nextHop.Unmap()
	if !prefix.IsValid() || !nextHop.IsValid() || prefix.Addr().Is4() != nextHop.Is4() {
		return fmt.Errorf("bgp: advertise %v via %v: need a prefix and a next hop of the same family", prefix, nextHop)
	}
	g.mu.Lock()
	old, ok := g.adv[prefix]
	g.mu.Unlock()
	if ok && old.nextHop == nextHop {
		return nil
	}
	uuid, err := g.addPath(prefix, nextHop)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.adv[prefix] = advert{nextHop: nextHop, uuid: uuid}
	g.advGen++
	g.mu.Unlock()
	return nil
}

// Withdraw stops originating prefix; withdrawing a prefix never advertised does nothing.
func (g *Speaker) Withdraw(prefix netip.Prefix) error {
	g.op.Lock()
	defer g.op.Unlock()
	if !g.isStarted() {
		return errors.New("bgp: withdraw: not started")
	}
	prefix = prefix.Masked()
	g.mu.Lock()
	a, ok := g.adv[prefix]
	g.mu.Unlock()
	if !ok {
		return nil
	}
	if err := g.deletePath(prefix, a); err != nil {
		return err
	}
	g.mu.Lock()
	delete(g.adv, prefix)
	g.advGen++
	g.mu.Unlock()
	return nil
}

func (g *Speaker) addPath(prefix netip.Prefix, nextHop netip.Addr) ([]byte, error) {
	p, err := localPath(prefix, nextHop)
	if err != nil {
		return nil, err
	}
	r, err := g.srv.AddPath(context.Background(), &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p})
	if err != nil {
		return nil, fmt.Errorf("bgp: add path %v via %v: %w", prefix, nextHop, err)
	}
	return r.GetUuid(), nil
}

// deletePath removes one of our routes by its UUID, falling back to a withdrawal by
// prefix if GoBGP no longer knows the UUID. Hazard: a DeletePath with neither a UUID nor
// a path deletes every local route, so an empty UUID is never sent.
func (g *Speaker) deletePath(prefix netip.Prefix, a advert) error {
	if len(a.uuid) > 0 {
		err := g.srv.DeletePath(context.Background(), &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: a.uuid})
		if err == nil {
			return nil
		}
		g.log.Debug("bgp: delete path by uuid failed, withdrawing by prefix", "prefix", prefix, "err", err)
	}
	p, err := localPath(prefix, a.nextHop)
	if err != nil {
		return err
	}
	p.IsWithdraw = true
	if err := g.srv.DeletePath(context.Background(), &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: p.Family, Path: p}); err != nil {
		return fmt.Errorf("bgp: withdraw %v: %w", prefix, err)
	}
	return nil
}

var (
	familyIPv4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyIPv6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

func familyOf(a netip.Addr) *api.Family {
	if a.Is4() {
		return familyIPv4
	}
	return familyIPv6
}

// localPath builds our route: IPv4 carries NEXT_HOP, IPv6 an MP_REACH_NLRI with the next
// hop (GoBGP rejects an IPv6 path with a plain NEXT_HOP).
func localPath(prefix netip.Prefix, nextHop netip.Addr) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: prefix.Addr().String(), PrefixLen: uint32(prefix.Bits())})
	if err != nil {
		return nil, fmt.Errorf("bgp: nlri %v: %w", prefix, err)
	}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	if err != nil {
		return nil, fmt.Errorf("bgp: origin: %w", err)
	}
	fam := familyOf(prefix.Addr())
	var nh *anypb.Any
	if prefix.Addr().Is4() {
		nh, err = anypb.New(&api.NextHopAttribute{NextHop: nextHop.String()})
	} else {
		nh, err = anypb.New(&api.MpReachNLRIAttribute{Family: fam, NextHops: []string{nextHop.String()}, Nlris: []*anypb.Any{nlri}})
	}
	if err != nil {
		return nil, fmt.Errorf("bgp: next hop %v: %w", nextHop, err)
	}
	return &api.Path{Family: fam, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}}, nil
}
