package routing

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// svcConfig is a BGPConfiguration with the given Service ranges (nil: none of that kind).
func svcConfig(cluster, external, lb []v1alpha1.ServiceIPRange) *v1alpha1.BGPConfiguration {
	return &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{
		ServiceClusterIPs: cluster, ServiceExternalIPs: external, ServiceLoadBalancerIPs: lb,
	}}
}

func svcRange(cidr string, communities ...string) v1alpha1.ServiceIPRange {
	return v1alpha1.ServiceIPRange{CIDR: cidr, RouteAttributes: v1alpha1.RouteAttributes{Communities: communities}}
}

// lbService is a LoadBalancer Service default/name with the ingress IPs.
func lbService(name string, local bool, ingress ...string) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
	s.Spec.Type = corev1.ServiceTypeLoadBalancer
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	if local {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	for _, ip := range ingress {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	return s
}

// externalService is a ClusterIP Service default/name with external IPs.
func externalService(name string, local bool, ips ...string) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
	s.Spec.Type = corev1.ServiceTypeClusterIP
	s.Spec.ExternalIPs = ips
	if local {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	return s
}

// ep is an endpoint of pod on node; ready nil leaves the condition unset.
type ep struct {
	pod, node, addr string
	ready           *bool
}

// slice is an EndpointSlice of Service default/svc.
func slice(svc, name string, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name,
		Labels: map[string]string{discoveryv1.LabelServiceName: svc}}}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.addr},
			NodeName:   &e.node,
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: e.pod, UID: types.UID("uid-" + e.pod)},
		})
	}
	return s
}

