package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/node/routes"
	"github.com/hostroute/hostroute/routing"
	"github.com/hostroute/hostroute/routing/bfd"
)

// BFD is the part of routing/bfd the agent uses.
type BFD interface {
	Add(peer, local netip.Addr, cfg bfd.Config) error
	Remove(peer netip.Addr) error
	Events() <-chan bfd.Event
}

// BGPConfig turns on BGP in the agent.
type BGPConfig struct {
	Speaker routing.Speaker
	// BFD serves BFD sessions for peers that ask for it; nil disables BFD.
	BFD BFD
	// ListenPort overrides the BGPConfiguration's port (tests use a free port; -1 = none).
	ListenPort int32
	// StaleGrace keeps learned kernel routes found at start (a restart) until BGP had this
	// long to re-learn them (default 30s), so a restarting agent never cuts traffic.
	StaleGrace time.Duration
	// Leave withdraws everything with a Cease when the agent stops (the node leaves for
	// good); otherwise the agent exits quietly and its peers keep its routes (graceful
	// restart).
	Leave bool
	// SecretNamespace is the only namespace the agent reads TCP-MD5 password Secrets in
	// (its own; the shipped RBAC grants nothing else). A BGPPeer naming a Secret
	// elsewhere is skipped with a Problem that says so. Default DefaultNamespace.
	SecretNamespace string
}

// DefaultStaleGrace is BGPConfig.StaleGrace's default.
const DefaultStaleGrace = 30 * time.Second

// DefaultNamespace is where the shipped manifests install hostroute.
const DefaultNamespace = "hostroute-system"

// bgp runs the node's speaker from the cluster's BGP resources.
type bgp struct {
	cfg   BGPConfig
	log   *slog.Logger
	node  string
	kube  kubernetes.Interface
	nodes cache.SharedIndexInformer
	confs cache.SharedIndexInformer
	peers cache.SharedIndexInformer
	all   cache.SharedIndexInformer // every block: who owns what (hijack protection)
	pools cache.SharedIndexInformer
	// services and endpointSlices decide the Service addresses the node announces.
	services       cache.SharedIndexInformer
	endpointSlices cache.SharedIndexInformer

	restarting bool // kernel routes of a previous run survived: set the GR restart flag
	// reconcilers bring the speaker to the cluster's state, one concern each, in order.
	reconcilers []bgpReconciler
	problems    problemSet

	// mu guards started, startedAt, local and last, which the status paths read.
	mu        sync.Mutex
	started   bool
	startedAt time.Time
	local     routing.NodeBGP
	last      bgpInputs // the inputs of the latest pass

	// table is the only writer of the node's kernel routes; bgp feeds it best paths and
	// BFD's verdicts (BFD is the authority on liveness: routes through a dead next hop
	// leave the kernel at once, even while a graceful restart keeps them in BGP).
	table *routes.Table

	// event records a Warning Event on this node's Node object.
	event func(reason, msg string)
	// kick asks the agent for a pass after a delay.
	kick func(time.Duration)
}

func newBGP(cfg BGPConfig, log *slog.Logger, node string, kube kubernetes.Interface, hr *client.Client, pools cache.SharedIndexInformer, table *routes.Table) *bgp {
	if cfg.StaleGrace <= 0 {
		cfg.StaleGrace = DefaultStaleGrace
	}
	b := &bgp{
		cfg: cfg, log: log.With("component", "bgp"), node: node, kube: kube, table: table, pools: pools,
		nodes: cache.NewSharedIndexInformer(cache.NewListWatchFromClient(kube.CoreV1().RESTClient(), "nodes", "", fields.Everything()), &corev1.Node{}, 0, cache.Indexers{}),
		confs: hr.BGPConfigurations.Informer("", 0),
		peers: hr.BGPPeers.Informer("", 0),
		all:   hr.IPAMBlocks.Informer("", 0),
		services: cache.NewSharedIndexInformer(cache.NewListWatchFromClient(kube.CoreV1().RESTClient(), "services", "", fields.Everything()),
			&corev1.Service{}, 0, cache.Indexers{}),
		endpointSlices: cache.NewSharedIndexInformer(cache.NewListWatchFromClient(kube.DiscoveryV1().RESTClient(), "endpointslices", "", fields.Everything()),
			&discoveryv1.EndpointSlice{}, 0, cache.Indexers{}),
	}
	_ = b.services.SetTransform(dropManagedFields)
	_ = b.endpointSlices.SetTransform(func(o any) (any, error) { return onlyEndpointsOn(node, o) })
	b.reconcilers = newReconcilers(b.log, cfg.Speaker, cfg.BFD, func() {
		b.mu.Lock()
		b.started, b.startedAt = true, time.Now()
		b.mu.Unlock()
	}, func(peer netip.Addr) {
		b.table.SetDead(peer, false)
		if err := b.cfg.Speaker.EnablePeer(peer); err != nil {
			b.log.Warn("enable bgp neighbour after its bfd session was removed", "peer", peer, "err", err)
		}
	})
	for _, r := range b.reconcilers {
		if ps, ok := r.(*peerSetter); ok {
			ps.kick = func(d time.Duration) {
				if b.kick != nil {
					b.kick(d)
				}
			}
		}
	}
	return b
}

