package main

import (
	"log/slog"
	"net/netip"

	"github.com/hostroute/hostroute/node/agent"
	"github.com/hostroute/hostroute/node/nat"
)

// natApplier adapts node/nat to the agent: `table inet hostroute` in the agent's own
// network namespace. Without masquerade (--nat=false) the table still carries the pod
// guard, which no flag turns off: it is what keeps pods off the node's BGP and BFD ports.
type natApplier struct {
	m          interface{ Apply(nat.Config) error } // *nat.Manager
	masquerade bool
}

func (n natApplier) Apply(natPools, allPools []netip.Prefix) error {
	if !n.masquerade {
		natPools = nil
	}
	return n.m.Apply(nat.Config{NATPools: natPools, AllPools: allPools})
}

func newNAT(log *slog.Logger, masquerade bool) agent.NATApplier {
	return natApplier{m: nat.New(log, -1), masquerade: masquerade}
}
