package cni

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/hostroute/hostroute/node/routes"
)

// The pod's next hops. Neither exists as an address on the host: IPv4 169.254.1.1 is
// answered by the host veth (proxy ARP, plus a permanent neighbour entry in the pod),
// IPv6 fe80::1 is put on every host veth (link-local, so it may repeat per link).
var (
	gatewayV4 = netip.MustParseAddr("169.254.1.1")
	gatewayV6 = netip.MustParseAddr("fe80::1")
)

// gateway is the pod's next hop for an address family.
func gateway(fam int) netip.Addr {
	if fam == netlink.FAMILY_V6 {
		return gatewayV6
	}
	return gatewayV4
}

// wired is what setupVeth made, for the CNI result.
type wired struct {
	hostMAC, podMAC net.HardwareAddr
}

// preparedVeth is a veth pair created and up, without addresses or routes yet.
type preparedVeth struct {
	host     netlink.Link
	hostName string
	ifName   string
}

// prepareVeth does everything that does not need the pod's addresses, so ADD can run it
// while the agent's Allocate call is in flight. It runs in the node's network namespace
// (the plugin's own) and enters the pod's only through podNS.Do, on a locked OS thread;
// everything outside Do — netlink calls and /proc/sys writes — acts on the node
// namespace, which is why the sysctls are written here and never inside Do.
//
// On error the caller deletes the host veth, which takes the pod end and every route
// through it with it.
func prepareVeth(podNS ns.NetNS, hostName, ifName string, mtu int) (*preparedVeth, error) {
	if err := removeStaleHostVeth(hostName); err != nil {
		return nil, err
	}
	// Refuse to touch a pod that already has ifName; LinkAdd would fail with an EEXIST
	// that does not say which namespace, and the cleanup must not delete a link we did
	// not create (it only deletes hostName, whose peer is ours).
	if err := podNS.Do(func(ns.NetNS) error {
		if _, err := netlink.LinkByName(ifName); err == nil {
			return fmt.Errorf("interface %s already exists in the pod network namespace %s", ifName, podNS.Path())
		} else if !isNotFound(err) {
			return fmt.Errorf("looking up %s in the pod network namespace: %w", ifName, err)
		}
		return nil
	}); err != nil {
		return nil, err
	}

	// The peer is created directly in the pod namespace (IFLA_NET_NS_FD), so its name
	// is checked there and never clashes with the node's own eth0.
	// An explicit MAC (addr_assign_type "set") keeps udev's MACAddressPolicy=persistent
	// from rewriting the host veth's MAC after we handed it to the pod as the permanent
	// neighbour of 169.254.1.1 — a rewrite would cut the pod off its gateway.
	mac, err := randomMAC()
	if err != nil {
		return nil, err
	}
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU, la.HardwareAddr = hostName, mtu, mac
	veth := &netlink.Veth{LinkAttrs: la, PeerName: ifName, PeerNamespace: netlink.NsFd(int(podNS.Fd()))}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("creating veth %s (pod end %s): %w", hostName, ifName, err)
	}
	// Look the link up by name once and use its index from then on. The index stays
	// valid because the runtime never runs ADD/DEL for one attachment concurrently and
	// GC is exclusive with both (CNI spec); if that were broken a route could land on
	// a recreated link, so nothing here re-resolves the name later.
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return nil, fmt.Errorf("looking up the new veth %s: %w", hostName, err)
	}
	if err := hostSysctls(hostName, false); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return nil, fmt.Errorf("setting %s up: %w", hostName, err)
	}
	return &preparedVeth{host: host, hostName: hostName, ifName: ifName}, nil
}

