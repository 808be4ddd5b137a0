package routing

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// Node fields are written partly by the node itself: with the NodeRestriction admission
// plugin a kubelet still sets its own status addresses, its annotations and most of its
// labels. None of them may steer another node's peering: an address that a BGPPeer or a
// second node also claims leaves the node out, a router ID that is already in use is
// ignored, and the reflector role comes only from a label kubelets cannot set
// (v1alpha1.LabelRouteReflector). The AS annotation is still trusted (see the
// v1alpha1 constants for that hazard).

// NodeBGPOf derives a node's BGP identity. It fails when the node cannot run BGP at all:
// no InternalIP (ErrNoAddress), an AS or router-ID annotation that does not parse, no
// IPv4 router ID, or a reflector cluster ID that is not an IPv4 address. It does not
// look at other nodes; ComputePeers also drops a router ID that collides with another
// speaker's.
func NodeBGPOf(n *corev1.Node, cfg *v1alpha1.BGPConfiguration) (NodeBGP, error) {
	return nodeBGPOf(n, cfg, true)
}

// IsReflectorNode reports whether n is a route reflector: labelled
// LabelRouteReflector=true, or elected by the controller (cfg's status.routeReflectors)
// and not labelled "false". The election counts only while spec.routeReflectors asks
// for reflectors, so turning it off ends the elected reflectors' role at once.
func IsReflectorNode(n *corev1.Node, cfg *v1alpha1.BGPConfiguration) bool {
	switch n.Labels[v1alpha1.LabelRouteReflector] {
	case "true":
		return true
	case "false":
		return false
	}
	return cfg != nil && cfg.Spec.RouteReflectors != nil && cfg.Spec.RouteReflectors.Count > 0 &&
		slices.Contains(cfg.Status.RouteReflectors, n.Name)
}

// nodeBGPOf is NodeBGPOf; with useRouterID false it ignores the router-ID annotation.
func nodeBGPOf(n *corev1.Node, cfg *v1alpha1.BGPConfiguration, useRouterID bool) (NodeBGP, error) {
	if n == nil {
		return NodeBGP{}, errors.New("nil Node")
	}
	b := NodeBGP{Name: n.Name}
	for _, a := range n.Status.Addresses {
		ip, err := netip.ParseAddr(strings.TrimSpace(a.Address))
		if a.Type != corev1.NodeInternalIP || err != nil || ip.Zone() != "" || ip.IsUnspecified() {
			continue
		}
		if ip = ip.Unmap(); ip.Is4() && !b.Address.IsValid() {
			b.Address = ip
		} else if ip.Is6() && !b.Address6.IsValid() {
			b.Address6 = ip
		}
	}
	if !b.Address.IsValid() && !b.Address6.IsValid() {
		return b, ErrNoAddress
	}
	if s, ok := n.Annotations[v1alpha1.AnnotationASNumber]; ok {
		v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
		if err != nil || v == 0 {
			return b, fmt.Errorf("annotation %s=%q is not an AS number (1..4294967295)", v1alpha1.AnnotationASNumber, s)
		}
		b.AS = uint32(v)
	} else {
		as, err := clusterAS(cfg)
		if err != nil {
			return b, err
		}
		b.AS = as
	}
	b.RouterID = b.Address
	if s, ok := n.Annotations[v1alpha1.AnnotationRouterID]; ok && useRouterID {
		id, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || !id.Unmap().Is4() {
			return b, fmt.Errorf("annotation %s=%q is not an IPv4 address", v1alpha1.AnnotationRouterID, s)
		}
		b.RouterID = id.Unmap()
	}
	if !b.RouterID.IsValid() {
		return b, fmt.Errorf("no IPv4 address and no %s annotation: BGP needs a 32-bit router ID", v1alpha1.AnnotationRouterID)
	}
	if !IsReflectorNode(n, cfg) {
		return b, nil
	}
	id := n.Annotations[v1alpha1.AnnotationRouteReflectorClusterID]
	if id == "" && cfg != nil {
		id = cfg.Spec.RouteReflectorClusterID
	}
	if id == "" {
		id = b.RouterID.String()
	}
	if a, err := netip.ParseAddr(strings.TrimSpace(id)); err != nil || !a.Is4() {
		return b, fmt.Errorf("route reflector cluster ID %q is not an IPv4 address", id)
	}
	b.ReflectorClusterID = strings.TrimSpace(id)
	return b, nil
}

// legacyReflector explains why a node that was a route reflector before the role moved
// to LabelRouteReflector is no longer one, so an upgrade shows up instead of silently
// turning reflectors into clients. Empty when there is nothing to say.
func legacyReflector(n *corev1.Node) string {
	if n.Labels[v1alpha1.LabelRouteReflector] == "true" {
		return ""
	}
	if n.Labels[v1alpha1.LegacyLabelRouteReflector] == "true" {
		return fmt.Sprintf("Node %s: label %s is no longer read (a kubelet can set it on its own Node); "+
			"label it %s=true to keep it a route reflector", n.Name, v1alpha1.LegacyLabelRouteReflector, v1alpha1.LabelRouteReflector)
	}
	if n.Annotations[v1alpha1.AnnotationRouteReflectorClusterID] != "" {
		return fmt.Sprintf("Node %s: annotation %s alone no longer makes a route reflector "+
			"(a kubelet can annotate its own Node); label it %s=true",
			n.Name, v1alpha1.AnnotationRouteReflectorClusterID, v1alpha1.LabelRouteReflector)
	}
	return ""
}

