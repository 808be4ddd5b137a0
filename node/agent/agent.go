// Package agent is hostroute's node agent: it watches the node's own IPAMBlocks, serves
// local IPAM to the CNI plugin over a unix socket, keeps a blackhole route for each block
// in the kernel, publishes allocations to the API in batches, and owns the node's NAT.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/node/ipam"
	"github.com/hostroute/hostroute/node/routes"
)

// Config configures the agent.
type Config struct {
	NodeName   string
	StateDir   string        // default /var/lib/hostroute
	SocketPath string        // default /run/hostroute/agent.sock
	AllocWait  time.Duration // how long an ADD waits for a new block when full (default 20s)
	// PublishInterval batches allocation updates to the API (default 1s).
	PublishInterval time.Duration
	// ResyncInterval re-reads the kernel and re-applies everything (default 30s).
	ResyncInterval time.Duration
	// Sysctls turns on forwarding in the agent's network namespace (default true in main).
	Sysctls bool
	// Kernel is the route writer; nil uses netlink in the current namespace, writing
	// RouteProtocol and adopting LegacyRouteProtocol.
	Kernel routes.Kernel
	// RouteProtocol is the protocol number of the agent's routes (0: routes.Protocol).
	RouteProtocol int
	// CNIRouteProtocol is the number the CNI plugin writes pod routes with (0:
	// routes.CNIProtocol); the agent only checks that it never touches it.
	CNIRouteProtocol int
	// LegacyRouteProtocol is a former number of the agent's routes, adopted and rewritten
	// (routes.LegacyProtocol by default in main; 0: none). Hazard: on a host where FRR
	// writes static routes (196) the agent deletes those it does not want.
	LegacyRouteProtocol int
	// NAT applies NAT outgoing; nil disables it.
	NAT NATApplier
	// BGP advertises the node's blocks and installs other nodes' routes; nil Speaker
	// disables BGP.
	BGP BGPConfig
	// MetricsAddress serves /metrics, /healthz and /readyz ("" = not served).
	MetricsAddress string
	// Pprof also serves /debug/pprof on MetricsAddress (profiling; off by default).
	Pprof bool
	// StatusInterval is the least time between two NodeNetworkStatus writes (default 5s).
	StatusInterval time.Duration
	// PodLookup reads a pod an ADD names that the agent's cache does not hold yet (nil:
	// the agent's own client). Give it a rate limit of its own.
	PodLookup kubernetes.Interface
}

// NATApplier programs NAT outgoing for the given pools.
type NATApplier interface {
	Apply(natPools, allPools []netip.Prefix) error
}

func (c *Config) setDefaults() {
	if c.StateDir == "" {
		c.StateDir = "/var/lib/hostroute"
	}
	if c.SocketPath == "" {
		c.SocketPath = "/run/hostroute/agent.sock"
	}
	if c.AllocWait <= 0 {
		c.AllocWait = 20 * time.Second
	}
	if c.PublishInterval <= 0 {
		c.PublishInterval = time.Second
	}
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = 30 * time.Second
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = 5 * time.Second
	}
	if c.RouteProtocol == 0 {
		c.RouteProtocol = routes.Protocol
	}
	if c.CNIRouteProtocol == 0 {
		c.CNIRouteProtocol = routes.CNIProtocol
	}
}

// Agent is one node's agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	hr      *client.Client
	alloc   *ipam.Allocator
	store   *ipam.BoltStore
	fresh   bool // the state dir was empty: adopt the API's copy of allocations
	blocks  cache.SharedIndexInformer
	pools   cache.SharedIndexInformer
	podsrc  *podSource
	changes *broadcast
	kick    chan struct{} // coalesced "reconcile the kernel and NAT"
	pub     *publisher
	bgp     *bgp // nil without BGP
	// table is the only writer of the node's kernel routes.
	table *routes.Table
	// natApplied is the pool set NAT was last built from ("" = apply on the next pass).
	natApplied string
	obs        *observer

	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
	kube        kubernetes.Interface
}

