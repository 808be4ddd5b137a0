// Package routes owns the node's kernel routes: blackholes for the node's own blocks and
// routes to other nodes' blocks learned by BGP. Every route it writes carries hostroute's
// route protocol number, and it deletes only routes with that number, so routes that
// anyone else installed (the CNI plugin's per-pod /32s, DHCP, an operator) are never
// touched.
//
// Reconcile is level-triggered: desired routes are computed by the caller, the kernel is
// read back (filtered by protocol), and the difference is applied. Hazards: a dump can be
// interrupted by concurrent changes (retried); an interface index can change under a route
// (routes are compared by their next-hop address, not by ifindex alone); another writer
// may replace a route with the same destination (RouteReplace wins it back next pass).
//
// # Protocol numbers
//
// The protocol number is the only mark that tells our routes from everyone else's, so it
// must be one no routing daemon on a node uses. Taken, and avoided: the kernel's RTPROT_*
// list (0-4 reserved; 8-18 incl. 11 zebra, 12 bird, 16 dhcp, 18 keepalived; 42 babel; 84
// ovn; 99 openr; 186-192 bgp, isis, ospf, rip, eigrp), and FRR, whose zebra writes (and,
// at its start, sweeps as its own leftovers) every protocol it names in
// /etc/iproute2/rt_protos.d/frr.conf: 186-198 (191 nhrp, 193 ldp, 194 sharp, 195 pbr,
// 196 static, 197 openfabric, 198 srte). BIRD writes 12 by default, keepalived 18, DHCP
// clients 16; of the other pod networks, Calico's felix writes RTPROT_BOOT (3) on its device
// routes unless deviceRouteProtocol says otherwise, and Cilium RTPROT_KERNEL (2). hostroute
// therefore uses 211 (Protocol, the agent) and 212 (CNIProtocol, the plugin's pod routes):
// above every number of those lists and of /etc/iproute2/rt_protos. Both are configurable (hostroute-node --route-protocol and
// --cni-route-protocol, the conflist's routeProtocol) for a host where they are taken.
//
// Hazard, the upgrade from 196/197: hostroute wrote 196 and 197 before, which are FRR's
// static and openfabric. A node upgraded in place still holds routes of 196; the table
// treats them as its own (Netlink.Legacy, LegacyProtocol): List returns them marked
// Legacy, a full pass rewrites the ones it wants with the new number and deletes the rest,
// and Occupant reporting 196 is not a conflict. On a host where FRR's staticd writes
// static routes (196) the agent cannot tell them from its own old routes and deletes
// those it does not want; run such hosts with --legacy-route-protocol 0 once no route of
// 196 is left from hostroute. The CNI plugin likewise accepts a pod route of 197
// (LegacyCNIProtocol) as its own in CHECK; DEL removes the veth, and the kernel the
// route with it, whatever its protocol.
package routes

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// Protocol is the default route protocol number of the agent's routes (see the package
// doc for why this number).
const Protocol = 211

// CNIProtocol is the default number of the per-pod /32 routes the CNI plugin writes; this
// package never touches them.
const CNIProtocol = 212

// LegacyProtocol and LegacyCNIProtocol are the numbers hostroute used before Protocol and
// CNIProtocol (they collide with FRR): routes of them left by an older version are ours.
const (
	LegacyProtocol    = 196
	LegacyCNIProtocol = 197
)

// CheckProtocols validates a node's protocol numbers: the agent's, the CNI plugin's, and
// the legacy number the agent adopts (0: none). The agent deletes routes of its own and
// of the legacy number, so neither may be the plugin's, or pod routes would be deleted.
func CheckProtocols(agent, cni, legacy int) error {
	for _, p := range []struct {
		name string
		v    int
	}{{"route protocol", agent}, {"CNI route protocol", cni}} {
		if err := CheckProtocol(p.v); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}
	switch {
	case agent == cni:
		return fmt.Errorf("route protocol %d is also the CNI route protocol: the agent would delete the pod routes", agent)
	case agent == LegacyCNIProtocol:
		return fmt.Errorf("route protocol %d is the CNI plugin's former number: the agent would delete pod routes of older plugins", agent)
	case legacy < 0 || legacy > 255:
		return fmt.Errorf("legacy route protocol %d: want 0 (none) or 1..255", legacy)
	case legacy != 0 && (legacy == cni || legacy == LegacyCNIProtocol):
		return fmt.Errorf("legacy route protocol %d is a CNI route protocol: the agent would delete the pod routes", legacy)
	}
	return nil
}

