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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

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

	started    bool
	restarting bool // kernel routes of a previous run survived: set the GR restart flag
	startedAt  time.Time
	advertised map[netip.Prefix]netip.Addr
	bfdPeers   map[netip.Addr]bool
	problems   string
	local      routing.NodeBGP

	mu sync.Mutex
	// table is the only writer of the node's kernel routes; bgp feeds it best paths and
	// BFD's verdicts (BFD is the authority on liveness: routes through a dead next hop
	// leave the kernel at once, even while a graceful restart keeps them in BGP).
	table *routes.Table

	// event records a Warning Event on this node's Node object.
	event func(reason, msg string)
}

func newBGP(cfg BGPConfig, log *slog.Logger, node string, kube kubernetes.Interface, hr *client.Client, pools cache.SharedIndexInformer, table *routes.Table) *bgp {
	if cfg.StaleGrace <= 0 {
		cfg.StaleGrace = 30 * time.Second
	}
	return &bgp{
		cfg: cfg, log: log.With("component", "bgp"), node: node, kube: kube, table: table, pools: pools,
		nodes:      cache.NewSharedIndexInformer(cache.NewListWatchFromClient(kube.CoreV1().RESTClient(), "nodes", "", fields.Everything()), &corev1.Node{}, 0, cache.Indexers{}),
		confs:      hr.BGPConfigurations.Informer("", 0),
		peers:      hr.BGPPeers.Informer("", 0),
		all:        hr.IPAMBlocks.Informer("", 0),
		advertised: map[netip.Prefix]netip.Addr{},
		bfdPeers:   map[netip.Addr]bool{},
	}
}

func (b *bgp) informers() []cache.SharedIndexInformer {
	return []cache.SharedIndexInformer{b.nodes, b.confs, b.peers, b.all}
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

// reconcile brings the speaker to the desired state: global config, own prefixes
// (advertised before any peer is added, so End-of-RIB never goes out empty), policy,
// peers, BFD sessions.
func (b *bgp) reconcile(ctx context.Context, own []netip.Prefix) error {
	in := routing.PeerInputs{Config: b.config()}
	for _, o := range b.nodes.GetStore().List() {
		in.Nodes = append(in.Nodes, o.(*corev1.Node))
	}
	for _, o := range b.peers.GetStore().List() {
		in.Peers = append(in.Peers, o.(*v1alpha1.BGPPeer))
	}
	in.Secrets, in.SecretErrors = b.secrets(ctx, in.Peers)
	set, err := routing.ComputePeers(b.node, in)
	if err != nil {
		return fmt.Errorf("bgp: %w", err)
	}
	if p := strings.Join(set.Problems, "; "); p != b.problems {
		b.problems = p
		for _, msg := range set.Problems {
			b.log.Warn("bgp configuration problem", "problem", msg)
			if b.event != nil {
				b.event("BGPConfigProblem", msg)
			}
		}
	}
	b.local = set.Local
	if !b.started {
		g := routing.GlobalConfig{AS: set.Local.AS, RouterID: set.Local.RouterID, ListenPort: b.cfg.ListenPort}
		if g.ListenPort == 0 && in.Config != nil {
			g.ListenPort = in.Config.Spec.ListenPort
		}
		if err := b.cfg.Speaker.Start(ctx, g); err != nil {
			return fmt.Errorf("bgp start: %w", err)
		}
		b.mu.Lock()
		b.started, b.startedAt = true, time.Now()
		b.mu.Unlock()
		b.log.Info("bgp speaker started", "as", g.AS, "routerID", g.RouterID, "port", g.ListenPort, "gracefulRestart", b.restarting)
	}
	var errs []error
	if err := b.advertise(own); err != nil {
		errs = append(errs, err)
	}
	if err := b.cfg.Speaker.SetPolicy(b.policy(own, set)); err != nil {
		errs = append(errs, fmt.Errorf("bgp policy: %w", err))
	}
	peers := set.Peers
	for i := range peers {
		peers[i].LocalRestarting = b.restarting && time.Since(b.startedAt) < b.cfg.StaleGrace
	}
	if err := b.cfg.Speaker.SetPeers(peers); err != nil {
		errs = append(errs, fmt.Errorf("bgp peers: %w", err))
	}
	if err := b.syncBFD(set); err != nil {
		errs = append(errs, err)
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

func (b *bgp) advertise(own []netip.Prefix) error {
	var errs []error
	for _, p := range own {
		nh := b.local.Address
		if p.Addr().Is6() && b.local.Address6.IsValid() {
			nh = b.local.Address6
		}
		if cur, ok := b.advertised[p]; ok && cur == nh {
			continue
		}
		if err := b.cfg.Speaker.Advertise(p, nh); err != nil {
			errs = append(errs, fmt.Errorf("advertise %s: %w", p, err))
			continue
		}
		b.advertised[p] = nh
		b.log.Info("advertising block", "prefix", p, "nextHop", nh)
	}
	for p := range b.advertised {
		if slices.Contains(own, p) {
			continue
		}
		if err := b.cfg.Speaker.Withdraw(p); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(b.advertised, p)
		b.log.Info("withdrew block", "prefix", p)
	}
	return errors.Join(errs...)
}

// policy: export our blocks; accept a block only from the node it is assigned to.
func (b *bgp) policy(own []netip.Prefix, set routing.PeerSet) routing.Policy {
	pol := routing.Policy{OwnBlocks: own, BlockOwners: map[netip.Prefix]netip.Addr{}, ExternalImports: map[netip.Addr][]routing.PrefixRange{}}
	addr := map[string]routing.NodeBGP{}
	for _, o := range b.nodes.GetStore().List() {
		if nb, err := routing.NodeBGPOf(o.(*corev1.Node), b.config()); err == nil {
			addr[nb.Name] = nb
		}
	}
	for _, o := range b.all.GetStore().List() {
		blk := o.(*v1alpha1.IPAMBlock)
		p, err := netip.ParsePrefix(blk.Spec.CIDR)
		nb, ok := addr[blk.Spec.Node]
		if err != nil || !ok {
			continue
		}
		owner := nb.Address
		if p.Addr().Is6() && nb.Address6.IsValid() {
			owner = nb.Address6
		}
		pol.BlockOwners[p] = owner
	}
	for _, o := range b.pools.GetStore().List() {
		pool := o.(*v1alpha1.IPPool)
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
	return pol
}

// syncBFD keeps a BFD session for every peer that wants one.
func (b *bgp) syncBFD(set routing.PeerSet) error {
	if b.cfg.BFD == nil {
		return nil
	}
	want := map[netip.Addr]bool{}
	var errs []error
	for _, pc := range set.Peers {
		if !pc.BFD {
			continue
		}
		want[pc.Address] = true
		local := set.Local.Address
		if pc.Address.Is6() {
			local = set.Local.Address6
		}
		if err := b.cfg.BFD.Add(pc.Address, local, bfd.Config{}); err != nil {
			errs = append(errs, fmt.Errorf("bfd %s: %w", pc.Address, err))
			continue
		}
		b.bfdPeers[pc.Address] = true
	}
	for p := range b.bfdPeers {
		if !want[p] {
			_ = b.cfg.BFD.Remove(p)
			delete(b.bfdPeers, p)
		}
	}
	return errors.Join(errs...)
}

// watchBFD shuts a BGP neighbour the moment BFD declares it down (its routes are withdrawn
// at once) and lets it back when BFD is up again. An AdminDown from the peer is a
// deliberate shutdown, not a failure (RFC 5882): BGP handles it.
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