func (b *bgp) informers() []cache.SharedIndexInformer {
	return []cache.SharedIndexInformer{b.nodes, b.confs, b.peers, b.all, b.services, b.endpointSlices}
}

// passInformers are the informers any change of which asks for a pass; the Services and
// EndpointSlices ask through onServiceChange.
func (b *bgp) passInformers() []cache.SharedIndexInformer {
	return []cache.SharedIndexInformer{b.nodes, b.confs, b.peers, b.all}
}

// onServiceChange calls kick for the Service and EndpointSlice changes that can change
// this node's Service routes (serviceChangeMatters). A cluster has many more of those
// objects than nodes, and every agent watches them all.
func (b *bgp) onServiceChange(kick func()) {
	h := func(old, cur any) {
		if serviceChangeMatters(b.node, b.config(), old, cur) {
			kick()
		}
	}
	for _, inf := range []cache.SharedIndexInformer{b.services, b.endpointSlices} {
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { h(nil, o) },
			UpdateFunc: h,
			DeleteFunc: func(o any) {
				if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
					o = t.Obj
				}
				h(o, nil)
			},
		})
	}
}

// serviceChangeMatters reports whether a Service or EndpointSlice changing from old to
// cur (nil: absent) can change the Service routes of node: never without LoadBalancer or
// external IP ranges configured (the cluster IP ranges need no Service); for a Service,
// when what ServiceRoutes reads of it changed; for an EndpointSlice, when one side has an
// endpoint on this node and the endpoints differ.
func serviceChangeMatters(node string, conf *v1alpha1.BGPConfiguration, old, cur any) bool {
	if conf == nil || len(conf.Spec.ServiceLoadBalancerIPs)+len(conf.Spec.ServiceExternalIPs) == 0 {
		return false
	}
	switch firstNonNil(old, cur).(type) {
	case *corev1.Service:
		view := func(x any) any {
			s, ok := x.(*corev1.Service)
			if !ok || s == nil {
				return nil
			}
			return []any{s.Spec.Type, s.Spec.ExternalTrafficPolicy, s.Spec.ExternalIPs, s.Status.LoadBalancer.Ingress}
		}
		return !equality.Semantic.DeepEqual(view(old), view(cur))
	case *discoveryv1.EndpointSlice:
		// The Service it belongs to and its endpoints on this node.
		mine := func(x any) (string, []discoveryv1.Endpoint) {
			s, ok := x.(*discoveryv1.EndpointSlice)
			if !ok || s == nil {
				return "", nil
			}
			var out []discoveryv1.Endpoint
			for _, ep := range s.Endpoints {
				if ep.NodeName != nil && *ep.NodeName == node {
					out = append(out, ep)
				}
			}
			return s.Labels[discoveryv1.LabelServiceName], out
		}
		svcA, a := mine(old)
		svcC, c := mine(cur)
		return (len(a) > 0 || len(c) > 0) && (svcA != svcC || !equality.Semantic.DeepEqual(a, c))
	}
	return true
}

func firstNonNil(a, b any) any {
	if a != nil {
		return a
	}
	return b
}

// onlyEndpointsOn slims a cached EndpointSlice to its endpoints on node: the only ones
// ServiceRoutes reads. A large cluster's slices then cost each agent memory in
// proportion to its own endpoints, not to the cluster's.
func onlyEndpointsOn(node string, o any) (any, error) {
	s, ok := o.(*discoveryv1.EndpointSlice)
	if !ok {
		return dropManagedFields(o)
	}
	s.ManagedFields = nil
	var kept []discoveryv1.Endpoint // a new array: the old one would keep every endpoint alive
	for _, ep := range s.Endpoints {
		if ep.NodeName != nil && *ep.NodeName == node {
			kept = append(kept, ep)
		}
	}
	s.Endpoints = kept
	return s, nil
}

