package routes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Netlink is the real Kernel, on a netlink handle (of the current or a given namespace).
type Netlink struct {
	H *netlink.Handle
}

// dumpRetries bounds the retries of a dump the kernel marked interrupted (the tables
// changed while it was being read: on a busy node pods come and go).
const dumpRetries = 5

// Dump is h.RouteListFiltered, retried while the kernel marks the dump interrupted. An
// interrupted dump comes with a partial list: acting on it would delete routes that are
// there or re-add routes that are not missing. Every reader of kernel routes uses it.
func Dump(h *netlink.Handle, family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	var rs []netlink.Route
	var err error
	for range dumpRetries {
		rs, err = h.RouteListFiltered(family, filter, mask)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("route dump: %w", err)
	}
	return rs, nil
}

// List lists hostroute's routes, retrying a dump interrupted by concurrent changes.
func (n Netlink) List() ([]Route, error) {
	var out []Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := Dump(n.H, fam, &netlink.Route{Protocol: Protocol, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			out = append(out, fromNetlink(r))
		}
	}
	return out, nil
}

func fromNetlink(r netlink.Route) Route {
	var out Route
	if r.Dst != nil {
		p, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		out.Dst = netip.PrefixFrom(p.Unmap(), ones)
	}
	out.Blackhole = r.Type == unix.RTN_BLACKHOLE
	if r.Gw != nil {
		a, _ := netip.AddrFromSlice(r.Gw)
		out.NextHops = append(out.NextHops, a.Unmap())
	}
	for _, nh := range r.MultiPath {
		if nh.Gw != nil {
			a, _ := netip.AddrFromSlice(nh.Gw)
			out.NextHops = append(out.NextHops, a.Unmap())
		}
	}
	out.NextHops = sortedHops(out.NextHops)
	return out
}

func toNetlink(r Route) *netlink.Route {
	nr := &netlink.Route{
		Dst:      prefixNet(r.Dst),
		Protocol: Protocol,
		Table:    unix.RT_TABLE_MAIN,
	}
	if r.Dst.Addr().Is4() {
		nr.Family = netlink.FAMILY_V4
	} else {
		nr.Family = netlink.FAMILY_V6
	}
	switch {
	case r.Blackhole:
		nr.Type = unix.RTN_BLACKHOLE
	case len(r.NextHops) == 1:
		nr.Gw = r.NextHops[0].AsSlice()
	default:
		for _, h := range r.NextHops {
			nr.MultiPath = append(nr.MultiPath, &netlink.NexthopInfo{Gw: h.AsSlice()})
		}
	}
	return nr
}

// Add installs a route exclusively (NLM_F_EXCL).
func (n Netlink) Add(r Route) error {
	err := n.H.RouteAdd(toNetlink(r))
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%s: %w", r.Dst, ErrExists)
	}
	return err
}

// Occupant reports the protocol of the main-table route to dst at metric 0.
func (n Netlink) Occupant(dst netip.Prefix) (int, bool, error) {
	fam := netlink.FAMILY_V4
	if dst.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	filter := &netlink.Route{Dst: prefixNet(dst), Table: unix.RT_TABLE_MAIN}
	rs, err := Dump(n.H, fam, filter, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return 0, false, err
	}
	for _, r := range rs {
		if r.Priority == 0 {
			return int(r.Protocol), true, nil
		}
	}
	return 0, false, nil
}

// Gateway asks the kernel how it reaches nextHop (RTM_GETROUTE).
func (n Netlink) Gateway(nextHop netip.Addr) (netip.Addr, error) {
	rs, err := n.H.RouteGet(nextHop.AsSlice())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no route to %s: %w", nextHop, err)
	}
	if len(rs) == 0 || rs[0].Gw == nil {
		return nextHop, nil // on a connected subnet
	}
	gw, _ := netip.AddrFromSlice(rs[0].Gw)
	return gw.Unmap(), nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Replace installs or replaces a route.
func (n Netlink) Replace(r Route) error { return n.H.RouteReplace(toNetlink(r)) }

// Delete removes a route; a route already gone is not an error.
func (n Netlink) Delete(r Route) error {
	err := n.H.RouteDel(toNetlink(r))
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// NewNetlink opens a handle in the current network namespace.
func NewNetlink() (Netlink, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return Netlink{}, fmt.Errorf("netlink: %w", err)
	}
	return Netlink{H: h}, nil
}
