package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/routing"
	"github.com/hostroute/hostroute/routing/bfd"
)

// bgpInputs is what one pass of the BGP reconcilers works from: read once from the
// informers and the password Secrets, then handed to every reconciler in order.
type bgpInputs struct {
	own []netip.Prefix
	// services are the Service routes the node announces (to external neighbours).
	services []routing.ServiceRoute
	set      routing.PeerSet
	policy   routing.Policy
	global   routing.GlobalConfig
	// restarting: new sessions carry the graceful-restart flag (our forwarding state
	// survived a restart and the grace is not over).
	restarting bool
}

// bgpSources are the objects the inputs are computed from.
type bgpSources struct {
	node       string
	own        []netip.Prefix
	conf       *v1alpha1.BGPConfiguration
	nodes      []*corev1.Node
	peers      []*v1alpha1.BGPPeer
	blocks     []*v1alpha1.IPAMBlock
	pools      []*v1alpha1.IPPool
	services   []*corev1.Service
	slices     []*discoveryv1.EndpointSlice
	secrets    map[string]string
	secretErrs map[string]string
	listenPort int32 // flag override; 0 = the BGPConfiguration's
	restarting bool
}

// computeInputs is the pure part of a pass: the peer set, the policy and the global
// settings from the cluster's objects.
func computeInputs(src bgpSources) (bgpInputs, error) {
	set, err := routing.ComputePeers(src.node, routing.PeerInputs{Config: src.conf, Nodes: src.nodes,
		Peers: src.peers, Secrets: src.secrets, SecretErrors: src.secretErrs})
	if err != nil {
		return bgpInputs{}, err
	}
	g := routing.GlobalConfig{AS: set.Local.AS, RouterID: set.Local.RouterID, ListenPort: src.listenPort}
	if g.ListenPort == 0 && src.conf != nil {
		g.ListenPort = src.conf.Spec.ListenPort
	}
	svcs, problems := routing.ServiceRoutes(routing.ServiceInputs{Node: src.node, Config: src.conf, Services: src.services, Slices: src.slices})
	set.Problems = append(set.Problems, problems...)
	rules := peerRules(&set, src.peers)
	pol := policyFor(src.own, set, src.nodes, src.conf, src.blocks, src.pools)
	addServices(&pol, svcs)
	addPeerRules(&pol, set, rules)
	addPoolTags(&pol, src.pools, &set)
	slices.Sort(set.Problems)
	set.Problems = slices.Compact(set.Problems)
	return bgpInputs{own: src.own, services: svcs, set: set, global: g, restarting: src.restarting, policy: pol}, nil
}

// peerFilters are one BGPPeer's filters and export attributes, parsed.
type peerFilters struct {
	imports, exports []routing.Filter
	attrs            routing.Attrs
}

// peerRules parses each BGPPeer's import and export filters and export attributes. A
// BGPPeer whose filters or attributes do not parse is taken out of the set with a
// Problem: running it without them would send or accept what the operator excluded.
func peerRules(set *routing.PeerSet, peers []*v1alpha1.BGPPeer) map[string]peerFilters {
	out := map[string]peerFilters{}
	bad := map[string]bool{}
	for _, bp := range peers {
		var pf peerFilters
		var err error
		if pf.imports, err = routing.ParseFilters(bp.Spec.ImportFilters); err != nil {
			err = fmt.Errorf("importFilters %w", err)
		} else if e := bp.Spec.Export; e != nil {
			if pf.exports, err = routing.ParseFilters(e.Filters); err != nil {
				err = fmt.Errorf("export.filters %w", err)
			} else if pf.attrs, err = routing.ParseAttrs(e.RouteAttributes); err != nil {
				err = fmt.Errorf("export: %w", err)
			}
		}
		if err != nil {
			bad[bp.Name] = true
			set.Problems = append(set.Problems, fmt.Sprintf("BGPPeer %s: %v; peer skipped", bp.Name, err))
			continue
		}
		out[bp.Name] = pf
	}
	set.Peers = slices.DeleteFunc(set.Peers, func(pc routing.PeerConfig) bool { return pc.Kind == routing.KindExternal && bad[pc.Name] })
	return out
}

