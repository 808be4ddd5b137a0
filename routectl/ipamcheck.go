package routectl

import (
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// Finding kinds of `routectl ipam check`.
const (
	FindingDuplicate    = "duplicate"     // an address allocated more than once
	FindingOutside      = "outside-block" // an allocation outside its block's CIDR
	FindingLeak         = "leak"          // an allocation whose pod UID no longer exists
	FindingOrphanBlock  = "orphan-block"  // a block assigned to a node that does not exist
	FindingOverlap      = "overlap"       // two blocks share addresses
	FindingNodeNoBlocks = "no-block"      // a node a pool selects has no block
)

// Finding is one IPAM problem. Its JSON is routectl's own (not an API type): scripts
// read the kind, node and attachment to act on it.
type Finding struct {
	Kind        string `json:"kind"`
	Node        string `json:"node,omitempty"`
	Block       string `json:"block,omitempty"`
	Address     string `json:"address,omitempty"`
	PodUID      string `json:"podUID,omitempty"`
	Pod         string `json:"pod,omitempty"` // namespace/name
	ContainerID string `json:"containerID,omitempty"`
	Interface   string `json:"interface,omitempty"`
	Detail      string `json:"detail"`
}

// IPAMReport is the JSON of `routectl ipam check`.
type IPAMReport struct {
	Findings []Finding `json:"findings"`
}

// checkIPAM looks for what should never be: an address in use twice, allocations whose
// pod is gone (leaks, by pod UID: a pod recreated under the same name is a different
// pod), blocks of nodes that no longer exist and nodes a pool selects but that have no
// block. Allocations without a pod UID (written by a runtime that passed none) cannot be
// judged and are left alone.
func checkIPAM(blocks []v1alpha1.IPAMBlock, pools []v1alpha1.IPPool, nodes []corev1.Node, podUIDs map[string]bool) []Finding {
	var out []Finding
	nodeSet := map[string]bool{}
	for _, n := range nodes {
		nodeSet[n.Name] = true
	}
	type owner struct{ block, pod string }
	seen := map[netip.Addr]owner{}
	perNode := map[string]int{}
	var prefixes []struct {
		p    netip.Prefix
		name string
	}
	for _, b := range blocks {
		perNode[b.Spec.Node]++
		blk, err := netip.ParsePrefix(b.Spec.CIDR)
		if err == nil {
			for _, o := range prefixes {
				if o.p.Overlaps(blk) {
					out = append(out, Finding{Kind: FindingOverlap, Node: b.Spec.Node, Block: b.Spec.CIDR,
						Detail: fmt.Sprintf("overlaps block %s", o.name)})
				}
			}
			prefixes = append(prefixes, struct {
				p    netip.Prefix
				name string
			}{blk, b.Spec.CIDR})
		}
		if !nodeSet[b.Spec.Node] {
			out = append(out, Finding{Kind: FindingOrphanBlock, Node: b.Spec.Node, Block: b.Spec.CIDR,
				Detail: fmt.Sprintf("node %s does not exist; %d allocations (the controller releases it after its grace period)", b.Spec.Node, len(b.Status.Allocations))})
		}
		for _, a := range b.Status.Allocations {
			f := Finding{Node: b.Spec.Node, Block: b.Spec.CIDR, Address: a.Address, PodUID: a.PodUID,
				ContainerID: a.ContainerID, Interface: a.Interface}
			if a.Pod != "" {
				f.Pod = a.Namespace + "/" + a.Pod
			}
			addr, err := netip.ParseAddr(a.Address)
			if err != nil {
				f.Kind, f.Detail = FindingOutside, "not an IP address"
				out = append(out, f)
				continue
			}
			if blk.IsValid() && !blk.Contains(addr) {
				f.Kind, f.Detail = FindingOutside, "address outside its block"
				out = append(out, f)
			}
			if prev, dup := seen[addr]; dup {
				f.Kind, f.Detail = FindingDuplicate, fmt.Sprintf("also allocated in block %s to %s", prev.block, orDash(prev.pod))
				out = append(out, f)
			}
			seen[addr] = owner{b.Spec.CIDR, f.Pod}
			if a.PodUID != "" && !podUIDs[a.PodUID] {
				f.Kind, f.Detail = FindingLeak, fmt.Sprintf("pod %s (uid %s) no longer exists", orDash(f.Pod), a.PodUID)
				out = append(out, f)
			}
		}
	}
	for _, n := range nodes {
		if perNode[n.Name] == 0 && selectedByAPool(&n, pools) {
			out = append(out, Finding{Kind: FindingNodeNoBlocks, Node: n.Name,
				Detail: "an IPPool selects the node but it has no block: is hostroute-controller running? (kubectl get ippools)"})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].Address < out[j].Address
	})
	return out
}

func selectedByAPool(n *corev1.Node, pools []v1alpha1.IPPool) bool {
	for _, p := range pools {
		if p.Spec.Disabled {
			continue
		}
		if p.Spec.NodeSelector == nil {
			return true
		}
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.NodeSelector)
		if err == nil && sel.Matches(labels.Set(n.Labels)) {
			return true
		}
	}
	return false
}