// finishVeth gives the pod its addresses and routes, then installs the host routes.
// Order matters: the host /32 (/128) routes come last, so no traffic reaches the pod
// before its address and routes are in place.
func finishVeth(podNS ns.NetNS, pv *preparedVeth, addrs []netip.Prefix, proto int) (*wired, error) {
	host, hostName, ifName := pv.host, pv.hostName, pv.ifName
	if hasFamily(addrs, netlink.FAMILY_V6) {
		if err := hostSysctls(hostName, true); err != nil {
			return nil, err
		}
		ll := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(gatewayV6, 64)), Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrAdd(host, ll); err != nil {
			return nil, fmt.Errorf("adding the IPv6 gateway %s to %s (is IPv6 disabled on the node?): %w", gatewayV6, hostName, err)
		}
	}
	w := &wired{hostMAC: host.Attrs().HardwareAddr}

	if err := podNS.Do(func(ns.NetNS) error {
		mac, err := setupPodSide(ifName, addrs, w.hostMAC)
		w.podMAC = mac
		return err
	}); err != nil {
		return nil, fmt.Errorf("configuring %s in the pod network namespace %s: %w", ifName, podNS.Path(), err)
	}

	for _, a := range addrs {
		r := hostRoute(host.Attrs().Index, a, proto)
		if err := netlink.RouteAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return nil, fmt.Errorf("adding host route %s dev %s: a route to %s already exists (%s); the address is in use by another interface or route on this node",
					a, hostName, a, describeRoutes(a))
			}
			return nil, fmt.Errorf("adding host route %s dev %s: %w", a, hostName, err)
		}
	}
	return w, nil
}

// hostSysctls makes the host veth a router port: it forwards, it answers the pod's ARP
// for 169.254.1.1 (proxy_arp) without the default random delay of up to 0.8 s
// (proxy_delay), and for IPv6 it is a router that ignores router advertisements.
// rp_filter=1 (strict) drops IPv4 packets whose source is not routed back into this
// veth, a pod forging another machine's address; defence in depth only, because the
// kernel applies max(all, iface), so an "all" of 2 (loose) wins: the agent's nftables
// pod guard (node/nat) is what holds, and covers IPv6.
func hostSysctls(hostName string, v6 bool) error {
	set := [][2]string{
		{"net/ipv4/conf/" + hostName + "/forwarding", "1"},
		{"net/ipv4/conf/" + hostName + "/rp_filter", "1"},
		{"net/ipv4/conf/" + hostName + "/proxy_arp", "1"},
		{"net/ipv4/neigh/" + hostName + "/proxy_delay", "0"},
	}
	if v6 {
		set = append(set, [2]string{"net/ipv6/conf/" + hostName + "/forwarding", "1"},
			[2]string{"net/ipv6/conf/" + hostName + "/accept_ra", "0"})
	}
	for _, kv := range set {
		if _, err := sysctl.Sysctl(kv[0], kv[1]); err != nil {
			return fmt.Errorf("setting sysctl %s=%s: %w", kv[0], kv[1], err)
		}
	}
	return nil
}

// setupPodSide runs inside the pod namespace. The permanent neighbour entry for
// 169.254.1.1 makes the pod independent of proxy ARP, which the kernel only answers when
// the node has a route to 169.254.1.1 through another interface (normally its default
// route); a node without one would otherwise leave every pod without a gateway.
func setupPodSide(ifName string, addrs []netip.Prefix, hostMAC net.HardwareAddr) (net.HardwareAddr, error) {
	link, err := netlink.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("looking up %s: %w", ifName, err)
	}
	idx := link.Attrs().Index // the pod namespace's ifindex; meaningless in the node's
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: prefixNet(a)}
		if a.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD // a /128 from IPAM is unique; DAD only delays the pod
		}
		if err := netlink.AddrAdd(link, addr); err != nil {
			return nil, fmt.Errorf("adding address %s: %w", a, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("setting %s up: %w", ifName, err)
	}
	var routes []*netlink.Route
	for _, fam := range families(addrs) {
		routes = append(routes, podRoutes(idx, fam)...)
	}
	for _, r := range routes {
		if err := netlink.RouteAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return nil, fmt.Errorf("adding route %s dev %s: the pod already has a route to %s "+
					"(hostroute-cni gives a pod one interface; is this network attached twice?): %w", r.Dst, ifName, r.Dst, err)
			}
			return nil, fmt.Errorf("adding route %s dev %s: %w", r.Dst, ifName, err)
		}
	}
	if hasFamily(addrs, netlink.FAMILY_V4) {
		n := &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: gatewayV4.AsSlice(), HardwareAddr: hostMAC}
		if err := netlink.NeighSet(n); err != nil {
			return nil, fmt.Errorf("adding neighbour %s lladdr %s: %w", gatewayV4, hostMAC, err)
		}
	}
	return link.Attrs().HardwareAddr, nil
}

