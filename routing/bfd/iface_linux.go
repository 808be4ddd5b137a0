package bfd

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeIfaces looks up the interface of the route to a peer in the namespace the
// Server was opened in: the netlink socket is made by Listen, on its thread, and keeps
// that namespace whichever goroutine uses it later (only the loop does).
type routeIfaces struct{ h *netlink.Handle }

func newRouteIfaces() (*routeIfaces, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("bfd: netlink handle for route lookups: %w", err)
	}
	return &routeIfaces{h: h}, nil
}

// lookup returns the ifindex of the route to peer, 0 when there is none or the lookup
// fails. A zoned (link-local) peer is on its zone's interface.
func (r *routeIfaces) lookup(peer netip.Addr) int {
	if z := peer.Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			return ifi.Index
		}
		return 0
	}
	rs, err := r.h.RouteGet(peer.AsSlice())
	if err != nil || len(rs) == 0 {
		return 0
	}
	return rs[0].LinkIndex
}

func (r *routeIfaces) close() { r.h.Close() }

// arrivalIface finds the IP_PKTINFO or IPV6_PKTINFO control message and returns the
// ifindex the packet arrived on, 0 if there is none.
func arrivalIface(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr { // see hopLimit
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			return int(int32(binary.NativeEndian.Uint32(data[0:4]))) // Ifindex leads
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			return int(binary.NativeEndian.Uint32(data[16:20])) // after the 16-byte address
		}
		oob = rest
	}
	return 0
}