// addServices exports the Service routes to external neighbours, each with its range's
// attributes.
func addServices(pol *routing.Policy, svcs []routing.ServiceRoute) {
	for _, r := range svcs {
		pol.ServiceExports = append(pol.ServiceExports, r.Prefix)
		if !r.Attrs.IsZero() {
			pol.Tags = append(pol.Tags, routing.Tag{Source: "Service " + r.Prefix.String(), Prefixes: []netip.Prefix{r.Prefix}, Attrs: r.Attrs})
		}
	}
}

// addPeerRules gives each external neighbour its BGPPeer's filters, and its routes the
// BGPPeer's export attributes (local preference only over iBGP: eBGP strips it).
func addPeerRules(pol *routing.Policy, set routing.PeerSet, rules map[string]peerFilters) {
	for _, pc := range set.Peers {
		pf, ok := rules[pc.Name]
		if pc.Kind != routing.KindExternal || !ok {
			continue
		}
		if len(pf.imports) > 0 {
			if pol.ImportFilters == nil {
				pol.ImportFilters = map[netip.Addr][]routing.Filter{}
			}
			pol.ImportFilters[pc.Address] = pf.imports
		}
		if len(pf.exports) > 0 {
			if pol.ExportFilters == nil {
				pol.ExportFilters = map[netip.Addr][]routing.Filter{}
			}
			pol.ExportFilters[pc.Address] = pf.exports
		}
		a := pf.attrs
		if pc.PeerAS != pc.LocalAS {
			a.LocalPref, a.HasLocalPref = 0, false
		}
		if !a.IsZero() {
			pol.Tags = append(pol.Tags, routing.Tag{Source: "BGPPeer " + pc.Name, Neighbors: []netip.Addr{pc.Address}, Attrs: a})
		}
	}
}

// addPoolTags gives the blocks of each pool the pool's attributes (to every neighbour).
func addPoolTags(pol *routing.Policy, pools []*v1alpha1.IPPool, set *routing.PeerSet) {
	for _, pool := range slices.SortedFunc(slices.Values(pools), func(a, b *v1alpha1.IPPool) int { return strings.Compare(a.Name, b.Name) }) {
		a, err := routing.ParseAttrs(pool.Spec.RouteAttributes)
		if err != nil {
			set.Problems = append(set.Problems, fmt.Sprintf("IPPool %s: %v; its blocks are exported without attributes", pool.Name, err))
			continue
		}
		p, perr := netip.ParsePrefix(pool.Spec.CIDR)
		if perr != nil || a.IsZero() {
			continue
		}
		pol.Tags = append(pol.Tags, routing.Tag{Source: "IPPool " + pool.Name, Prefixes: []netip.Prefix{p.Masked()}, Attrs: a})
	}
}