// New opens the state dir and wires the agent; Run starts it.
func New(log *slog.Logger, kube kubernetes.Interface, hr *client.Client, cfg Config) (*Agent, error) {
	cfg.setDefaults()
	if cfg.NodeName == "" {
		return nil, errors.New("node name is required (--node-name or $NODE_NAME)")
	}
	if err := routes.CheckProtocols(cfg.RouteProtocol, cfg.CNIRouteProtocol, cfg.LegacyRouteProtocol); err != nil {
		return nil, err
	}
	_, statErr := os.Stat(filepath.Join(cfg.StateDir, "ipam.db"))
	store, err := ipam.OpenBoltStore(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	alloc, err := ipam.New(store)
	if err != nil {
		store.Close()
		return nil, err
	}
	a := &Agent{
		cfg: cfg, log: log, hr: hr, alloc: alloc, store: store, fresh: os.IsNotExist(statErr),
		blocks:  hr.IPAMBlocks.Informer(fields.OneTermEqualSelector("spec.node", cfg.NodeName).String(), 0),
		pools:   hr.IPPools.Informer("", 0),
		changes: newBroadcast(),
		kick:    make(chan struct{}, 1),
	}
	a.kube = kube
	a.podsrc = newPodSource(log.With("component", "pools"), cfg.NodeName, kube, hr, a.pools)
	if cfg.PodLookup != nil && kube != nil {
		a.podsrc.lookup = cfg.PodLookup
	}
	a.broadcaster = record.NewBroadcaster()
	a.recorder = a.broadcaster.NewRecorder(client.NewScheme(), corev1.EventSource{Component: "hostroute-node", Host: cfg.NodeName})
	a.obs = newObserver(a)
	a.pub = newPublisher(log, hr, alloc, a.blocks.GetStore(), cfg.PublishInterval)
	if a.cfg.Kernel == nil {
		k, err := routes.NewNetlinkProtocol(a.cfg.RouteProtocol, a.cfg.LegacyRouteProtocol)
		if err != nil {
			store.Close()
			return nil, err
		}
		a.cfg.Kernel = k
	}
	a.table = routes.NewTable(a.cfg.Kernel, log.With("component", "routes"), func(c routes.Conflict) {
		a.nodeEvent("KernelRouteConflict", c.String())
	})
	onChange := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { a.kickOff() },
		UpdateFunc: func(old, cur any) {
			if relevantUpdate(old, cur) {
				a.kickOff()
			}
		},
		DeleteFunc: func(any) { a.kickOff() },
	}
	infs := []cache.SharedIndexInformer{a.blocks, a.pools, a.podsrc.reservations}
	if a.podsrc.self != nil {
		infs = append(infs, a.podsrc.self)
	}
	if cfg.BGP.Speaker != nil {
		a.bgp = newBGP(cfg.BGP, log, cfg.NodeName, kube, hr, a.pools, a.table)
		a.bgp.event = a.nodeEvent
		a.bgp.kick = func(d time.Duration) { time.AfterFunc(d, a.kickOff) }
		a.bgp.onServiceChange(a.kickOff)
		infs = append(infs, a.bgp.passInformers()...)
	}
	for _, inf := range infs {
		_, _ = inf.AddEventHandler(onChange)
	}
	// A pod, namespace, pool or node label change can change the pools the node needs
	// (the observer publishes them at once) and the choice of a waiting ADD.
	onPods := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.poolsMayChange() },
		UpdateFunc: func(any, any) { a.poolsMayChange() },
		DeleteFunc: func(any) { a.poolsMayChange() },
	}
	for _, inf := range []cache.SharedIndexInformer{a.podsrc.pods, a.podsrc.namespaces, a.podsrc.self, a.pools} {
		if inf != nil {
			_, _ = inf.AddEventHandler(onPods)
		}
	}
	return a, nil
}

// poolsMayChange wakes the observer (to publish the pools the node needs) and every ADD
// waiting for a block (its pool choice may have changed).
func (a *Agent) poolsMayChange() {
	a.obs.nudge()
	a.changes.notify()
}

func (a *Agent) kickOff() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run serves until ctx ends. The kernel routes stay when it returns: a restarting agent
// must not take the node's pods off the network.
func (a *Agent) Run(ctx context.Context) error {
	defer a.store.Close()
	if a.kube != nil {
		a.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: a.kube.CoreV1().Events("")})
		defer a.broadcaster.Shutdown()
	}
	if a.cfg.Sysctls {
		if err := enableForwarding(); err != nil {
			return err
		}
	}
	if err := a.startInformers(ctx); err != nil {
		return err
	}
	if err := a.syncBlocks(true); err != nil {
		return err
	}
	a.table.SetBlocks(a.alloc.Blocks())
	go a.table.Run(ctx)
	srv, serveErr, err := a.serve(ctx)
	if err != nil {
		return err
	}
	go a.pub.run(ctx)
	a.startBGP(ctx)
	return a.loop(ctx, srv, serveErr)
}

