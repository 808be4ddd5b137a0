package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/node/ipam"
)

// podSource answers, from caches, which pools a pod takes its addresses from: the pods
// of this node, every namespace, this node's own Node object and the pools are watched,
// so an ADD makes no API request (only a pod the cache does not know yet is fetched). It
// also knows the pools the node's pods need, and the reserved prefixes.
type podSource struct {
	log  *slog.Logger
	node string
	kube kubernetes.Interface // nil: no pod, namespace or node information
	// lookup reads what the caches miss (default kube).
	lookup kubernetes.Interface
	pools  cache.SharedIndexInformer
	// pods of this node, namespaces, the node itself (nil without kube).
	pods, namespaces, self cache.SharedIndexInformer
	reservations           cache.SharedIndexInformer
	hr                     *client.Client
}

func newPodSource(log *slog.Logger, node string, kube kubernetes.Interface, hr *client.Client, pools cache.SharedIndexInformer) *podSource {
	s := &podSource{log: log, node: node, kube: kube, lookup: kube, pools: pools, hr: hr, reservations: hr.IPReservations.Informer("", 0)}
	if kube == nil {
		return s
	}
	byName := func(field string) informers.SharedInformerOption {
		return informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector(field, node).String()
		})
	}
	s.pods = informers.NewSharedInformerFactoryWithOptions(kube, 0, byName("spec.nodeName")).Core().V1().Pods().Informer()
	_ = s.pods.SetTransform(slimPod)
	s.namespaces = informers.NewSharedInformerFactory(kube, 0).Core().V1().Namespaces().Informer()
	_ = s.namespaces.SetTransform(slimNamespace)
	s.self = informers.NewSharedInformerFactoryWithOptions(kube, 0, byName("metadata.name")).Core().V1().Nodes().Informer()
	_ = s.self.SetTransform(slimNode)
	return s
}

// informers are the caches to run and wait for.
func (s *podSource) informers() []cache.SharedIndexInformer {
	out := []cache.SharedIndexInformer{s.reservations}
	if s.pods != nil {
		out = append(out, s.pods, s.namespaces, s.self)
	}
	return out
}

// choose is the pool choice for an ADD of the owner's pod.
func (s *podSource) choose(ctx context.Context, o ipam.Owner) (ipam.Choice, error) {
	info, err := s.podInfo(ctx, o.Namespace, o.Pod, o.PodUID)
	if err != nil {
		return ipam.Choice{}, err
	}
	return ipam.Choose(info, s.nodeLabels(), s.poolList())
}

// podInfo reads the pod and its namespace from the caches; a pod the cache does not hold
// (or holds with another UID: the cache lags a re-created pod) is fetched once. A pod
// that does not exist at all (a sandbox started outside Kubernetes) is steered by its
// namespace only.
func (s *podSource) podInfo(ctx context.Context, ns, name, uid string) (ipam.PodInfo, error) {
	info := ipam.PodInfo{Namespace: ns, Name: name}
	if s.kube == nil || ns == "" {
		return info, nil
	}
	var pod *corev1.Pod
	if o, ok, _ := s.pods.GetStore().GetByKey(ns + "/" + name); ok {
		pod = o.(*corev1.Pod)
	}
	if pod == nil || (uid != "" && string(pod.UID) != uid) {
		got, err := s.fetchPod(ctx, ns, name)
		if err != nil {
			return info, err
		}
		pod = got
	}
	if pod != nil && (uid == "" || string(pod.UID) == uid) {
		info.Annotations = pod.Annotations
		if info.Annotations == nil {
			info.Annotations = map[string]string{}
		}
	}
	var nsObj *corev1.Namespace
	if o, ok, _ := s.namespaces.GetStore().GetByKey(ns); ok {
		nsObj = o.(*corev1.Namespace)
	} else {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		got, err := s.lookup.CoreV1().Namespaces().Get(cctx, ns, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return info, fmt.Errorf("read namespace %s: %w", ns, err)
		default:
			nsObj = got
		}
	}
	if nsObj != nil {
		info.NamespaceLabels, info.NamespaceAnnotations = nsObj.Labels, nsObj.Annotations
	}
	return info, nil
}

