package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/routing"
	"github.com/hostroute/hostroute/routing/routingtest"
)

func rulesPeer(name, ip string, as int64, mod func(*v1alpha1.BGPPeerSpec)) *v1alpha1.BGPPeer {
	bp := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.BGPPeerSpec{
		PeerIP: ip, ASNumber: as, Import: []v1alpha1.PrefixMatch{{CIDR: "0.0.0.0/0"}}}}
	if mod != nil {
		mod(&bp.Spec)
	}
	return bp
}

func accept(cidr string) v1alpha1.RouteFilter {
	return v1alpha1.RouteFilter{CIDR: cidr, Action: v1alpha1.FilterAccept}
}

func reject(cidr string) v1alpha1.RouteFilter {
	return v1alpha1.RouteFilter{CIDR: cidr, Action: v1alpha1.FilterReject}
}

func lpref(v int64) *int64 { return &v }

// A BGPPeer whose filters or export attributes do not parse is taken out of the set
// (and so out of the policy) with a Problem naming what is wrong; the others stay with
// their rules.
func TestPeerRules(t *testing.T) {
	a := netip.MustParseAddr
	for _, c := range []struct {
		name    string
		peer    *v1alpha1.BGPPeer
		problem string // "" = the peer stays
	}{
		{"good", rulesPeer("x", "192.0.2.250", 65001, func(s *v1alpha1.BGPPeerSpec) {
			s.ImportFilters = []v1alpha1.RouteFilter{reject("10.0.0.0/8")}
			s.Export = &v1alpha1.PeerExport{Filters: []v1alpha1.RouteFilter{accept("10.244.0.0/16")},
				RouteAttributes: v1alpha1.RouteAttributes{Communities: []string{"65000:1"}}}
		}), ""},
		{"bad import filter", rulesPeer("x", "192.0.2.250", 65001, func(s *v1alpha1.BGPPeerSpec) {
			s.ImportFilters = []v1alpha1.RouteFilter{reject("10.0.0.0/8"), {CIDR: "10.0.0.0/8", Action: "Drop"}}
		}), `BGPPeer x: importFilters rule 2 (10.0.0.0/8): action "Drop"`},
		{"bad import cidr", rulesPeer("x", "192.0.2.250", 65001, func(s *v1alpha1.BGPPeerSpec) {
			s.ImportFilters = []v1alpha1.RouteFilter{reject("10.0.0.0")}
		}), `BGPPeer x: importFilters rule 1: cidr "10.0.0.0"`},
		{"bad export filter", rulesPeer("x", "192.0.2.250", 65001, func(s *v1alpha1.BGPPeerSpec) {
			ml := int32(8)
			s.Export = &v1alpha1.PeerExport{Filters: []v1alpha1.RouteFilter{{CIDR: "10.0.0.0/16", MaxLength: &ml, Action: v1alpha1.FilterReject}}}
		}), "BGPPeer x: export.filters rule 1 (10.0.0.0/16): lengths 16 to 8"},
		{"bad export community", rulesPeer("x", "192.0.2.250", 65001, func(s *v1alpha1.BGPPeerSpec) {
			s.Export = &v1alpha1.PeerExport{RouteAttributes: v1alpha1.RouteAttributes{Communities: []string{"65536:1"}}}
		}), `BGPPeer x: export: community "65536:1"`},
		{"bad export local preference", rulesPeer("x", "192.0.2.250", 64512, func(s *v1alpha1.BGPPeerSpec) {
			s.Export = &v1alpha1.PeerExport{RouteAttributes: v1alpha1.RouteAttributes{LocalPreference: lpref(-5)}}
		}), "BGPPeer x: export: localPreference -5"},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := sources()
			src.peers = append(src.peers, c.peer)
			in, err := computeInputs(src)
			if err != nil {
				t.Fatal(err)
			}
			x := a("192.0.2.250")
			has := slices.ContainsFunc(in.set.Peers, func(pc routing.PeerConfig) bool { return pc.Address == x })
			_, imports := in.policy.ExternalImports[x]
			tor := slices.ContainsFunc(in.set.Peers, func(pc routing.PeerConfig) bool { return pc.Name == "tor" })
			if !tor || len(in.set.Peers) != 4-btoi(c.problem != "") {
				t.Errorf("peers %+v", in.set.Peers)
			}
			if c.problem == "" {
				if !has || !imports || len(in.set.Problems) != 0 {
					t.Errorf("good peer: in set %v, in the policy %v, problems %q", has, imports, in.set.Problems)
				}
				if len(in.policy.ImportFilters[x]) != 1 || len(in.policy.ExportFilters[x]) != 1 {
					t.Errorf("filters: import %v export %v", in.policy.ImportFilters, in.policy.ExportFilters)
				}
				return
			}
			if has || imports {
				t.Errorf("bad peer still in the set (%v) or the policy (%v)", has, imports)
			}
			if _, ok := in.policy.ImportFilters[x]; ok {
				t.Errorf("bad peer's import filters in the policy")
			}
			if len(in.set.Problems) != 1 || !strings.Contains(in.set.Problems[0], c.problem) || !strings.HasSuffix(in.set.Problems[0], "; peer skipped") {
				t.Errorf("problems %q, want one with %q", in.set.Problems, c.problem)
			}
			for _, tg := range in.policy.Tags {
				if slices.Contains(tg.Neighbors, x) {
					t.Errorf("bad peer's tag %+v", tg)
				}
			}
		})
	}

	// Called alone: only the external sessions of the bad BGPPeer go, not a node that
	// happens to share its name.
	set := routing.PeerSet{Peers: []routing.PeerConfig{
		{Address: a("192.0.2.2"), Kind: routing.KindMesh, Name: "bad"},
		{Address: a("192.0.2.250"), Kind: routing.KindExternal, Name: "bad"},
		{Address: a("192.0.2.251"), Kind: routing.KindExternal, Name: "good"},
	}}
	rules := peerRules(&set, []*v1alpha1.BGPPeer{
		rulesPeer("bad", "192.0.2.250", 65001, func(s *v1alpha1.BGPPeerSpec) { s.ImportFilters = []v1alpha1.RouteFilter{{CIDR: "x"}} }),
		rulesPeer("good", "192.0.2.251", 65001, func(s *v1alpha1.BGPPeerSpec) { s.ImportFilters = []v1alpha1.RouteFilter{accept("10.0.0.0/8")} }),
	})
	if _, ok := rules["bad"]; ok || len(rules["good"].imports) != 1 {
		t.Errorf("rules %+v", rules)
	}
	var names []string
	for _, pc := range set.Peers {
		names = append(names, string(pc.Kind)+" "+pc.Name)
	}
	if want := []string{"mesh bad", "external good"}; !reflect.DeepEqual(names, want) {
		t.Errorf("peers %v, want %v", names, want)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Each external neighbour gets its BGPPeer's filters, and its routes the BGPPeer's
// attributes: local preference only over iBGP.
func TestAddPeerRules(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	imp := []routing.Filter{{Prefix: p("10.0.0.0/8"), MinLen: 8, MaxLen: 8}}
	exp := []routing.Filter{{Prefix: p("10.244.0.0/16"), MinLen: 16, MaxLen: 32, Accept: true}}
	attrs := routing.Attrs{Communities: []routing.Community{65000<<16 | 1}, LocalPref: 200, HasLocalPref: true}
	set := routing.PeerSet{Peers: []routing.PeerConfig{
		{Address: a("192.0.2.2"), Kind: routing.KindMesh, Name: "ebgp", PeerAS: 64512, LocalAS: 64512}, // a node sharing a BGPPeer's name
		{Address: a("192.0.2.250"), Kind: routing.KindExternal, Name: "ebgp", PeerAS: 65001, LocalAS: 64512},
		{Address: a("192.0.2.251"), Kind: routing.KindExternal, Name: "ibgp", PeerAS: 64512, LocalAS: 64512},
		{Address: a("192.0.2.252"), Kind: routing.KindExternal, Name: "plain", PeerAS: 65001, LocalAS: 64512},
		{Address: a("192.0.2.253"), Kind: routing.KindExternal, Name: "lponly", PeerAS: 65002, LocalAS: 64512},
		{Address: a("192.0.2.254"), Kind: routing.KindExternal, Name: "unknown", PeerAS: 65001, LocalAS: 64512},
	}}
	rules := map[string]peerFilters{
		"ebgp":   {imports: imp, exports: exp, attrs: attrs},
		"ibgp":   {attrs: attrs, exports: exp},
		"plain":  {},
		"lponly": {attrs: routing.Attrs{LocalPref: 300, HasLocalPref: true}},
	}
	var pol routing.Policy
	addPeerRules(&pol, set, rules)
	want := routing.Policy{
		ImportFilters: map[netip.Addr][]routing.Filter{a("192.0.2.250"): imp},
		ExportFilters: map[netip.Addr][]routing.Filter{a("192.0.2.250"): exp, a("192.0.2.251"): exp},
		Tags: []routing.Tag{
			{Source: "BGPPeer ebgp", Neighbors: []netip.Addr{a("192.0.2.250")}, Attrs: routing.Attrs{Communities: attrs.Communities}},
			{Source: "BGPPeer ibgp", Neighbors: []netip.Addr{a("192.0.2.251")}, Attrs: attrs},
		},
	}
	if !reflect.DeepEqual(pol, want) {
		t.Errorf("policy\n%+v\nwant\n%+v", pol, want)
	}
	if !rules["ebgp"].attrs.HasLocalPref {
		t.Error("addPeerRules changed its input")
	}
	// Nothing to add: the maps stay nil (a policy without rules compares equal to before).
	var empty routing.Policy
	addPeerRules(&empty, set, map[string]peerFilters{"plain": {}})
	if !reflect.DeepEqual(empty, routing.Policy{}) {
		t.Errorf("empty rules made %+v", empty)
	}
}

func rulesPool(name, cidr string, ra v1alpha1.RouteAttributes) *v1alpha1.IPPool {
	return &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.IPPoolSpec{CIDR: cidr, RouteAttributes: ra}}
}