// podRoutes are the pod's routes for one family: v4 "169.254.1.1 dev eth0 scope link"
// and "default via 169.254.1.1 dev eth0 onlink"; v6 "default via fe80::1 dev eth0".
func podRoutes(idx, family int) []*netlink.Route {
	if family == netlink.FAMILY_V6 {
		return []*netlink.Route{{LinkIndex: idx, Dst: defaultNet(family), Gw: gateway(family).AsSlice()}}
	}
	return []*netlink.Route{
		{LinkIndex: idx, Dst: prefixNet(netip.PrefixFrom(gatewayV4, 32)), Scope: netlink.SCOPE_LINK},
		{LinkIndex: idx, Dst: defaultNet(family), Gw: gatewayV4.AsSlice(), Flags: int(netlink.FLAG_ONLINK)},
	}
}

// hostRoute is the node's route to a pod address. It carries the config's routeProtocol
// (default routes.CNIProtocol), not the agent's number, so the pod routes can be listed on
// their own and the agent's route table never touches them.
func hostRoute(idx int, a netip.Prefix, proto int) *netlink.Route {
	return &netlink.Route{LinkIndex: idx, Dst: prefixNet(a), Scope: netlink.SCOPE_LINK, Protocol: netlink.RouteProtocol(proto)}
}

// removeStaleHostVeth deletes a leftover host veth of this same attachment (a previous
// ADD that was killed half-way). The name is derived from the attachment, so the link
// can only be ours; a non-veth of that name is refused rather than deleted.
func removeStaleHostVeth(hostName string) error {
	l, err := netlink.LinkByName(hostName)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("looking up %s: %w", hostName, err)
	}
	if l.Type() != "veth" {
		return fmt.Errorf("interface %s exists and is a %s, not a veth; refusing to touch it", hostName, l.Type())
	}
	if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting the stale veth %s: %w", hostName, err)
	}
	return nil
}

// deleteHostVeth deletes the attachment's host veth. Gone already is success. The
// kernel deletes the pod end and every route through the link in the same operation,
// which is what makes DEL (and ADD's rollback) leave nothing behind.
func deleteHostVeth(hostName string) (deleted bool, err error) {
	l, err := netlink.LinkByName(hostName)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("looking up %s: %w", hostName, err)
	}
	if l.Type() != "veth" {
		return false, fmt.Errorf("interface %s is a %s, not a veth; refusing to delete it", hostName, l.Type())
	}
	if err := netlink.LinkDel(l); err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("deleting %s: %w", hostName, err)
	}
	return true, nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return err != nil && (errors.As(err, &nf) || errors.Is(err, unix.ENODEV))
}

func describeRoutes(a netip.Prefix) string {
	rs, err := routes.Dump(&netlink.Handle{}, family(a), &netlink.Route{Dst: prefixNet(a)}, netlink.RT_FILTER_DST)
	if err != nil || len(rs) == 0 {
		return "unknown device"
	}
	var out string
	for i, r := range rs {
		if i > 0 {
			out += ", "
		}
		dev := fmt.Sprintf("ifindex %d", r.LinkIndex)
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		out += fmt.Sprintf("dev %s proto %s", dev, r.Protocol)
	}
	return out
}

// randomMAC is a random locally administered unicast MAC.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("generating a MAC address: %w", err)
	}
	mac[0] = mac[0]&^0x01 | 0x02
	return mac, nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func defaultNet(fam int) *net.IPNet {
	if fam == netlink.FAMILY_V6 {
		return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
}

func family(p netip.Prefix) int {
	if p.Addr().Is6() {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// families lists the address families present, v4 first.
func families(addrs []netip.Prefix) []int {
	var out []int
	for _, f := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if hasFamily(addrs, f) {
			out = append(out, f)
		}
	}
	return out
}

func hasFamily(addrs []netip.Prefix, fam int) bool {
	for _, a := range addrs {
		if family(a) == fam {
			return true
		}
	}
	return false
}
