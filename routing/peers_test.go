package routing

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// node builds a Node; addrs is a comma-separated list of InternalIPs ("" = none yet).
func node(name, addrs string, mods ...func(*corev1.Node)) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}, Annotations: map[string]string{}}}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	for a := range strings.SplitSeq(addrs, ",") {
		if a != "" {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
		}
	}
	for _, m := range mods {
		m(n)
	}
	return n
}

func label(k, v string) func(*corev1.Node)    { return func(n *corev1.Node) { n.Labels[k] = v } }
func annotate(k, v string) func(*corev1.Node) { return func(n *corev1.Node) { n.Annotations[k] = v } }
func as(v string) func(*corev1.Node)          { return annotate(v1alpha1.AnnotationASNumber, v) }
func reflector() func(*corev1.Node)           { return label(v1alpha1.LabelRouteReflector, "true") }
func dur(d time.Duration) *metav1.Duration    { return &metav1.Duration{Duration: d} }
func ptr[T any](v T) *T                       { return &v }

func config(mod func(*v1alpha1.BGPConfigurationSpec)) *v1alpha1.BGPConfiguration {
	c := &v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	mod(&c.Spec)
	return c
}

func meshOff(s *v1alpha1.BGPConfigurationSpec) { s.NodeToNodeMesh = ptr(false) }

func bgpPeer(name, ip string, asn int64, mods ...func(*v1alpha1.BGPPeerSpec)) *v1alpha1.BGPPeer {
	p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.BGPPeerSpec{PeerIP: ip, ASNumber: asn}}
	for _, m := range mods {
		m(&p.Spec)
	}
	return p
}

func selecting(k, v string) func(*v1alpha1.BGPPeerSpec) {
	return func(s *v1alpha1.BGPPeerSpec) {
		s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
	}
}

func md5(ns, name, key string) func(*v1alpha1.BGPPeerSpec) {
	return func(s *v1alpha1.BGPPeerSpec) {
		s.PasswordSecretRef = &v1alpha1.SecretKeyRef{Namespace: ns, Name: name, Key: key}
	}
}

// peer is the expected PeerConfig with the cluster defaults; mods adjust it.
func peer(addr string, peerAS uint32, kind PeerKind, name string, mods ...func(*PeerConfig)) PeerConfig {
	a := netip.MustParseAddr(addr)
	p := PeerConfig{Address: a, PeerAS: peerAS, LocalAS: 64512, Kind: kind, Name: name,
		HoldTime: 90 * time.Second, KeepaliveInterval: 30 * time.Second, ConnectRetry: 5 * time.Second,
		GracefulRestart: true, RestartTime: 120 * time.Second, IPv4: a.Is4(), IPv6: a.Is6()}
	for _, m := range mods {
		m(&p)
	}
	return p
}

func passive(p *PeerConfig)             { p.Passive = true }
func local(as uint32) func(*PeerConfig) { return func(p *PeerConfig) { p.LocalAS = as } }
func ebgp(p *PeerConfig)                { p.EBGPMultihopTTL = 255 }
func dual(p *PeerConfig)                { p.IPv4, p.IPv6 = true, true }
func client(id string) func(*PeerConfig) {
	return func(p *PeerConfig) { p.RouteReflectorClient, p.ClusterID, p.Passive = true, id, true }
}
func password(pw string) func(*PeerConfig)        { return func(p *PeerConfig) { p.Password = pw } }
func imports(rs ...PrefixRange) func(*PeerConfig) { return func(p *PeerConfig) { p.Import = rs } }
func timers(h, k, r time.Duration) func(*PeerConfig) {
	return func(p *PeerConfig) { p.HoldTime, p.KeepaliveInterval, p.ConnectRetry = h, k, r }
}

