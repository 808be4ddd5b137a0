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
	// Protocol is written on every route and read back as ours (0: the default Protocol).
	Protocol int
	// Legacy is a former protocol number of ours (0: none): its routes are listed marked
	// Legacy, deleted by that number, and rewritten with Protocol by Replace.
	Legacy int
}

func (n Netlink) proto() int {
	if n.Protocol == 0 {
		return Protocol
	}
	return n.Protocol
}

// legacy is the legacy number, 0 when there is none or it is the current one.
func (n Netlink) legacy() int {
	if n.Legacy == n.proto() {
		return 0
	}
	return n.Legacy
}

// IsLegacy reports whether p is the legacy number this kernel adopts.
func (n Netlink) IsLegacy(p int) bool { return p != 0 && p == n.legacy() }

// Owns reports whether routes of protocol p are ours.
func (n Netlink) Owns(p int) bool { return p == n.proto() || n.IsLegacy(p) }

// dumpRetries bounds the retries of a dump the kernel marked interrupted (the tables
// changed while it was being read: on a busy node pods come and go).
const dumpRetries = 5

// Dump is h.RouteListFiltered, retried while the kernel marks the dump interrupted. An
// interrupted dump comes with a partial list: acting on it would delete routes that are
// there or re-add routes that are not missing. Every reader of kernel routes uses it.
func Dump(h *netlink.Handle, family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	var rs []netlink.Route
	err := DumpEach(h, family, filter, mask, func() { rs = rs[:0] }, func(r netlink.Route) { rs = append(rs, r) })
	if err != nil {
		return nil, err
	}
	return rs, nil
}

// DumpEach runs fn on every route of a filtered dump without keeping the netlink routes
// (with 100k routes, holding them all was a quarter of the agent's heap). A dump
// interrupted by concurrent changes is retried from the start, after reset.
func DumpEach(h *netlink.Handle, family int, filter *netlink.Route, mask uint64, reset func(), fn func(netlink.Route)) error {
	var err error
	for range dumpRetries {
		reset()
		err = h.RouteListFilteredIter(family, filter, mask, func(r netlink.Route) bool { fn(r); return true })
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("route dump: %w", err)
	}
	return nil
}

// List lists hostroute's routes, those of the legacy number after the current ones (so
// that of two at one destination the current one is kept), retrying a dump interrupted
// by concurrent changes.
func (n Netlink) List() ([]Route, error) {
	protos := []int{n.proto()}
	if l := n.legacy(); l != 0 {
		protos = append(protos, l)
	}
	var out []Route
	for _, p := range protos {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			mark := len(out)
			err := DumpEach(n.H, fam, &netlink.Route{Protocol: netlink.RouteProtocol(p), Table: unix.RT_TABLE_MAIN},
				netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE,
				func() { out = out[:mark] },
				func(r netlink.Route) {
					kr := fromNetlink(r)
					kr.Legacy = p != n.proto()
					out = append(out, kr)
				})
			if err != nil {
				return nil, err
			}
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

// toNetlink is r as written with protocol proto.
func toNetlink(r Route, proto int) *netlink.Route {
	nr := &netlink.Route{
		Dst:      prefixNet(r.Dst),
		Protocol: netlink.RouteProtocol(proto),
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
	err := n.H.RouteAdd(toNetlink(r, n.proto()))
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

// Replace installs or replaces a route, with the current protocol also where a route of
// the legacy one held the destination (Linux matches by destination and metric).
func (n Netlink) Replace(r Route) error { return n.H.RouteReplace(toNetlink(r, n.proto())) }

// Delete removes a route, a Legacy one by the legacy number; a route already gone is not
// an error.
func (n Netlink) Delete(r Route) error {
	proto := n.proto()
	if r.Legacy && n.legacy() != 0 {
		proto = n.legacy()
	}
	err := n.H.RouteDel(toNetlink(r, proto))
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// NewNetlink opens a handle in the current network namespace, writing the default
// Protocol and adopting LegacyProtocol.
func NewNetlink() (Netlink, error) { return NewNetlinkProtocol(Protocol, LegacyProtocol) }

// NewNetlinkProtocol opens a handle in the current network namespace, writing protocol
// and adopting routes of legacy (0: none).
func NewNetlinkProtocol(protocol, legacy int) (Netlink, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return Netlink{}, fmt.Errorf("netlink: %w", err)
	}
	return Netlink{H: h, Protocol: protocol, Legacy: legacy}, nil
}