// dropManagedFields slims a cached object: the agent never reads its field managers.
func dropManagedFields(o any) (any, error) {
	if m, ok := o.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return o, nil
}

// convergeWait bounds how long a starting node waits for all its BGP sessions before it
// calls itself ready anyway (a peer that is down must not keep pods off a healthy node).
const convergeWait = 10 * time.Second

// ready reports whether the node's routes are out: every BGP session Established, or
// convergeWait passed since the speaker started. Pods started before that could be
// unreachable from the nodes still connecting.
func (b *bgp) ready() (bool, string) {
	if !b.isStarted() {
		return false, "BGP speaker starting"
	}
	peers, err := b.cfg.Speaker.Peers()
	if err != nil {
		return false, "BGP: " + err.Error()
	}
	var waiting []string
	for _, p := range peers {
		if p.State != "Established" {
			waiting = append(waiting, p.Config.Address.String())
		}
	}
	if len(waiting) == 0 {
		return true, ""
	}
	msg := fmt.Sprintf("BGP sessions not established: %s", strings.Join(waiting, ", "))
	return time.Since(b.startTime()) > convergeWait, msg
}

func (b *bgp) isStarted() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.started
}

func (b *bgp) startTime() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.startedAt
}

// onBestPath hands one best-path change to the route table, which writes it on its own
// goroutine (GoBGP's watch delivery never waits for netlink).
func (b *bgp) onBestPath(p routing.BestPath) { b.table.SetLearned(p.Prefix, p.NextHops) }

// repairFromRIB reads the speaker's RIB and corrects the route table where a best-path
// event was missed. Events that arrive during the read win over it.
func (b *bgp) repairFromRIB() error {
	if !b.isStarted() {
		return nil
	}
	since := b.table.Seq()
	paths, err := b.cfg.Speaker.BestPaths()
	if err != nil {
		return fmt.Errorf("read the RIB: %w", err)
	}
	rib := make(map[netip.Prefix][]netip.Addr, len(paths))
	for _, p := range paths {
		if len(p.NextHops) > 0 {
			rib[p.Prefix] = p.NextHops
		}
	}
	if fixed := b.table.RepairLearned(rib, since); len(fixed) > 0 {
		b.log.Warn("best paths missed by the watch, repaired from the RIB", "prefixes", fixed)
	}
	return nil
}

// reconcile runs one pass of the BGP reconcilers (bgp_reconcile.go) from the informers'
// current state. A configuration problem (a missing Secret, a bad import entry) skips only
// what it concerns and becomes a Warning Event once.
func (b *bgp) reconcile(ctx context.Context, own []netip.Prefix) error {
	src := bgpSources{node: b.node, own: own, conf: b.config(), listenPort: b.cfg.ListenPort,
		restarting: b.restarting && b.table.Keeping()}
	for _, o := range b.nodes.GetStore().List() {
		src.nodes = append(src.nodes, o.(*corev1.Node))
	}
	for _, o := range b.peers.GetStore().List() {
		src.peers = append(src.peers, o.(*v1alpha1.BGPPeer))
	}
	for _, o := range b.all.GetStore().List() {
		src.blocks = append(src.blocks, o.(*v1alpha1.IPAMBlock))
	}
	for _, o := range b.pools.GetStore().List() {
		src.pools = append(src.pools, o.(*v1alpha1.IPPool))
	}
	for _, o := range b.services.GetStore().List() {
		src.services = append(src.services, o.(*corev1.Service))
	}
	for _, o := range b.endpointSlices.GetStore().List() {
		src.slices = append(src.slices, o.(*discoveryv1.EndpointSlice))
	}
	src.secrets, src.secretErrs = b.secrets(ctx, src.peers)
	in, err := computeInputs(src)
	if err != nil {
		return fmt.Errorf("bgp: %w", err)
	}
	for _, msg := range b.problems.update(in.set.Problems) {
		b.log.Warn("bgp configuration problem", "problem", msg)
		if b.event != nil {
			b.event("BGPConfigProblem", msg)
		}
	}
	b.mu.Lock()
	b.local, b.last = in.set.Local, in
	b.mu.Unlock()
	var errs []error
	for i, r := range b.reconcilers {
		if err := r.reconcile(ctx, in); err != nil {
			errs = append(errs, fmt.Errorf("bgp %s: %w", r.name(), err))
			if i == 0 {
				break // nothing else works on a speaker that did not start
			}
		}
	}
	return errors.Join(errs...)
}

