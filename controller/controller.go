// Package controller is hostroute's cluster controller: it assigns IPAMBlocks from IPPools
// to Nodes, gives a node another block when its blocks fill up, releases the blocks of
// deleted nodes, and reports pool health (overlap, exhaustion) as conditions and Events.
//
// Assignment is serialised in one worker so that two nodes of this replica never race for
// the same free block. Across replicas, leader election keeps one active; and because an
// IPAMBlock's name is derived from its prefix, the API server itself refuses a second
// assignment of the same block should two replicas ever overlap.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/api/v1alpha1"
)

// Config tunes the controller.
type Config struct {
	// Watermark is the fraction of a block's addresses in use at which its node gets
	// another block (default 0.9).
	Watermark float64
	// ReleaseGrace is how long a deleted node's agent must have been silent (its
	// NodeNetworkStatus not updated) before its blocks are released (default 5m). A block
	// its agent freshly reports empty is released at once (see releaseDecision).
	ReleaseGrace time.Duration
	// Resync re-examines every node and pool this often (default 5m).
	Resync time.Duration
	// MaxBlocksPerNode is the most blocks of one address family a node gets (default 4).
	MaxBlocksPerNode int
	// EmptyBlockGrace is how long a live node's extra block must stay empty before it
	// goes back to its pool (default 10m; negative: never).
	EmptyBlockGrace time.Duration
	// ReflectorDownGrace is how long most of an elected route reflector's clients must
	// report their session to it down before another node replaces it (default 10s).
	ReflectorDownGrace time.Duration
}

func (c *Config) setDefaults() {
	if c.Watermark <= 0 || c.Watermark > 1 {
		c.Watermark = 0.9
	}
	if c.ReleaseGrace <= 0 {
		c.ReleaseGrace = 5 * time.Minute
	}
	if c.Resync <= 0 {
		c.Resync = 5 * time.Minute
	}
	if c.MaxBlocksPerNode <= 0 {
		c.MaxBlocksPerNode = 4
	}
	if c.EmptyBlockGrace == 0 {
		c.EmptyBlockGrace = 10 * time.Minute
	}
	if c.ReflectorDownGrace <= 0 {
		c.ReflectorDownGrace = 10 * time.Second
	}
}

// key is a unit of work: a node (assignment/release), a pool (status) or a reservation
// (status).
type key struct {
	kind string // "node", "pool" or "reservation"
	name string
}

// Controller assigns and releases blocks.
type Controller struct {
	cfg      Config
	log      *slog.Logger
	kube     kubernetes.Interface
	hr       *client.Client
	recorder record.EventRecorder
	queue    workqueue.TypedRateLimitingInterface[key]

	factory   informers.SharedInformerFactory
	nodes     corelisters.NodeLister
	nodesSync cache.InformerSynced
	pools     cache.SharedIndexInformer
	blocks    cache.SharedIndexInformer
	// statuses are the agents' NodeNetworkStatuses (the pools each node's pods need).
	statuses     cache.SharedIndexInformer
	reservations cache.SharedIndexInformer
	bgpConfigs   cache.SharedIndexInformer // the route reflector election's settings and result

	// assumed holds blocks this replica created that its informer has not delivered yet,
	// so that a fast second pass does not assign the same node or prefix twice.
	mu      sync.Mutex
	assumed map[string]*v1alpha1.IPAMBlock

	broadcaster record.EventBroadcaster
	metrics     *metrics
}

