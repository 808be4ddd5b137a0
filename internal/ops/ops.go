// Package ops serves a hostroute process's operations endpoints on one HTTP listener:
// /metrics (Prometheus), /healthz (liveness) and /readyz (readiness). The agent and the
// controller differ only in what their probes check, which they pass in.
package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Option changes what Serve serves.
type Option func(*http.ServeMux)

// WithPprof also serves net/http/pprof under /debug/pprof/: CPU and heap profiles of the
// running process. It exposes internals (and costs CPU while a profile runs), so it is
// off unless asked for, and the port should not be reachable from outside the node.
func WithPprof() Option {
	return func(mux *http.ServeMux) {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
}

// Probes are the checks behind /healthz and /readyz. A nil check always passes; a
// failing one answers 503 with its error as the body, so a probe's event shows why.
type Probes struct {
	Healthy func(*http.Request) error
	Ready   func(*http.Request) error
}

// Serve listens on addr and serves /metrics from g and the probes until ctx ends. It
// listens before returning so that a taken port fails the caller's start instead of
// only being logged later. Shutdown waits up to a second for scrapes in flight.
func Serve(ctx context.Context, log *slog.Logger, addr string, g prometheus.Gatherer, p Probes, opts ...Option) (net.Addr, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", probe(p.Healthy))
	mux.HandleFunc("/readyz", probe(p.Ready))
	for _, o := range opts {
		o(mux)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	return lis.Addr(), nil
}

func probe(check func(*http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if check != nil {
			if err := check(r); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	}
}
