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
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/node/agent"
	"github.com/hostroute/hostroute/node/bfdd"
	"github.com/hostroute/hostroute/node/routes"
	"github.com/hostroute/hostroute/routing/bfd"
	"github.com/hostroute/hostroute/routing/gobgp"
)

func main() {
	if err := dispatch(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hostroute-node:", err)
		os.Exit(1)
	}
}

// dispatch runs a subcommand; with none (the first argument is a flag, or there is no
// argument) it runs the agent, as hostroute-node always did. The DaemonSet's image has no
// shell, so its init containers run these subcommands instead of cp, mv and sysctl.
func dispatch(args []string) error {
	name, rest := subcommand(args)
	switch name {
	case "install-cni":
		return installCNI(rest)
	case "sysctls":
		return sysctls(rest)
	case "uninstall":
		return uninstall(rest)
	case "bfd":
		return runBFD(rest)
	}
	return runAgent(rest)
}

// subcommand splits off the subcommand; "run" is the agent, also when not named.
func subcommand(args []string) (string, []string) {
	if len(args) > 0 {
		switch args[0] {
		case "run", "install-cni", "sysctls", "uninstall", "bfd":
			return args[0], args[1:]
		}
	}
	return "run", args
}

const usage = `usage:
  hostroute-node [run] [flags]     run the node agent (the flags below)
  hostroute-node install-cni ...   install or upgrade the CNI plugin and conflist on the host
  hostroute-node sysctls           set the host sysctls the node needs (forwarding)
  hostroute-node uninstall ...     remove hostroute's files, routes and NAT table from the node
  hostroute-node bfd [--socket P]  hold the node's BFD sessions apart from the agent (survives agent restarts)
'hostroute-node SUBCOMMAND -h' lists a subcommand's flags.

`

// runAgent runs the node agent until SIGINT or SIGTERM.
func runAgent(args []string) error {
	host, _ := os.Hostname()
	if n := os.Getenv("NODE_NAME"); n != "" {
		host = n
	}
	fs := flag.NewFlagSet("hostroute-node", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	var cfg agent.Config
	kubeconfig := fs.String("kubeconfig", "", "path to a kubeconfig (default: in-cluster)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	nat := fs.Bool("nat", true, "masquerade traffic from natOutgoing pools leaving the cluster (false: never; the pod guard in table inet hostroute stays either way)")
	fs.StringVar(&cfg.NodeName, "node-name", host, "this node's name (default $NODE_NAME, else the hostname)")
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/hostroute", "where allocations are kept on the host")
	fs.StringVar(&cfg.SocketPath, "socket", "/run/hostroute/agent.sock", "the agent's unix socket for the CNI plugin")
	fs.DurationVar(&cfg.AllocWait, "alloc-wait", 20*time.Second, "how long an ADD waits for a new block when the node's blocks are full")
	fs.DurationVar(&cfg.PublishInterval, "publish-interval", time.Second, "batching interval for publishing allocations to the API")
	fs.DurationVar(&cfg.ResyncInterval, "resync", 30*time.Second, "full kernel resync period")
	fs.BoolVar(&cfg.Sysctls, "sysctls", true, "enable IPv4/IPv6 forwarding in the agent's network namespace (false where an init container ran 'hostroute-node sysctls')")
	fs.IntVar(&cfg.RouteProtocol, "route-protocol", routes.Protocol, "kernel route protocol number of the agent's routes (blackholes, learned routes)")
	fs.IntVar(&cfg.CNIRouteProtocol, "cni-route-protocol", routes.CNIProtocol, "route protocol number the CNI plugin writes pod routes with (its conflist's routeProtocol); never touched by the agent")
	fs.IntVar(&cfg.LegacyRouteProtocol, "legacy-route-protocol", routes.LegacyProtocol, "former number of the agent's routes, adopted and rewritten after an upgrade (0: none; set 0 where FRR writes static routes, 196)")
	useBGP := fs.Bool("bgp", true, "run the BGP speaker (advertise blocks, learn other nodes' routes)")
	useBFD := fs.Bool("bfd", true, "serve BFD (UDP 3784) for peers that enable it")
	bfdSocket := fs.String("bfd-socket", "", "drive the BFD sessions held by 'hostroute-node bfd' at this socket (they then survive agent restarts); empty: BFD runs inside the agent")
	var bgpPort int
	fs.IntVar(&bgpPort, "bgp-port", 0, "BGP listen port (0: BGPConfiguration listenPort, default 179; -1: do not listen)")
	fs.DurationVar(&cfg.BGP.StaleGrace, "stale-grace", agent.DefaultStaleGrace, "after a restart, keep learned routes this long while BGP re-learns them")
	fs.StringVar(&cfg.MetricsAddress, "metrics-address", ":9402", "serve /metrics, /healthz and /readyz here (empty: off)")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "also serve /debug/pprof on the metrics address (profiling: keep that port private)")
	fs.DurationVar(&cfg.StatusInterval, "status-interval", 5*time.Second, "least time between two NodeNetworkStatus writes")
	secretNS := agent.DefaultNamespace
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		secretNS = ns
	}
	fs.StringVar(&cfg.BGP.SecretNamespace, "secret-namespace", secretNS, "the only namespace BGP password Secrets are read in (default $POD_NAMESPACE, else "+agent.DefaultNamespace+")")
	fs.BoolVar(&cfg.BGP.Leave, "leave", false, "on exit, withdraw everything with a Cease (the node leaves for good); default: exit quietly so peers keep our routes (graceful restart)")
	_ = fs.Parse(args) // ExitOnError: exits on a bad flag
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (subcommands: run, install-cni, sysctls, uninstall, bfd)", fs.Arg(0))
	}

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
		cfg.BGP.Speaker = gobgp.New(log)
		cfg.BGP.ListenPort = int32(bgpPort)
		switch {
		case *useBFD && *bfdSocket != "":
			c := bfdd.Dial(log, *bfdSocket)
			defer c.Close()
			cfg.BGP.BFD = c
		case *useBFD:
			srv, err := bfd.Listen(log, netip.Addr{})
			if err != nil {
				return fmt.Errorf("bfd: %w", err)
			}
			defer srv.Close()
			cfg.BGP.BFD = srv
		}
	}
	// Pods an ADD names that the agent's cache does not hold yet are read with a client
	// of their own, so a burst of them is not queued behind client-go's default limit
	// (5/s) shared with the informers and status writes.
	lookupCfg := rest.CopyConfig(restCfg)
	lookupCfg.QPS, lookupCfg.Burst = 50, 100
	if cfg.PodLookup, err = kubernetes.NewForConfig(lookupCfg); err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	cfg.NAT = newNAT(log, *nat)
	a, err := agent.New(log, kube, hr, cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}