func (b *bgp) config() *v1alpha1.BGPConfiguration {
	o, ok, _ := b.confs.GetStore().GetByKey("default")
	if !ok {
		return nil
	}
	return o.(*v1alpha1.BGPConfiguration)
}

// secrets resolves the TCP-MD5 passwords the BGPPeers name. A Secret outside the
// agent's namespace, or one the API refuses or lacks, becomes a reason in errs and a
// Problem in the peer set, and that peer alone is skipped.
func (b *bgp) secrets(ctx context.Context, peers []*v1alpha1.BGPPeer) (out, errs map[string]string) {
	out, errs = map[string]string{}, map[string]string{}
	ns := b.cfg.SecretNamespace
	if ns == "" {
		ns = DefaultNamespace
	}
	for _, p := range peers {
		ref := p.Spec.PasswordSecretRef
		if ref == nil {
			continue
		}
		key := ref.Namespace + "/" + ref.Name + "/" + ref.Key
		if ref.Namespace != ns {
			errs[key] = fmt.Sprintf("hostroute-node reads Secrets only in namespace %s; move the Secret there", ns)
			continue
		}
		s, err := b.kube.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue // "not found" is ComputePeers' own Problem
		}
		if err != nil {
			errs[key] = fmt.Sprintf("cannot read it: %v", err)
			continue
		}
		if v, ok := s.Data[ref.Key]; ok {
			out[key] = string(v)
		}
	}
	return out, errs
}

// advertised lists the node's own routes of the latest pass with, per neighbour,
// whether the policy sends it there and the attributes it carries.
func (b *bgp) advertised() []*agentv1.Advertisement {
	b.mu.Lock()
	in := b.last
	b.mu.Unlock()
	return advertisements(in)
}

// advertisements is advertised's pure part.
func advertisements(in bgpInputs) []*agentv1.Advertisement {
	var out []*agentv1.Advertisement
	add := func(p netip.Prefix, origin string, reasons []string) {
		a := &agentv1.Advertisement{Prefix: p.String(), Origin: origin, Reasons: reasons}
		for _, pc := range in.set.Peers {
			to := &agentv1.AdvertisedTo{Peer: pc.Address.String(), Name: pc.Name, Kind: string(pc.Kind)}
			ok, why := in.policy.Exports(pc.Kind, pc.Address, p, false, false)
			if v4, v6 := pc.Families(); p.Addr().Is4() && !v4 || p.Addr().Is6() && !v6 {
				ok, why = false, "the session does not carry "+family(p)
			}
			to.Sent = ok
			if !ok {
				to.Reason = why
			} else {
				attrs := in.policy.ExportAttrs(pc.Address, p)
				if pc.PeerAS != pc.LocalAS { // eBGP carries no local preference
					attrs.LocalPref, attrs.HasLocalPref = 0, false
				}
				to.Attributes = attrs.String()
			}
			a.To = append(a.To, to)
		}
		out = append(out, a)
	}
	for _, p := range in.own {
		add(p, "block", nil)
	}
	for _, r := range in.services {
		if !slices.Contains(in.own, r.Prefix) {
			add(r.Prefix, "service", r.Reasons)
		}
	}
	return out
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// watchBFD shuts a BGP neighbour the moment BFD declares it down (its routes are withdrawn
// at once) and lets it back when BFD is up again. An AdminDown from the peer is a
// deliberate shutdown, not a failure (RFC 5882 3.2): a restarting agent sends it while
// its node keeps forwarding, and BGP's graceful restart keeps its routes meanwhile; if
// the node does not come back, the graceful-restart timer removes them.
func (b *bgp) watchBFD(ctx context.Context) {
	if b.cfg.BFD == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-b.cfg.BFD.Events():
			switch {
			case ev.State == bfd.Up:
				b.log.Info("bfd up", "peer", ev.Peer)
				b.table.SetDead(ev.Peer, false)
				if err := b.cfg.Speaker.EnablePeer(ev.Peer); err != nil {
					b.log.Warn("enable bgp neighbour after bfd up", "peer", ev.Peer, "err", err)
				}
			case ev.State == bfd.Down && !ev.PeerAdminDown():
				b.log.Warn("bfd down: removing routes via the peer and shutting the bgp session", "peer", ev.Peer, "diag", ev.Diag.String())
				b.table.SetDead(ev.Peer, true)
				if err := b.cfg.Speaker.ShutdownPeer(ev.Peer, "BFD down: "+ev.Diag.String()); err != nil {
					b.log.Warn("shut bgp neighbour after bfd down", "peer", ev.Peer, "err", err)
				}
			}
		}
	}
}
