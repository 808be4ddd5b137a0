package controller_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
)

// TestMaxBlocksPerNode: a node whose blocks are all at the watermark gets more blocks
// only up to the cap; at the cap it gets a Warning Event that names the cap, and the pool
// keeps its other blocks for other nodes.
func TestMaxBlocksPerNode(t *testing.T) {
	e := newEnv(t)
	e.mustPool("p", "10.41.0.0/24", 28) // sixteen blocks of 16 addresses
	e.runController(controller.Config{MaxBlocksPerNode: 2})
	e.createNode("greedy")
	fill := func(b v1alpha1.IPAMBlock) {
		t.Helper()
		base := netip.MustParsePrefix(b.Spec.CIDR).Addr()
		b.Status.Allocations = nil
		for i := range 16 {
			b.Status.Allocations = append(b.Status.Allocations, v1alpha1.Allocation{Address: base.String(), ContainerID: fmt.Sprint("c", i)})
			base = base.Next()
		}
		if _, err := e.hr.IPAMBlocks.UpdateStatus(e.ctx, &b); err != nil {
			t.Fatal(err)
		}
	}
	filled := map[string]bool{}
	e.eventually(20*time.Second, "two full blocks and the cap Event", func() string {
		bs := e.blocksOf("greedy")
		for _, b := range bs {
			if !filled[b.Name] {
				filled[b.Name] = true
				fill(b)
			}
		}
		if len(bs) != 2 {
			return fmt.Sprintf("%d blocks", len(bs))
		}
		ev := e.events("Node", "greedy", "MaxBlocksPerNode")
		if len(ev) == 0 {
			return "no MaxBlocksPerNode event"
		}
		if !strings.Contains(ev[0], "node already has 2 IPv4 blocks") {
			return "message: " + ev[0]
		}
		t.Logf("event the user sees: MaxBlocksPerNode: %s", ev[0])
		return ""
	})
	time.Sleep(2 * time.Second)
	if n := len(e.blocksOf("greedy")); n != 2 {
		t.Fatalf("%d blocks at a cap of 2", n)
	}
}