// Each pool's blocks carry its attributes to every neighbour, pools in name order; a pool
// whose attributes do not parse is a Problem and tags nothing.
func TestAddPoolTags(t *testing.T) {
	p := netip.MustParsePrefix
	pools := []*v1alpha1.IPPool{
		rulesPool("zeta", "10.250.0.0/16", v1alpha1.RouteAttributes{LargeCommunities: []string{"64512:9:9"}}),
		rulesPool("alpha", "10.244.1.0/16", v1alpha1.RouteAttributes{Communities: []string{"65000:2", "65000:1"}, LocalPreference: lpref(150)}),
		rulesPool("plain", "10.246.0.0/16", v1alpha1.RouteAttributes{}),
		rulesPool("broken", "10.247.0.0/16", v1alpha1.RouteAttributes{Communities: []string{"65000"}}),
		rulesPool("badcidr", "10.248.0.0", v1alpha1.RouteAttributes{Communities: []string{"65000:3"}}),
		rulesPool("six", "fd00:244::/48", v1alpha1.RouteAttributes{Communities: []string{"65000:6"}}),
	}
	var pol routing.Policy
	var set routing.PeerSet
	addPoolTags(&pol, pools, &set)
	want := []routing.Tag{
		{Source: "IPPool alpha", Prefixes: []netip.Prefix{p("10.244.0.0/16")},
			Attrs: routing.Attrs{Communities: []routing.Community{65000<<16 | 1, 65000<<16 | 2}, LocalPref: 150, HasLocalPref: true}},
		{Source: "IPPool six", Prefixes: []netip.Prefix{p("fd00:244::/48")}, Attrs: routing.Attrs{Communities: []routing.Community{65000<<16 | 6}}},
		{Source: "IPPool zeta", Prefixes: []netip.Prefix{p("10.250.0.0/16")},
			Attrs: routing.Attrs{LargeCommunities: []routing.LargeCommunity{{ASN: 64512, Data1: 9, Data2: 9}}}},
	}
	if !reflect.DeepEqual(pol.Tags, want) {
		t.Errorf("tags\n%+v\nwant\n%+v", pol.Tags, want)
	}
	if len(set.Problems) != 1 || !strings.HasPrefix(set.Problems[0], `IPPool broken: community "65000"`) ||
		!strings.HasSuffix(set.Problems[0], "its blocks are exported without attributes") {
		t.Errorf("problems %q", set.Problems)
	}
	if pools[0].Name != "zeta" {
		t.Error("addPoolTags reordered its input")
	}
}

