package agent

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/v1alpha1"
	nodestatus "github.com/hostroute/hostroute/node/status"
	"github.com/hostroute/hostroute/routing"
)

// observer watches the agent from the side: once a second it takes a snapshot of the
// node's routing state, which serves the Routing RPC, /metrics and the NodeNetworkStatus,
// turns BGP session transitions into Events and flap counts, and writes the
// NodeNetworkStatus when it changed (at most every StatusInterval, so a flapping session
// or route churn cannot turn into an API write storm).
type observer struct {
	a       *Agent
	log     *slog.Logger
	metrics *metrics
	// ready is the Status RPC's readiness, set once the gRPC service exists.
	ready func(context.Context) (bool, string)

	snapMu sync.Mutex // serialises snapshots (see routing)

	mu       sync.Mutex
	local    routing.NodeBGP
	problems []string
	lastErr  string
	lastPass time.Time // last reconcile pass, for /healthz
	lastTick time.Time // last snapshot, for /healthz
	snap     *agentv1.RoutingResponse
	sessions map[string]string // peer → BGP state at the last snapshot
	// wake cuts the wait for the next snapshot short (the pools the node needs changed).
	wake chan struct{}
}

func newObserver(a *Agent) *observer {
	return &observer{a: a, log: a.log.With("component", "status"), metrics: newMetrics(), sessions: map[string]string{}, wake: make(chan struct{}, 1)}
}

// nudge asks for a snapshot now; the NodeNetworkStatus is written at once if the pools
// the node needs changed.
func (o *observer) nudge() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// reconciled records a pass of the agent's loop.
func (o *observer) reconciled(took time.Duration, err error) {
	o.metrics.reconcile(took, err)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lastPass = time.Now()
	o.lastErr = ""
	if err != nil {
		o.lastErr = err.Error()
	}
	if b := o.a.bgp; b != nil {
		b.mu.Lock()
		o.local = b.local
		b.mu.Unlock()
		o.problems = b.problems.list()
	}
}

func (o *observer) fillLocal(r *agentv1.RoutingResponse) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.local.RouterID.IsValid() {
		r.RouterId = o.local.RouterID.String()
	}
	r.AsNumber = o.local.AS
	r.LastError = o.lastErr
	r.Problems = append([]string(nil), o.problems...)
}

// routing answers the Routing RPC from a fresh snapshot with every route (routectl wants
// now, not up to a second ago).
func (o *observer) routing(ctx context.Context) *agentv1.RoutingResponse {
	return o.snapshot(ctx, o.a.routeView(true), false)
}

// snapshot builds a routing snapshot around v and runs the session transitions on it;
// keep makes it the latest (the periodic ones, which list only routes not ok).
func (o *observer) snapshot(ctx context.Context, v routeView, keep bool) *agentv1.RoutingResponse {
	// One snapshot at a time: transitions must see them in order, or an older snapshot
	// processed after a newer one would count a flap that never happened.
	o.snapMu.Lock()
	defer o.snapMu.Unlock()
	r := o.a.routingState(ctx, v)
	if keep {
		o.mu.Lock()
		o.snap = r
		o.mu.Unlock()
	}
	o.transitions(r)
	return r
}

// routeCheckEvery is how often the periodic snapshot compares the kernel with the route
// table, given how long the last comparison took: every second, or less often when that
// would cost more than 2 % of a core (about 60 ms with 100k routes).
func routeCheckEvery(took time.Duration) time.Duration {
	return max(time.Second, 50*took)
}

// latest is the last snapshot (nil before the first).
func (o *observer) latest() *agentv1.RoutingResponse {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.snap
}

// alive reports whether the agent's loops still turn (liveness): the observer ticks once
// a second and the agent reconciles at least every ResyncInterval.
func (o *observer) alive() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.lastTick.IsZero() && time.Since(o.lastTick) > 30*time.Second {
		return fmt.Errorf("status loop stuck for %s", time.Since(o.lastTick).Round(time.Second))
	}
	if limit := 3*o.a.cfg.ResyncInterval + time.Minute; !o.lastPass.IsZero() && time.Since(o.lastPass) > limit {
		return fmt.Errorf("no reconcile pass for %s", time.Since(o.lastPass).Round(time.Second))
	}
	return nil
}

