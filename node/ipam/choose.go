package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// ErrPoolChoice: the pod's or its namespace's pool annotation cannot be honoured (a pool
// that does not exist, is of the other family, or does not select the pod's node or
// namespace). Retrying does not help; the annotation or the pool must change.
var ErrPoolChoice = errors.New("cannot use the IPPools asked for")

// PodInfo is what the pool choice reads of a pod and its namespace.
type PodInfo struct {
	Namespace string
	Name      string
	// Annotations of the pod (nil when the pod object is unknown).
	Annotations map[string]string
	// NamespaceLabels and NamespaceAnnotations of the pod's namespace.
	NamespaceLabels      map[string]string
	NamespaceAnnotations map[string]string
}

// Choose decides the pools a pod takes its addresses from, per family: the pools its
// annotation names (hostroute.io/ipv4pools, hostroute.io/ipv6pools), else those its
// namespace's annotation names, else the pools whose namespaceSelector selects its
// namespace, else the pools without a namespaceSelector. Every pool must select the node
// (nodeSelector). A named pool that cannot serve the pod is an ErrPoolChoice naming it;
// a family without any pool for the pod is left out of the choice.
func Choose(pod PodInfo, nodeLabels map[string]string, pools []*v1alpha1.IPPool) (Choice, error) {
	parsed := make(map[string]choosable, len(pools))
	for _, p := range pools {
		parsed[p.Name] = parseChoosable(p)
	}
	fixed, err := fixedAddrs(pod, parsed)
	if err != nil {
		return Choice{}, err
	}
	var c Choice
	for _, fam := range []int{4, 6} {
		if f, ok := fixed[fam]; ok {
			if fam == 4 {
				c.V4, c.V4Addr = []string{f.pool}, f.addr
			} else {
				c.V6, c.V6Addr = []string{f.pool}, f.addr
			}
			continue
		}
		ann := v1alpha1.AnnotationIPv4Pools
		if fam == 6 {
			ann = v1alpha1.AnnotationIPv6Pools
		}
		var names []string
		var err error
		src := ""
		if v, ok := pod.Annotations[ann]; ok {
			names, err = parsePoolList(v)
			src = fmt.Sprintf("annotation %s of pod %s/%s", ann, pod.Namespace, pod.Name)
		} else if v, ok := pod.NamespaceAnnotations[ann]; ok {
			names, err = parsePoolList(v)
			src = fmt.Sprintf("annotation %s of namespace %s", ann, pod.Namespace)
		}
		if err != nil {
			return Choice{}, fmt.Errorf("%w: %s: %w", ErrPoolChoice, src, err)
		}
		var chosen []string
		if src != "" {
			for _, n := range names {
				if why := parsed[n].refuses(fam, pod, nodeLabels); why != "" {
					return Choice{}, fmt.Errorf("%w: %s names IPPool %q, which %s", ErrPoolChoice, src, n, why)
				}
			}
			chosen = names
		} else {
			chosen = defaultPools(parsed, fam, pod, nodeLabels)
		}
		if fam == 4 {
			c.V4 = chosen
		} else {
			c.V6 = chosen
		}
	}
	return c, nil
}

// fixedAddr is a fixed address and the pool it lies in.
type fixedAddr struct {
	addr netip.Addr
	pool string
}