// startInformers runs the informers and waits for their caches. Routes of ours that
// survived in the kernel mean this is a restart: peers get the graceful-restart flag and
// learned routes stay until BGP re-learned them.
func (a *Agent) startInformers(ctx context.Context) error {
	infs := append([]cache.SharedIndexInformer{a.blocks, a.pools}, a.podsrc.informers()...)
	if a.bgp != nil {
		infs = append(infs, a.bgp.informers()...)
		if rs, err := a.cfg.Kernel.List(); err == nil && len(rs) > 0 {
			a.bgp.restarting = true
			// One clock for the restart grace: the table keeps learned routes, and new
			// BGP sessions carry the restart flag, while Table.Keeping says so.
			a.table.KeepUntil(time.Now().Add(a.bgp.cfg.StaleGrace))
			time.AfterFunc(a.bgp.cfg.StaleGrace, a.table.Resync) // then drop what BGP did not re-learn
		}
	}
	var synced []cache.InformerSynced
	for _, inf := range infs {
		go inf.RunWithContext(ctx)
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("waiting for the API: %w", ctx.Err())
	}
	return nil
}

// serve starts the CNI plugin's gRPC service on the unix socket and the ops endpoints.
func (a *Agent) serve(ctx context.Context) (*grpc.Server, <-chan error, error) {
	lis, err := listenUnix(a.cfg.SocketPath)
	if err != nil {
		return nil, nil, err
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(a.obs.metrics.interceptor))
	svc := &server{
		log: a.log, node: a.cfg.NodeName, alloc: a.alloc, waitFor: a.cfg.AllocWait,
		publish: a.pub.trigger, changes: a.changes, routing: a.obs.routing,
		choose: a.podsrc.choose, needPool: a.obs.nudge, blockHolder: a.podsrc.blockHolder,
	}
	if a.bgp != nil {
		svc.routed = a.bgp.ready
	}
	if err := a.obs.start(ctx, svc.readiness); err != nil {
		lis.Close()
		return nil, nil, err
	}
	agentv1.RegisterAgentServer(srv, svc)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	a.log.Info("agent serving", "node", a.cfg.NodeName, "socket", a.cfg.SocketPath, "blocks", a.alloc.Blocks())
	return srv, serveErr, nil
}

// startBGP runs the first BGP pass (the speaker starts, blocks are advertised) and the
// watches of BFD and of the speaker's best paths.
func (a *Agent) startBGP(ctx context.Context) {
	if a.bgp == nil {
		return
	}
	if err := a.bgp.reconcile(ctx, a.alloc.Blocks()); err != nil {
		a.log.Error("bgp", "err", err)
	}
	go a.bgp.watchBFD(ctx)
	go func() {
		err := a.cfg.BGP.Speaker.WatchBestPaths(ctx, a.bgp.onBestPath)
		if err != nil && ctx.Err() == nil {
			a.log.Error("watching bgp best paths stopped", "err", err)
		}
	}()
}

// loop runs a pass on every informer change (coalesced) and a full pass every
// ResyncInterval, until ctx ends: then it stops serving, flushes allocations to the API,
// says goodbye to BFD peers and leaves BGP running into the exit (graceful restart)
// unless the node leaves.
func (a *Agent) loop(ctx context.Context, srv *grpc.Server, serveErr <-chan error) error {
	tick := time.NewTicker(a.cfg.ResyncInterval)
	defer tick.Stop()
	a.kickOff()
	for {
		full := false
		select {
		case <-ctx.Done():
			srv.GracefulStop()
			a.pub.flush(context.Background())
			a.sayBFDGoodbye()
			a.stopBGP()
			return nil
		case err := <-serveErr:
			return fmt.Errorf("grpc server: %w", err)
		case <-a.kick:
		case <-tick.C:
			full = true
		}
		start := time.Now()
		err := a.reconcile(full)
		a.obs.reconciled(time.Since(start), err)
		if err != nil {
			a.log.Error("reconcile failed; retrying", "err", err)
			time.AfterFunc(time.Second, a.kickOff)
		}
	}
}