// start serves /metrics and the probes (when MetricsAddress is set) and starts
// snapshotting. ready is the Status RPC's readiness.
func (o *observer) start(ctx context.Context, ready func(context.Context) (bool, string)) error {
	o.ready = ready
	if o.a.cfg.MetricsAddress != "" {
		if _, err := o.serveOps(ctx, o.a.cfg.MetricsAddress); err != nil {
			return err
		}
	}
	go o.run(ctx)
	return nil
}

// run snapshots once a second and publishes until ctx ends. Sessions are read every
// second; the kernel routes every routeCheckEvery.
func (o *observer) run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var published *v1alpha1.NodeNetworkStatusStatus
	var lastWrite, checked time.Time
	var view routeView
	var took time.Duration
	for {
		if checked.IsZero() || time.Since(checked) >= routeCheckEvery(took) {
			start := time.Now()
			view = o.a.routeView(false)
			checked, took = time.Now(), time.Since(start)
		}
		snap := o.snapshot(ctx, view, true)
		o.mu.Lock()
		o.lastTick = time.Now()
		o.mu.Unlock()
		st := nodestatus.FromRouting(snap, time.Now())
		st.PoolsNeeded, st.AddressesNeeded = o.a.podsrc.needs(o.a.alloc.NodeBlocks())
		changed := published == nil || !sameStatus(*published, st)
		due := time.Since(lastWrite) >= o.a.cfg.StatusInterval
		heartbeat := time.Since(lastWrite) >= statusHeartbeat
		// The controller assigns blocks of newly needed pools from this status, and a
		// pod's ADD may be waiting for one: no rate limit.
		needs := published != nil && (!slices.Equal(published.PoolsNeeded, st.PoolsNeeded) ||
			!slices.Equal(published.AddressesNeeded, st.AddressesNeeded))
		if o.a.hr != nil && ((changed && due) || heartbeat || needs) {
			if err := o.publish(ctx, st); err != nil {
				o.log.Warn("writing NodeNetworkStatus failed; retrying", "err", err)
			} else {
				published, lastWrite = &st, time.Now()
			}
		}
		o.waitTick(ctx, tick.C, published)
		if ctx.Err() != nil {
			return
		}
	}
}

// waitTick waits for the next snapshot: the next tick, or a nudge after which the pools
// the node needs differ from those published (a nudge that changes nothing, as most pod
// events do, costs no snapshot).
func (o *observer) waitTick(ctx context.Context, tick <-chan time.Time, published *v1alpha1.NodeNetworkStatusStatus) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			return
		case <-o.wake:
			pools, addrs := o.a.podsrc.needs(o.a.alloc.NodeBlocks())
			if published == nil || !slices.Equal(published.PoolsNeeded, pools) || !slices.Equal(published.AddressesNeeded, addrs) {
				return
			}
		}
	}
}

// statusHeartbeat rewrites an unchanged status so that its Updated time shows the agent
// alive; readers treat a much older one as an agent that stopped reporting.
const statusHeartbeat = time.Minute

// sameStatus compares everything but the timestamps and the counters (routes received,
// accepted, advertised, in the kernel; addresses in use): those change with every block
// and pod anywhere in the cluster, and writing them at once would make every block change
// cost one API write per node. They are refreshed by the heartbeat; health, session and
// BFD states, blocks, errors and missing or stale routes are written within
// StatusInterval.
func sameStatus(a, b v1alpha1.NodeNetworkStatusStatus) bool {
	norm := func(s v1alpha1.NodeNetworkStatusStatus) v1alpha1.NodeNetworkStatusStatus {
		s.Updated = nil
		s.Conditions = stripTimes(s.Conditions)
		s.Routes.Kernel = 0
		s.Sessions = slices.Clone(s.Sessions)
		for i := range s.Sessions {
			s.Sessions[i].Received, s.Sessions[i].Accepted, s.Sessions[i].Advertised = 0, 0, 0
		}
		s.Blocks = slices.Clone(s.Blocks)
		for i := range s.Blocks {
			s.Blocks[i].InUse = 0
		}
		return s
	}
	return equality.Semantic.DeepEqual(norm(a), norm(b))
}

