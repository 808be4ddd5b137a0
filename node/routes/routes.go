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
package routes

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// Protocol is hostroute's route protocol number (see /etc/iproute2/rt_protos).
const Protocol = 196

// CNIProtocol marks the per-pod /32 routes the CNI plugin writes; this package never
// touches them.
const CNIProtocol = 197

// Route is a kernel route as hostroute sees it.
type Route struct {
	Dst       netip.Prefix
	Blackhole bool
	// NextHops are gateway addresses (several = ECMP), sorted.
	NextHops []netip.Addr
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
	// List returns the routes with protocol Protocol in the main table, both families.
	List() ([]Route, error)
	// Add installs a route (protocol Protocol) only if no route holds its destination at
	// its metric; otherwise it fails with an error wrapping ErrExists.
	Add(Route) error
	// Replace installs or replaces a route (protocol Protocol).
	Replace(Route) error
	// Delete removes a route with protocol Protocol (never another protocol's).
	Delete(Route) error
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
		case !w.equal(k):
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
