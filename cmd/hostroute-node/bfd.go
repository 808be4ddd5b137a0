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

	"github.com/hostroute/hostroute/node/bfdd"
	"github.com/hostroute/hostroute/routing/bfd"
)

// DefaultBFDSocket is where `hostroute-node bfd` listens and the agent's --bfd-socket
// points in the shipped manifests.
const DefaultBFDSocket = "/run/hostroute/bfd.sock"

// runBFD is `hostroute-node bfd`: the node's BFD sessions in a process of their own, so
// they outlive agent restarts (see node/bfdd). On SIGTERM it says AdminDown to every peer
// and exits.
func runBFD(args []string) error {
	fs := flag.NewFlagSet("bfd", flag.ContinueOnError)
	socket := fs.String("socket", DefaultBFDSocket, "unix socket the agent drives the sessions through")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	goodbye := fs.Duration("goodbye", 2*time.Second, "on SIGTERM, how long to spend saying AdminDown to the peers")
	if done, err := parse(fs, args); done {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	srv, err := bfd.Listen(log, netip.Addr{}, bfd.ControlPlaneIndependent())
	if err != nil {
		return fmt.Errorf("bfd: %w", err)
	}
	ln, err := bfdd.ListenUnix(*socket)
	if err != nil {
		srv.Close()
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Info("bfd daemon serving", "socket", *socket)
	serveErr := bfdd.Serve(ctx, log, srv, ln)
	if err := srv.Shutdown(*goodbye); err != nil {
		log.Warn("bfd goodbye", "err", err)
	}
	log.Info("bfd daemon stopped: sent AdminDown to every peer")
	return serveErr
}