func TestComputePeers(t *testing.T) {
	threeNodes := []*corev1.Node{node("n1", "10.0.0.1"), node("n2", "10.0.0.2"), node("n3", "10.0.0.3"), node("joining", "")}
	racks := []*corev1.Node{
		node("a1", "10.0.1.1", as("65001"), label("rack", "a")),
		node("a2", "10.0.1.2", as("65001"), label("rack", "a")),
		node("b1", "10.0.2.1", as("65002"), label("rack", "b")),
	}
	// Two reflectors in the cluster AS, two clients, and c3 in an AS with no reflector.
	rrNodes := []*corev1.Node{
		node("rr1", "10.0.0.10", reflector()),
		node("rr2", "10.0.0.11", reflector(), annotate(v1alpha1.AnnotationRouteReflectorClusterID, "10.255.0.2")),
		node("c1", "10.0.0.1"), node("c2", "10.0.0.2"), node("c3", "10.0.0.3", as("65002")),
	}
	rrID := func(s *v1alpha1.BGPConfigurationSpec) { s.RouteReflectorClusterID = "10.255.0.1" }
	tor := bgpPeer("tor", "192.0.2.1", 65000, md5("hostroute-system", "tor-md5", "password"))
	tor2 := bgpPeer("tor2", "192.0.2.2", 65000)

	tests := []struct {
		name       string
		self       string
		in         PeerInputs
		want       []PeerConfig
		transition bool
		problems   []string
		routerID   string // non-empty: the router ID this node must use
		err        string // substring; non-empty = ComputePeers must fail
	}{
		{name: "3-node mesh, middle node dials the lower and waits for the higher", self: "n2",
			in:   PeerInputs{Nodes: threeNodes},
			want: []PeerConfig{peer("10.0.0.1", 64512, KindMesh, "n1"), peer("10.0.0.3", 64512, KindMesh, "n3", passive)}},
		{name: "3-node mesh, lowest node is passive to all", self: "n1",
			in:   PeerInputs{Nodes: threeNodes},
			want: []PeerConfig{peer("10.0.0.2", 64512, KindMesh, "n2", passive), peer("10.0.0.3", 64512, KindMesh, "n3", passive)}},
		{name: "AS per rack: eBGP mesh peers get the other rack's AS", self: "a1",
			in: PeerInputs{Nodes: racks},
			want: []PeerConfig{
				peer("10.0.1.2", 65001, KindMesh, "a2", local(65001), passive),
				peer("10.0.2.1", 65002, KindMesh, "b1", local(65001), passive, ebgp)}},
		{name: "reflector client sees only the reflectors and dials them", self: "c1",
			in:   PeerInputs{Config: config(func(s *v1alpha1.BGPConfigurationSpec) { meshOff(s); rrID(s) }), Nodes: rrNodes},
			want: []PeerConfig{peer("10.0.0.10", 64512, KindReflector, "rr1"), peer("10.0.0.11", 64512, KindReflector, "rr2")}},
		{name: "reflector sees same-AS clients with its cluster ID and the other reflector as mesh", self: "rr1",
			in: PeerInputs{Config: config(func(s *v1alpha1.BGPConfigurationSpec) { meshOff(s); rrID(s) }), Nodes: rrNodes},
			want: []PeerConfig{
				peer("10.0.0.1", 64512, KindReflectorClient, "c1", client("10.255.0.1")),
				peer("10.0.0.2", 64512, KindReflectorClient, "c2", client("10.255.0.1")),
				peer("10.0.0.11", 64512, KindMesh, "rr2", passive)}},
		{name: "reflector cluster ID from its annotation overrides the cluster one", self: "rr2",
			in: PeerInputs{Config: config(meshOff), Nodes: rrNodes},
			want: []PeerConfig{
				peer("10.0.0.1", 64512, KindReflectorClient, "c1", client("10.255.0.2")),
				peer("10.0.0.2", 64512, KindReflectorClient, "c2", client("10.255.0.2")),
				peer("10.0.0.10", 64512, KindMesh, "rr1")}},
		{name: "node in an AS without a reflector is isolated once mesh is off", self: "c3",
			in:       PeerInputs{Config: config(meshOff), Nodes: rrNodes},
			problems: []string{"no route reflector in AS 65002: without nodeToNodeMesh this node peers with no other node"}},
		{name: "transition: client keeps mesh to non-reflectors while dialing reflectors", self: "c1",
			in: PeerInputs{Nodes: rrNodes}, transition: true,
			want: []PeerConfig{
				peer("10.0.0.2", 64512, KindMesh, "c2", passive),
				peer("10.0.0.3", 65002, KindMesh, "c3", passive, ebgp),
				peer("10.0.0.10", 64512, KindReflector, "rr1"), peer("10.0.0.11", 64512, KindReflector, "rr2")}},
		{name: "transition: reflector keeps mesh to the node it will not serve", self: "rr1",
			in: PeerInputs{Nodes: rrNodes}, transition: true,
			want: []PeerConfig{
				peer("10.0.0.1", 64512, KindReflectorClient, "c1", client("10.0.0.10")),
				peer("10.0.0.2", 64512, KindReflectorClient, "c2", client("10.0.0.10")),
				peer("10.0.0.3", 65002, KindMesh, "c3", ebgp),
				peer("10.0.0.11", 64512, KindMesh, "rr2", passive)}},
		{name: "ToR BGPPeer selected by nodeSelector: rack a gets it", self: "a1",
			in: PeerInputs{Config: config(meshOff), Nodes: racks,
				Peers: []*v1alpha1.BGPPeer{bgpPeer("tor-a", "10.0.1.254", 65000, selecting("rack", "a"))}},
			want: []PeerConfig{peer("10.0.1.254", 65000, KindExternal, "tor-a", local(65001))}},
		{name: "ToR BGPPeer selected by nodeSelector: rack b does not", self: "b1",
			in: PeerInputs{Nodes: racks, Peers: []*v1alpha1.BGPPeer{bgpPeer("tor-a", "10.0.1.254", 65000, selecting("rack", "a"))}},
			want: []PeerConfig{
				peer("10.0.1.1", 65001, KindMesh, "a1", local(65002), ebgp),
				peer("10.0.1.2", 65001, KindMesh, "a2", local(65002), ebgp)}},
		{name: "per-rack ToRs with different AS", self: "b1",
			in: PeerInputs{Config: config(meshOff), Nodes: racks, Peers: []*v1alpha1.BGPPeer{
				bgpPeer("tor-a", "10.0.1.254", 65100, selecting("rack", "a")),
				bgpPeer("tor-b", "10.0.2.254", 65200, selecting("rack", "b"))}},
			want: []PeerConfig{peer("10.0.2.254", 65200, KindExternal, "tor-b", local(65002))}},
		{name: "TCP-MD5 password from the Secret", self: "n1",
			in: PeerInputs{Config: config(meshOff), Nodes: threeNodes, Peers: []*v1alpha1.BGPPeer{tor},
				Secrets: map[string]string{"hostroute-system/tor-md5/password": "s3cret"}},
			want: []PeerConfig{peer("192.0.2.1", 65000, KindExternal, "tor", password("s3cret"))}},
		{name: "missing Secret skips that peer only", self: "n1",
			in: PeerInputs{Config: config(meshOff), Nodes: threeNodes, Peers: []*v1alpha1.BGPPeer{tor2, tor},
				Secrets: map[string]string{"hostroute-system/tor-md5/user": "x"}},
			want:     []PeerConfig{peer("192.0.2.2", 65000, KindExternal, "tor2")},
			problems: []string{`BGPPeer tor: password Secret hostroute-system/tor-md5 key "password" not found; peer skipped`}},
		{name: "unreadable Secret: the reason is the Problem", self: "n1",
			in: PeerInputs{Config: config(meshOff), Nodes: threeNodes, Peers: []*v1alpha1.BGPPeer{tor2, tor},
				Secrets:      map[string]string{"hostroute-system/tor-md5/password": "ignored"},
				SecretErrors: map[string]string{"hostroute-system/tor-md5/password": "cannot read it: forbidden"}},
			want:     []PeerConfig{peer("192.0.2.2", 65000, KindExternal, "tor2")},
			problems: []string{`BGPPeer tor: password Secret hostroute-system/tor-md5: cannot read it: forbidden; peer skipped`}},
		{name: "bad import entries are skipped, the rest kept", self: "n1",
			in: PeerInputs{Config: config(meshOff), Nodes: threeNodes, Peers: []*v1alpha1.BGPPeer{
				bgpPeer("tor2", "192.0.2.2", 65000, func(s *v1alpha1.BGPPeerSpec) {
					s.Import = []v1alpha1.PrefixMatch{{CIDR: "0.0.0.0/0"}, {CIDR: "10.0.0.0/33"},
						{CIDR: "198.51.100.0/24", MaxLength: ptr[int32](28)}, {CIDR: "203.0.113.0/24", MaxLength: ptr[int32](16)}}
				})}},
			want: []PeerConfig{peer("192.0.2.2", 65000, KindExternal, "tor2", imports(
				PrefixRange{Prefix: netip.MustParsePrefix("0.0.0.0/0")},
				PrefixRange{Prefix: netip.MustParsePrefix("198.51.100.0/24"), MaxLen: 28}))},
			problems: []string{
				`BGPPeer tor2: import 203.0.113.0/24 maxLength 16 is outside 24..32; entry skipped`,
				`BGPPeer tor2: import cidr "10.0.0.0/33" is not a CIDR; entry skipped`}},
		{name: "invalid peer IP or AS skips that peer only", self: "n1",
			in: PeerInputs{Config: config(meshOff), Nodes: threeNodes,
				Peers: []*v1alpha1.BGPPeer{bgpPeer("bad-ip", "300.1.1.1", 65000), bgpPeer("bad-as", "192.0.2.9", 0), tor2}},
			want: []PeerConfig{peer("192.0.2.2", 65000, KindExternal, "tor2")},
			problems: []string{"BGPPeer bad-as: asNumber 0 is outside 1..4294967295; peer skipped",
				`BGPPeer bad-ip: peerIP "300.1.1.1" is not an IP address; peer skipped`}},
		{name: "BGPPeer at the node's own address: the node is that peer, so it joins no mesh", self: "n1",
			in: PeerInputs{Nodes: threeNodes, Peers: []*v1alpha1.BGPPeer{bgpPeer("route-server", "10.0.0.1", 64512)}},
			problems: []string{"Node n1 has address 10.0.0.1, which BGPPeer route-server uses; " +
				"the BGPPeer wins and node n1 is not peered"}},
		{name: "BGPPeer at another node's address wins over that node", self: "n1",
			in:   PeerInputs{Nodes: threeNodes, Peers: []*v1alpha1.BGPPeer{bgpPeer("dup", "10.0.0.2", 65000)}},
			want: []PeerConfig{peer("10.0.0.2", 65000, KindExternal, "dup"), peer("10.0.0.3", 64512, KindMesh, "n3", passive)},
			problems: []string{"Node n2 has address 10.0.0.2, which BGPPeer dup uses; " +
				"the BGPPeer wins and node n2 is not peered"}},
		{name: "BGPPeer at a node's IPv6 address leaves the dual-stack node out", self: "d1",
			in: PeerInputs{Nodes: []*corev1.Node{node("d1", "10.0.0.1,fd00::1"), node("d2", "10.0.0.2,fd00::2")},
				Peers: []*v1alpha1.BGPPeer{bgpPeer("tor6", "fd00::2", 65000, selecting("rack", "z"))}},
			problems: []string{"Node d2 has address fd00::2, which BGPPeer tor6 uses; " +
				"the BGPPeer wins and node d2 is not peered"}},
		{name: "two nodes with one address: neither is peered", self: "n1",
			in:       PeerInputs{Nodes: append(slices.Clone(threeNodes), node("n2b", "10.0.0.2"))},
			want:     []PeerConfig{peer("10.0.0.3", 64512, KindMesh, "n3", passive)},
			problems: []string{"Nodes n2 and n2b both claim address 10.0.0.2; neither is peered until one changes"}},
		{name: "two nodes with one address: a claimant peers with no node", self: "n2b",
			in: PeerInputs{Nodes: append(slices.Clone(threeNodes), node("n2b", "10.0.0.2")),
				Peers: []*v1alpha1.BGPPeer{tor2}},
			want:     []PeerConfig{peer("192.0.2.2", 65000, KindExternal, "tor2")},
			problems: []string{"Nodes n2 and n2b both claim address 10.0.0.2; neither is peered until one changes"}},
		{name: "a node claiming this node's address: neither is peered, even by each other", self: "n1",
			in:       PeerInputs{Nodes: append(slices.Clone(threeNodes), node("imposter", "10.0.0.1"))},
			problems: []string{"Nodes imposter and n1 both claim address 10.0.0.1; neither is peered until one changes"}},
		{name: "only the old reflector label: not a reflector, and a Problem says what to do", self: "c1",
			in: PeerInputs{Nodes: []*corev1.Node{node("c1", "10.0.0.1"),
				node("old", "10.0.0.10", label(v1alpha1.LegacyLabelRouteReflector, "true")),
				node("ann", "10.0.0.11", annotate(v1alpha1.AnnotationRouteReflectorClusterID, "10.255.0.2"))}},
			want: []PeerConfig{peer("10.0.0.10", 64512, KindMesh, "old", passive), peer("10.0.0.11", 64512, KindMesh, "ann", passive)},
			problems: []string{
				"Node ann: annotation hostroute.io/route-reflector-cluster-id alone no longer makes a route reflector " +
					"(a kubelet can annotate its own Node); label it node-restriction.kubernetes.io/hostroute-route-reflector=true",
				"Node old: label hostroute.io/route-reflector is no longer read (a kubelet can set it on its own Node); " +
					"label it node-restriction.kubernetes.io/hostroute-route-reflector=true to keep it a route reflector"}},
		{name: "router ID annotation that is another node's address is ignored", self: "n2",
			in:       PeerInputs{Nodes: []*corev1.Node{node("n1", "10.0.0.1"), node("n2", "10.0.0.2", annotate(v1alpha1.AnnotationRouterID, "10.0.0.1"))}},
			want:     []PeerConfig{peer("10.0.0.1", 64512, KindMesh, "n1")},
			routerID: "10.0.0.2",
			problems: []string{"Node n2: router ID 10.0.0.1 (annotation hostroute.io/router-id) is the address of Node n1; ignored"}},
		{name: "router ID annotations that collide with each other or a BGPPeer are ignored", self: "n1",
			in: PeerInputs{Config: config(meshOff), Nodes: []*corev1.Node{
				node("n1", "10.0.0.1", annotate(v1alpha1.AnnotationRouterID, "192.0.2.2")),
				node("n2", "10.0.0.2", annotate(v1alpha1.AnnotationRouterID, "10.9.9.9")),
				node("n3", "10.0.0.3", annotate(v1alpha1.AnnotationRouterID, "10.9.9.9"))}, Peers: []*v1alpha1.BGPPeer{tor2}},
			want:     []PeerConfig{peer("192.0.2.2", 65000, KindExternal, "tor2")},
			routerID: "10.0.0.1",
			problems: []string{
				"Node n1: router ID 192.0.2.2 (annotation hostroute.io/router-id) is the peerIP of BGPPeer tor2; ignored",
				"Node n2: router ID 10.9.9.9 (annotation hostroute.io/router-id) is the router ID of Node n3; ignored",
				"Node n3: router ID 10.9.9.9 (annotation hostroute.io/router-id) is the router ID of Node n2; ignored"}},
		{name: "a colliding router ID on a node without IPv4 leaves it no router ID", self: "v4",
			in: PeerInputs{Nodes: []*corev1.Node{node("v4", "10.0.0.1,fd00::1"),
				node("v6", "fd00::2", annotate(v1alpha1.AnnotationRouterID, "10.0.0.1"))}},
			problems: []string{"Node v6: router ID 10.0.0.1 (annotation hostroute.io/router-id) is the address of Node v4; " +
				"ignored, and without an IPv4 address the node has no router ID; not peered"}},
		{name: "timers, GR and BFD: peer overrides cluster field by field", self: "n1",
			in: PeerInputs{
				Config: config(func(s *v1alpha1.BGPConfigurationSpec) {
					s.Timers = &v1alpha1.BGPTimers{HoldTime: dur(30 * time.Second), ConnectRetryTime: dur(2 * time.Second)}
					s.BFD = &v1alpha1.BFDSettings{Enabled: true}
					s.GracefulRestart = &v1alpha1.GracefulRestart{RestartTime: dur(300 * time.Second)}
				}),
				Nodes: threeNodes[:2],
				Peers: []*v1alpha1.BGPPeer{bgpPeer("tor2", "192.0.2.2", 65000, func(s *v1alpha1.BGPPeerSpec) {
					s.Timers = &v1alpha1.BGPTimers{HoldTime: dur(9 * time.Second)}
					s.BFD = &v1alpha1.BFDSettings{Enabled: false}
					s.GracefulRestart = &v1alpha1.GracefulRestart{Enabled: ptr(false)}
					s.EBGPMultihop = 2
				})}},
			want: []PeerConfig{
				peer("10.0.0.2", 64512, KindMesh, "n2", passive, timers(30*time.Second, 10*time.Second, 2*time.Second),
					func(p *PeerConfig) { p.BFD, p.RestartTime = true, 300*time.Second }),
				peer("192.0.2.2", 65000, KindExternal, "tor2", timers(9*time.Second, 3*time.Second, 2*time.Second),
					func(p *PeerConfig) { p.GracefulRestart, p.RestartTime, p.EBGPMultihopTTL = false, 0, 2 })}},
		{name: "IPv6 BGPPeer negotiates IPv6 only", self: "d1",
			in: PeerInputs{Config: config(meshOff), Nodes: []*corev1.Node{node("d1", "10.0.0.1,fd00::1")},
				Peers: []*v1alpha1.BGPPeer{bgpPeer("tor6", "2001:db8::1", 65000, func(s *v1alpha1.BGPPeerSpec) {
					s.Import = []v1alpha1.PrefixMatch{{CIDR: "::/0"}}
				})}},
			want: []PeerConfig{peer("2001:db8::1", 65000, KindExternal, "tor6",
				imports(PrefixRange{Prefix: netip.MustParsePrefix("::/0")}))}},
		{name: "dual-stack mesh: one v4 session with both families; v6-only node over v6", self: "d1",
			in: PeerInputs{Nodes: []*corev1.Node{
				node("d1", "10.0.0.1,fd00::1"), node("d2", "fd00::2,10.0.0.2"),
				node("v4only", "10.0.0.3"), node("v6only", "fd00::3", annotate(v1alpha1.AnnotationRouterID, "10.9.9.9"))}},
			want: []PeerConfig{
				peer("10.0.0.2", 64512, KindMesh, "d2", passive, dual), peer("10.0.0.3", 64512, KindMesh, "v4only", passive),
				peer("fd00::3", 64512, KindMesh, "v6only", passive)}},
		{name: "mesh off and nothing else: no peers, one Problem", self: "n1",
			in:       PeerInputs{Config: config(meshOff), Nodes: threeNodes},
			problems: []string{"no BGP peers: nodeToNodeMesh is off and no route reflectors or BGPPeers select this node"}},
		{name: "another node's bad AS annotation is a Problem", self: "n1",
			in:       PeerInputs{Nodes: []*corev1.Node{node("n1", "10.0.0.1"), node("n2", "10.0.0.2", as("0"))}},
			problems: []string{`Node n2: annotation hostroute.io/as-number="0" is not an AS number (1..4294967295); not peered`}},
		{name: "node without address is an error", self: "joining", in: PeerInputs{Nodes: threeNodes}, err: "no InternalIP"},
		{name: "bad AS annotation is an error", self: "x", in: PeerInputs{Nodes: []*corev1.Node{node("x", "10.0.0.1", as("rack-a"))}},
			err: `hostroute.io/as-number="rack-a"`},
		{name: "unknown node is an error", self: "ghost", in: PeerInputs{Nodes: threeNodes}, err: `"ghost" not found`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ComputePeers(tc.self, tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got.Peers, tc.want) {
				t.Errorf("peers:\n got %s\nwant %s", dump(got.Peers), dump(tc.want))
			}
			if !slices.Equal(got.Problems, tc.problems) {
				t.Errorf("problems:\n got %q\nwant %q", got.Problems, tc.problems)
			}
			if tc.routerID != "" && got.Local.RouterID != netip.MustParseAddr(tc.routerID) {
				t.Errorf("router ID = %s, want %s", got.Local.RouterID, tc.routerID)
			}
			if got.Transition != tc.transition {
				t.Errorf("Transition = %v, want %v", got.Transition, tc.transition)
			}
			// Deterministic: a second run, and a run with every input list reversed
			// (informers list in any order), give the identical result.
			again, _ := ComputePeers(tc.self, tc.in)
			rev := tc.in
			rev.Nodes, rev.Peers = slices.Clone(rev.Nodes), slices.Clone(rev.Peers)
			slices.Reverse(rev.Nodes)
			slices.Reverse(rev.Peers)
			reversed, _ := ComputePeers(tc.self, rev)
			if !reflect.DeepEqual(got, again) || !reflect.DeepEqual(got, reversed) {
				t.Errorf("not deterministic:\n%+v\n%+v\n%+v", got, again, reversed)
			}
		})
	}
}