// New wires a controller; Run starts it.
func New(log *slog.Logger, kube kubernetes.Interface, hr *client.Client, cfg Config) *Controller {
	cfg.setDefaults()
	c := &Controller{
		cfg:     cfg,
		log:     log,
		kube:    kube,
		hr:      hr,
		assumed: map[string]*v1alpha1.IPAMBlock{},
		metrics: newMetrics(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[key](),
			workqueue.TypedRateLimitingQueueConfig[key]{Name: "hostroute-controller"}),
	}
	c.broadcaster = record.NewBroadcaster()
	c.recorder = c.broadcaster.NewRecorder(client.NewScheme(), corev1.EventSource{Component: "hostroute-controller"})

	c.factory = informers.NewSharedInformerFactory(kube, cfg.Resync)
	nodeInf := c.factory.Core().V1().Nodes()
	c.nodes = nodeInf.Lister()
	c.nodesSync = nodeInf.Informer().HasSynced
	c.pools = hr.IPPools.Informer("", cfg.Resync)
	c.blocks = hr.IPAMBlocks.Informer("", cfg.Resync)
	c.statuses = hr.NodeNetworkStatuses.Informer("", 0)
	c.reservations = hr.IPReservations.Informer("", cfg.Resync)
	c.bgpConfigs = hr.BGPConfigurations.Informer("", cfg.Resync)
	// The route reflector election looks at the configuration, every node (labels,
	// readiness) and the sessions the agents report.
	reelect := func(any) { c.queue.Add(reflectorsKey) }
	_, _ = c.bgpConfigs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: reelect, UpdateFunc: func(_, o any) { reelect(o) }, DeleteFunc: reelect,
	})

	_, _ = nodeInf.Informer().AddEventHandlerWithResyncPeriod(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.enqueueObj("node", obj); reelect(obj) },
		UpdateFunc: func(_, obj any) { c.enqueueObj("node", obj); reelect(obj) },
		DeleteFunc: func(obj any) { c.enqueueObj("node", obj); reelect(obj) },
	}, cfg.Resync)
	// Any pool change can change overlaps and selections: re-examine everything.
	_, _ = c.pools.AddEventHandlerWithResyncPeriod(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.enqueueAll() },
		UpdateFunc: func(any, any) { c.enqueueAll() },
		DeleteFunc: func(any) { c.enqueueAll() },
	}, cfg.Resync)
	// A node's needed pools: only a change of the list matters (the status is rewritten
	// for many other reasons).
	_, _ = c.statuses.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.enqueueObj("node", obj); reelect(obj) },
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*v1alpha1.NodeNetworkStatus)
			n, ok2 := cur.(*v1alpha1.NodeNetworkStatus)
			if !ok1 || !ok2 || !slices.Equal(o.Status.PoolsNeeded, n.Status.PoolsNeeded) ||
				!slices.Equal(o.Status.AddressesNeeded, n.Status.AddressesNeeded) {
				c.enqueueObj("node", cur)
			}
			if !ok1 || !ok2 || !slices.Equal(sessionStates(o), sessionStates(n)) {
				reelect(cur)
			}
		},
		DeleteFunc: reelect,
	})
	// Reservations change which blocks are free and how full a block is: every node.
	_, _ = c.reservations.AddEventHandlerWithResyncPeriod(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.enqueueAll() },
		UpdateFunc: func(any, any) { c.enqueueAll() },
		DeleteFunc: func(any) { c.enqueueAll() },
	}, cfg.Resync)
	_, _ = c.blocks.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.blockChanged(obj, false) },
		UpdateFunc: func(_, obj any) { c.blockChanged(obj, false) },
		DeleteFunc: func(obj any) { c.blockChanged(obj, true) },
	})
	return c
}

// Run starts the informers and the worker and blocks until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	c.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.kube.CoreV1().Events("")})
	defer c.broadcaster.Shutdown()

	c.factory.Start(ctx.Done())
	go c.pools.RunWithContext(ctx)
	go c.blocks.RunWithContext(ctx)
	go c.statuses.RunWithContext(ctx)
	go c.reservations.RunWithContext(ctx)
	go c.bgpConfigs.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), c.nodesSync, c.pools.HasSynced, c.blocks.HasSynced, c.statuses.HasSynced, c.reservations.HasSynced,
		c.bgpConfigs.HasSynced) {
		return fmt.Errorf("waiting for caches: %w", ctx.Err())
	}
	c.log.Info("caches synced; assigning blocks", "watermark", c.cfg.Watermark, "releaseGrace", c.cfg.ReleaseGrace)
	c.enqueueAll()
	go wait.UntilWithContext(ctx, func(context.Context) {
		for c.processNext(ctx) {
		}
	}, time.Second)
	<-ctx.Done()
	return nil
}

