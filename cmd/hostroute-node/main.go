// Command hostroute-node is the node agent: local IPAM for the CNI plugin, the node's
// kernel routes, NAT, and BGP with BFD. It runs on every node with host networking.
//
// TCP-MD5 (BGP passwords) needs plain TCP listeners: since Go 1.24 they default to MPTCP,
// on which TCP_MD5SIG fails.
//
//go:debug multipathtcp=0
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/node/agent"
	"github.com/hostroute/hostroute/routing"
	"github.com/hostroute/hostroute/routing/bfd"
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
	useBGP := flag.Bool("bgp", true, "run the BGP speaker (advertise blocks, learn other nodes' routes)")
	useBFD := flag.Bool("bfd", true, "serve BFD (UDP 3784) for peers that enable it")
	var bgpPort int
	flag.IntVar(&bgpPort, "bgp-port", 0, "BGP listen port (0: BGPConfiguration listenPort, default 179; -1: do not listen)")
	flag.DurationVar(&cfg.BGP.StaleGrace, "stale-grace", 30*time.Second, "after a restart, keep learned routes this long while BGP re-learns them")
	flag.StringVar(&cfg.MetricsAddress, "metrics-address", ":9402", "serve /metrics, /healthz and /readyz here (empty: off)")
	flag.DurationVar(&cfg.StatusInterval, "status-interval", 5*time.Second, "least time between two NodeNetworkStatus writes")
	flag.BoolVar(&cfg.BGP.Leave, "leave", false, "on exit, withdraw everything with a Cease (the node leaves for good); default: exit quietly so peers keep our routes (graceful restart)")
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
	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	if *useBGP {
		cfg.BGP.Speaker = routing.NewGoBGP(log)
		cfg.BGP.ListenPort = int32(bgpPort)
		if *useBFD {
			srv, err := bfd.Listen(log, netip.Addr{})
			if err != nil {
				return fmt.Errorf("bfd: %w", err)
			}
			defer srv.Close()
			cfg.BGP.BFD = srv
		}
	}
	if *nat {
		n, err := newNAT(log)
		if err != nil {
			return err
		}
		cfg.NAT = n
	}
	a, err := agent.New(log, kube, hr, cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}
