package routectl

import (
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/v1alpha1"
	nodestatus "github.com/hostroute/hostroute/node/status"
)

// staleAfter is how old a NodeNetworkStatus may be before its node counts as unhealthy:
// agents rewrite it at least every minute.
const staleAfter = 3 * time.Minute

func newStatusCommand(o *options) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "This node's health: BGP sessions, blocks, kernel against RIB (--all: every node)",
		Long: `status shows one node: agent health, BGP sessions, blocks and their use, and whether
the kernel holds exactly the routes the agent wants.

Without --node it asks the local agent over --socket (live). With --node it reads that
node's NodeNetworkStatus from the API server (as last reported). --all lists every node,
unhealthy first. Exits 1 when a node shown is unhealthy.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validateOutput(); err != nil {
				return err
			}
			if all {
				return runNodes(cmd, o)
			}
			if o.node != "" && !cmd.Flags().Changed("socket") {
				return runStatusFromAPI(cmd, o)
			}
			return runStatusLive(cmd, o)
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "A", false, "every node's summary from the API server, unhealthy first")
	return cmd
}

func newNodesCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "nodes",
		Short: "Every node's summary from its NodeNetworkStatus, unhealthy first (same as status --all)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validateOutput(); err != nil {
				return err
			}
			return runNodes(cmd, o)
		},
	}
}

// liveStatus asks the agent and converts its answer into the API type, so that live and
// published status print (and encode) the same way.
func liveStatus(cmd *cobra.Command, o *options) (*v1alpha1.NodeNetworkStatus, *agentv1.RoutingResponse, error) {
	ctx, cancel := o.ctx(cmd)
	defer cancel()
	resp, err := askAgent(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	return nodeStatusOf(resp, o.now()), resp, nil
}

func nodeStatusOf(resp *agentv1.RoutingResponse, now time.Time) *v1alpha1.NodeNetworkStatus {
	nns := &v1alpha1.NodeNetworkStatus{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "NodeNetworkStatus"},
		ObjectMeta: metav1.ObjectMeta{Name: resp.GetNode()},
		Status:     nodestatus.FromRouting(resp, now),
	}
	return nns
}

func runStatusLive(cmd *cobra.Command, o *options) error {
	nns, resp, err := liveStatus(cmd, o)
	if err != nil {
		return err
	}
	return printStatus(o, nns, resp.GetProblems(), true)
}

func runStatusFromAPI(cmd *cobra.Command, o *options) error {
	hr, _, err := o.api()
	if err != nil {
		return err
	}
	ctx, cancel := o.ctx(cmd)
	defer cancel()
	nns, err := hr.NodeNetworkStatuses.Get(ctx, o.node)
	if err != nil {
		return fmt.Errorf("NodeNetworkStatus %s: %w", o.node, err)
	}
	nns.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "NodeNetworkStatus"}
	return printStatus(o, nns, nil, false)
}

func printStatus(o *options, nns *v1alpha1.NodeNetworkStatus, problems []string, live bool) error {
	if o.output == "json" || o.output == "yaml" {
		nns.ManagedFields = nil
		if err := printObject(o.out, o.output, nns); err != nil {
			return err
		}
	} else {
		renderStatus(o.out, nns, problems, live, o.wide(), o.now())
	}
	if ok, msg := nodestatus.Healthy(nns, o.now(), staleAfter); !ok {
		return unhealthy("node %s is unhealthy: %s", nns.Name, msg)
	}
	return nil
}

// renderStatus prints one node: a header, its sessions, its blocks and its routes.
// live says it came from the agent now rather than from the API (as last reported).
func renderStatus(w io.Writer, nns *v1alpha1.NodeNetworkStatus, problems []string, live, wide bool, now time.Time) {
	st := nns.Status
	healthy, msg := nodestatus.Healthy(nns, now, staleAfter)
	verdict := "Healthy"
	if !healthy {
		verdict = "UNHEALTHY"
	}
	fmt.Fprintf(w, "Node:     %s (AS %d, router ID %s)\n", nns.Name, st.ASNumber, orDash(st.RouterID))
	fmt.Fprintf(w, "Health:   %s: %s\n", verdict, msg)
	if st.LastError != "" {
		fmt.Fprintf(w, "Error:    %s\n", st.LastError)
	}
	for _, p := range problems {
		fmt.Fprintf(w, "Problem:  %s\n", p)
	}

	fmt.Fprintf(w, "\nBGP sessions (%s Established):\n", orDash(st.SessionsSummary))
	headers := []string{"PEER", "KIND", "NAME", "LOCAL AS", "PEER AS", "STATE", "SINCE", "BFD", "RECEIVED", "ACCEPTED", "ADVERTISED"}
	if wide {
		headers = append(headers, "LAST ERROR")
	}
	t := newTable(w, headers...)
	for _, s := range sortedSessions(st.Sessions) {
		since := "-"
		if s.Since != nil {
			since = age(now, s.Since.Time)
		}
		state := s.State
		if state != nodestatus.Established {
			state += " !"
		}
		row := []string{s.Peer, s.Kind, s.PeerRef, fmt.Sprint(s.LocalAS), fmt.Sprint(s.PeerAS), state, since,
			s.BFDState, fmt.Sprint(s.Received), fmt.Sprint(s.Accepted), fmt.Sprint(s.Advertised)}
		if wide {
			row = append(row, s.LastError)
		}
		t.row(row...)
	}
	t.flush()

	fmt.Fprintf(w, "\nBlocks:\n")
	t = newTable(w, "CIDR", "IN USE", "CAPACITY", "USE")
	for _, b := range st.Blocks {
		t.row(b.CIDR, fmt.Sprint(b.InUse), fmt.Sprint(b.Capacity), percent(b.InUse, b.Capacity))
	}
	t.flush()

	sync := "in sync with the RIB"
	if st.Routes.Missing > 0 || st.Routes.Stale > 0 {
		sync = "OUT OF SYNC with the RIB (routectl routes shows which)"
	}
	fmt.Fprintf(w, "\nKernel routes: %d owned, %d missing, %d stale: %s\n", st.Routes.Kernel, st.Routes.Missing, st.Routes.Stale, sync)
	switch {
	case live:
		fmt.Fprintln(w, "Source: the node's agent, live")
	case st.Updated != nil:
		fmt.Fprintf(w, "Source: NodeNetworkStatus, reported %s ago\n", age(now, st.Updated.Time))
	}
}

// sortedSessions puts sessions that are not Established first: what needs looking at.
func sortedSessions(ss []v1alpha1.BGPSessionStatus) []v1alpha1.BGPSessionStatus {
	out := append([]v1alpha1.BGPSessionStatus(nil), ss...)
	sort.SliceStable(out, func(i, j int) bool {
		ui, uj := out[i].State == nodestatus.Established, out[j].State == nodestatus.Established
		if ui != uj {
			return !ui
		}
		return addrLess(out[i].Peer, out[j].Peer)
	})
	return out
}

// addrLess orders addresses numerically (192.0.2.3 before 192.0.2.254).
func addrLess(a, b string) bool {
	pa, ea := netip.ParseAddr(a)
	pb, eb := netip.ParseAddr(b)
	if ea != nil || eb != nil {
		return a < b
	}
	return pa.Less(pb)
}

// nodeRow is one line of `routectl nodes`.
type nodeRow struct {
	name    string
	healthy bool
	message string
	nns     *v1alpha1.NodeNetworkStatus // nil: the node never reported
}

func runNodes(cmd *cobra.Command, o *options) error {
	hr, kube, err := o.api()
	if err != nil {
		return err
	}
	ctx, cancel := o.ctx(cmd)
	defer cancel()
	list, err := hr.NodeNetworkStatuses.List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list NodeNetworkStatuses: %w", err)
	}
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list Nodes: %w", err)
	}
	var names []string
	for _, n := range nodes.Items {
		names = append(names, n.Name)
	}
	rows := nodeRows(list.Items, names, o.now())
	if o.output == "json" || o.output == "yaml" {
		list.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "NodeNetworkStatusList"}
		list.Items = nil
		for _, r := range rows {
			if r.nns != nil {
				r.nns.ManagedFields = nil
				list.Items = append(list.Items, *r.nns)
			}
		}
		if err := printObject(o.out, o.output, list); err != nil {
			return err
		}
	} else {
		renderNodes(o.out, rows, o.wide(), o.now())
	}
	var bad []string
	for _, r := range rows {
		if !r.healthy {
			bad = append(bad, r.name)
		}
	}
	if len(bad) > 0 {
		return unhealthy("%d of %d nodes unhealthy: %s", len(bad), len(rows), strings.Join(bad, ", "))
	}
	return nil
}

// nodeRows joins the reports with the nodes (a node without a report is unhealthy) and
// sorts unhealthy nodes first, then by name.
func nodeRows(items []v1alpha1.NodeNetworkStatus, nodes []string, now time.Time) []nodeRow {
	seen := map[string]bool{}
	var rows []nodeRow
	for i := range items {
		n := &items[i]
		ok, msg := nodestatus.Healthy(n, now, staleAfter)
		rows = append(rows, nodeRow{name: n.Name, healthy: ok, message: msg, nns: n})
		seen[n.Name] = true
	}
	for _, name := range nodes {
		if !seen[name] {
			rows = append(rows, nodeRow{name: name, message: "no NodeNetworkStatus: is hostroute-node running there?"})
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].healthy != rows[j].healthy {
			return !rows[i].healthy
		}
		return rows[i].name < rows[j].name
	})
	return rows
}

func renderNodes(w io.Writer, rows []nodeRow, wide bool, now time.Time) {
	headers := []string{"NODE", "HEALTHY", "SESSIONS", "BLOCKS", "ADDRESSES", "ROUTES", "MISSING", "STALE", "UPDATED", "MESSAGE"}
	if wide {
		headers = append(headers[:len(headers)-1], "AS", "ROUTER ID", "LAST ERROR", "MESSAGE")
	}
	t := newTable(w, headers...)
	for _, r := range rows {
		healthy := "True"
		if !r.healthy {
			healthy = "False"
		}
		msg := r.message
		if !wide {
			msg = truncate(msg, 80)
		}
		if r.nns == nil {
			row := []string{r.name, "Unknown", "-", "-", "-", "-", "-", "-", "-"}
			if wide {
				row = append(row, "-", "-", "-")
			}
			t.row(append(row, msg)...)
			continue
		}
		st := r.nns.Status
		var inUse, capacity int32
		for _, b := range st.Blocks {
			inUse += b.InUse
			capacity += b.Capacity
		}
		updated := "-"
		if st.Updated != nil {
			updated = age(now, st.Updated.Time) + " ago"
		}
		row := []string{r.name, healthy, st.SessionsSummary, fmt.Sprint(len(st.Blocks)), fmt.Sprintf("%d/%d", inUse, capacity),
			fmt.Sprint(st.Routes.Kernel), fmt.Sprint(st.Routes.Missing), fmt.Sprint(st.Routes.Stale), updated}
		if wide {
			row = append(row, fmt.Sprint(st.ASNumber), st.RouterID, st.LastError)
		}
		t.row(append(row, msg)...)
	}
	t.flush()
}
