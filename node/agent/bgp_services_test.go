package agent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// TestServiceChangeMatters: a Service or EndpointSlice change asks for a pass only when
// it can change this node's Service routes.
func TestServiceChangeMatters(t *testing.T) {
	lb := &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{ServiceLoadBalancerIPs: []v1alpha1.ServiceIPRange{{CIDR: "203.0.113.0/24"}}}}
	clusterOnly := &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{ServiceClusterIPs: []v1alpha1.ServiceIPRange{{CIDR: "10.96.0.0/16"}}}}
	svc := func(ip string, mut func(*corev1.Service)) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", ResourceVersion: "1"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal}}
		if ip != "" {
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
		}
		if mut != nil {
			mut(s)
		}
		return s
	}
	yes, no := true, false
	slice := func(svcName string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: svcName + "-1", Namespace: "default",
			Labels: map[string]string{discoveryv1.LabelServiceName: svcName}}, Endpoints: eps}
	}
	ep := func(node string, ready *bool, addr string) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{NodeName: &node, Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
	}
	cases := []struct {
		name     string
		conf     *v1alpha1.BGPConfiguration
		old, cur any
		want     bool
	}{
		{"no configuration", nil, nil, svc("203.0.113.1", nil), false},
		{"cluster IP ranges only", clusterOnly, nil, svc("203.0.113.1", nil), false},
		{"a new LoadBalancer Service", lb, nil, svc("203.0.113.1", nil), true},
		{"its ingress IP written", lb, svc("", nil), svc("203.0.113.1", nil), true},
		{"eTP changed", lb, svc("203.0.113.1", nil), svc("203.0.113.1", func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster }), true},
		{"only an annotation changed", lb, svc("203.0.113.1", nil), svc("203.0.113.1", func(s *corev1.Service) { s.Annotations = map[string]string{"a": "b"} }), false},
		{"a Service deleted", lb, svc("203.0.113.1", nil), nil, true},
		{"an endpoint here turns ready", lb, slice("web", ep("node-1", &no, "10.0.0.1")), slice("web", ep("node-1", &yes, "10.0.0.1")), true},
		{"an endpoint elsewhere changes", lb, slice("web", ep("node-2", &no, "10.0.0.2")), slice("web", ep("node-2", &yes, "10.0.0.2")), false},
		{"elsewhere changes, ours the same", lb, slice("web", ep("node-1", &yes, "10.0.0.1"), ep("node-2", &no, "10.0.0.2")),
			slice("web", ep("node-1", &yes, "10.0.0.1"), ep("node-2", &yes, "10.0.0.2")), false},
		{"a slice with an endpoint here deleted", lb, slice("web", ep("node-1", &yes, "10.0.0.1")), nil, true},
		{"a slice with none here created", lb, nil, slice("web", ep("node-2", &yes, "10.0.0.2")), false},
		{"our endpoints move to another Service", lb, slice("web", ep("node-1", &yes, "10.0.0.1")), slice("api", ep("node-1", &yes, "10.0.0.1")), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := serviceChangeMatters("node-1", c.conf, c.old, c.cur); got != c.want {
				t.Errorf("serviceChangeMatters = %v, want %v", got, c.want)
			}
		})
	}
}

// TestOnlyEndpointsOn: the cached slice keeps this node's endpoints and nothing else
// ServiceRoutes needs is lost.
func TestOnlyEndpointsOn(t *testing.T) {
	n1, n2 := "node-1", "node-2"
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "default",
		Labels:        map[string]string{discoveryv1.LabelServiceName: "web"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager"}}},
		Endpoints: []discoveryv1.Endpoint{{NodeName: &n2, Addresses: []string{"10.0.0.2"}}, {NodeName: &n1, Addresses: []string{"10.0.0.1"}}, {Addresses: []string{"10.0.0.3"}}}}
	o, err := onlyEndpointsOn("node-1", s)
	if err != nil {
		t.Fatal(err)
	}
	got := o.(*discoveryv1.EndpointSlice)
	if len(got.Endpoints) != 1 || got.Endpoints[0].Addresses[0] != "10.0.0.1" || got.Labels[discoveryv1.LabelServiceName] != "web" || got.ManagedFields != nil {
		t.Errorf("kept %+v", got)
	}
}
