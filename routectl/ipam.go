package routectl

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/v1alpha1"
)

func newIPAMCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{Use: "ipam", Short: "Pod address management: show, check, release"}
	cmd.AddCommand(newIPAMShowCommand(o), newIPAMCheckCommand(o), newIPAMReleaseCommand(o))
	return cmd
}

// ipamData is everything the ipam commands read from the API server.
type ipamData struct {
	blocks  *v1alpha1.IPAMBlockList
	pools   *v1alpha1.IPPoolList
	nodes   []corev1.Node
	podUIDs map[string]bool
}

func loadIPAM(ctx context.Context, o *options, withPods bool) (*ipamData, error) {
	hr, kube, err := o.api()
	if err != nil {
		return nil, err
	}
	d := &ipamData{}
	if d.blocks, err = hr.IPAMBlocks.List(ctx, metav1.ListOptions{}); err != nil {
		return nil, fmt.Errorf("list IPAMBlocks: %w", err)
	}
	if d.pools, err = hr.IPPools.List(ctx, metav1.ListOptions{}); err != nil {
		return nil, fmt.Errorf("list IPPools: %w", err)
	}
	sort.Slice(d.blocks.Items, func(i, j int) bool { return blockLess(d.blocks.Items[i].Spec.CIDR, d.blocks.Items[j].Spec.CIDR) })
	sort.Slice(d.pools.Items, func(i, j int) bool { return d.pools.Items[i].Name < d.pools.Items[j].Name })
	if !withPods {
		return d, nil
	}
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list Nodes: %w", err)
	}
	d.nodes = nodes.Items
	// Pods are listed after the blocks: an allocation made after the block list was read
	// cannot be judged against an older pod list and be taken for a leak.
	pods, err := kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list Pods: %w", err)
	}
	d.podUIDs = map[string]bool{}
	for _, p := range pods.Items {
		d.podUIDs[string(p.UID)] = true
	}
	return d, nil
}

func blockLess(a, b string) bool {
	pa, ea := netip.ParsePrefix(a)
	pb, eb := netip.ParsePrefix(b)
	if ea != nil || eb != nil {
		return a < b
	}
	if c := pa.Addr().Compare(pb.Addr()); c != 0 {
		return c < 0
	}
	return pa.Bits() < pb.Bits()
}

func newIPAMShowCommand(o *options) *cobra.Command {
	var perBlock bool
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Address use per pool (--blocks: per block; -o wide lists the allocations)",
		Args:  cobra.NoArgs,
		RunE: o.withIPAM(false, func(ctx context.Context, cmd *cobra.Command, d *ipamData) error {
			if o.node != "" {
				d.blocks.Items = filterBlocks(d.blocks.Items, o.node)
			}
			if o.output == "json" || o.output == "yaml" {
				if perBlock || o.node != "" {
					d.blocks.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "IPAMBlockList"}
					return printObject(o.out, o.output, d.blocks)
				}
				d.pools.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "IPPoolList"}
				return printObject(o.out, o.output, d.pools)
			}
			if perBlock || o.node != "" {
				renderBlocks(o.out, d.blocks.Items, o.wide())
				return nil
			}
			renderPools(o.out, d.pools.Items, d.blocks.Items)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&perBlock, "blocks", false, "one line per block (implied by --node)")
	return cmd
}

func filterBlocks(bs []v1alpha1.IPAMBlock, node string) []v1alpha1.IPAMBlock {
	var out []v1alpha1.IPAMBlock
	for _, b := range bs {
		if b.Spec.Node == node {
			out = append(out, b)
		}
	}
	return out
}

