package routectl

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/v1alpha1"
)

func podObj(ns, name, uid, node, ip string, phase corev1.PodPhase) *corev1.Pod {
	p := &corev1.Pod{}
	p.Namespace, p.Name, p.UID = ns, name, types.UID(uid)
	p.Spec.NodeName = node
	p.Status.Phase = phase
	if ip != "" {
		p.Status.PodIP = ip
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	return p
}

// node2Fixture is node-2's agent: healthy, its block 10.244.0.64/26, a route to node-1's.
func node2Fixture() *agentv1.RoutingResponse {
	r := healthyFixture()
	r.Node, r.RouterId = "node-2", "192.0.2.2"
	r.Sessions[0].Peer, r.Sessions[0].Name = "192.0.2.1", "node-1"
	r.Blocks = []*agentv1.BlockUsage{{Cidr: "10.244.0.64/26", InUse: 1, Capacity: 64}}
	r.Routes = []*agentv1.Route{
		{Prefix: "10.244.0.0/26", WantNextHops: []string{"192.0.2.1"}, RibNextHops: []string{"192.0.2.1"}, KernelNextHops: []string{"192.0.2.1"}, State: "ok"},
		{Prefix: "10.244.0.64/26", WantBlackhole: true, KernelBlackhole: true, State: "ok"},
	}
	return r
}

// traceFixture: web-1 on node-1 to web-2 on node-2, routectl on node-1, all healthy.
func traceFixture() *traceInput {
	blocks := blocksFixture()
	web1 := podObj("default", "web-1", "uid-a", "node-1", "10.244.0.1", corev1.PodRunning)
	web2 := podObj("default", "web-2", "uid-b", "node-2", "10.244.0.65", corev1.PodRunning)
	n1 := nodeStatusOf(healthyFixture(), now.Add(-3*time.Second))
	n2 := nodeStatusOf(node2Fixture(), now.Add(-2*time.Second))
	return &traceInput{
		src: traceEnd{arg: "web-1", podRef: "default/web-1", pod: web1, ip: netip.MustParseAddr("10.244.0.1"), node: "node-1",
			block: &blocks[0], alloc: &blocks[0].Status.Allocations[0]},
		dst: traceEnd{arg: "web-2", podRef: "default/web-2", pod: web2, ip: netip.MustParseAddr("10.244.0.65"), node: "node-2",
			block: &blocks[1], alloc: &blocks[1].Status.Allocations[0]},
		nodeAddrs: nodeAddrsOf(nodeObjs("node-1", "node-2", "node-3")),
		statuses:  map[string]*v1alpha1.NodeNetworkStatus{"node-1": n1, "node-2": n2},
		local:     healthyFixture(),
		now:       now,
	}
}

// TestTraceHops: each case breaks one thing; the golden file shows every hop, and the
// broken ones must be exactly those named.
func TestTraceHops(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(in *traceInput)
		broken []string
	}{
		{"all-ok", func(*traceInput) {}, nil},
		{"session-down", func(in *traceInput) {
			s := in.local.Sessions[0]
			s.State, s.SinceUnix, s.BfdState, s.Received = "Active", now.Add(-12*time.Second).Unix(), "", 0
			in.local.Routes = in.local.Routes[:1] // node-2's block withdrawn
		}, []string{hopRoute, hopBGP}},
		{"bfd-down", func(in *traceInput) {
			in.local.Sessions[0].BfdState = "Down"
			r := in.local.Routes[1]
			r.WantNextHops, r.KernelNextHops = nil, nil // BFD declared the next hop dead
		}, []string{hopRoute, hopBFD}},
		{"next-hop-not-owner", func(in *traceInput) {
			r := in.local.Routes[1]
			r.WantNextHops, r.RibNextHops, r.KernelNextHops = []string{"192.0.2.3"}, []string{"192.0.2.3"}, []string{"192.0.2.3"}
		}, []string{hopBlock}},
		{"dst-pod-missing", func(in *traceInput) {
			in.dst.arg, in.dst.pod = "10.244.0.65", nil
		}, []string{hopPod}},
		{"dst-in-no-block", func(in *traceInput) {
			in.dst = traceEnd{arg: "10.99.0.1", ip: netip.MustParseAddr("10.99.0.1")}
		}, []string{hopRoute, hopBlock, hopPod}},
		{"dst-owner-unhealthy", func(in *traceInput) {
			in.statuses["node-2"].Status.Updated = &metav1.Time{Time: now.Add(-5 * time.Minute)}
		}, []string{hopBlock}},
		{"from-dst-node", func(in *traceInput) {
			// routectl on node-2: the route is not checked live, the veth is.
			in.local = node2Fixture()
			in.kernel = &kernelPodRoute{Ifindex: 7, Ifname: "hr3f2a9c1b", Kind: "veth", Protocol: 212}
		}, nil},
		{"from-dst-node-no-veth", func(in *traceInput) {
			in.local = node2Fixture()
		}, []string{hopPod}},
		{"same-node", func(in *traceInput) {
			in.dst = traceEnd{arg: "web-3", podRef: "default/web-3", pod: podObj("default", "web-3", "uid-w3", "node-1", "10.244.0.3", corev1.PodRunning),
				ip: netip.MustParseAddr("10.244.0.3"), node: "node-1", block: in.src.block}
			in.kernel = &kernelPodRoute{Ifindex: 9, Ifname: "hr77e0d4aa", Kind: "veth", Protocol: 212}
		}, nil},
		{"src-pending", func(in *traceInput) {
			in.src.pod.Status.Phase, in.src.pod.Status.PodIPs = corev1.PodPending, nil
		}, []string{hopSource}},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := traceFixture()
			c.change(in)
			res := traceResult(in, judgeTrace(in))
			var got []string
			for _, h := range res.Hops {
				if h.Status == HopBroken {
					got = append(got, h.Hop)
				}
			}
			if d := cmp.Diff(c.broken, got); d != "" {
				t.Errorf("broken hops (-want +got):\n%s", d)
			}
			if res.OK != (len(c.broken) == 0) || (brokenHops(res) == "") != res.OK {
				t.Errorf("OK = %v, exit message %q", res.OK, brokenHops(res))
			}
			var b bytes.Buffer
			renderTrace(&b, res)
			golden(t, "trace-"+c.name, b.Bytes())
		})
	}
}

