package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/hostroute/hostroute/node/routes"
	"github.com/vishvananda/netlink"
)

// cmdCheck verifies the attachment is still as ADD left it: the agent still holds the
// addresses (and they match prevResult), the host veth and its routes exist, and the
// pod's interface has the addresses and default routes. Every problem found is named
// in one error (code 101), so one CHECK tells the whole story.
func cmdCheck(c *call) error {
	args, conf := c.args, c.conf
	var prev []netip.Prefix
	if conf.Std.RawPrevResult != nil {
		var err error
		if prev, err = prevAddresses(&conf.Std); err != nil {
			return toCNI(err)
		}
	}
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return toCNI(withCode(ErrCheckFailed, fmt.Errorf("the pod network namespace CNI_NETNS=%q is gone: %w", args.Netns, err)))
	}
	defer podNS.Close()
	ag, err := newAgent(conf.AgentSocket, conf.Timeout)
	if err != nil {
		return toCNI(err)
	}
	defer ag.Close()
	addrs, err := ag.Get(context.Background(), args.ContainerID, args.IfName)
	if err != nil {
		return toCNI(err)
	}

	var problems []string
	// The same addresses in any order: a runtime may hand prevResult back reordered.
	if prev != nil && !slices.Equal(sortedPrefixes(prev), sortedPrefixes(addrs)) {
		problems = append(problems, fmt.Sprintf("the node agent holds %v but the runtime's result has %v", addrs, prev))
	}
	hostName := HostVethName(args.ContainerID, args.IfName)
	problems = append(problems, checkHost(hostName, addrs, conf.RouteProtocol)...)
	if err := podNS.Do(func(ns.NetNS) error {
		problems = append(problems, checkPod(args.IfName, addrs)...)
		return nil
	}); err != nil {
		return toCNI(fmt.Errorf("entering the pod network namespace %s: %w", args.Netns, err))
	}
	if len(problems) > 0 {
		return toCNI(withCode(ErrCheckFailed, errors.New(strings.Join(problems, "; "))))
	}
	return nil
}

func prevAddresses(conf *types.NetConf) ([]netip.Prefix, error) {
	if err := version.ParsePrevResult(conf); err != nil {
		return nil, withCode(types.ErrDecodingFailure, fmt.Errorf("parsing prevResult: %w", err))
	}
	res, err := types100.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, withCode(types.ErrDecodingFailure, fmt.Errorf("converting prevResult: %w", err))
	}
	var out []netip.Prefix
	for _, ip := range res.IPs {
		p, ok := netipPrefix(ip.Address)
		if !ok {
			return nil, withCode(types.ErrDecodingFailure, fmt.Errorf("prevResult has a bad address %v", ip.Address))
		}
		out = append(out, p)
	}
	return out, nil
}

// checkHost runs in the node namespace. A host route must carry proto, or the plugin's
// former number (routes.LegacyCNIProtocol: a pod started before the upgrade keeps its
// route of 197 until it ends, and DEL removes it with the veth whatever its number).
func checkHost(hostName string, addrs []netip.Prefix, proto int) []string {
	l, err := netlink.LinkByName(hostName)
	if err != nil {
		return []string{fmt.Sprintf("host interface %s is missing (%v)", hostName, err)}
	}
	var problems []string
	if l.Attrs().Flags&net.FlagUp == 0 {
		problems = append(problems, fmt.Sprintf("host interface %s is down", hostName))
	}
	for _, a := range addrs {
		rs, err := routes.Dump(&netlink.Handle{}, family(a), &netlink.Route{Dst: prefixNet(a), LinkIndex: l.Attrs().Index},
			netlink.RT_FILTER_DST|netlink.RT_FILTER_OIF)
		if err != nil || len(rs) == 0 {
			problems = append(problems, fmt.Sprintf("host route %s dev %s is missing", a, hostName))
			continue
		}
		if !slices.ContainsFunc(rs, func(r netlink.Route) bool { return ownPodRoute(int(r.Protocol), proto) }) {
			problems = append(problems, fmt.Sprintf("host route %s dev %s has protocol %d, not hostroute's %d", a, hostName, rs[0].Protocol, proto))
		}
	}
	return problems
}

