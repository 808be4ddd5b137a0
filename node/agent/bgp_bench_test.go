package agent

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// BenchmarkComputeInputs is the pure part of one agent pass (peers, policy) at 25 and 100
// nodes: what every agent does on every block change anywhere in the cluster.
func BenchmarkComputeInputs(b *testing.B) {
	for _, n := range []int{25, 100} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			src := scaleSources(n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := computeInputs(src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// scaleSources is an n-node cluster, one block each, seen from node-1.
func scaleSources(n int) bgpSources {
	src := bgpSources{node: "node-1", own: []netip.Prefix{netip.MustParsePrefix("10.200.0.0/26")},
		pools: []*v1alpha1.IPPool{testPool("10.200.0.0/16", false)}}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("node-%d", i)
		var labels map[string]string
		if i <= 2 {
			labels = map[string]string{v1alpha1.LabelRouteReflector: "true"}
		}
		src.nodes = append(src.nodes, testNode(name, fmt.Sprintf("192.0.2.%d", i), labels))
		src.blocks = append(src.blocks, testBlock(fmt.Sprintf("10.200.%d.%d/26", (i-1)/4, (i-1)%4*64), name))
	}
	return src
}
