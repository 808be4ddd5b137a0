package rpcbench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/internal/benchreport"
)

const (
	group = "Plugin RPC stack (exec + dial + one Allocate)"
	// execsPerRound is how many times each client is execed per repetition.
	execsPerRound = 200
	// warmCalls is how many Allocates one warm client makes per repetition (after
	// warmWarmup untimed ones).
	warmCalls  = 2000
	warmWarmup = 200
)

// The stacks, by figure name.
const (
	stackGRPC   = "gRPC"
	stackTTRPC  = "ttrpc"
	stackNoGRPC = "ttrpc, no gRPC linked"
	stackNoop   = "bare Go process"
)

// buildFlags are the Makefile's BUILDFLAGS.
var buildFlags = []string{"-trimpath", "-tags", "grpcnotrace", "-ldflags", "-s -w"}

// client is one program the benchmark execs.
type client struct {
	stack, bin, socket string
}

// BenchmarkPluginRPC measures what the CNI plugin's call to the node agent costs a pod:
// each client program (cmd/) is execed, dials a stub agent served in this process on a
// unix socket, makes one Allocate and exits; its wall time from exec to exit is the
// figure. The clients are execed in turn, round by round (the order rotating), so noise
// hits every stack alike. A Go program that does nothing is the baseline for process
// start; a stack's "RPC share" is its p50 less that one. Then the warm round trip of one
// Allocate with one long-lived client of each stack, and the client binaries' sizes.
// Repetitions: $HOSTROUTE_BENCH_ROUNDS (default 3), each one value per figure.
func BenchmarkPluginRPC(b *testing.B) {
	reps := benchRounds()
	bins := buildClients(b)
	gs, err := startGRPC(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := gs.Close(); err != nil {
			b.Errorf("gRPC server: %v", err)
		}
	})
	ts, err := startTTRPC(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := ts.Close(); err != nil {
			b.Errorf("ttrpc server: %v", err)
		}
	})
	clients := []client{
		{stackGRPC, bins[stackGRPC], gs.Socket},
		{stackTTRPC, bins[stackTTRPC], ts.Socket},
		{stackNoGRPC, bins[stackNoGRPC], ts.Socket},
		{stackNoop, bins[stackNoop], ts.Socket},
	}
	out := outputFile(b)
	for _, c := range clients { // page cache, and a first check that each one works
		if _, err := execOnce(c, out); err != nil {
			b.Fatal(err)
		}
	}

	p50, p99, warm := map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
	b.ResetTimer()
	for rep := 0; rep < reps; rep++ {
		samples := map[string][]float64{}
		for r := 0; r < execsPerRound; r++ {
			for j := range clients {
				c := clients[(r+j)%len(clients)]
				d, err := execOnce(c, out)
				if err != nil {
					b.Fatalf("round %d: %v", r, err)
				}
				samples[c.stack] = append(samples[c.stack], ms(d))
			}
		}
		for _, c := range clients {
			p50[c.stack] = append(p50[c.stack], quantile(samples[c.stack], 0.5))
			p99[c.stack] = append(p99[c.stack], quantile(samples[c.stack], 0.99))
		}
		g, t, err := warmRoundTrips(gs.Socket, ts.Socket, rep%2 == 1)
		if err != nil {
			b.Fatal(err)
		}
		warm[stackGRPC] = append(warm[stackGRPC], g)
		warm[stackTTRPC] = append(warm[stackTTRPC], t)
		b.Logf("repetition %d: exec p50 gRPC %.2f ms, ttrpc %.2f ms, ttrpc without gRPC %.2f ms, bare Go %.2f ms; warm gRPC %.1f µs, ttrpc %.1f µs",
			rep+1, p50[stackGRPC][rep], p50[stackTTRPC][rep], p50[stackNoGRPC][rep], p50[stackNoop][rep], g, t)
	}
	b.StopTimer()

	share := map[string][]float64{}
	for _, s := range []string{stackGRPC, stackTTRPC, stackNoGRPC} {
		for i := range p50[s] {
			share[s] = append(share[s], p50[s][i]-p50[stackNoop][i])
		}
	}
	rec := func(stack, what, unit string, runs []float64, note string) {
		f := benchreport.Figure{Group: group, Name: stack + " " + what, Unit: unit, Runs: runs, LowerIsBetter: true, Note: note}
		if stack != stackGRPC && stack != stackNoop {
			f.Baseline = stackGRPC + " " + what
		}
		benchreport.Record(b, f)
		b.ReportMetric(benchreport.Summarize(runs).Median, metricName(stack, what, unit))
	}
	for _, s := range []string{stackGRPC, stackTTRPC, stackNoGRPC} {
		note := ""
		if s == stackNoGRPC {
			note = "the agentv1 messages compiled into the client, without the gRPC stubs"
		}
		rec(s, "exec p50", "ms", p50[s], note)
		rec(s, "exec p99", "ms", p99[s], "")
	}
	rec(stackNoop, "exec p50", "ms", p50[stackNoop], "a Go main that returns")
	for _, s := range []string{stackGRPC, stackTTRPC, stackNoGRPC} {
		rec(s, "RPC share", "ms", share[s], "exec p50 less the bare Go process's")
	}
	rec(stackGRPC, "warm Allocate p50", "µs", warm[stackGRPC], "one long-lived client, in process")
	rec(stackTTRPC, "warm Allocate p50", "µs", warm[stackTTRPC], "one long-lived client, in process")
	for _, c := range clients {
		fi, err := os.Stat(c.bin)
		if err != nil {
			b.Fatal(err)
		}
		rec(c.stack, "client binary", "MB", []float64{float64(fi.Size()) / 1e6}, "")
	}
	b.ReportMetric(0, "ns/op")
}

