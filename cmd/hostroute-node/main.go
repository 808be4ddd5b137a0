// Command hostroute-node is the node agent: local IPAM for the CNI plugin, the node's
// kernel routes and NAT. It runs on every node with host networking.
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

	"k8s.io/klog/v2"

	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/node/agent"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hostroute-node:", err)
		os.Exit(1)
	}
}

func run() error {
	host, _ := os.Hostname()
	if n := os.Getenv("NODE_NAME"); n != "" {
		host = n
	}
	var cfg agent.Config
	kubeconfig := flag.String("kubeconfig", "", "path to a kubeconfig (default: in-cluster)")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	nat := flag.Bool("nat", true, "program NAT outgoing for natOutgoing pools (nftables table inet hostroute)")
	flag.StringVar(&cfg.NodeName, "node-name", host, "this node's name (default $NODE_NAME, else the hostname)")
	flag.StringVar(&cfg.StateDir, "state-dir", "/var/lib/hostroute", "where allocations are kept on the host")
	flag.StringVar(&cfg.SocketPath, "socket", "/run/hostroute/agent.sock", "the agent's unix socket for the CNI plugin")
	flag.DurationVar(&cfg.AllocWait, "alloc-wait", 20*time.Second, "how long an ADD waits for a new block when the node's blocks are full")
	flag.DurationVar(&cfg.PublishInterval, "publish-interval", time.Second, "batching interval for publishing allocations to the API")
	flag.DurationVar(&cfg.ResyncInterval, "resync", 30*time.Second, "full kernel resync period")
	flag.BoolVar(&cfg.Sysctls, "sysctls", true, "enable IPv4/IPv6 forwarding in the agent's network namespace")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("node", cfg.NodeName)
	klog.SetSlogLogger(log.With("component", "client-go"))

	restCfg, err := client.LoadConfig(*kubeconfig, "hostroute-node")
	if err != nil {
		return err
	}
	hr, err := client.New(restCfg)
	if err != nil {
		return err
	}
	if *nat {
		n, err := newNAT(log)
		if err != nil {
			return err
		}
		cfg.NAT = n
	}
	a, err := agent.New(log, hr, cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}
