package cni

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Pods get the MTU of the node's uplink unless the network config sets "mtu": hostroute
// routes pod packets natively, with no encapsulation, so a pod can send what the uplink
// carries and no more. The uplink is the device (or devices, for ECMP) of the default
// routes, IPv4 and IPv6; with several, the smallest MTU wins. A node without a default
// route gets DefaultMTU.

// uplinkMTU picks the MTU from the default routes: the smallest MTU of their devices.
// ok is false when there is no default route whose device mtuOf knows.
func uplinkMTU(defaults []netlink.Route, mtuOf func(ifindex int) (int, error)) (mtu int, dev string, ok bool) {
	seen := map[int]bool{}
	consider := func(idx int) {
		if idx <= 0 || seen[idx] {
			return
		}
		seen[idx] = true
		m, err := mtuOf(idx)
		if err != nil || m < minMTU {
			return
		}
		if !ok || m < mtu {
			mtu, dev, ok = m, fmt.Sprint(idx), true
		}
	}
	for _, r := range defaults {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		consider(r.LinkIndex)
		for _, nh := range r.MultiPath {
			consider(nh.LinkIndex)
		}
	}
	return mtu, dev, ok
}

// detectMTU reads the default routes of the main table in the current network namespace
// (the host's, where the plugin runs) and returns their devices' smallest MTU, or
// DefaultMTU when there is none.
func detectMTU() (int, string) {
	var defaults []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			continue
		}
		for _, r := range rs {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				defaults = append(defaults, r)
			}
		}
	}
	names := map[string]string{}
	mtu, dev, ok := uplinkMTU(defaults, func(idx int) (int, error) {
		l, err := netlink.LinkByIndex(idx)
		if err != nil {
			return 0, err
		}
		names[fmt.Sprint(idx)] = l.Attrs().Name
		return l.Attrs().MTU, nil
	})
	if !ok {
		return DefaultMTU, ""
	}
	return mtu, names[dev]
}
