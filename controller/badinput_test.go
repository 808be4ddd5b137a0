package controller_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
)

// TestBadInputIsRefused shows the message an operator sees for each kind of bad input, and
// that the refused request changed nothing.
func TestBadInputIsRefused(t *testing.T) {
	e := newEnv(t)
	base := e.mustPool("base", "10.50.0.0/16", 0)

	expectRefused := func(what, wantMsg string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: accepted, want refused with %q", what, wantMsg)
			return
		}
		if !strings.Contains(err.Error(), wantMsg) {
			t.Errorf("%s: error %q does not contain %q", what, err, wantMsg)
			return
		}
		t.Logf("%s → %v", what, err)
	}
	for _, tc := range []struct {
		what, cidr string
		blockSize  int32
		want       string
	}{
		{"invalid CIDR", "10.0.0.300/16", 0, "cidr must be an IPv4 or IPv6 prefix"},
		{"not a prefix", "banana", 0, "cidr must be an IPv4 or IPv6 prefix"},
		{"host bits set", "10.60.0.1/16", 0, "cidr must be the network address of the prefix"},
		{"IPv4 block size 19", "10.60.0.0/16", 19, "blockSize must be between 20 and 32 for an IPv4 pool"},
		{"IPv4 block size 33", "10.60.0.0/16", 33, "blockSize must be between 20 and 32 for an IPv4 pool"},
		{"IPv6 block size 112", "fd00:60::/48", 112, "between 116 and 128 for an IPv6 pool"},
		{"block larger than pool", "10.60.0.0/28", 26, "blockSize must not be shorter than the pool's prefix length"},
		{"pool smaller than default block", "10.60.0.0/28", 0, "smaller than the default block"},
	} {
		_, err := e.createPool("bad", tc.cidr, tc.blockSize)
		expectRefused(tc.what, tc.want, err)
	}

	// Edits of an existing pool's cidr and blockSize.
	edit := base.DeepCopy()
	edit.Spec.CIDR = "10.51.0.0/16"
	_, err := e.hr.IPPools.Update(e.ctx, edit)
	expectRefused("pool CIDR edit", "cidr is immutable: create a new pool, disable this one and drain it", err)
	edit = base.DeepCopy()
	n := int32(24)
	edit.Spec.BlockSize = &n
	_, err = e.hr.IPPools.Update(e.ctx, edit)
	expectRefused("pool blockSize edit", "blockSize is immutable", err)

	// BGP resources.
	peer := &v1alpha1.BGPPeer{Spec: v1alpha1.BGPPeerSpec{PeerIP: "192.0.2.300", ASNumber: 65000}}
	peer.Name = "tor"
	_, err = e.hr.BGPPeers.Create(e.ctx, peer)
	expectRefused("BGPPeer invalid IP", "peerIP must be an IPv4 or IPv6 address", err)
	peer.Spec.PeerIP, peer.Spec.ASNumber = "192.0.2.1", 0
	_, err = e.hr.BGPPeers.Create(e.ctx, peer)
	expectRefused("BGPPeer AS 0", "spec.asNumber: Invalid value: 0: spec.asNumber in body should be greater than or equal to 1", err)
	peer.Spec.ASNumber = 4294967296
	_, err = e.hr.BGPPeers.Create(e.ctx, peer)
	expectRefused("BGPPeer AS 2^32", "should be less than or equal to 4294967295", err)
	cfg := &v1alpha1.BGPConfiguration{}
	cfg.Name = "mine"
	_, err = e.hr.BGPConfigurations.Create(e.ctx, cfg)
	expectRefused("BGPConfiguration not named default", "the BGPConfiguration must be named 'default'", err)

	// Nothing changed.
	pools, err := e.hr.IPPools.List(e.ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pools.Items) != 1 || pools.Items[0].Spec.CIDR != "10.50.0.0/16" || pools.Items[0].Spec.BlockSize != nil {
		t.Fatalf("pools changed: %+v", pools.Items)
	}
	if peers, _ := e.hr.BGPPeers.List(e.ctx, metav1.ListOptions{}); len(peers.Items) != 0 {
		t.Fatalf("peers created: %+v", peers.Items)
	}
}

// TestOverlappingPool shows an overlapping pool marked with a condition and an Event, and
// never used, while the older pool keeps working.
func TestOverlappingPool(t *testing.T) {
	e := newEnv(t)
	e.mustPool("a", "10.70.0.0/16", 24)
	time.Sleep(1100 * time.Millisecond) // creation timestamps have second resolution
	e.mustPool("b", "10.70.128.0/17", 24)
	e.runController(controller.Config{})
	for i := range 3 {
		e.createNode(fmt.Sprintf("n%d", i))
	}
	e.eventually(15*time.Second, "b marked overlapping", func() string {
		c := e.condition("b", v1alpha1.PoolOverlapping)
		if c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Sprintf("Overlapping = %+v", c)
		}
		if want := "cidr 10.70.128.0/17 overlaps IPPool a (10.70.0.0/16); no blocks are assigned from this pool"; c.Message != want {
			return fmt.Sprintf("message %q, want %q", c.Message, want)
		}
		return ""
	})
	t.Logf("condition the user sees on IPPool b: Overlapping: %s", e.condition("b", v1alpha1.PoolOverlapping).Message)
	if r := e.condition("b", v1alpha1.PoolReady); r == nil || r.Status != metav1.ConditionFalse || r.Reason != "Overlapping" {
		t.Errorf("b Ready = %+v", r)
	}
	if r := e.condition("a", v1alpha1.PoolReady); r == nil || r.Status != metav1.ConditionTrue {
		t.Errorf("a Ready = %+v", r)
	}
	e.eventually(10*time.Second, "Event on b", func() string {
		if len(e.events("IPPool", "b", v1alpha1.PoolOverlapping)) == 0 {
			return "no Overlapping event"
		}
		return ""
	})
	e.eventually(10*time.Second, "every node has a block", func() string {
		if m := perNode(e.blocks()); len(m) != 3 {
			return fmt.Sprintf("%d nodes with blocks", len(m))
		}
		return ""
	})
	for _, b := range e.blocks() {
		if b.Spec.Pool != "a" {
			t.Errorf("block %s from pool %s, want only pool a", b.Spec.CIDR, b.Spec.Pool)
		}
	}
	checkNoOverlap(t, e.blocks())
}