func TestTraceReasons(t *testing.T) {
	in := traceFixture()
	s := in.local.Sessions[0]
	s.State, s.SinceUnix = "Active", now.Add(-12*time.Second).Unix()
	in.local.Routes = in.local.Routes[:1]
	hops := judgeTrace(in)
	if want := "session 192.0.2.2 (mesh, node-2) is Active since 12s: no route"; !strings.HasPrefix(hops[2].Reason, want) {
		t.Errorf("bgp hop %q, want it to start %q", hops[2].Reason, want)
	}
	in = traceFixture()
	in.local.Routes[1].KernelNextHops = []string{"192.0.2.3"}
	hops = judgeTrace(in)
	if want := "block 10.244.0.64/26 is assigned to node-2 (192.0.2.2) but the next hop is 192.0.2.3 (node-3)"; !strings.HasPrefix(hops[4].Reason, want) {
		t.Errorf("block hop %q, want it to start %q", hops[4].Reason, want)
	}
}

// TestTraceJSON: -o json decodes back into a TraceResult.
func TestTraceJSON(t *testing.T) {
	in := traceFixture()
	res := traceResult(in, judgeTrace(in))
	var b bytes.Buffer
	if err := printObject(&b, "json", res); err != nil {
		t.Fatal(err)
	}
	golden(t, "trace-all-ok-json", b.Bytes())
	var back TraceResult
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(res, back); d != "" {
		t.Errorf("round trip (-printed +decoded):\n%s", d)
	}
}

// TestTraceResolve: pods by name (bare or namespace/name) and addresses, with the
// allocations filling in what a Pod object lacks.
func TestTraceResolve(t *testing.T) {
	web1 := podObj("default", "web-1", "uid-a", "node-1", "10.244.0.1", corev1.PodRunning)
	noIP := podObj("apps", "starting", "uid-s", "node-2", "", corev1.PodPending)
	r := resolver{kube: fake.NewClientset(web1, noIP), blocks: blocksFixture(),
		nodeAddrs: nodeAddrsOf(nodeObjs("node-1", "node-2")), namespace: "default"}
	ctx := context.Background()
	for _, c := range []struct {
		arg                 string
		pod, ip, node, blck string
		hasPod, host        bool
		err                 string
	}{
		{arg: "web-1", pod: "default/web-1", ip: "10.244.0.1", node: "node-1", blck: "10.244.0.0/26", hasPod: true},
		{arg: "default/web-1", pod: "default/web-1", ip: "10.244.0.1", node: "node-1", blck: "10.244.0.0/26", hasPod: true},
		{arg: "10.244.0.1", pod: "default/web-1", ip: "10.244.0.1", node: "node-1", blck: "10.244.0.0/26", hasPod: true},
		// The Pod object is gone; its allocation still names it.
		{arg: "web-2", pod: "default/web-2", ip: "10.244.0.65", node: "node-2", blck: "10.244.0.64/26"},
		{arg: "10.244.0.65", pod: "default/web-2", ip: "10.244.0.65", node: "node-2", blck: "10.244.0.64/26"},
		{arg: "10.244.0.70", ip: "10.244.0.70", node: "node-2", blck: "10.244.0.64/26"},
		{arg: "10.99.0.1", ip: "10.99.0.1"},
		{arg: "192.0.2.2", ip: "192.0.2.2", node: "node-2", host: true},
		{arg: "apps/starting", pod: "apps/starting", node: "node-2", hasPod: true},
		{arg: "nope", err: "pod default/nope not found, and no allocation names it"},
	} {
		e, err := r.resolve(ctx, c.arg, netip.Addr{})
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("%s: error %v, want %q", c.arg, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.arg, err)
			continue
		}
		got := traceResult(&traceInput{src: e}, nil).Source
		want := TraceEndpoint{Arg: c.arg, Pod: c.pod, IP: c.ip, Node: c.node, Block: c.blck}
		if d := cmp.Diff(want, got); d != "" || (e.pod != nil) != c.hasPod || e.host != c.host {
			t.Errorf("%s (-want +got):\n%s\npod %v host %v", c.arg, d, e.pod != nil, e.host)
		}
	}
}

// TestTraceCannotAnswer: routectl exits 2 when it cannot trace at all.
func TestTraceCannotAnswer(t *testing.T) {
	if _, errOut, code := run(t, "trace", "only-src"); code != ExitError {
		t.Errorf("one argument: exit %d (%s)", code, errOut)
	}
	bad := filepath.Join(t.TempDir(), "none.kubeconfig")
	if _, errOut, code := run(t, "--kubeconfig", bad, "trace", "a", "b"); code != ExitError {
		t.Errorf("no API server: exit %d (%s)", code, errOut)
	}
}