// Service routes are exported to external neighbours; a route with attributes gets a
// tag for exactly its prefix.
func TestAddServices(t *testing.T) {
	p := netip.MustParsePrefix
	attrs := routing.Attrs{Communities: []routing.Community{65000<<16 | 300}}
	pol := routing.Policy{ServiceExports: []netip.Prefix{p("192.0.2.99/32")}}
	addServices(&pol, []routing.ServiceRoute{
		{Prefix: p("10.96.0.0/12"), Reasons: []string{"cluster IP range"}},
		{Prefix: p("198.51.100.10/32"), Reasons: []string{"LoadBalancer IP of default/web"}, Attrs: attrs},
		{Prefix: p("2001:db8:100::10/128"), Reasons: []string{"LoadBalancer IP of default/web"}},
	})
	want := routing.Policy{
		ServiceExports: []netip.Prefix{p("192.0.2.99/32"), p("10.96.0.0/12"), p("198.51.100.10/32"), p("2001:db8:100::10/128")},
		Tags:           []routing.Tag{{Source: "Service 198.51.100.10/32", Prefixes: []netip.Prefix{p("198.51.100.10/32")}, Attrs: attrs}},
	}
	if !reflect.DeepEqual(pol, want) {
		t.Errorf("policy\n%+v\nwant\n%+v", pol, want)
	}
	var empty routing.Policy
	addServices(&empty, nil)
	if !reflect.DeepEqual(empty, routing.Policy{}) {
		t.Errorf("no Service routes made %+v", empty)
	}
}