// fixedAddrs reads the pod's hostroute.io/ip-addrs: at most one address per family, each in
// an enabled pool that admits the pod's namespace, with no pool annotation of the pod for
// that family beside it.
func fixedAddrs(pod PodInfo, parsed map[string]choosable) (map[int]fixedAddr, error) {
	v, ok := pod.Annotations[v1alpha1.AnnotationIPAddrs]
	if !ok {
		return nil, nil
	}
	src := fmt.Sprintf("annotation %s of pod %s/%s", v1alpha1.AnnotationIPAddrs, pod.Namespace, pod.Name)
	list, err := parsePoolList(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPoolChoice, src, err)
	}
	// Of overlapping pools the oldest holds the address, as the controller decides.
	var byAge []*v1alpha1.IPPool
	for _, c := range parsed {
		if c.bad == "" {
			byAge = append(byAge, c.pool)
		}
	}
	sort.Slice(byAge, func(i, j int) bool { return v1alpha1.OlderPool(byAge[i], byAge[j]) })
	out := map[int]fixedAddr{}
	for _, s := range list {
		addr, err := netip.ParseAddr(s)
		if err != nil || addr.Zone() != "" {
			return nil, fmt.Errorf("%w: %s: %q is not an IP address", ErrPoolChoice, src, s)
		}
		addr = addr.Unmap()
		fam := 6
		if addr.Is4() {
			fam = 4
		}
		if _, dup := out[fam]; dup {
			return nil, fmt.Errorf("%w: %s names two IPv%d addresses; a pod has one per family", ErrPoolChoice, src, fam)
		}
		ann := v1alpha1.AnnotationIPv4Pools
		if fam == 6 {
			ann = v1alpha1.AnnotationIPv6Pools
		}
		if _, both := pod.Annotations[ann]; both {
			return nil, fmt.Errorf("%w: pod %s/%s has both %s and %s for IPv%d; keep one", ErrPoolChoice, pod.Namespace, pod.Name, v1alpha1.AnnotationIPAddrs, ann, fam)
		}
		pool := ""
		for _, p := range byAge {
			if parsed[p.Name].prefix.Contains(addr) {
				pool = p.Name
				break
			}
		}
		if pool == "" {
			return nil, fmt.Errorf("%w: %s asks for %s, which lies in no IPPool", ErrPoolChoice, src, addr)
		}
		c := parsed[pool]
		switch {
		case c.pool.Spec.Disabled:
			return nil, fmt.Errorf("%w: %s asks for %s, in IPPool %q, which is disabled", ErrPoolChoice, src, addr, pool)
		case c.ns != nil && !c.ns.Matches(labels.Set(pod.NamespaceLabels)):
			return nil, fmt.Errorf("%w: %s asks for %s, in IPPool %q, which does not select namespace %s (namespaceSelector %s)", ErrPoolChoice, src, addr, pool, pod.Namespace, c.ns)
		}
		out[fam] = fixedAddr{addr: addr, pool: pool}
	}
	return out, nil
}

// choosable is a pool parsed for the choice.
type choosable struct {
	pool   *v1alpha1.IPPool
	prefix netip.Prefix
	family int
	node   labels.Selector
	ns     labels.Selector // nil: serves every namespace
	bad    string
}

func parseChoosable(p *v1alpha1.IPPool) choosable {
	c := choosable{pool: p, node: labels.Everything()}
	pfx, err := netip.ParsePrefix(p.Spec.CIDR)
	if err != nil {
		c.bad = fmt.Sprintf("has a bad cidr %q", p.Spec.CIDR)
		return c
	}
	c.family, c.prefix = familyOf(pfx), pfx
	if p.Spec.NodeSelector != nil {
		if c.node, err = metav1.LabelSelectorAsSelector(p.Spec.NodeSelector); err != nil {
			c.bad = fmt.Sprintf("has a bad nodeSelector: %v", err)
		}
	}
	if !v1alpha1.ServesEveryNamespace(p) {
		if c.ns, err = metav1.LabelSelectorAsSelector(p.Spec.NamespaceSelector); err != nil {
			c.bad = fmt.Sprintf("has a bad namespaceSelector: %v", err)
		}
	}
	return c
}

