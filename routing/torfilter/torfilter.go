// Package torfilter computes the import filters a top-of-rack router needs for its
// sessions with hostroute nodes: each node may announce only the blocks assigned to it
// (exact prefixes, no more specifics), with an AS path originating in the node's own AS.
// Without them a ToR that accepts everything from nodes lets one node announce another
// node's block, or a more specific inside it, and draw that node's external and
// cross-rack traffic. The result renders as BIRD 2 filters or FRR 8.4 prefix-lists and
// route-maps (render.go); `routectl tor-filters` prints them.
//
// The computation is pure: the same cluster objects, in any order, give the same text.
package torfilter

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/routing"
)

// Inputs are the cluster objects the filters depend on.
type Inputs struct {
	Config *v1alpha1.BGPConfiguration // nil: defaults (AS 64512)
	Nodes  []*corev1.Node
	Blocks []*v1alpha1.IPAMBlock
	Pools  []*v1alpha1.IPPool
}

// Node is one node's filter: the session addresses the ToR sees it on, the AS its
// routes originate in, and the blocks it may announce.
type Node struct {
	Name     string
	Address  netip.Addr // IPv4 session address (invalid: none)
	Address6 netip.Addr // IPv6 session address (invalid: none)
	AS       uint32
	Blocks   []netip.Prefix // sorted, IPv4 first
	BIRDName string         // the BIRD filter's name
	FRRName  string         // the FRR prefix-list and route-map name
}

// ServiceRange is a range of Service routes every node may announce (BGPConfiguration
// serviceClusterIPs, serviceExternalIPs, serviceLoadBalancerIPs): the prefix itself
// (Exact) and, when HostRoutes, the host routes inside it.
type ServiceRange struct {
	Prefix     netip.Prefix
	Exact      bool
	HostRoutes bool
}

// Filters are the filters of every node that can peer, by node name, and what was
// left out with the reason.
type Filters struct {
	// Services are the Service ranges every node's filter also accepts (any node may hold
	// an endpoint), originated in the node's AS like its blocks. Sorted.
	Services []ServiceRange
	Nodes    []Node
	Problems []string // sorted
	// LeftOut says why a node has no filter, by node name.
	LeftOut map[string]string
}