// servicesSources is sources() with Service ranges, a LoadBalancer Service with
// externalTrafficPolicy Local whose endpoint is on n1, a pool and a BGPPeer with
// attributes.
func servicesSources() bgpSources {
	src := sources()
	src.conf = &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{
		ServiceClusterIPs: []v1alpha1.ServiceIPRange{{CIDR: "10.96.0.0/12"}},
		ServiceLoadBalancerIPs: []v1alpha1.ServiceIPRange{{CIDR: "198.51.100.0/24",
			RouteAttributes: v1alpha1.RouteAttributes{Communities: []string{"65000:300"}}}},
	}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}}
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.10"}}
	src.services = []*corev1.Service{svc}
	n1 := "n1"
	src.slices = []*discoveryv1.EndpointSlice{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.5"}, NodeName: &n1}},
	}}
	src.pools[0].Name = "default"
	src.pools[0].Spec.RouteAttributes = v1alpha1.RouteAttributes{Communities: []string{"65000:100"}}
	src.peers[0].Spec.Export = &v1alpha1.PeerExport{RouteAttributes: v1alpha1.RouteAttributes{Communities: []string{"65000:200"}, LocalPreference: lpref(200)}}
	return src
}

// computeInputs puts it together: the Service routes, exported to external neighbours
// with their tags, then the BGPPeer's, then the pools'.
func TestComputeInputsServices(t *testing.T) {
	in, err := computeInputs(servicesSources())
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix
	var got []string
	for _, r := range in.services {
		got = append(got, r.Prefix.String()+" "+strings.Join(r.Reasons, ","))
	}
	want := []string{"10.96.0.0/12 cluster IP range", "198.51.100.10/32 LoadBalancer IP of default/web (externalTrafficPolicy Local, 1 ready endpoint here)"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("services %q, want %q", got, want)
	}
	if want := []netip.Prefix{p("10.96.0.0/12"), p("198.51.100.10/32")}; !reflect.DeepEqual(in.policy.ServiceExports, want) {
		t.Errorf("ServiceExports %v, want %v", in.policy.ServiceExports, want)
	}
	var sources []string
	for _, tg := range in.policy.Tags {
		sources = append(sources, tg.Source+": "+tg.Attrs.String())
	}
	// The ToR is eBGP (AS 65000, the node 64512): its local preference is dropped.
	wantTags := []string{"Service 198.51.100.10/32: communities 65000:300", "BGPPeer tor: communities 65000:200", "IPPool default: communities 65000:100"}
	if !reflect.DeepEqual(sources, wantTags) {
		t.Errorf("tags %q, want %q", sources, wantTags)
	}
	tor := netip.MustParseAddr("192.0.2.254")
	if a := in.policy.ExportAttrs(tor, p("198.51.100.10/32")); a.String() != "communities 65000:200 65000:300" {
		t.Errorf("the ToR's attributes of the LoadBalancer IP: %q", a)
	}
	if ok, why := in.policy.Exports(routing.KindExternal, tor, p("198.51.100.10/32"), false, false); !ok {
		t.Errorf("LoadBalancer IP not exported to the ToR: %s", why)
	}
	if ok, _ := in.policy.Exports(routing.KindMesh, netip.MustParseAddr("192.0.2.2"), p("198.51.100.10/32"), false, false); ok {
		t.Error("LoadBalancer IP exported to a node")
	}
	if len(in.set.Problems) != 0 {
		t.Errorf("problems %q", in.set.Problems)
	}

	// A bad range is a Problem of the set; the rest is announced.
	src := servicesSources()
	src.conf.Spec.ServiceClusterIPs = append(src.conf.Spec.ServiceClusterIPs, v1alpha1.ServiceIPRange{CIDR: "10.96.0.0/40"})
	if in, err = computeInputs(src); err != nil {
		t.Fatal(err)
	}
	if len(in.services) != 2 || len(in.set.Problems) != 1 || !strings.Contains(in.set.Problems[0], `serviceClusterIPs: "10.96.0.0/40"`) {
		t.Errorf("services %v, problems %q", in.services, in.set.Problems)
	}
}

