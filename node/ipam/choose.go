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
	var c Choice
	for _, fam := range []int{4, 6} {
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
				if why := parsed[n].refuses(n, fam, pod, nodeLabels); why != "" {
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

// choosable is a pool parsed for the choice.
type choosable struct {
	pool   *v1alpha1.IPPool
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
	c.family = familyOf(pfx)
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
func (c choosable) refuses(name string, fam int, pod PodInfo, nodeLabels map[string]string) string {
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