// policyFor is the node's import/export policy: export its own blocks; accept a block
// from a mesh or reflector neighbour only when the path's next hop is the node the block
// is assigned to; from an external peer only its BGPPeer's import list; never export
// disableBGPExport pools to external peers.
func policyFor(own []netip.Prefix, set routing.PeerSet, nodes []*corev1.Node, conf *v1alpha1.BGPConfiguration,
	blocks []*v1alpha1.IPAMBlock, pools []*v1alpha1.IPPool) routing.Policy {
	pol := routing.Policy{OwnBlocks: slices.Clone(own), ExternalImports: map[netip.Addr][]routing.PrefixRange{}}
	// Each block's owner (next hop) and the owner's AS: a block is accepted from a node
	// only with its owner as next hop, and from an external neighbour only with an AS
	// path that originates in the owner's AS.
	pol.BlockOwners, pol.BlockOwnerAS = routing.OwnerMaps(routing.BlockOwnersOf(nodes, conf, blocks))
	for _, pool := range pools {
		p, err := netip.ParsePrefix(pool.Spec.CIDR)
		if err != nil {
			continue
		}
		pol.Pools = append(pol.Pools, p)
		if pool.Spec.DisableBGPExport {
			pol.NoExportToExternal = append(pol.NoExportToExternal, p)
		}
	}
	for _, pc := range set.Peers {
		if pc.Kind == routing.KindExternal {
			pol.ExternalImports[pc.Address] = pc.Import
		}
	}
	for _, s := range [][]netip.Prefix{pol.OwnBlocks, pol.Pools, pol.NoExportToExternal} {
		slices.SortFunc(s, netip.Prefix.Compare)
	}
	return pol
}

// bgpReconciler brings one concern of the speaker to its desired state. Each keeps what
// it last applied and makes no call when that has not changed, so running one twice with
// the same inputs changes nothing the second time.
type bgpReconciler interface {
	name() string
	reconcile(ctx context.Context, in bgpInputs) error
}

// newReconcilers returns the reconcilers in the order a pass runs them: the speaker
// first; own prefixes before any peer (End-of-RIB never goes out empty); the policy
// before the peers (imports are filtered from the first update); BFD last.
//
// onStart runs once the speaker started; onBFDRemoved when a peer's BFD session goes
// because BFD was turned off for it (its next hop is no longer dead, its session no
// longer shut: BFD no longer has a say).
func newReconcilers(log *slog.Logger, sp routing.Speaker, b BFD, onStart func(), onBFDRemoved func(netip.Addr)) []bgpReconciler {
	// The policy goes before the announcements: GoBGP judges a route against the export
	// policy when it is added and never again, so a new block must be in the export set
	// first (the speaker withdraws what a new policy stops exporting by itself). Then no
	// block change needs a soft reset out.
	rs := []bgpReconciler{
		&speakerStarter{sp: sp, log: log, onStart: onStart},
		&policySetter{sp: sp},
		&advertiser{sp: sp, log: log, advertised: map[netip.Prefix]netip.Addr{}},
		&peerSetter{sp: sp, holdoff: kindChangeHoldoff},
	}
	if b != nil {
		rs = append(rs, &bfdReconciler{bfd: b, sessions: map[netip.Addr]netip.Addr{}, onRemoved: onBFDRemoved})
	}
	return rs
}

// speakerStarter starts the speaker once. GoBGP cannot change its AS or router ID while
// running: a change is logged once and applies at the agent's next start.
type speakerStarter struct {
	sp      routing.Speaker
	log     *slog.Logger
	onStart func()
	started bool
	applied routing.GlobalConfig
	warned  routing.GlobalConfig
}

func (s *speakerStarter) name() string { return "speaker" }

func (s *speakerStarter) reconcile(ctx context.Context, in bgpInputs) error {
	if s.started {
		if !reflect.DeepEqual(in.global, s.applied) && !reflect.DeepEqual(in.global, s.warned) {
			s.warned = in.global
			s.log.Warn("BGP AS, router ID or port changed; restart the agent to apply it",
				"running", fmt.Sprintf("%+v", s.applied), "configured", fmt.Sprintf("%+v", in.global))
		}
		return nil
	}
	if err := s.sp.Start(ctx, in.global); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	s.started, s.applied = true, in.global
	s.log.Info("bgp speaker started", "as", in.global.AS, "routerID", in.global.RouterID, "port", in.global.ListenPort, "gracefulRestart", in.restarting)
	if s.onStart != nil {
		s.onStart()
	}
	return nil
}

// advertiser announces the node's own blocks and its Service routes (next hop: the
// node's address of the prefix's family) and withdraws what the node no longer holds.
type advertiser struct {
	sp         routing.Speaker
	log        *slog.Logger
	advertised map[netip.Prefix]netip.Addr
}

