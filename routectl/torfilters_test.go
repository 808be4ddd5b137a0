package routectl

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/routing/torfilter"
)

// torFiltersInputs: node-1 and node-2 of the fixtures in racks of their own AS, node-3
// in the cluster's; node-9 (a block's owner) does not exist.
func torFiltersInputs() torfilter.Inputs {
	var in torfilter.Inputs
	nodes := nodeObjs("node-1", "node-2", "node-3")
	for i, as := range []string{"64601", "64602"} {
		nodes[i].Annotations = map[string]string{v1alpha1.AnnotationASNumber: as}
	}
	for i := range nodes {
		in.Nodes = append(in.Nodes, &nodes[i])
	}
	blocks, pools := blocksFixture(), poolsFixture()
	for i := range blocks {
		in.Blocks = append(in.Blocks, &blocks[i])
	}
	for i := range pools {
		in.Pools = append(in.Pools, &pools[i])
	}
	in.Config = &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{ASNumber: 64512}}
	return in
}

// `routectl tor-filters` for the whole cluster in both formats and for one node.
func TestGoldenTorFilters(t *testing.T) {
	for _, c := range []struct{ name, format, node string }{
		{"tor-filters-bird", "bird", ""}, {"tor-filters-frr", "frr", ""}, {"tor-filters-node-2-frr", "frr", "node-2"},
	} {
		var b bytes.Buffer
		if err := writeTorFilters(&b, c.format, c.node, torFiltersInputs()); err != nil {
			t.Fatal(err)
		}
		golden(t, c.name, b.Bytes())
	}
}

// A node without a filter is an error that says why; so is an unknown format.
func TestTorFiltersErrors(t *testing.T) {
	in := torFiltersInputs()
	in.Nodes = append(in.Nodes, &corev1.Node{})
	in.Nodes[len(in.Nodes)-1].Name = "joining"
	for node, want := range map[string]string{
		"joining": "node joining has no filter: no InternalIP yet",
		"node-9":  "node node-9 has no filter: no such Node",
	} {
		if err := writeTorFilters(&bytes.Buffer{}, "bird", node, in); err == nil || err.Error() != want {
			t.Errorf("--node %s: %v, want %q", node, err, want)
		}
	}
	if _, errOut, code := run(t, "tor-filters", "--format", "junos"); code != ExitError || !strings.Contains(errOut, `--format "junos": want bird or frr`) {
		t.Errorf("--format junos: exit %d, %s", code, errOut)
	}
}
