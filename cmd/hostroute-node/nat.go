package main

import (
	"log/slog"
	"net/netip"

	"github.com/hostroute/hostroute/node/agent"
	"github.com/hostroute/hostroute/node/nat"
)

// natApplier adapts node/nat to the agent: NAT in the agent's own network namespace.
type natApplier struct{ m *nat.Manager }

func (n natApplier) Apply(natPools, allPools []netip.Prefix) error {
	return n.m.Apply(nat.Config{NATPools: natPools, AllPools: allPools})
}

func newNAT(log *slog.Logger) (agent.NATApplier, error) {
	return natApplier{m: nat.New(log, -1)}, nil
}