func renderPools(w io.Writer, pools []v1alpha1.IPPool, blocks []v1alpha1.IPAMBlock) {
	t := newTable(w, "POOL", "CIDR", "BLOCK SIZE", "BLOCKS", "IN USE", "CAPACITY", "USE", "NAT", "DISABLED")
	for _, p := range pools {
		var n int
		var inUse, capacity int32
		for _, b := range blocks {
			if b.Spec.Pool == p.Name {
				n++
				inUse += int32(len(b.Status.Allocations))
				capacity += b.Status.Capacity
			}
		}
		size := "-"
		if p.Spec.BlockSize != nil {
			size = fmt.Sprintf("/%d", *p.Spec.BlockSize)
		}
		t.row(p.Name, p.Spec.CIDR, size, fmt.Sprint(n), fmt.Sprint(inUse), fmt.Sprint(capacity), percent(inUse, capacity),
			fmt.Sprint(p.Spec.NATOutgoing), fmt.Sprint(p.Spec.Disabled))
	}
	t.flush()
}

func renderBlocks(w io.Writer, blocks []v1alpha1.IPAMBlock, wide bool) {
	headers := []string{"BLOCK", "NODE", "POOL", "IN USE", "CAPACITY", "USE"}
	if wide {
		headers = append(headers, "ALLOCATIONS")
	}
	t := newTable(w, headers...)
	for _, b := range blocks {
		inUse := int32(len(b.Status.Allocations))
		row := []string{b.Spec.CIDR, b.Spec.Node, b.Spec.Pool, fmt.Sprint(inUse), fmt.Sprint(b.Status.Capacity), percent(inUse, b.Status.Capacity)}
		if wide {
			var as []string
			for _, a := range b.Status.Allocations {
				as = append(as, a.Address+"="+orDash(strings.Trim(a.Namespace+"/"+a.Pod, "/")))
			}
			row = append(row, strings.Join(as, " "))
		}
		t.row(row...)
	}
	t.flush()
}

func newIPAMCheckCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Find addresses in use twice, leaked allocations, blocks without a node, nodes without a block",
		Long: `check reads every IPAMBlock's published allocations, the Nodes and the Pods, and reports:

  duplicate      an address allocated more than once
  outside-block  an allocation outside its block
  leak           an allocation whose pod (by UID) no longer exists: 'routectl ipam release' frees it
  orphan-block   a block whose node no longer exists (the controller releases it after a grace period)
  overlap        two blocks that share addresses
  no-block       a node an IPPool selects that has no block

Exits 1 when it finds anything.`,
		Args: cobra.NoArgs,
		RunE: o.withIPAM(true, func(ctx context.Context, cmd *cobra.Command, d *ipamData) error {
			fs := checkIPAM(d.blocks.Items, d.pools.Items, d.nodes, d.podUIDs)
			if o.node != "" {
				fs = filterFindings(fs, o.node)
			}
			if err := printFindings(o, fs); err != nil {
				return err
			}
			if len(fs) > 0 {
				return unhealthy("%d IPAM findings", len(fs))
			}
			return nil
		}),
	}
}

func filterFindings(fs []Finding, node string) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Node == node {
			out = append(out, f)
		}
	}
	return out
}

func printFindings(o *options, fs []Finding) error {
	if o.output == "json" || o.output == "yaml" {
		return printObject(o.out, o.output, IPAMReport{Findings: append([]Finding{}, fs...)})
	}
	renderFindings(o.out, fs, o.wide())
	return nil
}

func renderFindings(w io.Writer, fs []Finding, wide bool) {
	if len(fs) == 0 {
		fmt.Fprintln(w, "No IPAM problems found.")
		return
	}
	headers := []string{"KIND", "NODE", "BLOCK", "ADDRESS", "POD", "DETAIL"}
	if wide {
		headers = []string{"KIND", "NODE", "BLOCK", "ADDRESS", "POD", "POD UID", "CONTAINER", "IFNAME", "DETAIL"}
	}
	t := newTable(w, headers...)
	for _, f := range fs {
		if wide {
			t.row(f.Kind, f.Node, f.Block, f.Address, f.Pod, f.PodUID, f.ContainerID, f.Interface, f.Detail)
			continue
		}
		t.row(f.Kind, f.Node, f.Block, f.Address, f.Pod, f.Detail)
	}
	t.flush()
}