// Compute derives every node's filter. A node's address and AS come from
// routing.NodeBGPOf (InternalIP, the hostroute.io/as-number annotation for AS per rack,
// else the cluster AS). Left out, each with a Problem unless noted:
//   - nodes that cannot run BGP (no InternalIP yet, a bad annotation), and nodes that
//     share an address (the ToR cannot tell them apart; hostroute peers neither);
//   - blocks with no node (free; no Problem), blocks being deleted (no Problem), blocks
//     of a pool with disableBGPExport (nodes never announce them to external peers; no
//     Problem), blocks outside every pool, unparsable CIDRs, blocks of unknown nodes.
//
// A node without blocks still gets a filter: it refuses everything.
func Compute(in Inputs) Filters {
	f := Filters{LeftOut: map[string]string{}}
	problem := func(format string, a ...any) { f.Problems = append(f.Problems, fmt.Sprintf(format, a...)) }
	leftOut := func(node, format string, a ...any) {
		why := fmt.Sprintf(format, a...)
		if _, seen := f.LeftOut[node]; !seen {
			f.LeftOut[node] = why
		}
		problem("node %s: %s; no filter", node, why)
	}

	byName := map[string]*Node{}
	owners := map[netip.Addr][]string{}
	var names []string
	for _, n := range in.Nodes {
		if n == nil {
			continue
		}
		nb, err := routing.NodeBGPOf(n, in.Config)
		switch {
		case errors.Is(err, routing.ErrNoAddress):
			leftOut(n.Name, "no InternalIP yet")
			continue
		case err != nil:
			leftOut(n.Name, "%v", err)
			continue
		}
		if _, dup := byName[nb.Name]; dup {
			continue
		}
		byName[nb.Name] = &Node{Name: nb.Name, Address: nb.Address, Address6: nb.Address6, AS: nb.AS}
		names = append(names, nb.Name)
		for _, a := range []netip.Addr{nb.Address, nb.Address6} {
			if a.IsValid() {
				owners[a] = append(owners[a], nb.Name)
			}
		}
	}
	for _, a := range slices.SortedFunc(maps.Keys(owners), netip.Addr.Compare) {
		if ns := owners[a]; len(ns) > 1 {
			slices.Sort(ns)
			for _, n := range ns {
				leftOut(n, "shares address %s with %s (hostroute peers neither)", a,
					strings.Join(slices.DeleteFunc(slices.Clone(ns), func(o string) bool { return o == n }), ", "))
				delete(byName, n)
			}
		}
	}

	type pool struct {
		name     string
		cidr     netip.Prefix
		noExport bool
	}
	var pools []pool
	for _, p := range in.Pools {
		if p == nil {
			continue
		}
		c, err := netip.ParsePrefix(strings.TrimSpace(p.Spec.CIDR))
		if err != nil {
			problem("IPPool %s: cidr %q does not parse; its blocks are left out", p.Name, p.Spec.CIDR)
			continue
		}
		pools = append(pools, pool{p.Name, c.Masked(), p.Spec.DisableBGPExport})
	}
	slices.SortFunc(pools, func(a, b pool) int { return strings.Compare(a.name, b.name) })
	for _, b := range in.Blocks {
		if b == nil || b.Spec.Node == "" || b.DeletionTimestamp != nil {
			continue
		}
		c, err := netip.ParsePrefix(strings.TrimSpace(b.Spec.CIDR))
		if err != nil {
			problem("IPAMBlock %s: cidr %q does not parse; left out", b.Name, b.Spec.CIDR)
			continue
		}
		c = c.Masked()
		i := slices.IndexFunc(pools, func(p pool) bool {
			return p.cidr.Addr().Is4() == c.Addr().Is4() && p.cidr.Bits() <= c.Bits() && p.cidr.Contains(c.Addr())
		})
		switch {
		case i < 0:
			problem("block %s (node %s) is outside every IPPool; left out", c, b.Spec.Node)
			continue
		case pools[i].noExport:
			continue
		}
		n, ok := byName[b.Spec.Node]
		if !ok {
			problem("block %s: node %s has no filter; left out", c, b.Spec.Node)
			continue
		}
		n.Blocks = append(n.Blocks, c)
	}

	f.Services = serviceRanges(in.Config, problem)
	slices.Sort(names)
	birdNames := map[string]bool{}
	for _, name := range names {
		n, ok := byName[name]
		if !ok {
			continue
		}
		slices.SortFunc(n.Blocks, netip.Prefix.Compare)
		n.Blocks = slices.Compact(n.Blocks)
		n.BIRDName = uniqueName("hostroute_import_"+birdIdent(name), birdNames)
		n.FRRName = "hostroute-" + name
		f.Nodes = append(f.Nodes, *n)
	}
	slices.Sort(f.Problems)
	return f
}

// serviceRanges are the BGPConfiguration's Service ranges as the filters take them: the
// cluster IP and external IP ranges as they are, external IPs (externalTrafficPolicy
// Local) and LoadBalancer IPs as host routes inside their ranges.
func serviceRanges(conf *v1alpha1.BGPConfiguration, problem func(string, ...any)) []ServiceRange {
	ranges, problems := routing.ServiceRangesOf(conf)
	for _, p := range problems {
		problem("%s", p)
	}
	by := map[netip.Prefix]*ServiceRange{}
	for _, r := range ranges {
		sr := by[r.Prefix]
		if sr == nil {
			sr = &ServiceRange{Prefix: r.Prefix}
			by[r.Prefix] = sr
		}
		sr.Exact = sr.Exact || r.Kind != routing.LoadBalancerIPRange
		sr.HostRoutes = sr.HostRoutes || r.Kind != routing.ClusterIPRange
	}
	var out []ServiceRange
	for _, p := range slices.SortedFunc(maps.Keys(by), netip.Prefix.Compare) {
		out = append(out, *by[p])
	}
	return out
}

// Only returns the filters of one node, or an error that says why it has none.
func (f Filters) Only(node string) (Filters, error) {
	for _, n := range f.Nodes {
		if n.Name == node {
			return Filters{Services: f.Services, Nodes: []Node{n}, Problems: f.Problems, LeftOut: f.LeftOut}, nil
		}
	}
	if why, ok := f.LeftOut[node]; ok {
		return Filters{}, fmt.Errorf("node %s has no filter: %s", node, why)
	}
	return Filters{}, fmt.Errorf("node %s has no filter: no such Node", node)
}

// birdIdent turns a node name (a DNS subdomain) into the rest of a BIRD identifier.
func birdIdent(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, name)
}

// uniqueName returns base, or base_2, base_3, ... when taken (node-1 and node.1 both
// become node_1), and marks it taken.
func uniqueName(base string, taken map[string]bool) string {
	name := base
	for i := 2; taken[name]; i++ {
		name = fmt.Sprintf("%s_%d", base, i)
	}
	taken[name] = true
	return name
}
