// Command routectl inspects a hostroute network: this node's BGP sessions and routes
// (from the local agent), every node's health, IPAM and BGP peers (from the API server).
// See the README's routectl section; the commands live in package routectl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/hostroute/hostroute/routectl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := routectl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