// reconcile is one level-triggered pass: blocks into the allocator and the route table,
// the speaker to the cluster's BGP resources, NAT from the pools; a full (periodic) pass
// also repairs the route table from the RIB and has it read the kernel back. NAT is rebuilt when the pools changed, and on every full
// (periodic) pass to repair anything that edited the table behind our back.
func (a *Agent) reconcile(full bool) error {
	start := time.Now()
	var errs []error
	if err := a.syncBlocks(false); err != nil {
		errs = append(errs, err)
	}
	own := a.alloc.Blocks()
	a.table.SetBlocks(own)
	natPools, allPools := a.poolPrefixes()
	a.table.SetPools(allPools)
	if a.bgp != nil {
		if err := a.bgp.reconcile(context.Background(), own); err != nil {
			errs = append(errs, err)
		}
		if full {
			if err := a.bgp.repairFromRIB(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if full {
		a.table.Resync()
	}
	if err := a.table.Err(); err != nil {
		errs = append(errs, fmt.Errorf("kernel routes: %w", err))
	}
	if a.cfg.NAT != nil {
		key := fmt.Sprint(natPools, allPools)
		if full || key != a.natApplied {
			if err := a.cfg.NAT.Apply(natPools, allPools); err != nil {
				errs = append(errs, fmt.Errorf("nat: %w", err))
				a.natApplied = ""
			} else {
				a.natApplied = key
			}
		}
	}
	a.log.Debug("reconciled", "took", time.Since(start))
	return errors.Join(errs...)
}

// syncBlocks gives the allocator the node's current blocks. On the first pass after a
// wiped state dir it adopts the API's copy of the allocations: an address recorded
// anywhere is in use until proven free.
func (a *Agent) syncBlocks(first bool) error {
	var blocks []ipam.Block
	adopt := map[netip.Addr]ipam.Owner{}
	for _, o := range a.blocks.GetStore().List() {
		b := o.(*v1alpha1.IPAMBlock)
		if b.Spec.Node != a.cfg.NodeName {
			continue
		}
		p, err := netip.ParsePrefix(b.Spec.CIDR)
		if err != nil {
			a.log.Warn("ignoring block with a bad cidr", "block", b.Name, "cidr", b.Spec.CIDR)
			continue
		}
		blocks = append(blocks, ipam.Block{Prefix: p, Pool: b.Spec.Pool, Draining: b.Spec.Draining})
		for _, al := range b.Status.Allocations {
			if addr, err := netip.ParseAddr(al.Address); err == nil {
				adopt[addr] = ipam.Owner{ContainerID: al.ContainerID, IfName: al.Interface, PodUID: al.PodUID, Namespace: al.Namespace, Pod: al.Pod}
			}
		}
	}
	before := a.alloc.NodeBlocks()
	a.alloc.SetNodeBlocks(blocks)
	a.alloc.SetReserved(a.podsrc.reserved())
	if first && a.fresh && len(adopt) > 0 {
		got, err := a.alloc.Adopt(adopt)
		if err != nil {
			return fmt.Errorf("adopt allocations from the API: %w", err)
		}
		a.log.Warn("state dir was empty: adopted allocations recorded in the API", "count", len(got))
	}
	if after := a.alloc.NodeBlocks(); !slices.Equal(before, after) { // both sorted by the allocator
		a.log.Info("node blocks", "blocks", describeBlocks(after))
		a.changes.notify()
		a.pub.trigger(true)
	}
	return nil
}

func describeBlocks(bs []ipam.Block) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Prefix.String() + " (" + b.Pool + ")"
		if b.Draining {
			out[i] = b.Prefix.String() + " (" + b.Pool + ", draining)"
		}
	}
	return out
}

func (a *Agent) poolPrefixes() (natPools, allPools []netip.Prefix) {
	for _, o := range a.pools.GetStore().List() {
		p := o.(*v1alpha1.IPPool)
		pfx, err := netip.ParsePrefix(p.Spec.CIDR)
		if err != nil {
			continue
		}
		allPools = append(allPools, pfx)
		if p.Spec.NATOutgoing {
			natPools = append(natPools, pfx)
		}
	}
	return natPools, allPools
}

// nodeEvent records a Warning Event on this node (kubectl describe node shows it).
func (a *Agent) nodeEvent(reason, msg string) {
	ref := &corev1.ObjectReference{Kind: "Node", Name: a.cfg.NodeName, UID: types.UID(a.cfg.NodeName)}
	a.recorder.Event(ref, corev1.EventTypeWarning, reason, msg)
}

// bfdGoodbye is implemented by routing/bfd's Server.
type bfdGoodbye interface {
	Shutdown(timeout time.Duration) error
}

// sayBFDGoodbye sends AdminDown on every BFD session before a clean exit: peers then do not
// take the agent's going away for a dead node (RFC 5882 3.2) and keep its routes through
// the graceful restart, instead of dropping them 300 ms after the process stopped. A
// killed agent cannot say it; its peers' BFD then removes its routes at once.
func (a *Agent) sayBFDGoodbye() {
	g, ok := a.cfg.BGP.BFD.(bfdGoodbye)
	if !ok || a.bgp == nil {
		return
	}
	if err := g.Shutdown(2 * time.Second); err != nil {
		a.log.Warn("bfd goodbye", "err", err)
		return
	}
	a.log.Info("bfd: sent AdminDown to every peer")
}

// stopBGP leaves the speaker running into the process exit (peers keep our routes:
// graceful restart) unless the node leaves for good, which withdraws everything with a
// Cease.
func (a *Agent) stopBGP() {
	if a.bgp == nil || !a.bgp.started || !a.cfg.BGP.Leave {
		return
	}
	if err := a.cfg.BGP.Speaker.Stop(); err != nil {
		a.log.Warn("bgp stop", "err", err)
	}
	a.log.Info("left: sent Cease to every BGP neighbour")
}
