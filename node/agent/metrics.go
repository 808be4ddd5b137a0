package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/internal/ops"
	nodestatus "github.com/hostroute/hostroute/node/status"
)

// metrics are the agent's Prometheus metrics, on a registry of its own (no global
// state: tests run several agents in one process). Gauges that describe state (sessions,
// routes, blocks) are computed at scrape time from the observer's last snapshot, so they
// can never disagree with `routectl status`; only events (flaps, passes, requests) are
// counted as they happen.
type metrics struct {
	reg            *prometheus.Registry
	reconcileTime  prometheus.Histogram
	reconcileFails prometheus.Counter
	flaps          *prometheus.CounterVec
	cni            *prometheus.HistogramVec
}

var (
	descSession    = prometheus.NewDesc("hostroute_bgp_session_state", "BGP session state: 1 for the state the session is in (label state).", []string{"peer", "kind", "name", "state"}, nil)
	descSessionUp  = prometheus.NewDesc("hostroute_bgp_session_up", "1 when the BGP session is Established.", []string{"peer", "kind", "name"}, nil)
	descReceived   = prometheus.NewDesc("hostroute_bgp_prefixes_received", "Prefixes received from the neighbour.", []string{"peer", "kind", "name"}, nil)
	descAccepted   = prometheus.NewDesc("hostroute_bgp_prefixes_accepted", "Prefixes received from the neighbour and accepted by the import policy.", []string{"peer", "kind", "name"}, nil)
	descAdvertised = prometheus.NewDesc("hostroute_bgp_prefixes_advertised", "Prefixes advertised to the neighbour.", []string{"peer", "kind", "name"}, nil)
	descBFD        = prometheus.NewDesc("hostroute_bfd_session_up", "1 when the BFD session with the peer is Up (only peers with BFD).", []string{"peer", "state"}, nil)
	descRoutes     = prometheus.NewDesc("hostroute_kernel_routes", "Prefixes by how the kernel compares with what the agent wants (ok, missing, stale, kept).", []string{"state"}, nil)
	descIPAM       = prometheus.NewDesc("hostroute_ipam_addresses", "Addresses of each of the node's blocks, in use or free.", []string{"block", "state"}, nil)
	descReady      = prometheus.NewDesc("hostroute_agent_ready", "1 when the agent is ready (has a block and BGP converged).", nil, nil)
	descHealthy    = prometheus.NewDesc("hostroute_node_healthy", "1 when the node is healthy (the NodeNetworkStatus Healthy condition).", nil, nil)
)

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		reconcileTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "hostroute_reconcile_duration_seconds", Help: "Duration of the agent's reconcile passes.",
			ConstLabels: prometheus.Labels{"component": "agent"}, Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		reconcileFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hostroute_reconcile_errors_total", Help: "Reconcile passes that failed.",
			ConstLabels: prometheus.Labels{"component": "agent"},
		}),
		flaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hostroute_bgp_session_flaps_total", Help: "Times an Established BGP session went down.",
		}, []string{"peer", "kind", "name"}),
		cni: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hostroute_cni_request_duration_seconds", Help: "Latency of the agent's CNI requests (Allocate, Release, Get, GC, Status), by gRPC code.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method", "code"}),
	}
	m.reg.MustRegister(m.reconcileTime, m.reconcileFails, m.flaps, m.cni,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) reconcile(took time.Duration, err error) {
	m.reconcileTime.Observe(took.Seconds())
	if err != nil {
		m.reconcileFails.Inc()
	}
}

func (m *metrics) flap(s *agentv1.Session) {
	m.flaps.WithLabelValues(s.GetPeer(), s.GetKind(), s.GetName()).Inc()
}

// interceptor times the CNI plugin's requests as the agent sees them (routectl's Routing
// is not a CNI request and is left out).
func (m *metrics) interceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
	if method == "Routing" {
		return h(ctx, req)
	}
	start := time.Now()
	resp, err := h(ctx, req)
	m.cni.WithLabelValues(method, status.Code(err).String()).Observe(time.Since(start).Seconds())
	return resp, err
}

// snapshotCollector exports the observer's last snapshot.
func (o *observer) collect(ch chan<- prometheus.Metric) {
	snap := o.latest()
	if snap == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descReady, b2f(snap.GetReady()))
	st := nodestatus.FromRouting(snap, time.Time{})
	healthy, _, _ := nodestatus.Health(snap.GetReady(), snap.GetMessage(), &st)
	gauge(descHealthy, b2f(healthy))
	for _, s := range snap.GetSessions() {
		l := []string{s.GetPeer(), s.GetKind(), s.GetName()}
		for _, state := range []string{"Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established"} {
			gauge(descSession, b2f(s.GetState() == state), append(l, state)...)
		}
		gauge(descSessionUp, b2f(s.GetState() == nodestatus.Established), l...)
		gauge(descReceived, float64(s.GetReceived()), l...)
		gauge(descAccepted, float64(s.GetAccepted()), l...)
		gauge(descAdvertised, float64(s.GetAdvertised()), l...)
		if s.GetBfdState() != "" {
			gauge(descBFD, b2f(s.GetBfdState() == "Up"), s.GetPeer(), s.GetBfdState())
		}
	}
	byState := map[string]int{nodestatus.RouteOK: 0, nodestatus.RouteMissing: 0, nodestatus.RouteStale: 0, nodestatus.RouteKept: 0}
	if c := snap.GetRouteCounts(); c != nil {
		byState[nodestatus.RouteOK], byState[nodestatus.RouteMissing] = int(c.GetOk()), int(c.GetMissing())
		byState[nodestatus.RouteStale], byState[nodestatus.RouteKept] = int(c.GetStale()), int(c.GetKept())
	} else {
		for _, r := range snap.GetRoutes() {
			byState[r.GetState()]++
		}
	}
	for state, n := range byState {
		gauge(descRoutes, float64(n), state)
	}
	for _, b := range snap.GetBlocks() {
		gauge(descIPAM, float64(b.GetInUse()), b.GetCidr(), "in_use")
		gauge(descIPAM, float64(b.GetCapacity()-b.GetInUse()), b.GetCidr(), "free")
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// serveOps listens on addr and serves /metrics, /healthz (the agent's loops turn) and
// /readyz (the Status RPC's readiness: a block, and BGP converged) until ctx ends. It
// listens before returning so that a taken port fails the agent's start, not silently.
func (o *observer) serveOps(ctx context.Context, addr string) (net.Addr, error) {
	o.metrics.reg.MustRegister(prometheus.CollectorFunc(o.collect))
	var opts []ops.Option
	if o.a.cfg.Pprof {
		opts = append(opts, ops.WithPprof())
	}
	bound, err := ops.Serve(ctx, o.log, addr, o.metrics.reg, ops.Probes{
		Healthy: func(*http.Request) error { return o.alive() },
		Ready: func(r *http.Request) error {
			ready, msg := false, "agent starting"
			if o.ready != nil {
				ready, msg = o.ready(r.Context())
			}
			if !ready {
				return errors.New(msg)
			}
			return nil
		},
	}, opts...)
	if err != nil {
		return nil, err
	}
	o.log.Info("serving metrics and health", slog.String("address", bound.String()))
	return bound, nil
}