// The advertiser announces the Service routes with the blocks (next hop: the node's
// address of the family), withdraws a Service route when it goes (the endpoint left),
// keeps a block that is also a Service route, and makes no call when nothing changed.
func TestAdvertiserServices(t *testing.T) {
	sp := &countingSpeaker{Fake: routingtest.NewFake(), calls: map[string]int{}}
	if err := sp.Start(context.Background(), routing.GlobalConfig{AS: 64512}); err != nil {
		t.Fatal(err)
	}
	adv := &advertiser{sp: sp, log: slog.New(slog.DiscardHandler), advertised: map[netip.Prefix]netip.Addr{}}
	p := netip.MustParsePrefix
	v4, v6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("fd00::1")
	in := bgpInputs{
		own: []netip.Prefix{p("10.244.0.0/26"), p("fd00:244::/80")},
		services: []routing.ServiceRoute{
			{Prefix: p("10.96.0.0/12")}, {Prefix: p("198.51.100.10/32")}, {Prefix: p("2001:db8:100::10/128")},
			{Prefix: p("10.244.0.0/26")}, // a Service route that is also a block
		},
		set: routing.PeerSet{Local: routing.NodeBGP{Name: "n1", Address: v4, Address6: v6}},
	}
	if err := adv.reconcile(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	want := map[netip.Prefix]netip.Addr{
		p("10.244.0.0/26"): v4, p("fd00:244::/80"): v6, p("10.96.0.0/12"): v4, p("198.51.100.10/32"): v4, p("2001:db8:100::10/128"): v6,
	}
	if got := sp.Advertised(); !reflect.DeepEqual(got, want) {
		t.Fatalf("advertised %v, want %v", got, want)
	}
	sp.take()
	if err := adv.reconcile(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if calls := sp.take(); len(calls) != 0 {
		t.Errorf("the same inputs again made calls %v", calls)
	}

	// The LoadBalancer IP's endpoint left this node, and the block stops being a Service
	// route: only the LoadBalancer IP is withdrawn.
	in.services = []routing.ServiceRoute{{Prefix: p("10.96.0.0/12")}, {Prefix: p("2001:db8:100::10/128")}}
	if err := adv.reconcile(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	delete(want, p("198.51.100.10/32"))
	if got := sp.Advertised(); !reflect.DeepEqual(got, want) {
		t.Errorf("advertised %v, want %v", got, want)
	}
	if calls := sp.take(); calls["Withdraw"] != 1 || calls["Advertise"] != 0 {
		t.Errorf("calls %v, want one Withdraw", calls)
	}

	// A failed withdrawal is retried on the next pass.
	in.services = nil
	sp.FailNext("Withdraw", context.DeadlineExceeded)
	if err := adv.reconcile(context.Background(), in); err == nil {
		t.Error("a failed withdrawal was not reported")
	}
	if err := adv.reconcile(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	want = map[netip.Prefix]netip.Addr{p("10.244.0.0/26"): v4, p("fd00:244::/80"): v6}
	if got := sp.Advertised(); !reflect.DeepEqual(got, want) {
		t.Errorf("advertised %v, want only the blocks %v", got, want)
	}
}

// Through all the reconcilers: the Service routes are advertised and in the installed
// policy; when the Service's only endpoint on this node goes, its route is withdrawn
// and the policy no longer exports it.
func TestReconcilersServiceRoutes(t *testing.T) {
	sp := &countingSpeaker{Fake: routingtest.NewFake(), calls: map[string]int{}}
	rs := newReconcilers(slog.New(slog.DiscardHandler), sp, nil, nil, nil)
	pass := func(src bgpSources) bgpInputs {
		t.Helper()
		in, err := computeInputs(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if err := r.reconcile(context.Background(), in); err != nil {
				t.Fatalf("%s: %v", r.name(), err)
			}
		}
		return in
	}
	p := netip.MustParsePrefix
	lb := p("198.51.100.10/32")
	src := servicesSources()
	pass(src)
	adv := sp.Advertised()
	if _, ok := adv[lb]; !ok || adv[p("10.96.0.0/12")] != netip.MustParseAddr("192.0.2.1") || len(adv) != 3 {
		t.Fatalf("advertised %v", adv)
	}
	if pol, _ := sp.CurrentPolicy(); !slices.Contains(pol.ServiceExports, lb) {
		t.Fatalf("policy exports %v", pol.ServiceExports)
	}

	ready := false
	src.slices[0].Endpoints[0].Conditions.Ready = &ready
	pass(src)
	if _, ok := sp.Advertised()[lb]; ok {
		t.Errorf("%v still advertised with no ready endpoint here", lb)
	}
	if pol, _ := sp.CurrentPolicy(); slices.Contains(pol.ServiceExports, lb) || len(pol.Tags) != 2 {
		t.Errorf("policy exports %v, tags %+v", pol.ServiceExports, pol.Tags)
	}
}
