package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/routing"
	"github.com/hostroute/hostroute/routing/bfd"
	"github.com/hostroute/hostroute/routing/routingtest"
)

func testNode(name, addr string, labels map[string]string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}
	return n
}

func testBlock(cidr, node string) *v1alpha1.IPAMBlock {
	return &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: cidr, Node: node}}
}

func testPool(cidr string, noExport bool) *v1alpha1.IPPool {
	return &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{CIDR: cidr, DisableBGPExport: noExport}}
}

// sources is a three-node cluster with a BFD ToR peer, seen from n1.
func sources() bgpSources {
	bfdOn := &v1alpha1.BFDSettings{Enabled: true}
	tor := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: v1alpha1.BGPPeerSpec{
		PeerIP: "192.0.2.254", ASNumber: 65000, BFD: bfdOn,
		Import: []v1alpha1.PrefixMatch{{CIDR: "0.0.0.0/0"}}}}
	return bgpSources{
		node:   "n1",
		own:    []netip.Prefix{netip.MustParsePrefix("10.244.0.0/26")},
		nodes:  []*corev1.Node{testNode("n1", "192.0.2.1", nil), testNode("n2", "192.0.2.2", nil), testNode("n3", "192.0.2.3", nil)},
		peers:  []*v1alpha1.BGPPeer{tor},
		blocks: []*v1alpha1.IPAMBlock{testBlock("10.244.0.0/26", "n1"), testBlock("10.244.0.64/26", "n2"), testBlock("10.244.0.128/26", "n3"), testBlock("10.244.1.0/26", "gone")},
		pools:  []*v1alpha1.IPPool{testPool("10.244.0.0/16", false), testPool("10.99.0.0/16", true)},
	}
}

func TestPolicyFor(t *testing.T) {
	in, err := computeInputs(sources())
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	want := routing.Policy{
		OwnBlocks: []netip.Prefix{p("10.244.0.0/26")},
		// A block of a node that no longer exists has no owner: nobody may announce it.
		BlockOwners:        map[netip.Prefix]netip.Addr{p("10.244.0.0/26"): a("192.0.2.1"), p("10.244.0.64/26"): a("192.0.2.2"), p("10.244.0.128/26"): a("192.0.2.3")},
		BlockOwnerAS:       map[netip.Prefix]uint32{p("10.244.0.0/26"): 64512, p("10.244.0.64/26"): 64512, p("10.244.0.128/26"): 64512},
		Pools:              []netip.Prefix{p("10.99.0.0/16"), p("10.244.0.0/16")},
		NoExportToExternal: []netip.Prefix{p("10.99.0.0/16")},
		ExternalImports:    map[netip.Addr][]routing.PrefixRange{a("192.0.2.254"): {{Prefix: p("0.0.0.0/0"), MaxLen: 0}}},
	}
	if !reflect.DeepEqual(in.policy, want) {
		t.Fatalf("policy =\n%+v\nwant\n%+v", in.policy, want)
	}
}

// fakeBFD records sessions.
type fakeBFD struct {
	mu       sync.Mutex
	sessions map[netip.Addr]netip.Addr
	calls    int
}

func (f *fakeBFD) Add(peer, local netip.Addr, _ bfd.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.sessions[peer] = local
	return nil
}

func (f *fakeBFD) Remove(peer netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	delete(f.sessions, peer)
	return nil
}

func (f *fakeBFD) Events() <-chan bfd.Event { return nil }

// countingSpeaker counts the calls that change the speaker's state.
type countingSpeaker struct {
	*routingtest.Fake
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingSpeaker) count(m string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[m]++
}

func (c *countingSpeaker) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.calls
	c.calls = map[string]int{}
	return out
}

func (c *countingSpeaker) Start(ctx context.Context, g routing.GlobalConfig) error {
	c.count("Start")
	return c.Fake.Start(ctx, g)
}

func (c *countingSpeaker) Advertise(p netip.Prefix, nh netip.Addr) error {
	c.count("Advertise")
	return c.Fake.Advertise(p, nh)
}

func (c *countingSpeaker) Withdraw(p netip.Prefix) error {
	c.count("Withdraw")
	return c.Fake.Withdraw(p)
}

func (c *countingSpeaker) SetPolicy(p routing.Policy) error {
	c.count("SetPolicy")
	return c.Fake.SetPolicy(p)
}

func (c *countingSpeaker) SetPeers(ps []routing.PeerConfig) error {
	c.count("SetPeers")
	return c.Fake.SetPeers(ps)
}