func (c *Controller) processNext(ctx context.Context) bool {
	k, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(k)
	start := time.Now()
	var after time.Duration
	var err error
	switch k.kind {
	case "node":
		after, err = c.syncNode(ctx, k.name)
	case "pool":
		err = c.syncPool(ctx, k.name)
	case "reservation":
		err = c.syncReservation(ctx, k.name)
	case "reflectors":
		after, err = c.syncReflectors(ctx)
	}
	c.metrics.synced(k.kind, time.Since(start), ignoreConflict(err))
	switch {
	case apierrors.IsConflict(err):
		// Our cache lagged a write (often our own): retry on the fresh version.
		c.log.Debug("conflict; retrying", "kind", k.kind, "name", k.name, "err", err)
		c.queue.AddRateLimited(k)
	case err != nil:
		c.log.Error("sync failed; retrying", "kind", k.kind, "name", k.name, "err", err)
		c.queue.AddRateLimited(k)
	case after > 0:
		c.queue.Forget(k)
		c.queue.AddAfter(k, after)
	default:
		c.queue.Forget(k)
	}
	c.log.Debug("synced", "kind", k.kind, "name", k.name, "took", time.Since(start))
	return true
}

func ignoreConflict(err error) error {
	if apierrors.IsConflict(err) {
		return nil
	}
	return err
}

func (c *Controller) enqueueObj(kind string, obj any) {
	name, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	c.queue.Add(key{kind, name})
}

func (c *Controller) enqueueAll() {
	nodes, _ := c.nodes.List(labels.Everything())
	for _, n := range nodes {
		c.queue.Add(key{"node", n.Name})
	}
	for _, b := range c.allBlocks() {
		c.queue.Add(key{"node", b.Spec.Node}) // nodes that may be gone
	}
	for _, p := range c.listPools() {
		c.queue.Add(key{"pool", p.Name})
	}
	c.enqueueReservations()
	c.queue.Add(reflectorsKey)
}

func (c *Controller) enqueueReservations() {
	for _, k := range c.reservations.GetStore().ListKeys() {
		c.queue.Add(key{"reservation", k})
	}
}

// enqueueReservationsOver queues the reservations a block's allocations can concern: those
// overlapping it (a block elsewhere holds none of their addresses).
func (c *Controller) enqueueReservationsOver(cidr string) {
	blk, err := netip.ParsePrefix(cidr)
	if err != nil {
		c.enqueueReservations()
		return
	}
	for _, o := range c.reservations.GetStore().List() {
		r := o.(*v1alpha1.IPReservation)
		if ps, _ := r.Prefixes(); overlapsAny(blk, ps) {
			c.queue.Add(key{"reservation", r.Name})
		}
	}
}

func (c *Controller) blockChanged(obj any, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	b, ok := obj.(*v1alpha1.IPAMBlock)
	if !ok {
		return
	}
	c.mu.Lock()
	delete(c.assumed, b.Name)
	c.mu.Unlock()
	c.queue.Add(key{"node", b.Spec.Node})
	c.queue.Add(key{"pool", b.Spec.Pool})
	c.enqueueReservationsOver(b.Spec.CIDR)
	if deleted {
		// A freed block may be what a starved node waits for.
		nodes, _ := c.nodes.List(labels.Everything())
		for _, n := range nodes {
			c.queue.Add(key{"node", n.Name})
		}
	}
}

