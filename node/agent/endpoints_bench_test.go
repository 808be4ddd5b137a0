package agent

import (
	"fmt"
	"runtime"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkEndpointSliceCache reports the heap an agent keeps for the EndpointSlices of a
// 100-node cluster (1000 slices of 100 endpoints spread over the nodes), as received
// (managed fields dropped) and as cached by onlyEndpointsOn; the ratio is the saving.
func BenchmarkEndpointSliceCache(b *testing.B) {
	const nodes, slicesN, perSlice = 100, 1000, 100
	build := func() []*discoveryv1.EndpointSlice {
		out := make([]*discoveryv1.EndpointSlice, 0, slicesN)
		for i := range slicesN {
			s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d-1", i), Namespace: "default",
				Labels: map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc-%d", i)}}, AddressType: discoveryv1.AddressTypeIPv4}
			for j := range perSlice {
				node := fmt.Sprintf("node-%d", (i+j)%nodes)
				ready := true
				s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", i/256, i%256, j)},
					NodeName: &node, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
			}
			out = append(out, s)
		}
		return out
	}
	heap := func(keep func() any) uint64 {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		kept := keep()
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(kept)
		return after.HeapAlloc - before.HeapAlloc
	}
	var full, slim uint64
	for range b.N {
		full = heap(func() any { return build() })
		slim = heap(func() any {
			ss := build()
			for i, s := range ss {
				o, _ := onlyEndpointsOn("node-7", s)
				ss[i] = o.(*discoveryv1.EndpointSlice)
			}
			return ss
		})
	}
	b.ReportMetric(float64(full)/slicesN, "B/slice-full")
	b.ReportMetric(float64(slim)/slicesN, "B/slice-cached")
	b.ReportMetric(float64(slim)/float64(full), "cached/full")
}
