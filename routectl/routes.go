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
	var advertised bool
	cmd := &cobra.Command{
		Use:   "routes",
		Short: "This node's RIB best paths against its kernel routes, differences flagged",
		Long: `routes lists every prefix the local agent wants in the kernel (its own blocks as
blackholes, other nodes' blocks via the BGP best paths that BFD has not declared dead) next
to what the kernel holds with hostroute's route protocol (211 by default). Exits 1 when they differ.

States: ok; missing (wanted, but absent or different in the kernel); stale (in the kernel,
not wanted); kept (not wanted, kept on purpose while BGP re-learns after a restart).

With --advertised: what this node announces instead, its blocks and its Service routes
(with what holds each), and per neighbour whether the route goes there, with the
communities, large communities and local preference it carries, or why not.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validateOutput(); err != nil {
				return err
			}
			ctx, cancel := o.ctx(cmd)
			defer cancel()
			resp, err := askAgent(ctx, o)
			if err != nil {
				return err
			}
			if advertised {
				if o.output == "json" || o.output == "yaml" {
					return printProto(o.out, o.output, &agentv1.RoutingResponse{Node: resp.GetNode(), Advertised: resp.GetAdvertised()})
				}
				renderAdvertised(o.out, resp.GetAdvertised())
				return nil
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
	cmd.Flags().BoolVar(&advertised, "advertised", false, "show what this node announces, per neighbour, with the BGP attributes")
	return cmd
}

// renderAdvertised writes one line per route and neighbour, then what holds each
// Service route.
func renderAdvertised(w io.Writer, ads []*agentv1.Advertisement) {
	t := newTable(w, "PREFIX", "ORIGIN", "NEIGHBOUR", "SENT", "ATTRIBUTES")
	for _, a := range ads {
		prefix, origin := a.GetPrefix(), a.GetOrigin()
		if len(a.GetTo()) == 0 {
			t.row(prefix, origin, "-", "-", "no neighbours")
		}
		for _, to := range a.GetTo() {
			peer := to.GetPeer()
			if to.GetName() != "" {
				peer += " (" + to.GetName() + ")"
			}
			sent, attrs := "✔", to.GetAttributes()
			if !to.GetSent() {
				sent, attrs = "✘", to.GetReason()
			}
			if attrs == "" {
				attrs = "-"
			}
			t.row(prefix, origin, peer, sent, attrs)
			prefix, origin = " ", " " // continuation: blank, not "-"
		}
	}
	t.flush()
	first := true
	for _, a := range ads {
		if len(a.GetReasons()) == 0 {
			continue
		}
		if first {
			fmt.Fprintln(w, "\nService routes:")
			first = false
		}
		fmt.Fprintf(w, "  %s: %s\n", a.GetPrefix(), strings.Join(a.GetReasons(), "; "))
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