func TestServiceRoutes(t *testing.T) {
	yes, no := ptr(true), ptr(false)
	lbRanges := []v1alpha1.ServiceIPRange{svcRange("198.51.100.0/24", "65000:300"), svcRange("2001:db8:100::/64")}
	type route struct {
		prefix  string
		reasons []string
		attrs   string // Attrs.String()
	}
	for _, c := range []struct {
		name     string
		in       ServiceInputs
		want     []route
		problems []string // substrings, one per problem
	}{
		{name: "no configuration", in: ServiceInputs{Node: "n1",
			Services: []*corev1.Service{lbService("web", false, "198.51.100.10")}}},
		{name: "empty configuration", in: ServiceInputs{Node: "n1", Config: svcConfig(nil, nil, nil),
			Services: []*corev1.Service{lbService("web", false, "198.51.100.10")}}},
		{name: "cluster range regardless of Services", in: ServiceInputs{Node: "n1",
			Config: svcConfig([]v1alpha1.ServiceIPRange{svcRange("10.96.0.0/12", "65000:100"), svcRange("fd00:96::/108")}, nil, nil)},
			want: []route{
				{"10.96.0.0/12", []string{"cluster IP range"}, "communities 65000:100"},
				{"fd00:96::/108", []string{"cluster IP range"}, ""},
			}},
		{name: "cluster range given unmasked", in: ServiceInputs{Node: "n1",
			Config: svcConfig([]v1alpha1.ServiceIPRange{svcRange("10.96.0.1/12")}, nil, nil)},
			want: []route{{"10.96.0.0/12", []string{"cluster IP range"}, ""}}},
		{name: "LoadBalancer IP, externalTrafficPolicy Cluster: from every node", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, nil, lbRanges),
			Services: []*corev1.Service{lbService("web", false, "198.51.100.10")}},
			want: []route{{"198.51.100.10/32", []string{"LoadBalancer IP of default/web"}, "communities 65000:300"}}},
		{name: "the LoadBalancer range itself is not announced", in: ServiceInputs{Node: "n1",
			Config: svcConfig(nil, nil, lbRanges)}},
		{name: "externalTrafficPolicy Local, a ready endpoint here", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, nil, lbRanges),
			Services: []*corev1.Service{lbService("web", true, "198.51.100.10")},
			Slices:   []*discoveryv1.EndpointSlice{slice("web", "web-1", ep{"p1", "n1", "10.244.0.5", yes}, ep{"p2", "n2", "10.244.1.5", yes})}},
			want: []route{{"198.51.100.10/32",
				[]string{"LoadBalancer IP of default/web (externalTrafficPolicy Local, 1 ready endpoint here)"}, "communities 65000:300"}}},
		{name: "externalTrafficPolicy Local, two ready endpoints here", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, nil, lbRanges),
			Services: []*corev1.Service{lbService("web", true, "198.51.100.10")},
			Slices:   []*discoveryv1.EndpointSlice{slice("web", "web-1", ep{"p1", "n1", "10.244.0.5", yes}, ep{"p3", "n1", "10.244.0.6", yes})}},
			want: []route{{"198.51.100.10/32",
				[]string{"LoadBalancer IP of default/web (externalTrafficPolicy Local, 2 ready endpoints here)"}, "communities 65000:300"}}},
		{name: "externalTrafficPolicy Local, endpoint only on another node", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, nil, lbRanges),
			Services: []*corev1.Service{lbService("web", true, "198.51.100.10")},
			Slices:   []*discoveryv1.EndpointSlice{slice("web", "web-1", ep{"p2", "n2", "10.244.1.5", yes})}}},
		{name: "externalTrafficPolicy Local, endpoint of another Service here", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, nil, lbRanges),
			Services: []*corev1.Service{lbService("web", true, "198.51.100.10")},
			Slices:   []*discoveryv1.EndpointSlice{slice("db", "db-1", ep{"p1", "n1", "10.244.0.5", yes})}}},
		{name: "externalTrafficPolicy Local, endpoint here not ready", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, nil, lbRanges),
			Services: []*corev1.Service{lbService("web", true, "198.51.100.10")},
			Slices:   []*discoveryv1.EndpointSlice{slice("web", "web-1", ep{"p1", "n1", "10.244.0.5", no})}}},
		{name: "externalTrafficPolicy Local, ready unset counts as ready", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, nil, lbRanges),
			Services: []*corev1.Service{lbService("web", true, "198.51.100.10")},
			Slices:   []*discoveryv1.EndpointSlice{slice("web", "web-1", ep{"p1", "n1", "10.244.0.5", nil})}},
			want: []route{{"198.51.100.10/32",
				[]string{"LoadBalancer IP of default/web (externalTrafficPolicy Local, 1 ready endpoint here)"}, "communities 65000:300"}}},
		{name: "LoadBalancer IP outside every range", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, nil, lbRanges),
			Services: []*corev1.Service{lbService("web", false, "203.0.113.10")}}},
		{name: "LoadBalancer IP in the external IP range is not a LoadBalancer range", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, []v1alpha1.ServiceIPRange{svcRange("203.0.113.0/24")}, nil),
			Services: []*corev1.Service{lbService("web", false, "203.0.113.10")}},
			want: []route{{"203.0.113.0/24", []string{"external IP range"}, ""}}},
		{name: "ingress IP of a Service that is no LoadBalancer", in: ServiceInputs{Node: "n1",
			Config: svcConfig(nil, nil, lbRanges),
			Services: func() []*corev1.Service {
				s := lbService("web", false, "198.51.100.10")
				s.Spec.Type = corev1.ServiceTypeNodePort
				return []*corev1.Service{s}
			}()}},
		{name: "external IP with externalTrafficPolicy Local and a ready endpoint here", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, []v1alpha1.ServiceIPRange{svcRange("203.0.113.0/24", "65000:200")}, nil),
			Services: []*corev1.Service{externalService("api", true, "203.0.113.7", "192.0.2.99")},
			Slices:   []*discoveryv1.EndpointSlice{slice("api", "api-1", ep{"p1", "n1", "10.244.0.5", yes})}},
			want: []route{
				{"203.0.113.0/24", []string{"external IP range"}, "communities 65000:200"},
				{"203.0.113.7/32", []string{"external IP of default/api (externalTrafficPolicy Local, 1 ready endpoint here)"}, "communities 65000:200"},
			}},
		{name: "external IP with externalTrafficPolicy Cluster: the range covers it", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, []v1alpha1.ServiceIPRange{svcRange("203.0.113.0/24")}, nil),
			Services: []*corev1.Service{externalService("api", false, "203.0.113.7")},
			Slices:   []*discoveryv1.EndpointSlice{slice("api", "api-1", ep{"p1", "n1", "10.244.0.5", yes})}},
			want: []route{{"203.0.113.0/24", []string{"external IP range"}, ""}}},
		{name: "external IP with externalTrafficPolicy Local, no endpoint here", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, []v1alpha1.ServiceIPRange{svcRange("203.0.113.0/24")}, nil),
			Services: []*corev1.Service{externalService("api", true, "203.0.113.7")},
			Slices:   []*discoveryv1.EndpointSlice{slice("api", "api-1", ep{"p1", "n2", "10.244.1.5", yes})}},
			want: []route{{"203.0.113.0/24", []string{"external IP range"}, ""}}},
		{name: "IPv6 LoadBalancer IP", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, nil, lbRanges),
			Services: []*corev1.Service{lbService("web6", false, "2001:db8:100::10")}},
			want: []route{{"2001:db8:100::10/128", []string{"LoadBalancer IP of default/web6"}, ""}}},
		{name: "two Services sharing one LoadBalancer IP", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, nil, lbRanges),
			Services: []*corev1.Service{lbService("web", false, "198.51.100.10"), lbService("dns", false, "198.51.100.10")}},
			want: []route{{"198.51.100.10/32", []string{"LoadBalancer IP of default/dns", "LoadBalancer IP of default/web"}, "communities 65000:300"}}},
		{name: "one pod in an IPv4 and an IPv6 slice counts once", in: ServiceInputs{Node: "n1",
			Config:   svcConfig(nil, nil, lbRanges),
			Services: []*corev1.Service{lbService("web", true, "198.51.100.10", "2001:db8:100::10")},
			Slices: []*discoveryv1.EndpointSlice{
				slice("web", "web-v4", ep{"p1", "n1", "10.244.0.5", yes}),
				slice("web", "web-v6", ep{"p1", "n1", "fd00:244::5", yes}),
			}},
			want: []route{
				{"198.51.100.10/32", []string{"LoadBalancer IP of default/web (externalTrafficPolicy Local, 1 ready endpoint here)"}, "communities 65000:300"},
				{"2001:db8:100::10/128", []string{"LoadBalancer IP of default/web (externalTrafficPolicy Local, 1 ready endpoint here)"}, ""},
			}},
		{name: "attributes of the range carried, with the first range holding the address", in: ServiceInputs{Node: "n1",
			Config: svcConfig(nil, nil, []v1alpha1.ServiceIPRange{
				{CIDR: "198.51.100.0/25", RouteAttributes: v1alpha1.RouteAttributes{
					Communities: []string{"65000:2", "65000:1"}, LargeCommunities: []string{"64512:1:2"}, LocalPreference: ptr[int64](250)}},
				svcRange("198.51.100.0/24", "65000:9"),
			}),
			Services: []*corev1.Service{lbService("web", false, "198.51.100.10", "198.51.100.200")}},
			want: []route{
				{"198.51.100.10/32", []string{"LoadBalancer IP of default/web"}, "communities 65000:1 65000:2, large 64512:1:2, local-pref 250"},
				{"198.51.100.200/32", []string{"LoadBalancer IP of default/web"}, "communities 65000:9"},
			}},
		{name: "bad CIDR is a problem, the others still count", in: ServiceInputs{Node: "n1",
			Config: svcConfig([]v1alpha1.ServiceIPRange{{CIDR: "10.96.0.0/33"}, svcRange("10.96.0.0/12")}, nil,
				[]v1alpha1.ServiceIPRange{{CIDR: "not-a-cidr"}}),
			Services: []*corev1.Service{lbService("web", false, "198.51.100.10")}},
			want:     []route{{"10.96.0.0/12", []string{"cluster IP range"}, ""}},
			problems: []string{`serviceClusterIPs: "10.96.0.0/33" is not a prefix`, `serviceLoadBalancerIPs: "not-a-cidr" is not a prefix`}},
		{name: "bad attributes are a problem, the range is still announced", in: ServiceInputs{Node: "n1",
			Config: svcConfig([]v1alpha1.ServiceIPRange{svcRange("10.96.0.0/12", "65536:1")}, nil, nil)},
			want:     []route{{"10.96.0.0/12", []string{"cluster IP range"}, ""}},
			problems: []string{`serviceClusterIPs 10.96.0.0/12: community "65536:1"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, problems := ServiceRoutes(c.in)
			var gotR []route
			for _, r := range got {
				gotR = append(gotR, route{r.Prefix.String(), r.Reasons, r.Attrs.String()})
			}
			if !reflect.DeepEqual(gotR, c.want) {
				t.Errorf("routes:\n got  %+v\n want %+v", gotR, c.want)
			}
			if len(problems) != len(c.problems) {
				t.Fatalf("problems %q, want %d like %q", problems, len(c.problems), c.problems)
			}
			for i, p := range c.problems {
				if !strings.Contains(problems[i], p) {
					t.Errorf("problem %q lacks %q", problems[i], p)
				}
			}
		})
	}
}

// The routes come sorted by prefix, masked.
func TestServiceRoutesSorted(t *testing.T) {
	got, _ := ServiceRoutes(ServiceInputs{Node: "n1",
		Config: svcConfig([]v1alpha1.ServiceIPRange{svcRange("fd00:96::/108"), svcRange("10.96.0.0/12")}, nil,
			[]v1alpha1.ServiceIPRange{svcRange("198.51.100.0/24")}),
		Services: []*corev1.Service{lbService("b", false, "198.51.100.20"), lbService("a", false, "198.51.100.3")}})
	var ps []string
	for _, r := range got {
		ps = append(ps, r.Prefix.String())
	}
	want := []string{"10.96.0.0/12", "198.51.100.3/32", "198.51.100.20/32", "fd00:96::/108"}
	if !reflect.DeepEqual(ps, want) {
		t.Errorf("prefixes %v, want %v", ps, want)
	}
	for _, r := range got {
		if r.Prefix != r.Prefix.Masked() {
			t.Errorf("%v is not masked", r.Prefix)
		}
	}
}
