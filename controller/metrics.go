package controller

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// metrics are the controller's Prometheus metrics. Block use is computed at scrape time
// from the informer, so it is the cluster-wide view the agents publish (per block, in
// use and free) without a second source of truth.
type metrics struct {
	syncTime   *prometheus.HistogramVec
	syncErrors *prometheus.CounterVec
	assigned   prometheus.Counter
	returned   prometheus.Counter
}

var descBlockAddresses = prometheus.NewDesc("hostroute_ipam_block_addresses",
	"Addresses of every assigned block as its node last published them, in use or free.",
	[]string{"block", "node", "pool", "state"}, nil)

func newMetrics() *metrics {
	return &metrics{
		syncTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hostroute_reconcile_duration_seconds", Help: "Duration of the controller's syncs, by kind (node, pool).",
			ConstLabels: prometheus.Labels{"component": "controller"}, Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"kind"}),
		syncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hostroute_reconcile_errors_total", Help: "Syncs that failed (conflicts excluded), by kind.",
			ConstLabels: prometheus.Labels{"component": "controller"},
		}, []string{"kind"}),
		assigned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hostroute_ipam_blocks_assigned_total", Help: "Blocks this replica assigned to nodes.",
		}),
		returned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hostroute_ipam_blocks_returned_total", Help: "Extra blocks of live nodes this replica returned to their pool after they stayed empty.",
		}),
	}
}

func (m *metrics) synced(kind string, took time.Duration, err error) {
	m.syncTime.WithLabelValues(kind).Observe(took.Seconds())
	if err != nil {
		m.syncErrors.WithLabelValues(kind).Inc()
	}
}

// Collectors are the controller's metrics, for the caller's registry. Block gauges are
// empty until this replica leads (its informers run only then).
func (c *Controller) Collectors() []prometheus.Collector {
	return []prometheus.Collector{c.metrics.syncTime, c.metrics.syncErrors, c.metrics.assigned, c.metrics.returned,
		prometheus.CollectorFunc(c.collectBlocks)}
}

func (c *Controller) collectBlocks(ch chan<- prometheus.Metric) {
	for _, o := range c.blocks.GetStore().List() {
		b := o.(*v1alpha1.IPAMBlock)
		inUse := float64(len(b.Status.Allocations))
		ch <- prometheus.MustNewConstMetric(descBlockAddresses, prometheus.GaugeValue, inUse, b.Spec.CIDR, b.Spec.Node, b.Spec.Pool, "in_use")
		if b.Status.Capacity > 0 {
			ch <- prometheus.MustNewConstMetric(descBlockAddresses, prometheus.GaugeValue, float64(b.Status.Capacity)-inUse, b.Spec.CIDR, b.Spec.Node, b.Spec.Pool, "free")
		}
	}
}