// refuses says why the pool cannot serve the pod's family on this node ("" if it can).
func (c choosable) refuses(fam int, pod PodInfo, nodeLabels map[string]string) string {
	switch {
	case c.pool == nil:
		return "does not exist (kubectl get ippools)"
	case c.bad != "":
		return c.bad
	case c.family != fam:
		return fmt.Sprintf("is an IPv%d pool (%s), not IPv%d", c.family, c.pool.Spec.CIDR, fam)
	case !c.node.Matches(labels.Set(nodeLabels)):
		return fmt.Sprintf("does not select this node (nodeSelector %s)", c.node)
	case c.ns != nil && !c.ns.Matches(labels.Set(pod.NamespaceLabels)):
		return fmt.Sprintf("does not select namespace %s (namespaceSelector %s)", pod.Namespace, c.ns)
	}
	return ""
}

// defaultPools are the pools of the family for a pod no annotation steers: those whose
// namespaceSelector selects its namespace if there are any, else those serving every
// namespace; in both cases only pools selecting the node, in name order.
func defaultPools(parsed map[string]choosable, fam int, pod PodInfo, nodeLabels map[string]string) []string {
	var forNS, general []string
	for name, c := range parsed {
		if c.bad != "" || c.family != fam || !c.node.Matches(labels.Set(nodeLabels)) {
			continue
		}
		switch {
		case c.ns == nil:
			general = append(general, name)
		case c.ns.Matches(labels.Set(pod.NamespaceLabels)):
			forNS = append(forNS, name)
		}
	}
	out := general
	if len(forNS) > 0 {
		out = forNS
	}
	sort.Strings(out)
	return out
}

// parsePoolList reads a pool annotation: a JSON list of names or a comma-separated list.
func parsePoolList(v string) ([]string, error) {
	v = strings.TrimSpace(v)
	var names []string
	if strings.HasPrefix(v, "[") {
		if err := json.Unmarshal([]byte(v), &names); err != nil {
			return nil, fmt.Errorf("%q is neither a JSON list of IPPool names nor a comma-separated list: %w", v, err)
		}
	} else {
		for _, n := range strings.Split(v, ",") {
			names = append(names, strings.TrimSpace(n))
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%q names no IPPool", v)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if n == "" {
			return nil, fmt.Errorf("%q has an empty IPPool name", v)
		}
		if seen[n] {
			return nil, fmt.Errorf("%q names IPPool %q twice", v, n)
		}
		seen[n] = true
	}
	return names, nil
}

// NeedAddrs are the fixed addresses of the choices that lie in no open block of the node,
// sorted: the controller assigns the node the block holding each.
func NeedAddrs(choices []Choice, blocks []Block) []string {
	set := map[netip.Addr]bool{}
	for _, c := range choices {
		for _, a := range []netip.Addr{c.V4Addr, c.V6Addr} {
			if !a.IsValid() {
				continue
			}
			in := false
			for _, b := range blocks {
				if !b.Draining && b.Prefix.Contains(a) {
					in = true
					break
				}
			}
			if !in {
				set[a] = true
			}
		}
	}
	addrs := make([]netip.Addr, 0, len(set))
	for a := range set {
		addrs = append(addrs, a)
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

// Needs are the pools a node must hold a block of for its pods' choices, in name order:
// per choice and family the first pool the node has an open block of, or, when it has
// none, the first pool not disabled (the controller assigns no block of a disabled pool).
func Needs(choices []Choice, blocks []Block, disabled map[string]bool) []string {
	have := map[string]bool{}
	for _, b := range blocks {
		if !b.Draining {
			have[b.Pool] = true
		}
	}
	set := map[string]bool{}
	for _, c := range choices {
		for _, fam := range []int{4, 6} {
			if c.Fixed(fam).IsValid() {
				continue // the address's own block (NeedAddrs), not any block of its pool
			}
			pools := c.Pools(fam)
			pick := ""
			for _, p := range pools {
				if have[p] {
					pick = p
					break
				}
			}
			if pick == "" {
				for _, p := range pools {
					if !disabled[p] {
						pick = p
						break
					}
				}
			}
			if pick != "" {
				set[pick] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