// peerableNodes parses every node and returns self's identity and the other nodes it
// may have sessions with. Each rule here depends only on the whole input, never on who
// self is, so every node leaves out the same nodes and both ends of each session agree.
// left is true when self itself is left out: it then has no node sessions at all.
// A self that cannot run BGP is an error; any other bad node is a Problem.
func peerableNodes(self string, nodes []*corev1.Node, peers []*v1alpha1.BGPPeer, cfg *v1alpha1.BGPConfiguration,
	problem func(string, ...any)) (local NodeBGP, others []NodeBGP, left bool, err error) {
	peerIPs := map[netip.Addr]string{} // peerIP → first BGPPeer by name (peers come sorted)
	for _, bp := range peers {
		if a, err := netip.ParseAddr(strings.TrimSpace(bp.Spec.PeerIP)); err == nil {
			if _, dup := peerIPs[a.Unmap()]; !dup {
				peerIPs[a.Unmap()] = bp.Name
			}
		}
	}
	var all []NodeBGP // by name, self included
	byName := map[string]*corev1.Node{}
	for _, n := range nodes {
		if why := legacyReflector(n); why != "" {
			problem("%s", why)
		}
		o, err := nodeBGPOf(n, cfg, true)
		switch {
		case n.Name == self && err != nil:
			return local, nil, false, fmt.Errorf("node %s cannot run BGP: %w", self, err)
		case errors.Is(err, ErrNoAddress):
			continue // still joining
		case err != nil:
			problem("Node %s: %v; not peered", n.Name, err)
			continue
		}
		all, byName[n.Name] = append(all, o), n
	}

	// A router ID that is already another speaker's makes GoBGP refuse the session or
	// (behind a reflector) drop routes as looped, so a node annotating one is ignored.
	kept := all[:0:0]
	for _, o := range all {
		if why := routerIDClash(o, all, peerIPs, byName[o.Name]); why != "" {
			var err error
			if o, err = nodeBGPOf(byName[o.Name], cfg, false); err != nil {
				if o.Name == self {
					return local, nil, false, fmt.Errorf("node %s cannot run BGP: %s", self, why)
				}
				problem("Node %s: %s, and without an IPv4 address the node has no router ID; not peered", o.Name, why)
				continue
			}
			problem("Node %s: %s", o.Name, why)
		}
		kept = append(kept, o)
	}

	out := map[string]bool{}
	owners := map[netip.Addr][]string{}
	for _, o := range kept {
		for _, a := range []netip.Addr{o.Address, o.Address6} {
			if !a.IsValid() {
				continue
			}
			owners[a] = append(owners[a], o.Name)
			if bp, ok := peerIPs[a]; ok {
				out[o.Name] = true
				problem("Node %s has address %s, which BGPPeer %s uses; the BGPPeer wins and node %s is not peered",
					o.Name, a, bp, o.Name)
			}
		}
	}
	for a, names := range owners {
		for i := range names {
			out[names[i]] = out[names[i]] || len(names) > 1
			for _, z := range names[i+1:] {
				problem("Nodes %s and %s both claim address %s; neither is peered until one changes", names[i], z, a)
			}
		}
	}
	for _, o := range kept {
		switch {
		case o.Name == self:
			local, left = o, out[o.Name]
		case !out[o.Name]:
			others = append(others, o)
		}
	}
	if left {
		others = nil
	}
	return local, others, left, nil
}

// routerIDClash says why o's annotated router ID cannot be used: it is another node's
// address or router ID, or a BGPPeer's peerIP. Empty when it is free or not annotated.
// Two nodes annotating the same ID both lose it, so neither can take it from the other.
func routerIDClash(o NodeBGP, all []NodeBGP, peerIPs map[netip.Addr]string, n *corev1.Node) string {
	if _, ok := n.Annotations[v1alpha1.AnnotationRouterID]; !ok || o.RouterID == o.Address {
		return ""
	}
	what := ""
	for _, b := range all {
		switch {
		case what != "" || b.Name == o.Name:
		case b.Address == o.RouterID:
			what = "the address of Node " + b.Name
		case b.RouterID == o.RouterID:
			what = "the router ID of Node " + b.Name
		}
	}
	if bp, ok := peerIPs[o.RouterID]; ok && what == "" {
		what = "the peerIP of BGPPeer " + bp
	}
	if what == "" {
		return ""
	}
	return fmt.Sprintf("router ID %s (annotation %s) is %s; ignored", o.RouterID, v1alpha1.AnnotationRouterID, what)
}