// Every reconciler applied its concern on the first pass, and a second pass with the same
// inputs makes no call at all; a changed input changes only what it concerns.
func TestBGPReconcilersRunTwice(t *testing.T) {
	sp := &countingSpeaker{Fake: routingtest.NewFake(), calls: map[string]int{}}
	bf := &fakeBFD{sessions: map[netip.Addr]netip.Addr{}}
	started := 0
	rs := newReconcilers(slog.New(slog.DiscardHandler), sp, bf, func() { started++ }, nil)
	src := sources()
	in, err := computeInputs(src)
	if err != nil {
		t.Fatal(err)
	}
	pass := func(in bgpInputs) error {
		var errs []error
		for _, r := range rs {
			if err := r.reconcile(context.Background(), in); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if err := pass(in); err != nil {
		t.Fatal(err)
	}
	if !sp.Started() || started != 1 {
		t.Fatalf("speaker started %v (%d callbacks)", sp.Started(), started)
	}
	if adv := sp.Advertised(); len(adv) != 1 || adv[netip.MustParsePrefix("10.244.0.0/26")] != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("advertised %v", adv)
	}
	if pol, ok := sp.CurrentPolicy(); !ok || !reflect.DeepEqual(pol, in.policy) {
		t.Fatalf("policy %+v (set %v)", pol, ok)
	}
	if got := sp.PeerConfigs(); len(got) != 3 {
		t.Fatalf("peers %+v, want n2, n3 and the ToR", got)
	}
	if len(bf.sessions) != 1 || bf.sessions[netip.MustParseAddr("192.0.2.254")] != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("bfd sessions %v, want the ToR's from 192.0.2.1", bf.sessions)
	}

	sp.take()
	bfdCalls := bf.calls
	if err := pass(in); err != nil {
		t.Fatal(err)
	}
	if calls := sp.take(); len(calls) != 0 || bf.calls != bfdCalls {
		t.Fatalf("second pass with the same inputs made calls: speaker %v, bfd %d", calls, bf.calls-bfdCalls)
	}

	// A new block: only its advertisement and the policy (own blocks, owners) change.
	src.own = append(src.own, netip.MustParsePrefix("10.244.2.0/26"))
	src.blocks = append(src.blocks, testBlock("10.244.2.0/26", "n1"))
	if in, err = computeInputs(src); err != nil {
		t.Fatal(err)
	}
	if err := pass(in); err != nil {
		t.Fatal(err)
	}
	if calls := sp.take(); !reflect.DeepEqual(calls, map[string]int{"Advertise": 1, "SetPolicy": 1}) {
		t.Fatalf("after a new block: calls %v, want one Advertise and one SetPolicy", calls)
	}
	// The ToR's BGPPeer goes: its session, its import list and its BFD session go.
	src.peers = nil
	if in, err = computeInputs(src); err != nil {
		t.Fatal(err)
	}
	if err := pass(in); err != nil {
		t.Fatal(err)
	}
	if calls := sp.take(); !reflect.DeepEqual(calls, map[string]int{"SetPeers": 1, "SetPolicy": 1}) || len(bf.sessions) != 0 {
		t.Fatalf("after the BGPPeer went: calls %v, bfd sessions %v", calls, bf.sessions)
	}
	// A restart's grace ends: the flag on new sessions changes, nothing else.
	in.restarting = true
	_ = pass(in)
	sp.take()
	in.restarting = false
	if err := pass(in); err != nil {
		t.Fatal(err)
	}
	if calls := sp.take(); !reflect.DeepEqual(calls, map[string]int{"SetPeers": 1}) {
		t.Fatalf("after the restart grace: calls %v, want one SetPeers", calls)
	}
}

// heldBFD is a fakeBFD that lists its sessions, as the BFD daemon does: it may hold
// sessions from before the agent started.
type heldBFD struct{ fakeBFD }

func (h *heldBFD) Sessions() []bfd.SessionState {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []bfd.SessionState
	for p, l := range h.sessions {
		out = append(out, bfd.SessionState{Peer: p, Local: l, State: bfd.Up})
	}
	return out
}

// A restarted agent finds the daemon holding the ToR's session (wanted) and one for a peer
// that went away meanwhile: the first pass removes only the stale one, and keeps asking
// for the wanted one (so a daemon restart gets it replayed).
func TestBFDReconcilerPrunesWhatTheDaemonHeld(t *testing.T) {
	tor, gone, local := netip.MustParseAddr("192.0.2.254"), netip.MustParseAddr("192.0.2.99"), netip.MustParseAddr("192.0.2.1")
	bf := &heldBFD{fakeBFD{sessions: map[netip.Addr]netip.Addr{tor: local, gone: local}}}
	r := &bfdReconciler{bfd: bf, sessions: map[netip.Addr]netip.Addr{}}
	in, err := computeInputs(sources())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.reconcile(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(bf.sessions, map[netip.Addr]netip.Addr{tor: local}) {
		t.Fatalf("daemon sessions after the first pass: %v, want only the ToR's", bf.sessions)
	}
	if bf.calls != 2 {
		t.Fatalf("%d calls, want a Remove of the stale peer and an Add of the ToR", bf.calls)
	}
	if err := r.reconcile(context.Background(), in); err != nil || bf.calls != 2 {
		t.Fatalf("second pass: err %v, %d calls (want none more)", err, bf.calls-2)
	}
}