// TestComputePeersSessionsAgree checks, for every pair of nodes in mixed topologies,
// that both ends configure the same session: both or neither have it, and exactly one
// side dials. A disagreement would leave a session that never comes up.
func TestComputePeersSessionsAgree(t *testing.T) {
	rr := []*corev1.Node{
		node("rr1", "10.0.0.10", reflector()), node("rr2", "10.0.0.11", reflector(), as("65002")),
		node("c1", "10.0.0.1"), node("c2", "10.0.0.2,fd00::2"), node("c3", "10.0.0.3", as("65002")),
		node("c4", "fd00::4", annotate(v1alpha1.AnnotationRouterID, "10.9.9.4")),
	}
	// Conflicts: c1's address is also claimed by "dup", c4's IPv6 address by BGPPeer
	// "tor", and "old" carries only the former reflector label. None of dup, c1 and c4
	// may appear in anyone's node sessions, and they must have none themselves.
	conflicts := append(slices.Clone(rr), node("dup", "10.0.0.1", reflector()),
		node("old", "10.0.0.20", label(v1alpha1.LegacyLabelRouteReflector, "true")))
	torAtC4 := []*v1alpha1.BGPPeer{bgpPeer("tor", "fd00::4", 65000)}
	for _, cfg := range []*v1alpha1.BGPConfiguration{nil, config(meshOff)} {
		for _, tp := range []struct {
			nodes []*corev1.Node
			peers []*v1alpha1.BGPPeer
		}{{rr, nil}, {rr[2:], nil}, {conflicts, torAtC4}, {conflicts[2:], torAtC4}} {
			nodes := tp.nodes
			sets := map[string]map[string]PeerConfig{}
			for _, n := range nodes {
				ps, err := ComputePeers(n.Name, PeerInputs{Config: cfg, Nodes: nodes, Peers: tp.peers})
				if err != nil {
					t.Fatal(err)
				}
				sets[n.Name] = map[string]PeerConfig{}
				for _, p := range ps.Peers {
					if p.Kind == KindExternal {
						continue
					}
					sets[n.Name][p.Name] = p
					if tp.peers != nil && (n.Name == "dup" || n.Name == "c1" || n.Name == "c4" ||
						p.Name == "dup" || p.Name == "c1" || p.Name == "c4") {
						t.Errorf("mesh=%v: %s has a session with %s, which claims a disputed address", cfg == nil, n.Name, p.Name)
					}
				}
			}
			for a := range sets {
				for b, pa := range sets[a] {
					pb, ok := sets[b][a]
					if !ok {
						t.Errorf("mesh=%v: %s peers with %s but not the reverse", cfg == nil, a, b)
						continue
					}
					if pa.Passive == pb.Passive || pa.PeerAS != pb.LocalAS || pa.IPv6 != pb.IPv6 {
						t.Errorf("mesh=%v: %s↔%s disagree:\n%+v\n%+v", cfg == nil, a, b, pa, pb)
					}
				}
			}
		}
	}
}

