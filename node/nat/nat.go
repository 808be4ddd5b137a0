// Package nat programs "NAT outgoing" for pod traffic with nftables.
//
// hostroute has no overlay: pod addresses are routed as they are, so traffic from a
// pool with natOutgoing that leaves the cluster must be masqueraded to the node's
// address, or the replies would have no way back. Traffic between pools is never
// NATed, because every node routes every pool and the peer must see the real pod
// address (network policy and the pod's own view of its peers depend on it).
//
// Everything lives in one table owned by hostroute, `table inet hostroute`, so the
// agent can rebuild or remove it wholesale without ever touching rules that other
// software (kube-proxy, firewalld, the administrator) keeps in other tables:
//
//	table inet hostroute {
//		set nat-pools-v4 { type ipv4_addr; flags interval; elements = { … } }
//		set all-pools-v4 { type ipv4_addr; flags interval; elements = { … } }
//		set nat-pools-v6 { type ipv6_addr; flags interval; elements = { … } }
//		set all-pools-v6 { type ipv6_addr; flags interval; elements = { … } }
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			ip saddr @nat-pools-v4 ip daddr != @all-pools-v4 masquerade
//			ip6 saddr @nat-pools-v6 ip6 daddr != @all-pools-v6 masquerade
//		}
//		chain pod-prerouting { … }   the pod guard, see guard.go
//		chain pod-input { … }
//	}
//
// The same table carries the pod guard (guard.go): filter chains that drop packets from
// pod interfaces with a forged source address or for the node's BGP and BFD ports.
// The family is inet so one table covers IPv4 and IPv6.
package nat

import (
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names of the objects hostroute owns. The table name is the ownership boundary:
// nothing outside it is ever read or written.
const (
	TableName     = "hostroute"
	ChainName     = "postrouting"
	SetNATPoolsV4 = "nat-pools-v4"
	SetNATPoolsV6 = "nat-pools-v6"
	SetAllPoolsV4 = "all-pools-v4"
	SetAllPoolsV6 = "all-pools-v6"
)

// Config is the desired NAT state, computed by the caller from the IPPools.
type Config struct {
	// NATPools are the pools with natOutgoing: traffic FROM these is masqueraded...
	NATPools []netip.Prefix
	// AllPools are all pools: ...unless its destination is inside any of them
	// (pool-to-pool traffic is never NATed).
	AllPools []netip.Prefix
}

// Manager owns `table inet hostroute` in one network namespace.
//
// It keeps no copy of the kernel state: every Apply rebuilds the table from the
// desired Config, so drift (someone editing the table by hand, a half-applied
// earlier run of the agent) is repaired by the next Apply.
type Manager struct {
	log     *slog.Logger
	netnsFd int

	// mu serialises Apply and Delete so two batches for the same table are never
	// interleaved by this process.
	mu sync.Mutex
}

// New returns a Manager for the network namespace referred to by netnsFd, or for
// the caller's current network namespace if netnsFd is -1. The fd is borrowed: it
// must stay open for as long as the Manager is used, and the caller closes it.
// Nothing is done in the kernel until Apply or Delete.
func New(log *slog.Logger, netnsFd int) *Manager {
	if log == nil {
		log = slog.Default()
	}
	return &Manager{log: log.With("component", "nat"), netnsFd: netnsFd}
}

// conn opens a fresh nftables connection for one batch. A fresh one per batch
// because google/nftables keeps a sticky serialisation error and the queued
// messages inside a Conn; a new Conn can never replay leftovers of a failed batch.
// The connection is not lasting: the netlink socket lives only for one Flush.
func (m *Manager) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if m.netnsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(m.netnsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables connection: %w", err)
	}
	return c, nil
}

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// dropTableBatch opens a connection and queues the deletion of `table inet hostroute`,
// valid whether the table exists or not: the batch adds it first (a no-op if present),
// so the kernel never answers ENOENT and no existence check can race with the delete.
// Nothing reaches the kernel until the caller's Flush.
func (m *Manager) dropTableBatch() (*nftables.Conn, *nftables.Table, error) {
	c, err := m.conn()
	if err != nil {
		return nil, nil, err
	}
	t := table()
	c.AddTable(t)
	c.DelTable(t)
	return c, t, nil
}

