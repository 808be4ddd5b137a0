package e2e_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/node/cni"
)

// TestPoolChoice steers pods' addresses to pools by namespace and pod annotations and by
// namespaceSelector, refuses unusable choices with CNI error 102 leaving nothing behind,
// never hands out reserved addresses even when that leaves a pool full, and returns empty
// extra blocks to their pools. Pods are Pod objects bound to the node; the agent reads
// them from its caches and the controller assigns blocks of the pools they need.
func TestPoolChoice(t *testing.T) {
	e := harness.NewEnv(t, bin)
	pool := func(name, cidr string, size int32, nsSel map[string]string) {
		t.Helper()
		p := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{CIDR: cidr, BlockSize: &size}}
		p.Name = name
		if nsSel != nil {
			p.Spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: nsSel}
		}
		if _, err := e.HR.IPPools.Create(e.Ctx, p); err != nil {
			t.Fatalf("create pool %s: %v", name, err)
		}
	}
	pool("general", "10.120.0.0/24", 28, nil)
	pool("green", "10.121.0.0/24", 28, nil) // serves every namespace; after general by name
	pool("team", "10.122.0.0/24", 28, map[string]string{"team": "a"})
	pool("resv", "10.123.0.0/28", 28, map[string]string{"hostroute.io/test": "resv"})
	namespace := func(name string, labels, annotations map[string]string) {
		t.Helper()
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations}}
		if _, err := e.Kube.CoreV1().Namespaces().Create(e.Ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create namespace %s: %v", name, err)
		}
	}
	namespace("ns-green", nil, map[string]string{v1alpha1.AnnotationIPv4Pools: `["green"]`})
	namespace("ns-team", map[string]string{"team": "a"}, nil)
	namespace("ns-resv", map[string]string{"hostroute.io/test": "resv"}, nil)
	e.RunController(controller.Config{EmptyBlockGrace: 3 * time.Second})
	n := e.AddNode("node-a", "192.0.2.1")
	n.WaitReady(20 * time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", n.Log())
		}
	})

	seq := 0
	add := func(ns string, ann map[string]string) (*harness.Pod, error) {
		t.Helper()
		seq++
		p := n.NewPod(fmt.Sprintf("pod-%d", seq))
		p.Namespace = ns
		if err := e.PodObject(p, ann); err != nil {
			t.Fatalf("create pod object: %v", err)
		}
		return p, p.Add()
	}
	mustAdd := func(ns string, ann map[string]string, inPool string) *harness.Pod {
		t.Helper()
		p, err := add(ns, ann)
		if err != nil {
			t.Fatalf("ADD %s/%s: %v", ns, p.Name, err)
		}
		if !netip.MustParsePrefix(inPool).Contains(netip.MustParseAddr(p.IP)) {
			t.Fatalf("pod %s/%s (annotations %v) got %s, want an address in %s", ns, p.Name, ann, p.IP, inPool)
		}
		t.Logf("%s/%s → %s", ns, p.Name, p.IP)
		return p
	}

	plain := mustAdd("default", nil, "10.120.0.0/24")
	start := time.Now()
	green := mustAdd("ns-green", nil, "10.121.0.0/24") // namespace annotation; block on demand
	t.Logf("first pod of pool green wired in %s (block assigned on demand)", time.Since(start).Round(time.Millisecond))
	mustAdd("ns-green", map[string]string{v1alpha1.AnnotationIPv4Pools: "general"}, "10.120.0.0/24") // the pod's wins
	team := mustAdd("ns-team", nil, "10.122.0.0/24")                                                 // namespaceSelector
	mustAdd("ns-team", map[string]string{v1alpha1.AnnotationIPv4Pools: "general, team"}, "10.120.0.0/24")

	// Choices that cannot be honoured: a clear error naming the pool, nothing left behind.
	before, veths := inUse(t, n), len(hostVeths(t, n))
	for _, tc := range []struct {
		ns, ann, want string
	}{
		{"default", "nosuch", `IPPool "nosuch", which does not exist`},
		{"default", "team", "does not select namespace default"},
		{"default", `["general"`, "neither a JSON list"},
	} {
		seq++
		p := n.NewPod(fmt.Sprintf("bad-%d", seq))
		p.Namespace = tc.ns
		if err := e.PodObject(p, map[string]string{v1alpha1.AnnotationIPv4Pools: tc.ann}); err != nil {
			t.Fatal(err)
		}
		r := cniError(t, n, "ADD", p, n.NetConf())
		if r.Code != int(cni.ErrPoolChoice) || !strings.Contains(r.Msg, tc.want) || !strings.Contains(r.Msg, v1alpha1.AnnotationIPv4Pools) {
			t.Errorf("annotation %q: code %d %q, want %d naming the annotation and %q", tc.ann, r.Code, r.Msg, cni.ErrPoolChoice, tc.want)
		}
	}
	if got := inUse(t, n); got != before {
		t.Fatalf("%d allocations after the refused ADDs, want %d", got, before)
	}
	if v := hostVeths(t, n); len(v) != veths {
		t.Fatalf("refused ADDs left veths behind: %d, want %d (%v)", len(v), veths, v)
	}

	// A reservation: half of the resv pool (its only block) and one more address. The
	// other seven addresses go to pods; the next ADD finds the pool full.
	res := &v1alpha1.IPReservation{Spec: v1alpha1.IPReservationSpec{ReservedCIDRs: []string{"10.123.0.0/29", "10.123.0.9", plain.IP}}}
	res.Name = "network-team"
	if _, err := e.HR.IPReservations.Create(e.Ctx, res); err != nil {
		t.Fatal(err)
	}
	reserved := []netip.Prefix{netip.MustParsePrefix("10.123.0.0/29"), netip.MustParsePrefix("10.123.0.9/32")}
	time.Sleep(2 * time.Second) // the agent's informer delivers the reservation
	var resvPods []*harness.Pod
	for range 7 {
		p := mustAdd("ns-resv", nil, "10.123.0.0/28")
		for _, r := range reserved {
			if r.Contains(netip.MustParseAddr(p.IP)) {
				t.Fatalf("pod got reserved address %s", p.IP)
			}
		}
		resvPods = append(resvPods, p)
	}
	p, err := add("ns-resv", nil)
	if err == nil {
		t.Fatalf("pool resv has 7 unreserved addresses, all taken, but an 8th pod got %s", p.IP)
	}
	t.Logf("8th pod in the reserved pool: %v", err)
	if !strings.Contains(err.Error(), fmt.Sprintf(`"code": %d`, cni.ErrPoolExhausted)) && !strings.Contains(err.Error(), fmt.Sprintf(`"code":%d`, cni.ErrPoolExhausted)) {
		t.Errorf("8th ADD in the full pool: %v, want CNI code %d", err, cni.ErrPoolExhausted)
	}
	// The pod that held an address before it was reserved keeps it, and is reported.
	e.Eventually(20*time.Second, "the reservation reports the pod holding a reserved address", func() string {
		got, err := e.HR.IPReservations.Get(e.Ctx, "network-team")
		if err != nil {
			return err.Error()
		}
		if got.Status.HolderCount != 1 || len(got.Status.Holders) != 1 || got.Status.Holders[0].Address != plain.IP ||
			got.Status.Holders[0].Pod != plain.Name || got.Status.Holders[0].Node != n.Name {
			return fmt.Sprintf("status %+v", got.Status)
		}
		return ""
	})

	// Block hygiene: the pods of pool green and of the resv namespace go; their blocks are
	// then extra (the node keeps its general block) and go back to their pools after the
	// grace, drained by the agent first. The general block stays.
	for _, p := range append([]*harness.Pod{green}, resvPods...) {
		if err := p.Del(); err != nil {
			t.Fatal(err)
		}
		// Terminating (graceful deletion, no kubelet here to finish it): no longer needs
		// a pool, although the object stays.
		if err := e.Kube.CoreV1().Pods(p.KubeNamespace()).Delete(e.Ctx, p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	// The failed 8th pod object still names ns-resv: delete it too, or the node keeps
	// needing pool resv (a pod of the node that would take an address from it).
	zero := int64(0)
	if err := e.Kube.CoreV1().Pods("ns-resv").Delete(e.Ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	// A pod of ns-green remains (the one steered to general), but no pod needs green now.
	e.Eventually(30*time.Second, "the empty blocks of pools green and resv go back; general and team stay", func() string {
		bl, err := e.HR.IPAMBlocks.List(e.Ctx, metav1.ListOptions{})
		if err != nil {
			return err.Error()
		}
		var got []string
		for _, b := range bl.Items {
			if b.Spec.Pool == "green" || b.Spec.Pool == "resv" {
				needs := "?"
				if st, err := e.HR.NodeNetworkStatuses.Get(e.Ctx, n.Name); err == nil {
					needs = fmt.Sprint(st.Status.PoolsNeeded)
				}
				return fmt.Sprintf("block %s of pool %s still there (annotations %v, draining %v, drained %v, %d allocations; the node needs pools %s)",
					b.Spec.CIDR, b.Spec.Pool, b.Annotations, b.Spec.Draining, b.Status.Drained, len(b.Status.Allocations), needs)
			}
			got = append(got, b.Spec.Pool)
		}
		if strings.Join(got, ",") != "general,team" && strings.Join(got, ",") != "team,general" {
			return fmt.Sprintf("blocks of pools %v, want general and team", got)
		}
		return ""
	})
	if _, err := team.Exec("ip", "-N", "-j", "addr", "show", "eth0"); err != nil {
		t.Fatalf("team pod gone: %v", err)
	}
	// The agent stopped announcing the returned blocks: only the kept ones are its own.
	st, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range st.GetBlocks() {
		if pfx := netip.MustParsePrefix(b.GetCidr()); pfx.Overlaps(netip.MustParsePrefix("10.121.0.0/24")) || pfx.Overlaps(netip.MustParsePrefix("10.123.0.0/28")) {
			t.Errorf("agent still has block %s", pfx)
		}
	}
	// A pod of pool green again: a block comes back on demand.
	mustAdd("ns-green", nil, "10.121.0.0/24")
}

// TestFixedAddress: a pod's hostroute.io/ip-addrs gives it exactly that address; its node
// takes the address's block (from a pool no node takes blocks from otherwise) and
// announces it, so pods on other nodes reach the address. A second pod asking for the
// address is refused with CNI error 103 naming the holder, on the same node and on
// another; an address in no pool or a reserved one is refused with 102; nothing is left
// behind by a refused ADD.
func TestFixedAddress(t *testing.T) {
	l := newLab(t, 2, false, 0)
	e := l.e
	size := int32(28)
	fixed := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{CIDR: "10.160.0.0/24", BlockSize: &size,
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"hostroute.test/fixed-only": "none"}}}}
	fixed.Name = "fixed"
	if _, err := e.HR.IPPools.Create(e.Ctx, fixed); err != nil {
		t.Fatal(err)
	}
	res := &v1alpha1.IPReservation{Spec: v1alpha1.IPReservationSpec{ReservedCIDRs: []string{"10.160.0.9"}}}
	res.Name = "gateway"
	if _, err := e.HR.IPReservations.Create(e.Ctx, res); err != nil {
		t.Fatal(err)
	}
	n1, n2 := l.nodes[0], l.nodes[1]
	seq := 0
	pod := func(n *harness.Node, addrs string) *harness.Pod {
		t.Helper()
		seq++
		p := n.NewPod(fmt.Sprintf("fixed-%d", seq))
		var ann map[string]string
		if addrs != "" {
			ann = map[string]string{v1alpha1.AnnotationIPAddrs: addrs}
		}
		if err := e.PodObject(p, ann); err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain1 := pod(n1, "")
	if err := plain1.Add(); err != nil {
		t.Fatal(err)
	}
	a := pod(n2, `["10.160.0.7"]`)
	start := time.Now()
	if err := a.Add(); err != nil {
		t.Fatalf("ADD with a fixed address: %v", err)
	}
	if a.IP != "10.160.0.7" {
		t.Fatalf("pod with fixed address 10.160.0.7 got %s", a.IP)
	}
	t.Logf("fixed address wired in %s (block on demand)", time.Since(start).Round(time.Millisecond))
	if got := blocksOf(t, e, n2.Name); !slices.Contains(got, "10.160.0.0/28") {
		t.Fatalf("node-2 does not hold the fixed address's block 10.160.0.0/28: %v", got)
	}
	e.Eventually(20*time.Second, "a pod on node-1 reaches the fixed address on node-2", func() string {
		if _, ok := harness.Ping(plain1.NS, a.IP); !ok {
			return "no answer from " + a.IP
		}
		return ""
	})

	// node-2 publishes its allocations in batches: the refusal on node-1 names the holder
	// once they are out.
	e.Eventually(10*time.Second, "node-2 publishing the fixed address's holder", func() string {
		b, err := e.HR.IPAMBlocks.Get(e.Ctx, v1alpha1.BlockName(netip.MustParsePrefix("10.160.0.0/28")))
		if err != nil {
			return err.Error()
		}
		for _, al := range b.Status.Allocations {
			if al.Address == a.IP && al.Pod == a.Name {
				return ""
			}
		}
		return fmt.Sprintf("allocations %v", b.Status.Allocations)
	})
	before1, before2 := len(hostVeths(t, n1)), len(hostVeths(t, n2))
	for _, tc := range []struct {
		node *harness.Node
		addr string
		code uint
		want []string
	}{
		{n1, "10.160.0.7", cni.ErrAddressTaken, []string{"node-2", "held there by pod default/" + a.Name}},
		{n2, "10.160.0.7", cni.ErrAddressTaken, []string{"held by pod default/" + a.Name + " on this node"}},
		{n1, "10.99.0.1", cni.ErrPoolChoice, []string{"10.99.0.1, which lies in no IPPool"}},
		{n2, "10.160.0.9", cni.ErrPoolChoice, []string{"10.160.0.9 is reserved"}},
		{n1, "10.160.0.7,10.160.0.8", cni.ErrPoolChoice, []string{"two IPv4 addresses"}},
	} {
		p := pod(tc.node, tc.addr)
		r := cniError(t, tc.node, "ADD", p, tc.node.NetConf())
		if r.Code != int(tc.code) {
			t.Errorf("%s on %s: code %d %q, want %d", tc.addr, tc.node.Name, r.Code, r.Msg, tc.code)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.Msg, w) {
				t.Errorf("%s on %s: %q does not say %q", tc.addr, tc.node.Name, r.Msg, w)
			}
		}
	}
	if v1, v2 := len(hostVeths(t, n1)), len(hostVeths(t, n2)); v1 != before1 || v2 != before2 {
		t.Errorf("refused ADDs left veths: %d and %d, want %d and %d", v1, v2, before1, before2)
	}

	// A fixed address of another block on node-1: that block comes to node-1.
	b := pod(n1, "10.160.0.20")
	if err := b.Add(); err != nil {
		t.Fatal(err)
	}
	if b.IP != "10.160.0.20" || !slices.Contains(blocksOf(t, e, n1.Name), "10.160.0.16/28") {
		t.Fatalf("pod got %s, node-1 blocks %v; want 10.160.0.20 and block 10.160.0.16/28", b.IP, blocksOf(t, e, n1.Name))
	}
	e.Eventually(20*time.Second, "the fixed address on node-1 reachable from node-2's pod", func() string {
		if _, ok := harness.Ping(a.NS, b.IP); !ok {
			return "no answer from " + b.IP
		}
		return ""
	})
}