func stripTimes(cs []metav1.Condition) []metav1.Condition {
	out := make([]metav1.Condition, len(cs))
	for i, c := range cs {
		c.LastTransitionTime = metav1.Time{}
		out[i] = c
	}
	return out
}

// transitions turns BGP session state changes into Events and flap counts. Sessions are
// polled (once a second, and at every Routing call): the Speaker interface has no state
// stream, so a session that goes down and up again within a poll is not counted.
func (o *observer) transitions(snap *agentv1.RoutingResponse) {
	o.mu.Lock()
	prev := o.sessions
	o.sessions = map[string]string{}
	for _, s := range snap.GetSessions() {
		o.sessions[s.GetPeer()] = s.GetState()
	}
	o.mu.Unlock()
	for _, s := range snap.GetSessions() {
		was, known := prev[s.GetPeer()]
		now := s.GetState()
		who := fmt.Sprintf("%s %s (%s, AS %d)", s.GetKind(), nameOrPeer(s), s.GetPeer(), s.GetPeerAs())
		switch {
		case now == nodestatus.Established && was != nodestatus.Established:
			o.event(corev1.EventTypeNormal, "BGPSessionUp", "BGP session with "+who+" Established")
		case known && was == nodestatus.Established && now != nodestatus.Established:
			o.metrics.flap(s)
			msg := fmt.Sprintf("BGP session with %s went %s", who, now)
			if s.GetLastError() != "" {
				msg += ": " + s.GetLastError()
			}
			o.log.Warn("bgp session down", "peer", s.GetPeer(), "state", now, "err", s.GetLastError())
			o.event(corev1.EventTypeWarning, "BGPSessionDown", msg)
		}
	}
	for peer, was := range prev {
		if _, still := o.sessions[peer]; !still && was == nodestatus.Established {
			o.event(corev1.EventTypeNormal, "BGPSessionRemoved", "BGP neighbour "+peer+" removed from the configuration")
		}
	}
}

func nameOrPeer(s *agentv1.Session) string {
	if s.GetName() != "" {
		return s.GetName()
	}
	return s.GetPeer()
}

// event records an Event on this node's Node object.
func (o *observer) event(typ, reason, msg string) {
	if o.a.recorder == nil {
		return
	}
	ref := &corev1.ObjectReference{Kind: "Node", Name: o.a.cfg.NodeName, UID: types.UID(o.a.cfg.NodeName)}
	o.a.recorder.Event(ref, typ, reason, msg)
}

// publish creates or updates the node's NodeNetworkStatus. The object is owned by the
// Node, so it goes when the node is deleted; the Healthy condition keeps its transition
// time while its status stays the same.
func (o *observer) publish(ctx context.Context, st v1alpha1.NodeNetworkStatusStatus) error {
	hr := o.a.hr
	name := o.a.cfg.NodeName
	cur, err := hr.NodeNetworkStatuses.Get(ctx, name)
	if apierrors.IsNotFound(err) {
		obj := &v1alpha1.NodeNetworkStatus{}
		obj.Name = name
		if o.a.bgp != nil {
			if n, ok, _ := o.a.bgp.nodes.GetStore().GetByKey(name); ok {
				node := n.(*corev1.Node)
				obj.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
			}
		}
		cur, err = hr.NodeNetworkStatuses.Create(ctx, obj)
	}
	if err != nil {
		return fmt.Errorf("get or create NodeNetworkStatus %s: %w", name, err)
	}
	conds := cur.Status.Conditions
	for _, c := range st.Conditions {
		meta.SetStatusCondition(&conds, c)
	}
	st.Conditions = conds
	cur.Status = st
	if _, err := hr.NodeNetworkStatuses.UpdateStatus(ctx, cur); err != nil {
		return fmt.Errorf("update NodeNetworkStatus %s: %w", name, err)
	}
	return nil
}
