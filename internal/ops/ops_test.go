package ops

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, addr net.Addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr.String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

func TestServe(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "hostroute_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)
	// The handlers run on the server's goroutines: the checks' answers go through a lock.
	var mu sync.Mutex
	var healthErr, readyErr error
	set := func(h, r error) { mu.Lock(); healthErr, readyErr = h, r; mu.Unlock() }
	check := func(e *error) func(*http.Request) error {
		return func(*http.Request) error { mu.Lock(); defer mu.Unlock(); return *e }
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := Serve(ctx, slog.New(slog.DiscardHandler), "127.0.0.1:0", reg, Probes{
		Healthy: check(&healthErr),
		Ready:   check(&readyErr),
	})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, addr, "/metrics"); code != 200 || !strings.Contains(body, "hostroute_test_total 3") {
		t.Errorf("/metrics: %d %q, want 200 with the counter at 3", code, body)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, addr, path); code != 200 || body != "ok\n" {
			t.Errorf("%s with passing checks: %d %q, want 200 ok", path, code, body)
		}
	}
	set(errors.New("status loop stuck for 31s"), nil)
	if code, body := get(t, addr, "/healthz"); code != 503 || !strings.Contains(body, "status loop stuck") {
		t.Errorf("/healthz with a failing check: %d %q, want 503 with the reason", code, body)
	}
	if code, _ := get(t, addr, "/readyz"); code != 200 {
		t.Errorf("/readyz follows /healthz: %d, want 200 (its own check passes)", code)
	}
	set(nil, errors.New("node n1 has no address block yet"))
	if code, body := get(t, addr, "/readyz"); code != 503 || !strings.Contains(body, "no address block") {
		t.Errorf("/readyz with a failing check: %d %q, want 503 with the reason", code, body)
	}
}

func TestServeNilProbesPass(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := Serve(ctx, slog.New(slog.DiscardHandler), "127.0.0.1:0", prometheus.NewRegistry(), Probes{})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, addr, path); code != 200 {
			t.Errorf("%s without a check: %d, want 200", path, code)
		}
	}
}

func TestServePortTaken(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	_, err = Serve(context.Background(), slog.New(slog.DiscardHandler), lis.Addr().String(), prometheus.NewRegistry(), Probes{})
	if err == nil || !strings.Contains(err.Error(), "metrics listener on "+lis.Addr().String()) {
		t.Fatalf("Serve on a taken port: %v, want the listener error", err)
	}
}

func TestServeStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addr, err := Serve(ctx, slog.New(slog.DiscardHandler), "127.0.0.1:0", prometheus.NewRegistry(), Probes{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	// Shutdown closes the listener; the port is free again once it has.
	for i := 0; ; i++ {
		l, err := net.Listen("tcp", addr.String())
		if err == nil {
			l.Close()
			return
		}
		if i == 200 {
			t.Fatalf("the listener on %s is still open after the context ended: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