// releaseCommand frees leaked allocations through the agent of the node that owns the
// block. Only a node's agent writes its blocks' allocations (its on-host store is the
// truth and the API copy is published from it), so a release written to the API directly
// would be undone by the next publish, or worse, be raced by an ADD. Releasing through
// the agent's Release RPC (by the attachment the allocation names) is the same path CNI
// DEL takes: durable, published, never racing. Leaks on other nodes are listed with the
// node to run on (kubectl exec into that node's hostroute-node pod).
func newIPAMReleaseCommand(o *options) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Release the leaked allocations ipam check reports, through this node's agent (dry run unless --yes)",
		Args:  cobra.NoArgs,
		RunE: o.withIPAM(true, func(ctx context.Context, cmd *cobra.Command, d *ipamData) error {
			var leaks []Finding
			for _, f := range checkIPAM(d.blocks.Items, d.pools.Items, d.nodes, d.podUIDs) {
				if f.Kind == FindingLeak {
					leaks = append(leaks, f)
				}
			}
			if o.node != "" {
				leaks = filterFindings(leaks, o.node)
			}
			if !yes {
				if err := printFindings(o, leaks); err != nil {
					return err
				}
				if len(leaks) > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "dry run: %d leaked allocations would be released; run again with --yes\n", len(leaks))
				}
				return nil
			}
			return releaseLeaks(ctx, cmd.ErrOrStderr(), o, leaks)
		}),
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "release (without it, only show what would be released)")
	return cmd
}

func releaseLeaks(ctx context.Context, log io.Writer, o *options, leaks []Finding) error {
	if len(leaks) == 0 {
		fmt.Fprintln(o.out, "No leaked allocations.")
		return nil
	}
	ac, closeConn, err := o.agent()
	if err != nil {
		return err
	}
	defer closeConn()
	st, err := ac.Status(ctx, &agentv1.StatusRequest{})
	if err != nil {
		return fmt.Errorf("ask the agent on %s which node it serves: %w", o.socket, err)
	}
	here := st.GetNode()
	left := 0
	done := map[string]bool{}
	for _, f := range leaks {
		switch {
		case f.Node != here:
			left++
			fmt.Fprintf(o.out, "skipped %s (%s): its block belongs to node %s; run routectl release there\n", f.Address, orDash(f.Pod), f.Node)
			continue
		case f.ContainerID == "":
			left++
			fmt.Fprintf(o.out, "skipped %s: the allocation names no container ID to release by\n", f.Address)
			continue
		case done[f.ContainerID+"/"+f.Interface]:
			continue // released with an earlier address of the same attachment
		}
		resp, err := ac.Release(ctx, &agentv1.ReleaseRequest{Attachment: &agentv1.Attachment{ContainerId: f.ContainerID, Ifname: f.Interface}})
		if err != nil {
			left++
			fmt.Fprintf(log, "release %s (container %s): %v\n", f.Address, f.ContainerID, err)
			continue
		}
		done[f.ContainerID+"/"+f.Interface] = true
		fmt.Fprintf(o.out, "released %s (pod %s, uid %s, container %s)\n", strings.Join(resp.GetReleased(), ","), orDash(f.Pod), f.PodUID, f.ContainerID)
	}
	if left > 0 {
		return unhealthy("%d leaked allocations not released", left)
	}
	return nil
}

// withIPAM is the common start of the ipam commands: check the output format, bound the
// calls with --timeout, and load pools, blocks and nodes (and pod UIDs when withPods).
func (o *options) withIPAM(withPods bool, run func(context.Context, *cobra.Command, *ipamData) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		if err := o.validateOutput(); err != nil {
			return err
		}
		ctx, cancel := o.ctx(cmd)
		defer cancel()
		d, err := loadIPAM(ctx, o, withPods)
		if err != nil {
			return err
		}
		return run(ctx, cmd, d)
	}
}