// Apply makes `table inet hostroute` exactly match cfg.
//
// It is atomic and idempotent because it replaces the whole table in a single
// nftables transaction (one netlink batch, one Flush):
//
//	add table inet hostroute      (no-op if it exists; makes the delete below valid)
//	delete table inet hostroute   (drops the old sets, chain and rules)
//	add table inet hostroute      (and then the sets, elements, chain and rules)
//
// The kernel commits a batch all-or-nothing, so packets see either the old table or
// the new one, never a table without rules or a set half-filled; if anything in the
// batch is rejected, the old table stays as it was. Nothing is ever appended to
// existing state, so applying the same Config twice yields the same ruleset.
// Rebuilding rather than flushing the sets also means no state is read back first
// and the chain itself is restored if someone altered it. Connections already NATed
// keep their mapping: that lives in conntrack, not in the table.
func (m *Manager) Apply(cfg Config) error {
	natV4, natV6, err := splitFamilies(cfg.NATPools)
	if err != nil {
		return fmt.Errorf("nat pools: %w", err)
	}
	allV4, allV6, err := splitFamilies(cfg.AllPools)
	if err != nil {
		return fmt.Errorf("all pools: %w", err)
	}

	m.mu.Lock()
	defer m.mu.Unlock()

	c, t, err := m.dropTableBatch()
	if err != nil {
		return err
	}
	c.AddTable(t)

	sets := map[string]*nftables.Set{}
	for i, s := range []struct {
		name     string
		prefixes []netip.Prefix
		v4       bool
	}{
		{SetNATPoolsV4, natV4, true},
		{SetAllPoolsV4, allV4, true},
		{SetNATPoolsV6, natV6, false},
		{SetAllPoolsV6, allV6, false},
	} {
		elems, err := intervalElements(s.prefixes, s.v4)
		if err != nil {
			return fmt.Errorf("set %s: %w", s.name, err)
		}
		// The ID links the set to the rules' lookups within this batch. Set it
		// here: left at 0, google/nftables draws one from an unsynchronised
		// package-level counter, a data race when two Managers (two netns) apply
		// concurrently. Unique within the batch is all the kernel requires.
		set := &nftables.Set{Table: t, ID: uint32(i + 1), Name: s.name, KeyType: nftables.TypeIPAddr, Interval: true}
		if !s.v4 {
			set.KeyType = nftables.TypeIP6Addr
		}
		if err := c.AddSet(set, elems); err != nil {
			return fmt.Errorf("add set %s: %w", s.name, err)
		}
		sets[s.name] = set
	}

	policy := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name:     ChainName,
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
		Policy:   &policy,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch,
		Exprs: masqueradeExprs(unix.NFPROTO_IPV4, sets[SetNATPoolsV4], sets[SetAllPoolsV4])})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch,
		Exprs: masqueradeExprs(unix.NFPROTO_IPV6, sets[SetNATPoolsV6], sets[SetAllPoolsV6])})
	addPodGuard(c, t)

	if err := c.Flush(); err != nil {
		return fmt.Errorf("replace nftables table inet %s: %w", TableName, err)
	}
	m.log.Debug("applied NAT outgoing",
		"natPoolsV4", natV4, "natPoolsV6", natV6, "allPoolsV4", allV4, "allPoolsV6", allV6)
	return nil
}

// masqueradeExprs builds `ip saddr @natPools ip daddr != @allPools masquerade` (or
// the ip6 form). In an inet table a packet may be IPv4 or IPv6, so the raw network
// header loads are only meaningful after checking the protocol: the rule starts with
// `meta nfproto ipv4|ipv6`, which nft(8) adds implicitly and hides when listing.
func masqueradeExprs(nfproto byte, natPools, allPools *nftables.Set) []expr.Any {
	// Offsets of the addresses in the network header: IPv4 saddr at 12 and
	// daddr at 16 (4 bytes each); IPv6 saddr at 8 and daddr at 24 (16 bytes each).
	saddr, daddr, size := uint32(12), uint32(16), uint32(4)
	if nfproto == unix.NFPROTO_IPV6 {
		saddr, daddr, size = 8, 24, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: size},
		&expr.Lookup{SourceRegister: 1, SetName: natPools.Name, SetID: natPools.ID},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddr, Len: size},
		&expr.Lookup{SourceRegister: 1, SetName: allPools.Name, SetID: allPools.ID, Invert: true},
		&expr.Masq{},
	}
}

// Delete removes `table inet hostroute` with everything in it; for an agent that is
// leaving the node for good. Deleting a table that does not exist is not an error (see
// dropTableBatch).
func (m *Manager) Delete() error {
	m.mu.Lock()
	defer m.mu.Unlock()

	c, _, err := m.dropTableBatch()
	if err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table inet %s: %w", TableName, err)
	}
	m.log.Info("deleted NAT outgoing table", "table", "inet "+TableName)
	return nil
}

// Remove is Delete for `hostroute-node uninstall`, which reports what it removed: it
// says whether the table was there. The check is a listing before the same race-free
// delete, so only the report (not the removal) can be off if the table is created or
// deleted by someone else in between.
func (m *Manager) Remove() (bool, error) {
	c, err := m.conn()
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list nftables inet tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			return true, m.Delete()
		}
	}
	return false, nil
}