// allBlocks is the informer's blocks plus the ones this replica created and has not seen.
func (c *Controller) allBlocks() []*v1alpha1.IPAMBlock {
	items := c.blocks.GetStore().List()
	out := make([]*v1alpha1.IPAMBlock, 0, len(items))
	seen := make(map[string]bool, len(items))
	for _, o := range items {
		b := o.(*v1alpha1.IPAMBlock)
		out = append(out, b)
		seen[b.Name] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, b := range c.assumed {
		if seen[name] {
			delete(c.assumed, name)
			continue
		}
		out = append(out, b)
	}
	return out
}

func (c *Controller) listPools() []*v1alpha1.IPPool {
	items := c.pools.GetStore().List()
	out := make([]*v1alpha1.IPPool, 0, len(items))
	for _, o := range items {
		out = append(out, o.(*v1alpha1.IPPool))
	}
	return out
}

// syncNode assigns blocks to an existing node, or releases the blocks of a deleted one.
// It returns a delay after which the node must be looked at again (a grace period).
func (c *Controller) syncNode(ctx context.Context, name string) (time.Duration, error) {
	node, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		return c.releaseBlocks(ctx, name)
	}
	if err != nil {
		return 0, fmt.Errorf("get node %s: %w", name, err)
	}
	blocks := c.allBlocks()
	if err := c.clearOrphanMarks(ctx, name, blocks); err != nil {
		return 0, err
	}
	pools := analysePools(c.listPools())
	pn, an := c.needsOf(name)
	needs := nodeNeeds{pools: pn, addrs: an, reserved: c.reservedPrefixes()}
	plan := planNode(node, pools, blocks, c.cfg.Watermark, c.cfg.MaxBlocksPerNode, needs)
	steps, after := planHygiene(node, pools, blocks, needs, c.cfg.Watermark, time.Now(), c.cfg.EmptyBlockGrace)
	var errs []error
	if err := c.applyHygiene(ctx, node, steps); err != nil {
		errs = append(errs, err)
	}
	for _, a := range plan.assign {
		if err := c.createBlock(ctx, node, a); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range plan.short {
		if s.capped > 0 {
			c.log.Warn("node needs a block and has reached the per-node cap", "node", name, "family", s.family, "blocks", s.capped, "max", c.cfg.MaxBlocksPerNode)
			c.recorder.Eventf(node, corev1.EventTypeWarning, "MaxBlocksPerNode", "%s (node %s)", s, name)
			continue
		}
		c.log.Warn("node needs a block and none is free", "node", name, "family", s.family, "pools", s.pools)
		c.recorder.Eventf(node, corev1.EventTypeWarning, "NoFreeBlock", "%s for node %s", s, name)
		for _, pn := range s.pools {
			c.queue.Add(key{"pool", pn})
		}
	}
	return after, errors.Join(errs...)
}

// needsOf are the pools and fixed addresses a node's agent reports its pods need.
func (c *Controller) needsOf(node string) (pools, addrs []string) {
	o, ok, _ := c.statuses.GetStore().GetByKey(node)
	if !ok {
		return nil, nil
	}
	st := o.(*v1alpha1.NodeNetworkStatus).Status
	return st.PoolsNeeded, st.AddressesNeeded
}

func (c *Controller) createBlock(ctx context.Context, node *corev1.Node, a assignment) error {
	want := newBlock(a, node.Name)
	got, err := c.hr.IPAMBlocks.Create(ctx, want)
	if apierrors.IsAlreadyExists(err) {
		// Another writer (a previous leader, or our cache lagging) holds the prefix:
		// look again once the informer has it.
		return fmt.Errorf("block %s already exists; retrying with a fresh cache: %w", want.Name, err)
	}
	if err != nil {
		return fmt.Errorf("create block %s for node %s: %w", want.Name, node.Name, err)
	}
	c.mu.Lock()
	c.assumed[got.Name] = got
	c.mu.Unlock()
	c.log.Info("assigned block", "node", node.Name, "block", got.Spec.CIDR, "pool", got.Spec.Pool, "reason", a.reason)
	c.metrics.assigned.Inc()
	c.recorder.Eventf(node, corev1.EventTypeNormal, "BlockAssigned", "assigned block %s from IPPool %s (%s)", got.Spec.CIDR, got.Spec.Pool, a.reason)
	return nil
}