// CheckProtocol refuses the numbers no hostroute route may carry: outside 1..255, and the
// kernel's own 0-4 (unspec, redirect, kernel, boot, static: an operator's routes).
func CheckProtocol(p int) error {
	if p <= 4 || p > 255 {
		return fmt.Errorf("%d: want 5..255 (0-4 are the kernel's and the operator's)", p)
	}
	return nil
}

// Route is a kernel route as hostroute sees it.
type Route struct {
	Dst       netip.Prefix
	Blackhole bool
	// NextHops are gateway addresses (several = ECMP), sorted.
	NextHops []netip.Addr
	// Legacy marks a route List found with the legacy protocol number: ours, but to be
	// rewritten with the current one. Writes ignore it (Replace and Add always use the
	// current number); Delete uses it to remove the route by its legacy number.
	Legacy bool
}

func (r Route) String() string {
	if r.Blackhole {
		return "blackhole " + r.Dst.String()
	}
	var hops []string
	for _, h := range r.NextHops {
		hops = append(hops, h.String())
	}
	return fmt.Sprintf("%s via %s", r.Dst, strings.Join(hops, ","))
}

func (r Route) equal(o Route) bool {
	return r.Dst == o.Dst && r.Blackhole == o.Blackhole && slices.Equal(r.NextHops, o.NextHops)
}

// Kernel is the narrow view of netlink the route table needs.
type Kernel interface {
	// List returns the routes with the kernel's protocol in the main table, both families,
	// and those with its legacy protocol marked Legacy.
	List() ([]Route, error)
	// Add installs a route (the kernel's protocol) only if no route holds its destination
	// at its metric; otherwise it fails with an error wrapping ErrExists.
	Add(Route) error
	// Replace installs or replaces a route (the kernel's protocol).
	Replace(Route) error
	// Delete removes a route with the kernel's protocol, or the legacy one for a Legacy
	// route (never another protocol's).
	Delete(Route) error
	// Owns reports whether a route of this protocol is ours: the kernel's protocol or its
	// legacy one.
	Owns(protocol int) bool
	// IsLegacy reports whether protocol is the legacy number (ours only where the table
	// says so: inside the pools).
	IsLegacy(protocol int) bool
	// Occupant reports the protocol of the route that holds dst at hostroute's metric in
	// the main table, if any.
	Occupant(dst netip.Prefix) (protocol int, found bool, err error)
	// Gateway returns the on-link gateway through which the kernel reaches nextHop:
	// nextHop itself when it is on a connected subnet, else the gateway of the route to it.
	Gateway(nextHop netip.Addr) (netip.Addr, error)
}

// ErrExists means a route already holds the destination (Kernel.Add).
var ErrExists = errors.New("a route to this destination exists")

// Diff is what a reconcile pass changes.
type Diff struct {
	Replace []Route
	Delete  []Route
}

// Empty reports whether there is nothing to do.
func (d Diff) Empty() bool { return len(d.Replace) == 0 && len(d.Delete) == 0 }

// Compute compares desired routes with the kernel's (already filtered by protocol).
func Compute(desired, kernel []Route) Diff {
	want := map[netip.Prefix]Route{}
	for _, r := range desired {
		r.NextHops = sortedHops(r.NextHops)
		want[r.Dst] = r
	}
	var d Diff
	have := map[netip.Prefix]bool{}
	for _, k := range kernel {
		k.NextHops = sortedHops(k.NextHops)
		w, ok := want[k.Dst]
		switch {
		case !ok:
			d.Delete = append(d.Delete, k)
		case have[k.Dst]:
			d.Delete = append(d.Delete, k) // a duplicate (e.g. other metric): keep one
		case !w.equal(k) || k.Legacy:
			d.Replace = append(d.Replace, w)
		}
		have[k.Dst] = true
	}
	for dst, w := range want {
		if !have[dst] {
			d.Replace = append(d.Replace, w)
		}
	}
	sortRoutes(d.Replace)
	sortRoutes(d.Delete)
	return d
}

// Reconcile brings the kernel to the desired routes and returns what it changed.
// Errors of single routes do not stop the others; they are joined.
func Reconcile(k Kernel, desired []Route) (Diff, error) {
	kernel, err := k.List()
	if err != nil {
		return Diff{}, fmt.Errorf("list kernel routes: %w", err)
	}
	d := Compute(desired, kernel)
	var errs []error
	for _, r := range d.Delete {
		if err := k.Delete(r); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", r, err))
		}
	}
	for _, r := range d.Replace {
		if err := k.Replace(r); err != nil {
			errs = append(errs, fmt.Errorf("replace %s: %w", r, err))
		}
	}
	return d, errors.Join(errs...)
}

func sortedHops(h []netip.Addr) []netip.Addr {
	out := append([]netip.Addr(nil), h...)
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

func sortRoutes(rs []Route) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Dst.String() < rs[j].Dst.String() })
}
