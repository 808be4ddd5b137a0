package install

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/hostroute/hostroute/node/routes"
)

// NetlinkRoutes is the real RouteKernel, on a netlink handle of the current or of a given
// network namespace.
type NetlinkRoutes struct {
	H *netlink.Handle
}

// OwnRoutes dumps every table of both families and keeps the protocols own accepts. The
// RT_FILTER_TABLE filter with table 0 (RT_TABLE_UNSPEC) is what makes the netlink library
// return routes of tables other than main; the protocol is filtered here because the
// library filters on one protocol only.
func (n NetlinkRoutes) OwnRoutes(own func(int) bool) ([]KernelRoute, error) {
	var out []KernelRoute
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := routes.Dump(n.H, fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			if !own(int(r.Protocol)) {
				continue
			}
			kr := KernelRoute{Family: 4, Protocol: int(r.Protocol), Table: r.Table, Dst: "default", Ref: r}
			if fam == netlink.FAMILY_V6 {
				kr.Family = 6
			}
			if r.Dst != nil {
				kr.Dst = r.Dst.String()
			}
			out = append(out, kr)
		}
	}
	return out, nil
}

// DeleteRoute deletes the route exactly as it was dumped (table, protocol, type, metric,
// next hops), so a route of someone else with the same destination is never hit.
func (n NetlinkRoutes) DeleteRoute(r KernelRoute) (bool, error) {
	nr, ok := r.Ref.(netlink.Route)
	if !ok {
		return false, fmt.Errorf("route %s was not listed by netlink", r.Dst)
	}
	err := n.H.RouteDel(&nr)
	if errors.Is(err, unix.ESRCH) {
		return false, nil
	}
	return err == nil, err
}