// buildClients builds the client programs with the Makefile's flags and returns them by
// stack. The gRPC-free ttrpc client is cmd/ttrpcclient with api/agent/v1/agent.pb.go laid
// over its directory as package main.
func buildClients(b *testing.B) map[string]string {
	b.Helper()
	dir := b.TempDir()
	pb, err := os.ReadFile(filepath.Join("..", "..", "api", "agent", "v1", "agent.pb.go"))
	if err != nil {
		b.Fatal(err)
	}
	src := strings.Replace(string(pb), "\npackage agentv1\n", "\npackage main\n", 1)
	if src == string(pb) {
		b.Fatal("agent.pb.go: no package clause agentv1")
	}
	src = "//go:build rpcbench_nogrpc\n\n" + src
	laid := filepath.Join(dir, "agent.pb.go")
	if err := os.WriteFile(laid, []byte(src), 0o644); err != nil {
		b.Fatal(err)
	}
	target, err := filepath.Abs(filepath.Join("cmd", "ttrpcclient", "zz_agent.pb.go"))
	if err != nil {
		b.Fatal(err)
	}
	overlay, err := json.Marshal(map[string]map[string]string{"Replace": {target: laid}})
	if err != nil {
		b.Fatal(err)
	}
	overlayFile := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlayFile, overlay, 0o644); err != nil {
		b.Fatal(err)
	}

	bins := map[string]string{}
	build := func(stack, pkg, name string, extra ...string) {
		out := filepath.Join(dir, name)
		args := append([]string{"build"}, buildFlags...)
		args = append(args, extra...)
		args = append(args, "-o", out, pkg)
		if o, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			b.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, o)
		}
		bins[stack] = out
	}
	build(stackGRPC, "./cmd/grpcclient", "grpcclient")
	build(stackTTRPC, "./cmd/ttrpcclient", "ttrpcclient")
	// A later -tags replaces the first: repeat grpcnotrace.
	build(stackNoGRPC, "./cmd/ttrpcclient", "ttrpcclient-nogrpc", "-tags", "grpcnotrace,rpcbench_nogrpc", "-overlay", overlayFile)
	build(stackNoop, "./cmd/noop", "noop")

	deps, err := exec.Command("go", "list", "-tags", "grpcnotrace,rpcbench_nogrpc", "-overlay", overlayFile, "-deps", "./cmd/ttrpcclient").Output()
	if err != nil {
		b.Fatalf("go list: %v", err)
	}
	if slices.Contains(strings.Fields(string(deps)), "google.golang.org/grpc") {
		b.Fatal("the gRPC-free ttrpc client still links google.golang.org/grpc")
	}
	return bins
}