func (a *advertiser) name() string { return "advertisements" }

func (a *advertiser) reconcile(_ context.Context, in bgpInputs) error {
	var errs []error
	want := map[netip.Prefix]string{}
	for _, p := range in.own {
		want[p] = "block"
	}
	for _, r := range in.services {
		if _, ok := want[r.Prefix]; !ok {
			want[r.Prefix] = "service"
		}
	}
	for _, p := range slices.SortedFunc(maps.Keys(want), netip.Prefix.Compare) {
		nh := in.set.Local.Address
		if p.Addr().Is6() && in.set.Local.Address6.IsValid() {
			nh = in.set.Local.Address6
		}
		if cur, ok := a.advertised[p]; ok && cur == nh {
			continue
		}
		if err := a.sp.Advertise(p, nh); err != nil {
			errs = append(errs, fmt.Errorf("advertise %s: %w", p, err))
			continue
		}
		a.advertised[p] = nh
		a.log.Info("advertising "+want[p], "prefix", p, "nextHop", nh)
	}
	for p := range a.advertised {
		if _, ok := want[p]; ok {
			continue
		}
		if err := a.sp.Withdraw(p); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(a.advertised, p)
		a.log.Info("withdrew route", "prefix", p)
	}
	return errors.Join(errs...)
}

// policySetter installs the policy when it changed (installing it re-evaluates every
// path, so an unchanged policy is not installed again).
type policySetter struct {
	sp      routing.Speaker
	applied *routing.Policy
}

func (p *policySetter) name() string { return "policy" }

func (p *policySetter) reconcile(_ context.Context, in bgpInputs) error {
	if p.applied != nil && reflect.DeepEqual(*p.applied, in.policy) {
		return nil
	}
	if err := p.sp.SetPolicy(in.policy); err != nil {
		return err
	}
	pol := in.policy
	p.applied = &pol
	return nil
}

// peerSetter makes the speaker's neighbours the peer set, when the set changed.
type peerSetter struct {
	sp      routing.Speaker
	applied []routing.PeerConfig
	done    bool
	// holdoff delays re-creating a session whose kind changes (a node becoming or
	// ceasing to be a route reflector): the speaker re-creates such a session, which
	// drops the routes learned over it on both ends, so it waits until the sessions the
	// new design adds, here and on the other nodes, had time to come up and carry the
	// same routes (make before break). kick asks for a pass after a delay.
	holdoff      time.Duration
	kick         func(time.Duration)
	now          func() time.Time
	changedSince map[netip.Addr]time.Time
}

// kindChangeHoldoff is peerSetter.holdoff in the agent.
const kindChangeHoldoff = 5 * time.Second

func (p *peerSetter) name() string { return "peers" }

func (p *peerSetter) reconcile(_ context.Context, in bgpInputs) error {
	peers := slices.Clone(in.set.Peers)
	for i := range peers {
		peers[i].LocalRestarting = in.restarting
	}
	peers = p.holdKindChanges(peers)
	if p.done && reflect.DeepEqual(p.applied, peers) {
		return nil
	}
	if err := p.sp.SetPeers(peers); err != nil {
		return err
	}
	p.applied, p.done = peers, true
	return nil
}

