// Command hostroute-controller assigns IP blocks to nodes. Run two replicas; one leads.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/klog/v2"

	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/internal/ops"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hostroute-controller:", err)
		os.Exit(1)
	}
}

func run() error {
	host, _ := os.Hostname()
	var (
		kubeconfig  = flag.String("kubeconfig", "", "path to a kubeconfig (default: in-cluster)")
		logLevel    = flag.String("log-level", "info", "debug, info, warn or error")
		cfg         controller.Config
		lc          = controller.LeaderConfig{Name: "hostroute-controller"}
		leaderElect = flag.Bool("leader-elect", true, "hold a Lease so that only one replica acts")
		metricsAddr = flag.String("metrics-address", ":9403", "serve /metrics, /healthz and /readyz here (empty: off)")
	)
	flag.Float64Var(&cfg.Watermark, "block-watermark", 0.9, "fraction of a block in use at which its node gets another block")
	flag.DurationVar(&cfg.ReleaseGrace, "release-grace", 5*time.Minute, "how long a deleted node's agent must be silent (NodeNetworkStatus not updated) before its blocks are released")
	flag.DurationVar(&cfg.Resync, "resync", 5*time.Minute, "full re-examination period")
	flag.IntVar(&cfg.MaxBlocksPerNode, "max-blocks-per-node", 4, "most blocks of one address family a node gets")
	flag.DurationVar(&cfg.EmptyBlockGrace, "empty-block-grace", 10*time.Minute, "how long a live node's extra block must stay empty before it goes back to its pool (negative: never)")
	flag.DurationVar(&cfg.ReflectorDownGrace, "reflector-down-grace", 10*time.Second, "how long most clients of an elected route reflector must report it down before another node replaces it")
	flag.StringVar(&lc.Namespace, "leader-election-namespace", "hostroute-system", "namespace of the leader Lease")
	flag.StringVar(&lc.Identity, "identity", fmt.Sprintf("%s_%d", host, os.Getpid()), "this replica's identity in the Lease")
	flag.DurationVar(&lc.LeaseDuration, "lease-duration", 15*time.Second, "leader lease duration")
	flag.DurationVar(&lc.RenewDeadline, "renew-deadline", 10*time.Second, "leader renew deadline")
	flag.DurationVar(&lc.RetryPeriod, "retry-period", 2*time.Second, "leader election retry period")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	klog.SetSlogLogger(log.With("component", "client-go"))

	restCfg, err := client.LoadConfig(*kubeconfig, "hostroute-controller")
	if err != nil {
		return err
	}
	restCfg.QPS, restCfg.Burst = 50, 100
	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	hr, err := client.New(restCfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	c := controller.New(log, kube, hr, cfg)
	lc.WatchDog = leaderelection.NewLeaderHealthzAdaptor(20 * time.Second)
	if *metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(c.Collectors()...)
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		// Not fatal: with host networking two replicas can land on one node, and the
		// second must still be able to take over the lease; its probes then fail loudly.
		// /healthz fails when this replica leads but cannot renew its Lease; /readyz has no
		// check: a follower is ready to take over, so both replicas are ready.
		if _, err := ops.Serve(ctx, log, *metricsAddr, reg, ops.Probes{Healthy: lc.WatchDog.Check}); err != nil {
			log.Error("metrics and health endpoints not served", "err", err)
		}
	}
	if !*leaderElect {
		return c.Run(ctx)
	}
	return controller.RunAsLeader(ctx, log, kube, lc, c.Run)
}