func (s *podSource) fetchPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	got, err := s.lookup.CoreV1().Pods(ns).Get(cctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		s.log.Debug("pod of an ADD does not exist; its namespace steers the pool choice", "pod", ns+"/"+name)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pod %s/%s: %w", ns, name, err)
	}
	return got, nil
}

func (s *podSource) nodeLabels() map[string]string {
	if s.self == nil {
		return nil
	}
	if o, ok, _ := s.self.GetStore().GetByKey(s.node); ok {
		return o.(*corev1.Node).Labels
	}
	return nil
}

func (s *podSource) poolList() []*v1alpha1.IPPool {
	items := s.pools.GetStore().List()
	out := make([]*v1alpha1.IPPool, 0, len(items))
	for _, o := range items {
		out = append(out, o.(*v1alpha1.IPPool))
	}
	return out
}

// needs are the pools this node's pods take addresses from (see ipam.Needs) and their
// fixed addresses outside the node's blocks (ipam.NeedAddrs), for the NodeNetworkStatus. Pods that are done, terminating (they hold their addresses until
// their DEL, but ADD no more) or on the host network need none; a pod whose annotations
// cannot be honoured needs none either (its ADD fails and says why).
func (s *podSource) needs(blocks []ipam.Block) (pools, addrs []string) {
	if s.pods == nil {
		return nil, nil
	}
	nodeLabels := s.nodeLabels()
	all := s.poolList()
	disabled := map[string]bool{}
	for _, p := range all {
		if p.Spec.Disabled {
			disabled[p.Name] = true
		}
	}
	var choices []ipam.Choice
	for _, o := range s.pods.GetStore().List() {
		pod := o.(*corev1.Pod)
		if pod.Spec.HostNetwork || pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		info := ipam.PodInfo{Namespace: pod.Namespace, Name: pod.Name, Annotations: pod.Annotations}
		if n, ok, _ := s.namespaces.GetStore().GetByKey(pod.Namespace); ok {
			ns := n.(*corev1.Namespace)
			info.NamespaceLabels, info.NamespaceAnnotations = ns.Labels, ns.Annotations
		}
		c, err := ipam.Choose(info, nodeLabels, all)
		if err != nil {
			continue
		}
		choices = append(choices, c)
	}
	return ipam.Needs(choices, blocks, disabled), ipam.NeedAddrs(choices, blocks)
}

// reserved are the prefixes of every IPReservation.
func (s *podSource) reserved() []netip.Prefix {
	var out []netip.Prefix
	for _, o := range s.reservations.GetStore().List() {
		r := o.(*v1alpha1.IPReservation)
		ps, bad := r.Prefixes()
		out = append(out, ps...)
		for _, c := range bad {
			s.log.Warn("ignoring a bad reserved CIDR", "reservation", r.Name, "cidr", c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// slimPod keeps what the pool choice reads of a pod (the cache holds every pod of the node).
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
		Annotations: p.Annotations, DeletionTimestamp: p.DeletionTimestamp,
	}}
	out.Spec.NodeName, out.Spec.HostNetwork = p.Spec.NodeName, p.Spec.HostNetwork
	out.Status.Phase = p.Status.Phase
	return out, nil
}

// slimNamespace keeps a namespace's name, labels and annotations.
func slimNamespace(obj any) (any, error) {
	n, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels, Annotations: n.Annotations,
	}}, nil
}

// slimNode keeps the node's name and labels.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels,
	}}, nil
}

// blockHolder says which node holds the block a fixed address of the pool lies in ("" when
// no node does yet), and who holds the address there as that node last published it. One
// API read: it runs only when an ADD's fixed address is in none of this node's blocks.
func (s *podSource) blockHolder(ctx context.Context, addr netip.Addr, poolName string) (node, who string, err error) {
	o, ok, _ := s.pools.GetStore().GetByKey(poolName)
	if !ok {
		return "", "", nil
	}
	size := v1alpha1.EffectiveBlockSize(o.(*v1alpha1.IPPool), addr.Is6())
	block := netip.PrefixFrom(addr, size).Masked()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	b, err := s.hr.IPAMBlocks.Get(cctx, v1alpha1.BlockName(block))
	if apierrors.IsNotFound(err) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("read block %s: %w", block, err)
	}
	for _, al := range b.Status.Allocations {
		if al.Address == addr.String() {
			who = "pod " + al.Namespace + "/" + al.Pod
		}
	}
	return b.Spec.Node, who, nil
}
