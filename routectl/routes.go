package routectl

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	nodestatus "github.com/hostroute/hostroute/node/status"
)

func newRoutesCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "routes",
		Short: "This node's RIB best paths against its kernel routes, differences flagged",
		Long: `routes lists every prefix the local agent wants in the kernel (its own blocks as
blackholes, other nodes' blocks via the BGP best paths that BFD has not declared dead) next
to what the kernel holds with hostroute's route protocol (211 by default). Exits 1 when they differ.

States: ok; missing (wanted, but absent or different in the kernel); stale (in the kernel,
not wanted); kept (not wanted, kept on purpose while BGP re-learns after a restart).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validateOutput(); err != nil {
				return err
			}
			ac, closeConn, err := o.agent()
			if err != nil {
				return err
			}
			defer closeConn()
			ctx, cancel := o.ctx(cmd)
			defer cancel()
			resp, err := ac.Routing(ctx, &agentv1.RoutingRequest{})
			if err != nil {
				return fmt.Errorf("ask the agent on %s: %w", o.socket, err)
			}
			if o.output == "json" || o.output == "yaml" {
				if err := printProto(o.out, o.output, &agentv1.RoutingResponse{Node: resp.GetNode(), Routes: resp.GetRoutes()}); err != nil {
					return err
				}
			} else {
				renderRoutes(o.out, resp.GetRoutes(), o.wide())
			}
			c := nodestatus.Counts(resp.GetRoutes())
			if c.Missing > 0 || c.Stale > 0 {
				return unhealthy("node %s: kernel differs from the RIB: %d missing, %d stale", resp.GetNode(), c.Missing, c.Stale)
			}
			return nil
		},
	}
}

func renderRoutes(w io.Writer, routes []*agentv1.Route, wide bool) {
	headers := []string{"PREFIX", "WANT", "KERNEL", "STATE"}
	if wide {
		headers = []string{"PREFIX", "WANT", "RIB BEST PATHS", "KERNEL", "STATE"}
	}
	t := newTable(w, headers...)
	for _, r := range routes {
		want := hops(r.GetWantBlackhole(), r.GetWantNextHops())
		kernel := hops(r.GetKernelBlackhole(), r.GetKernelNextHops())
		state := r.GetState()
		if state == nodestatus.RouteMissing || state == nodestatus.RouteStale {
			state = strings.ToUpper(state) + " !"
		}
		if wide {
			rib := strings.Join(r.GetRibNextHops(), ",")
			if r.GetWantBlackhole() && rib == "" {
				rib = "(own block)"
			}
			t.row(r.GetPrefix(), want, rib, kernel, state)
			continue
		}
		t.row(r.GetPrefix(), want, kernel, state)
	}
	t.flush()
}

func hops(blackhole bool, nh []string) string {
	switch {
	case blackhole:
		return "blackhole"
	case len(nh) == 0:
		return "-"
	}
	return "via " + strings.Join(nh, ",")
}