// holdKindChanges keeps the applied configuration of each session whose kind changed
// less than holdoff ago, and asks for a pass when the first of them is due.
func (p *peerSetter) holdKindChanges(peers []routing.PeerConfig) []routing.PeerConfig {
	if p.holdoff <= 0 || !p.done {
		return peers
	}
	now := time.Now
	if p.now != nil {
		now = p.now
	}
	if p.changedSince == nil {
		p.changedSince = map[netip.Addr]time.Time{}
	}
	applied := map[netip.Addr]routing.PeerConfig{}
	for _, pc := range p.applied {
		applied[pc.Address] = pc
	}
	var wait time.Duration
	held := map[netip.Addr]bool{}
	for i, pc := range peers {
		old, ok := applied[pc.Address]
		if !ok || old.Kind == pc.Kind {
			continue
		}
		since, seen := p.changedSince[pc.Address]
		if !seen {
			since = now()
			p.changedSince[pc.Address] = since
		}
		if left := p.holdoff - now().Sub(since); left > 0 {
			peers[i], held[pc.Address] = old, true
			if wait == 0 || left < wait {
				wait = left
			}
		}
	}
	for a := range p.changedSince {
		if !held[a] {
			delete(p.changedSince, a)
		}
	}
	if wait > 0 && p.kick != nil {
		p.kick(wait + 10*time.Millisecond)
	}
	return peers
}

// bfdReconciler keeps a BFD session for every peer that wants one, from the node's address
// of the peer's family.
type bfdReconciler struct {
	bfd       BFD
	sessions  map[netip.Addr]netip.Addr // peer → local address
	onRemoved func(netip.Addr)
	// pruned: sessions a BFD daemon held from before this agent started (see node/bfdd)
	// were compared with what is wanted, and the unwanted ones removed.
	pruned bool
}

// prune removes the sessions a BFD daemon keeps that nobody wants any more (peers that
// went away while the agent was down). Until the daemon answers with a list it is tried
// again on every pass; an in-process server starts empty and needs nothing.
func (s *bfdReconciler) prune(want map[netip.Addr]netip.Addr) error {
	l, ok := s.bfd.(bfdSessions)
	if s.pruned || !ok {
		return nil
	}
	held := l.Sessions()
	if held == nil {
		return nil
	}
	s.pruned = true
	var errs []error
	for _, h := range held {
		if _, ok := want[h.Peer]; ok {
			continue
		}
		if _, ok := s.sessions[h.Peer]; ok {
			continue // the normal diff below removes it
		}
		if err := s.bfd.Remove(h.Peer); err != nil {
			errs = append(errs, fmt.Errorf("bfd remove stale %s: %w", h.Peer, err))
			s.pruned = false
		}
	}
	return errors.Join(errs...)
}

func (s *bfdReconciler) name() string { return "bfd" }

func (s *bfdReconciler) reconcile(_ context.Context, in bgpInputs) error {
	want := map[netip.Addr]netip.Addr{}
	for _, pc := range in.set.Peers {
		if pc.BFD {
			local := in.set.Local.Address
			if pc.Address.Is6() {
				local = in.set.Local.Address6
			}
			want[pc.Address] = local
		}
	}
	errs := []error{s.prune(want)}
	for peer, local := range want {
		if cur, ok := s.sessions[peer]; ok && cur == local {
			continue
		}
		if err := s.bfd.Add(peer, local, bfd.Config{}); err != nil {
			errs = append(errs, fmt.Errorf("bfd %s: %w", peer, err))
			continue
		}
		s.sessions[peer] = local
	}
	for peer := range s.sessions {
		if _, ok := want[peer]; !ok {
			if err := s.bfd.Remove(peer); err != nil {
				errs = append(errs, fmt.Errorf("bfd remove %s: %w", peer, err))
				continue
			}
			delete(s.sessions, peer)
			if s.onRemoved != nil {
				s.onRemoved(peer)
			}
		}
	}
	return errors.Join(errs...)
}

// problemSet reports each configuration problem once, when it appears, and keeps the
// current list for the node's status.
type problemSet struct {
	mu      sync.Mutex
	current []string
}

// update makes msgs the current problems and returns the ones that are new.
func (p *problemSet) update(msgs []string) (fresh []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		if !slices.Contains(p.current, m) {
			fresh = append(fresh, m)
		}
	}
	p.current = slices.Clone(msgs)
	return fresh
}

func (p *problemSet) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.current)
}
