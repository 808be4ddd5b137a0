package routectl

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/v1alpha1"
)

func newTraceCommand(o *options) *cobra.Command {
	namespace := "default"
	cmd := &cobra.Command{
		Use:   "trace SRC DST",
		Short: "The path a packet takes from SRC to DST, hop by hop, each checked (✔/✘)",
		Long: `trace follows a packet from SRC to DST (pods as namespace/name, or name in --namespace,
or addresses) and checks every hop:

  source  the pod, its node and address (Pod objects; for an address, the IPAMBlock)
  route   the source node's route to DST, read live from the local agent when routectl
          runs on the source node (else "not checked live")
  bgp     the BGP session the route came from (the one to its next hop, else the
          external sessions) and its state
  bfd     that session's BFD state
  block   the IPAMBlock holding DST, its node, that node's NodeNetworkStatus, and
          whether the route's next hop is that node
  pod     the destination pod (Running, with that address); when routectl runs on the
          destination node, the kernel's /32 to it on a veth

✔ checked and fine, ✘ broken, ? not checked from here, - not applicable. Exits 1 when a
hop is broken.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.validateOutput(); err != nil {
				return err
			}
			ctx, cancel := o.ctx(cmd)
			defer cancel()
			in, err := gatherTrace(ctx, o, args[0], args[1], namespace)
			if err != nil {
				return err
			}
			res := traceResult(in, judgeTrace(in))
			if o.output == "json" || o.output == "yaml" {
				if err := printObject(o.out, o.output, res); err != nil {
					return err
				}
			} else {
				renderTrace(o.out, res)
			}
			if msg := brokenHops(res); msg != "" {
				return unhealthy("%s", msg)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", namespace, "the namespace of SRC and DST given as bare pod names")
	return cmd
}

// gatherTrace reads what judgeTrace needs: the endpoints from the API server, the local
// agent's routing state, and (on the destination node) the kernel's route to DST.
func gatherTrace(ctx context.Context, o *options, srcArg, dstArg, namespace string) (*traceInput, error) {
	hr, kube, err := o.api()
	if err != nil {
		return nil, err
	}
	blocks, err := hr.IPAMBlocks.List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list IPAMBlocks: %w", err)
	}
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list Nodes: %w", err)
	}
	in := &traceInput{nodeAddrs: nodeAddrsOf(nodes.Items), statuses: map[string]*v1alpha1.NodeNetworkStatus{}, now: o.now()}
	r := resolver{kube: kube, blocks: blocks.Items, nodeAddrs: in.nodeAddrs, namespace: namespace}
	if in.src, err = r.resolve(ctx, srcArg, netip.Addr{}); err != nil {
		return nil, fmt.Errorf("SRC %s: %w", srcArg, err)
	}
	if in.src.pod != nil && in.src.pod.Spec.NodeName != "" {
		in.src.node = in.src.pod.Spec.NodeName // where the packet leaves from, whatever the block says
	}
	if in.src.node == "" {
		return nil, fmt.Errorf("SRC %s: %s is in no IPAMBlock and is no node's address: cannot tell which node it leaves from", srcArg, in.src.ip)
	}
	if in.dst, err = r.resolve(ctx, dstArg, in.src.ip); err != nil {
		return nil, fmt.Errorf("DST %s: %w", dstArg, err)
	}
	if !in.dst.ip.IsValid() {
		return nil, fmt.Errorf("DST %s: pod %s has no address (none in its status, no allocation)", dstArg, in.dst.podRef)
	}
	if in.src.ip.IsValid() && in.src.ip.Is4() != in.dst.ip.Is4() {
		return nil, fmt.Errorf("SRC %s and DST %s are of different address families", in.src.ip, in.dst.ip)
	}
	for _, n := range []string{in.src.node, in.dst.node} {
		if n == "" || in.statuses[n] != nil {
			continue
		}
		nns, err := hr.NodeNetworkStatuses.Get(ctx, n)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("NodeNetworkStatus %s: %w", n, err)
		default:
			in.statuses[n] = nns
		}
	}
	in.local, err = askAgent(ctx, o)
	if err != nil {
		in.localErr = err.Error()
	}
	if in.local != nil && in.dst.pod != nil && in.local.GetNode() == in.dst.pod.Spec.NodeName {
		k, err := hostRoute(in.dst.ip)
		if err != nil {
			in.kernelErr = err.Error()
		}
		in.kernel = k
	}
	return in, nil
}

// askAgent asks the local agent for its routing state (sessions, routes, what it
// announces); status, routes and trace all read it.
func askAgent(ctx context.Context, o *options) (*agentv1.RoutingResponse, error) {
	ac, closeConn, err := o.agent()
	if err != nil {
		return nil, err
	}
	defer closeConn()
	resp, err := ac.Routing(ctx, &agentv1.RoutingRequest{})
	if err != nil {
		return nil, fmt.Errorf("ask the agent on %s: %w", o.socket, err)
	}
	return resp, nil
}

func nodeAddrsOf(nodes []corev1.Node) map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil && a.Type == corev1.NodeInternalIP {
				out[n.Name] = append(out[n.Name], ip)
			}
		}
	}
	return out
}

// resolver turns SRC and DST into endpoints.
type resolver struct {
	kube      kubernetes.Interface
	blocks    []v1alpha1.IPAMBlock
	nodeAddrs map[string][]netip.Addr
	namespace string
}

// resolve reads arg, an address or a pod; like is an address whose family a pod's
// address should have (invalid: any).
func (r *resolver) resolve(ctx context.Context, arg string, like netip.Addr) (traceEnd, error) {
	e := traceEnd{arg: arg}
	if ip, err := netip.ParseAddr(arg); err == nil {
		e.ip = ip
		e.block, e.alloc = blockOf(r.blocks, ip)
		if e.alloc != nil && e.alloc.Pod != "" {
			e.podRef = e.alloc.Namespace + "/" + e.alloc.Pod
			p, err := r.getPod(ctx, e.alloc.Namespace, e.alloc.Pod)
			if err != nil {
				return e, err
			}
			// A pod of that name but another UID is not the allocation's pod.
			if p != nil && (e.alloc.PodUID == "" || string(p.UID) == e.alloc.PodUID) {
				e.pod = p
			}
		} else if e.alloc == nil {
			if e.pod, err = r.podByIP(ctx, ip); err != nil {
				return e, err
			}
			if e.pod != nil {
				e.podRef = e.pod.Namespace + "/" + e.pod.Name
			}
		}
	} else {
		ns, name := r.namespace, arg
		if i := strings.Index(arg, "/"); i >= 0 {
			ns, name = arg[:i], arg[i+1:]
		}
		e.podRef = ns + "/" + name
		p, err := r.getPod(ctx, ns, name)
		if err != nil {
			return e, err
		}
		e.pod = p
		e.ip = podAddr(p, like)
		for i := range r.blocks {
			b := &r.blocks[i]
			for j := range b.Status.Allocations {
				a := &b.Status.Allocations[j]
				if a.Namespace != ns || a.Pod != name || (p != nil && a.PodUID != "" && a.PodUID != string(p.UID)) {
					continue
				}
				ip, err := netip.ParseAddr(a.Address)
				if err != nil || (like.IsValid() && ip.Is4() != like.Is4()) || (e.ip.IsValid() && ip != e.ip) {
					continue
				}
				if e.alloc == nil {
					e.ip, e.block, e.alloc = ip, b, a
				}
			}
		}
		if p == nil && e.alloc == nil {
			return e, fmt.Errorf("pod %s not found, and no allocation names it", e.podRef)
		}
		if e.block == nil && e.ip.IsValid() {
			e.block, e.alloc = blockOf(r.blocks, e.ip)
		}
	}
	switch {
	case e.block != nil:
		e.node = e.block.Spec.Node
	case e.pod != nil:
		e.node = e.pod.Spec.NodeName
	case e.ip.IsValid():
		for n, as := range r.nodeAddrs {
			for _, a := range as {
				if a == e.ip {
					e.node, e.host = n, true
				}
			}
		}
	}
	if e.node == "" && e.pod != nil {
		e.node = e.pod.Spec.NodeName
	}
	return e, nil
}

func (r *resolver) getPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	p, err := r.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("get pod %s/%s: %w", ns, name, err)
	}
	return p, nil
}

// podByIP finds the (not host-network) pod with ip, for an address no allocation names.
func (r *resolver) podByIP(ctx context.Context, ip netip.Addr) (*corev1.Pod, error) {
	pods, err := r.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "status.podIP=" + ip.String()})
	if err != nil {
		return nil, fmt.Errorf("list pods with address %s: %w", ip, err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if !p.Spec.HostNetwork && podAddr(p, ip) == ip {
			return p, nil
		}
	}
	return nil, nil
}

// podAddr is the pod's address of like's family (invalid like: its first address).
func podAddr(p *corev1.Pod, like netip.Addr) netip.Addr {
	if p == nil {
		return netip.Addr{}
	}
	for _, a := range p.Status.PodIPs {
		ip, err := netip.ParseAddr(a.IP)
		if err == nil && (!like.IsValid() || ip.Is4() == like.Is4()) {
			return ip
		}
	}
	return netip.Addr{}
}

// blockOf is the block holding ip and ip's allocation in it (nil when not allocated).
func blockOf(blocks []v1alpha1.IPAMBlock, ip netip.Addr) (*v1alpha1.IPAMBlock, *v1alpha1.Allocation) {
	for i := range blocks {
		b := &blocks[i]
		p, err := netip.ParsePrefix(b.Spec.CIDR)
		if err != nil || !p.Contains(ip) {
			continue
		}
		for j := range b.Status.Allocations {
			if a, err := netip.ParseAddr(b.Status.Allocations[j].Address); err == nil && a == ip {
				return b, &b.Status.Allocations[j]
			}
		}
		return b, nil
	}
	return nil, nil
}
