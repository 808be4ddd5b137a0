package routing

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// ServiceRoute is one Service address or range a node announces, with why and the
// attributes of the range it lies in.
type ServiceRoute struct {
	Prefix netip.Prefix
	// Reasons say what holds it: "cluster IP range", "LoadBalancer IP of default/web".
	Reasons []string
	Attrs   Attrs
}

// ServiceInputs are what ServiceRoutes works from.
type ServiceInputs struct {
	Node     string
	Config   *v1alpha1.BGPConfiguration
	Services []*corev1.Service
	Slices   []*discoveryv1.EndpointSlice
}

// ServiceRoutes are the Service routes node announces (sorted by prefix), and the
// configuration problems found (a range that does not parse):
//   - every range of serviceClusterIPs and serviceExternalIPs, by every node;
//   - an external IP inside a serviceExternalIPs range of a Service with
//     externalTrafficPolicy Local, as a host route, by the nodes with a ready endpoint
//     (the range covers it from every node; the host route steers traffic to them);
//   - a LoadBalancer ingress IP inside a serviceLoadBalancerIPs range, as a host route:
//     by every node, or with externalTrafficPolicy Local by the nodes with a ready
//     endpoint. Outside every range it is not announced: a Service's status alone must not
//     make the nodes announce any address on the fabric.
//
// An endpoint is this node's when its nodeName is the node, and ready unless its ready
// condition is false (the API's reading: unset means ready).
func ServiceRoutes(in ServiceInputs) ([]ServiceRoute, []string) {
	if in.Config == nil {
		return nil, nil
	}
	ranges, problems := ServiceRangesOf(in.Config)
	var clusterRanges, externalRanges, lbRanges []ServiceRange
	for _, r := range ranges {
		switch r.Kind {
		case ClusterIPRange:
			clusterRanges = append(clusterRanges, r)
		case ExternalIPRange:
			externalRanges = append(externalRanges, r)
		case LoadBalancerIPRange:
			lbRanges = append(lbRanges, r)
		}
	}

	routes := map[netip.Prefix]*ServiceRoute{}
	add := func(p netip.Prefix, reason string, a Attrs) {
		r, ok := routes[p]
		if !ok {
			r = &ServiceRoute{Prefix: p}
			routes[p] = r
		}
		if !slices.Contains(r.Reasons, reason) {
			r.Reasons = append(r.Reasons, reason)
		}
		r.Attrs = r.Attrs.Merge(a)
	}
	for _, r := range clusterRanges {
		add(r.Prefix, "cluster IP range", r.Attrs)
	}
	for _, r := range externalRanges {
		add(r.Prefix, "external IP range", r.Attrs)
	}
	if len(externalRanges)+len(lbRanges) > 0 {
		local := localEndpoints(in.Node, in.Slices)
		for _, svc := range in.Services {
			key := svc.Namespace + "/" + svc.Name
			eTPLocal := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
			if eTPLocal && local[key] == 0 {
				continue
			}
			why := ""
			if eTPLocal {
				why = fmt.Sprintf(" (externalTrafficPolicy Local, %d ready %s here)", local[key], plural(local[key], "endpoint"))
				for _, ip := range svc.Spec.ExternalIPs {
					if hr, r := hostRouteIn(ip, externalRanges); r != nil {
						add(hr, "external IP of "+key+why, r.Attrs)
					}
				}
			}
			if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
				continue
			}
			for _, ing := range svc.Status.LoadBalancer.Ingress {
				if hr, r := hostRouteIn(ing.IP, lbRanges); r != nil {
					add(hr, "LoadBalancer IP of "+key+why, r.Attrs)
				}
			}
		}
	}
	out := make([]ServiceRoute, 0, len(routes))
	for _, r := range routes {
		slices.Sort(r.Reasons)
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b ServiceRoute) int { return a.Prefix.Compare(b.Prefix) })
	return out, problems
}

// ServiceRangeKind says which list of the BGPConfiguration a Service range is in.
type ServiceRangeKind int

// Service range kinds.
const (
	ClusterIPRange      ServiceRangeKind = iota // serviceClusterIPs: the range itself
	ExternalIPRange                             // serviceExternalIPs: the range, and host routes of eTP Local Services
	LoadBalancerIPRange                         // serviceLoadBalancerIPs: host routes only
)

// ServiceRange is one of the BGPConfiguration's Service ranges, parsed.
type ServiceRange struct {
	Kind   ServiceRangeKind
	Prefix netip.Prefix // masked
	Attrs  Attrs
}

// ServiceRangesOf parses conf's Service ranges (cluster IP, external IP, LoadBalancer, in
// that order). An entry that is not a prefix is left out and one whose attributes do not
// parse keeps none, each with a problem.
func ServiceRangesOf(conf *v1alpha1.BGPConfiguration) ([]ServiceRange, []string) {
	if conf == nil {
		return nil, nil
	}
	var out []ServiceRange
	var problems []string
	for _, l := range []struct {
		kind  ServiceRangeKind
		field string
		rs    []v1alpha1.ServiceIPRange
	}{
		{ClusterIPRange, "serviceClusterIPs", conf.Spec.ServiceClusterIPs},
		{ExternalIPRange, "serviceExternalIPs", conf.Spec.ServiceExternalIPs},
		{LoadBalancerIPRange, "serviceLoadBalancerIPs", conf.Spec.ServiceLoadBalancerIPs},
	} {
		for _, r := range l.rs {
			p, err := netip.ParsePrefix(strings.TrimSpace(r.CIDR))
			if err != nil {
				problems = append(problems, fmt.Sprintf("BGPConfiguration %s: %q is not a prefix: skipped", l.field, r.CIDR))
				continue
			}
			a, err := ParseAttrs(r.RouteAttributes)
			if err != nil {
				problems = append(problems, fmt.Sprintf("BGPConfiguration %s %s: %v: announced without attributes", l.field, r.CIDR, err))
			}
			out = append(out, ServiceRange{Kind: l.kind, Prefix: p.Masked(), Attrs: a})
		}
	}
	return out, problems
}

// hostRouteIn is ip as a host route and the first range holding it (nil: none, or ip
// is no address).
func hostRouteIn(ip string, ranges []ServiceRange) (netip.Prefix, *ServiceRange) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Prefix{}, nil
	}
	a = a.Unmap()
	for i := range ranges {
		if ranges[i].Prefix.Contains(a) {
			return netip.PrefixFrom(a, a.BitLen()), &ranges[i]
		}
	}
	return netip.Prefix{}, nil
}

// localEndpoints counts, per "namespace/service", the ready endpoints on node (an
// endpoint in several slices of one Service, e.g. one per family, counts once).
func localEndpoints(node string, eps []*discoveryv1.EndpointSlice) map[string]int {
	seen := map[string]map[string]bool{}
	for _, s := range eps {
		svc := s.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		key := s.Namespace + "/" + svc
		for _, ep := range s.Endpoints {
			if ep.NodeName == nil || *ep.NodeName != node || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			id := strings.Join(ep.Addresses, ",")
			if ep.TargetRef != nil {
				id = string(ep.TargetRef.UID) + "/" + ep.TargetRef.Name
			}
			if seen[key] == nil {
				seen[key] = map[string]bool{}
			}
			seen[key][id] = true
		}
	}
	out := map[string]int{}
	for k, ids := range seen {
		out[k] = len(ids)
	}
	return out
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