// outputFile is where every exec's stdout and stderr go: a file, so that exec needs no
// pipe or copying goroutine; it must stay empty.
func outputFile(b *testing.B) *os.File {
	b.Helper()
	f, err := os.Create(filepath.Join(b.TempDir(), "out"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// execOnce runs c once and returns its wall time, exec to exit; a non-zero exit or any
// output is an error.
func execOnce(c client, out *os.File) (time.Duration, error) {
	cmd := exec.Command(c.bin, c.socket)
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		msg, _ := os.ReadFile(out.Name())
		return 0, fmt.Errorf("%s client: %w: %s", c.stack, err, msg)
	}
	if fi, err := out.Stat(); err != nil || fi.Size() != 0 {
		msg, _ := os.ReadFile(out.Name())
		return 0, fmt.Errorf("%s client printed %q (stat: %v)", c.stack, msg, err)
	}
	return d, nil
}

// warmRoundTrips returns the p50 of one Allocate, in µs, with one long-lived gRPC client
// and one ttrpc client, in that order or, with ttrpcFirst, the other.
func warmRoundTrips(grpcSock, ttrpcSock string, ttrpcFirst bool) (grpcUS, ttrpcUS float64, err error) {
	ctx := context.Background()
	req := &agentv1.AllocateRequest{
		Attachment: &agentv1.Attachment{ContainerId: "bench", Ifname: "eth0"},
		PodUid:     "uid", Namespace: "default", PodName: "bench",
	}
	runGRPC := func() error {
		conn, err := grpc.NewClient("passthrough:///hostroute-agent",
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", grpcSock)
			}))
		if err != nil {
			return fmt.Errorf("gRPC client: %w", err)
		}
		defer conn.Close()
		api := agentv1.NewAgentClient(conn)
		grpcUS, err = timeCalls(func() error {
			_, err := api.Allocate(ctx, req)
			return err
		})
		if err != nil {
			return fmt.Errorf("gRPC Allocate: %w", err)
		}
		return nil
	}
	runTTRPC := func() error {
		conn, err := net.Dial("unix", ttrpcSock)
		if err != nil {
			return fmt.Errorf("dialing %s: %w", ttrpcSock, err)
		}
		c := ttrpc.NewClient(conn)
		defer c.Close()
		ttrpcUS, err = timeCalls(func() error {
			var resp agentv1.AllocateResponse
			return c.Call(ctx, serviceName, allocateMethod, req, &resp)
		})
		if err != nil {
			return fmt.Errorf("ttrpc Allocate: %w", err)
		}
		return nil
	}
	order := []func() error{runGRPC, runTTRPC}
	if ttrpcFirst {
		order[0], order[1] = order[1], order[0]
	}
	for _, run := range order {
		if err := run(); err != nil {
			return 0, 0, err
		}
	}
	return grpcUS, ttrpcUS, nil
}

// timeCalls makes warmWarmup untimed calls, then warmCalls timed ones, and returns their
// p50 in µs.
func timeCalls(call func() error) (float64, error) {
	for range warmWarmup {
		if err := call(); err != nil {
			return 0, err
		}
	}
	us := make([]float64, 0, warmCalls)
	for range warmCalls {
		start := time.Now()
		if err := call(); err != nil {
			return 0, err
		}
		us = append(us, float64(time.Since(start).Nanoseconds())/1e3)
	}
	return quantile(us, 0.5), nil
}

// quantile is the q-quantile of xs (nearest rank).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// metricName is a -bench metric unit such as "grpc-exec-p50-ms".
func metricName(stack, what, unit string) string {
	s := strings.ToLower(stack + " " + what + " " + strings.ReplaceAll(unit, "µ", "u"))
	s = strings.NewReplacer(",", "", " ", "-").Replace(s)
	return s
}

// benchRounds is $HOSTROUTE_BENCH_ROUNDS, default 3.
func benchRounds() int {
	var v int
	if _, err := fmt.Sscan(os.Getenv("HOSTROUTE_BENCH_ROUNDS"), &v); err == nil && v > 0 {
		return v
	}
	return 3
}