func TestNodeBGPOf(t *testing.T) {
	got, err := NodeBGPOf(node("n", "fd00::1,10.0.0.1,10.0.0.2", label(v1alpha1.LabelRouteReflector, "true"),
		annotate(v1alpha1.AnnotationRouterID, "192.0.2.7")), config(func(s *v1alpha1.BGPConfigurationSpec) { s.ASNumber = 65123 }))
	want := NodeBGP{Name: "n", Address: netip.MustParseAddr("10.0.0.1"), Address6: netip.MustParseAddr("fd00::1"),
		AS: 65123, RouterID: netip.MustParseAddr("192.0.2.7"), ReflectorClusterID: "192.0.2.7"}
	if err != nil || got != want {
		t.Errorf("NodeBGPOf = %+v, %v; want %+v", got, err, want)
	}
	for name, n := range map[string]*corev1.Node{
		"AS too big":       node("n", "10.0.0.1", as("4294967296")),
		"router ID not v4": node("n", "10.0.0.1", annotate(v1alpha1.AnnotationRouterID, "fd00::1")),
		"v6 only, no ID":   node("n", "fd00::1"),
		"bad cluster ID":   node("n", "10.0.0.1", reflector(), annotate(v1alpha1.AnnotationRouteReflectorClusterID, "rack-a")),
		"ExternalIP is not it": {Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeExternalIP, Address: "192.0.2.1"}}}},
	} {
		if _, err := NodeBGPOf(n, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func dump(ps []PeerConfig) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "\n  %+v", p)
	}
	return b.String()
}
