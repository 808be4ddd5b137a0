package nat

import "testing"

// TestNATOutgoingEndToEnd builds a pod, a node and an external host as three
// network namespaces joined by veths, Calico style (the pod's only route is a
// default via a link-local gateway on the node's end of the veth), and checks that
// the pod reaches the external host only because the node masquerades it:
//
//	pod 10.244.0.2/32 ── eth0 ⇄ hr… (169.254.1.1) ── node ── ext0 192.0.2.1/24 ⇄ eth0 192.0.2.2/24 ── ext
//	                                                                              + 10.245.0.9/32 (another pool)
//
// ext has no route to 10.244.0.0/16. It counts the echo requests it receives by
// source address, which shows whether a packet arrived NATed or not. The node's end of
// the pod veth has a pod interface name, so the pod guard (guard.go) is in the path: the
// pod's own traffic must pass it unchanged, and a source the pod has no route for
// (10.244.0.3, an address it adds itself) must not.
func TestNATOutgoingEndToEnd(t *testing.T) {
	requireRoot(t)
	const podVeth = PodIfacePrefix + "0123456789a"
	pod, _ := newNetns(t, "pod")
	node, nodeFd := newNetns(t, "node")
	ext, _ := newNetns(t, "ext")

	// Every link is created from inside the node namespace with its peer moved
	// straight into the other namespace, so none ever exists in the root namespace.
	for _, cmd := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", podVeth, "type", "veth", "peer", "name", "eth0", "netns", pod},
		{"ip", "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", ext},
		{"ip", "addr", "add", "169.254.1.1/32", "dev", podVeth},
		{"ip", "link", "set", podVeth, "up"},
		{"ip", "route", "add", "10.244.0.2/32", "dev", podVeth},
		{"ip", "addr", "add", "192.0.2.1/24", "dev", "ext0"},
		{"ip", "link", "set", "ext0", "up"},
		{"ip", "route", "add", "10.245.0.9/32", "via", "192.0.2.2"},
		// Forwarding only inside the node namespace.
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
	} {
		mustExec(t, node, cmd...)
	}
	for _, cmd := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", "10.244.0.2/32", "dev", "eth0"},
		{"ip", "addr", "add", "10.244.0.3/32", "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"},
		{"ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
	} {
		mustExec(t, pod, cmd...)
	}
	for _, cmd := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", "192.0.2.2/24", "dev", "eth0"},
		{"ip", "addr", "add", "10.245.0.9/32", "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
	} {
		mustExec(t, ext, cmd...)
	}
	nftScript(t, ext, `table ip probe {
	counter from-pod {}
	counter from-node {}
	counter from-forged {}
	chain input {
		type filter hook input priority 0; policy accept;
		ip saddr 10.244.0.2 icmp type echo-request counter name "from-pod"
		ip saddr 10.244.0.3 icmp type echo-request counter name "from-forged"
		ip saddr 192.0.2.1 icmp type echo-request counter name "from-node"
	}
}`)
	packets := func(counter string) int {
		t.Helper()
		cs := all[struct {
			Packets int `json:"packets"`
		}](t, nftJSON(t, ext, "counter", "ip", "probe", counter), "counter")
		if len(cs) != 1 {
			t.Fatalf("counter %s: got %d objects", counter, len(cs))
		}
		return cs[0].Packets
	}
	ping := func(dst string) error {
		_, err := nsExec(pod, "", "ping", "-c1", "-W1", "-I", "10.244.0.2", dst)
		return err
	}
	forged := func() { _, _ = nsExec(pod, "", "ping", "-c1", "-W1", "-I", "10.244.0.3", "192.0.2.2") }

	// Without NAT the request reaches ext with the pod's address, and the reply
	// has no way back: the path works, only the return route is missing.
	if err := ping("192.0.2.2"); err == nil {
		t.Fatal("ping 192.0.2.2 succeeded without NAT: ext must not have a route back to the pod")
	}
	if n := packets("from-pod"); n != 1 {
		t.Fatalf("before NAT ext saw %d echo requests from 10.244.0.2, want 1 (is the path pod→node→ext broken?)", n)
	}
	forged()
	if n := packets("from-forged"); n != 1 {
		t.Fatalf("before the guard ext saw %d echo requests from the forged 10.244.0.3, want 1 (the node forwards anything)", n)
	}

	m := New(testLogger(t), nodeFd)
	if err := m.Apply(Config{
		NATPools: prefixes("10.244.0.0/16"),
		AllPools: prefixes("10.244.0.0/16", "10.245.0.0/16"),
	}); err != nil {
		t.Fatalf("Apply in the node namespace: %v", err)
	}
	t.Logf("node ruleset:\n%s", mustExec(t, node, "nft", "list", "ruleset"))

	// Masqueraded: ext sees the node's address and can answer.
	if err := ping("192.0.2.2"); err != nil {
		t.Errorf("ping 192.0.2.2 from the pod with NAT outgoing: %v", err)
	}
	if n := packets("from-node"); n != 1 {
		t.Errorf("ext saw %d echo requests from 192.0.2.1 (masqueraded), want 1", n)
	}
	if n := packets("from-pod"); n != 1 {
		t.Errorf("ext saw %d echo requests from 10.244.0.2 in total, want still 1 (NAT must hide the pod address)", n)
	}

	// The guard drops a source whose route does not lead back into the pod's veth,
	// before NAT could masquerade it.
	forged()
	if n := packets("from-forged"); n != 1 {
		t.Errorf("ext saw %d echo requests from 10.244.0.3 in total, want still 1 (forged source)", n)
	}
	if n := packets("from-node"); n != 1 {
		t.Errorf("ext saw %d echo requests from 192.0.2.1 in total, want still 1 (a forged source was masqueraded)", n)
	}

	// Pool to pool is never NATed: ext receives the pod's own address (and,
	// having no route back, cannot answer).
	if err := ping("10.245.0.9"); err == nil {
		t.Error("ping 10.245.0.9 succeeded: pool-to-pool traffic was NATed")
	}
	if n := packets("from-pod"); n != 2 {
		t.Errorf("ext saw %d echo requests from 10.244.0.2 in total, want 2 (pool-to-pool must keep the pod address)", n)
	}

	// Removing the table turns NAT off again.
	if err := m.Delete(); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := ping("192.0.2.2"); err == nil {
		t.Error("ping 192.0.2.2 still succeeds after Delete")
	}
}
