package routectl

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/routing/torfilter"
)

func newTorFiltersCommand(o *options) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "tor-filters",
		Short: "Import filters for a ToR's sessions with the nodes (BIRD 2 or FRR 8.4)",
		Long: `tor-filters prints, for every node (with --node, for that one), the import filter a
top-of-rack router needs on its session with the node: the node may announce only the
blocks assigned to it (exact prefixes, no more specifics), with an AS path that
originates in the node's own AS (hostroute.io/as-number, else the cluster's). A ToR that
accepts everything from nodes lets one node draw another node's traffic.

It reads Nodes, IPAMBlocks, IPPools and the BGPConfiguration from the API server. A
comment header says how to apply the filters and lists what was left out (nodes without
an address, blocks outside every pool, ...). The output is a snapshot: regenerate and
reload it whenever a block is assigned or released.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "bird" && format != "frr" {
				return fmt.Errorf("--format %q: want %s", format, strings.Join(torfilter.Formats, " or "))
			}
			hr, kube, err := o.api()
			if err != nil {
				return err
			}
			ctx, cancel := o.ctx(cmd)
			defer cancel()
			var in torfilter.Inputs
			nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return fmt.Errorf("list Nodes: %w", err)
			}
			for i := range nodes.Items {
				in.Nodes = append(in.Nodes, &nodes.Items[i])
			}
			blocks, err := hr.IPAMBlocks.List(ctx, metav1.ListOptions{})
			if err != nil {
				return fmt.Errorf("list IPAMBlocks: %w", err)
			}
			for i := range blocks.Items {
				in.Blocks = append(in.Blocks, &blocks.Items[i])
			}
			pools, err := hr.IPPools.List(ctx, metav1.ListOptions{})
			if err != nil {
				return fmt.Errorf("list IPPools: %w", err)
			}
			for i := range pools.Items {
				in.Pools = append(in.Pools, &pools.Items[i])
			}
			// The cluster AS is in the filters: a BGPConfiguration that cannot be read
			// is an error, not the default.
			switch c, err := hr.BGPConfigurations.Get(ctx, "default"); {
			case err == nil:
				in.Config = c
			case !apierrors.IsNotFound(err):
				return fmt.Errorf("get BGPConfiguration default: %w", err)
			}
			return writeTorFilters(o.out, format, o.node, in)
		},
	}
	cmd.Flags().StringVar(&format, "format", "bird", "the ToR's configuration language: bird (BIRD 2) or frr (FRR 8.4)")
	return cmd
}

// writeTorFilters renders the filters of every node, or of node alone (an error that
// says why when it has none).
func writeTorFilters(w io.Writer, format, node string, in torfilter.Inputs) error {
	f := torfilter.Compute(in)
	if node != "" {
		one, err := f.Only(node)
		if err != nil {
			return err
		}
		f = one
	}
	return torfilter.Render(w, format, f)
}