// ownPodRoute reports whether a pod route of protocol p is the plugin's, configured with
// proto: proto itself, or the legacy number.
func ownPodRoute(p, proto int) bool { return p == proto || p == routes.LegacyCNIProtocol }

// checkPod runs inside the pod namespace.
func checkPod(ifName string, addrs []netip.Prefix) []string {
	l, err := netlink.LinkByName(ifName)
	if err != nil {
		return []string{fmt.Sprintf("interface %s is missing in the pod network namespace (%v)", ifName, err)}
	}
	var problems []string
	if l.Attrs().Flags&net.FlagUp == 0 {
		problems = append(problems, fmt.Sprintf("pod interface %s is down", ifName))
	}
	have, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return append(problems, fmt.Sprintf("listing addresses on pod interface %s: %v", ifName, err))
	}
	for _, a := range addrs {
		if !slices.ContainsFunc(have, func(h netlink.Addr) bool { p, ok := netipPrefix(*h.IPNet); return ok && p == a }) {
			problems = append(problems, fmt.Sprintf("address %s is missing on pod interface %s", a, ifName))
		}
	}
	for _, fam := range families(addrs) {
		rs, err := netlink.RouteList(l, fam)
		if err != nil {
			problems = append(problems, fmt.Sprintf("listing pod routes: %v", err))
			continue
		}
		gw := gateway(fam)
		if !slices.ContainsFunc(rs, func(r netlink.Route) bool {
			g, _ := netip.AddrFromSlice(r.Gw)
			return (r.Dst == nil || isDefault(r.Dst)) && g.Unmap() == gw
		}) {
			problems = append(problems, fmt.Sprintf("pod default route via %s dev %s is missing", gw, ifName))
		}
	}
	return problems
}

func isDefault(n *net.IPNet) bool { ones, _ := n.Mask.Size(); return ones == 0 }

func netipPrefix(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	return slices.SortedFunc(slices.Values(ps), netip.Prefix.Compare)
}

// cmdStatus reports whether an ADD could be served now: the agent answers and says it
// is ready (it has a block). Both failures are the spec's code 50.
func cmdStatus(c *call) error {
	conf := c.conf
	// STATUS is polled; a hung agent must not hold the runtime for the full ADD timeout.
	ag, err := newAgent(conf.AgentSocket, min(conf.Timeout, 5*time.Second))
	if err != nil {
		return toCNI(withCode(ErrPluginNotAvailable, err))
	}
	defer ag.Close()
	st, err := ag.Status(context.Background())
	if err != nil {
		return toCNI(withCode(ErrPluginNotAvailable, err))
	}
	if !st.GetReady() {
		return toCNI(withCode(ErrPluginNotAvailable, fmt.Errorf("the hostroute node agent on node %q is not ready: %s",
			st.GetNode(), st.GetMessage())))
	}
	return nil
}

// cmdGC releases what the runtime no longer knows about: host veths named like ours
// whose attachment is not in cni.dev/valid-attachments, then (same order as DEL) the
// agent's allocations. Safe only because the spec makes GC exclusive with ADD and DEL
// on the network — a veth of an ADD in flight would otherwise look stale — and because
// a node has one hostroute network (the "hr" names and the agent are per node, not per
// network). It keeps going after errors and reports them all.
func cmdGC(c *call) error {
	conf, log := c.conf, c.log

	valid := map[string]bool{}
	for _, a := range conf.Std.ValidAttachments {
		valid[HostVethName(a.ContainerID, a.IfName)] = true
	}
	var errs []error
	links, err := netlink.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("listing interfaces: %w", err))
	}
	for _, l := range links {
		name := l.Attrs().Name
		if !isHostVethName(name) || l.Type() != "veth" || valid[name] {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting stale veth %s: %w", name, err))
			continue
		}
		log.Info("deleted stale veth", "veth", name)
	}
	if err := sweepLocks(conf.AgentSocket, valid); err != nil {
		errs = append(errs, err)
	}
	ag, err := newAgent(conf.AgentSocket, conf.Timeout)
	if err != nil {
		return toCNI(errors.Join(append(errs, err)...))
	}
	defer ag.Close()
	released, err := ag.GC(context.Background(), conf.Std.ValidAttachments)
	if err != nil {
		errs = append(errs, err)
	}
	log.Info("agent GC", "released", released)
	return toCNI(errors.Join(errs...))
}
