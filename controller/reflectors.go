package controller

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/routing"
)

// DefaultTopologyKey is the failure-domain label reflectors are spread across.
const DefaultTopologyKey = "topology.kubernetes.io/zone"

// reflectorProbation is how long after an election the clients' reports of sessions
// down do not count against the reflectors (beside the down grace): they need that long to
// connect to a new reflector and report it (an agent writes its status at most every 5s).
const reflectorProbation = 15 * time.Second

// statusStale is how old a node's NodeNetworkStatus may be before its agent counts as
// gone (the agents rewrite an unchanged status every minute).
const statusStale = 3 * time.Minute

// rrNode is one node as the election sees it.
type rrNode struct {
	Name   string
	AS     uint32
	Domain string // the topology label's value ("" without one)
	Label  string // LabelRouteReflector: "true", "false" or ""
	// Alive: the node can serve as a reflector now; Why says why not.
	Alive bool
	Why   string
}

// electReflectors is the election (pure): per AS, the nodes labelled "true" count toward
// count; the elected nodes of prev that are still alive and unlabelled stay (stable:
// nothing moves while its node lives); vacancies go to alive unlabelled nodes, each to
// the failure domain with the fewest reflectors of that AS so far, then by domain and
// node name. Too many (count lowered) drops from the most crowded domain first. It
// returns the elected nodes (sorted, labelled ones not included) and what changed.
func electReflectors(prev []string, nodes []rrNode, count int) ([]string, []string) {
	byAS := map[uint32][]rrNode{}
	for _, n := range nodes {
		byAS[n.AS] = append(byAS[n.AS], n)
	}
	var elected, notes []string
	for _, as := range slices.Sorted(maps.Keys(byAS)) {
		group := byAS[as]
		slices.SortFunc(group, func(a, b rrNode) int { return strings.Compare(a.Name, b.Name) })
		perDomain := map[string]int{}
		chosen := map[string]bool{}
		explicit := 0
		for _, n := range group {
			if n.Label == "true" {
				explicit++
				perDomain[n.Domain]++
			}
		}
		var kept []rrNode
		for _, n := range group {
			if !slices.Contains(prev, n.Name) || n.Label != "" {
				continue
			}
			if !n.Alive {
				notes = append(notes, fmt.Sprintf("%s is no longer a route reflector: %s", n.Name, n.Why))
				continue
			}
			kept = append(kept, n)
		}
		for _, n := range kept {
			perDomain[n.Domain]++
		}
		for len(kept) > 0 && explicit+len(kept) > count {
			// Drop from the most crowded domain, the last by name there.
			drop := 0
			for i, n := range kept {
				if perDomain[n.Domain] >= perDomain[kept[drop].Domain] {
					drop = i
				}
			}
			perDomain[kept[drop].Domain]--
			notes = append(notes, fmt.Sprintf("%s is no longer a route reflector: AS %d asks for %d", kept[drop].Name, as, count))
			kept = slices.Delete(kept, drop, drop+1)
		}
		for _, n := range kept {
			chosen[n.Name] = true
		}
		for explicit+len(chosen) < count {
			var best *rrNode
			for i := range group {
				n := &group[i]
				if !n.Alive || n.Label != "" || chosen[n.Name] {
					continue
				}
				if best == nil || cmp.Or(cmp.Compare(perDomain[n.Domain], perDomain[best.Domain]), strings.Compare(n.Domain, best.Domain)) < 0 {
					best = n
				}
			}
			if best == nil {
				notes = append(notes, fmt.Sprintf("AS %d has %d of %d route reflectors: no other node is eligible", as, explicit+len(chosen), count))
				break
			}
			chosen[best.Name] = true
			perDomain[best.Domain]++
			if !slices.Contains(prev, best.Name) {
				notes = append(notes, fmt.Sprintf("%s elected route reflector of AS %d (domain %q)", best.Name, as, best.Domain))
			}
		}
		for name := range chosen {
			elected = append(elected, name)
		}
	}
	slices.Sort(elected)
	return elected, notes
}

// sessionReport is one client's report of its reflector session to an address.
type sessionReport struct {
	client string
	up     bool
	since  time.Time // when the session entered its state (the report's time if unknown)
}

// reflectorReports indexes the fresh statuses' reflector sessions by peer address, once
// per election rather than once per node.
func reflectorReports(reports []*v1alpha1.NodeNetworkStatus, now time.Time) map[string][]sessionReport {
	out := map[string][]sessionReport{}
	for _, r := range reports {
		if r.Status.Updated == nil || now.Sub(r.Status.Updated.Time) > statusStale {
			continue
		}
		for _, s := range r.Status.Sessions {
			if s.Kind != string(routing.KindReflector) {
				continue
			}
			since := r.Status.Updated.Time
			if s.Since != nil {
				since = s.Since.Time
			}
			out[s.Peer] = append(out[s.Peer], sessionReport{client: r.Name, up: s.State == "Established", since: since})
		}
	}
	return out
}

// sessionStates is what the election reads of a status's sessions (not their route
// counters, which change with every route): a change asks for an election.
func sessionStates(s *v1alpha1.NodeNetworkStatus) []string {
	out := make([]string, len(s.Status.Sessions))
	for i, ss := range s.Status.Sessions {
		since := ""
		if ss.Since != nil {
			since = ss.Since.UTC().String()
		}
		out[i] = ss.Peer + " " + ss.Kind + " " + ss.State + " " + since
	}
	return out
}

// reflectorHealth says whether a node can serve as a reflector, from its Node, its own
// NodeNetworkStatus and its clients' reports (reflectorReports): a Node NotReady, a
// status missing or stale, or more than half of the fresh reporters with a reflector
// session to it reporting that session down for longer than downGrace (not counted
// before notBefore: a new election's probation), make it dead. recheck is when a session
// seen down will have been down for downGrace (zero: none pending).
func reflectorHealth(n *corev1.Node, own *v1alpha1.NodeNetworkStatus, reports map[string][]sessionReport,
	now, notBefore time.Time, downGrace time.Duration) (alive bool, why string, recheck time.Time) {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
			return false, fmt.Sprintf("Node is NotReady (%s)", c.Reason), time.Time{}
		}
	}
	switch {
	case own == nil || own.Status.Updated == nil:
		return false, "its agent has not reported yet", time.Time{}
	case now.Sub(own.Status.Updated.Time) > statusStale:
		return false, fmt.Sprintf("its agent has not reported for %s", now.Sub(own.Status.Updated.Time).Round(time.Second)), time.Time{}
	}
	seen, down := 0, 0
	counted := map[string]bool{} // a client counts once, by its first session to the node
	for _, a := range n.Status.Addresses {
		ip, err := netip.ParseAddr(a.Address)
		if a.Type != corev1.NodeInternalIP || err != nil {
			continue
		}
		for _, s := range reports[ip.Unmap().String()] {
			if s.client == n.Name || counted[s.client] {
				continue
			}
			counted[s.client] = true
			seen++
			if s.up {
				continue
			}
			since := s.since
			if since.Before(notBefore) {
				since = notBefore
			}
			if now.Sub(since) >= downGrace {
				down++
			} else if at := since.Add(downGrace); recheck.IsZero() || at.Before(recheck) {
				recheck = at
			}
		}
	}
	if seen > 0 && 2*down > seen {
		return false, fmt.Sprintf("%d of %d clients report their session to it down for %s or more", down, seen, downGrace), time.Time{}
	}
	return true, "", recheck
}

// reflectorsKey is the one work item of the election.
var reflectorsKey = key{kind: "reflectors"}

// syncReflectors runs the election when spec.routeReflectors asks for reflectors and
// writes status.routeReflectors when the choice changed. The returned delay asks for
// another pass when a session seen down may pass the grace.
func (c *Controller) syncReflectors(ctx context.Context) (time.Duration, error) {
	conf := c.bgpConfig()
	if conf == nil {
		return 0, nil
	}
	el := conf.Spec.RouteReflectors
	if el == nil || el.Count == 0 {
		if len(conf.Status.RouteReflectors) == 0 && conf.Status.Message == "" {
			return 0, nil
		}
		conf = conf.DeepCopy()
		conf.Status = v1alpha1.BGPConfigurationStatus{}
		_, err := c.hr.BGPConfigurations.UpdateStatus(ctx, conf)
		return 0, err
	}
	topo := cmp.Or(el.TopologyKey, DefaultTopologyKey)
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return 0, err
	}
	var statuses []*v1alpha1.NodeNetworkStatus
	own := map[string]*v1alpha1.NodeNetworkStatus{}
	for _, o := range c.statuses.GetStore().List() {
		s := o.(*v1alpha1.NodeNetworkStatus)
		statuses, own[s.Name] = append(statuses, s), s
	}
	now := time.Now()
	reports := reflectorReports(statuses, now)
	var notBefore time.Time
	if ch := conf.Status.Changed; ch != nil {
		notBefore = ch.Add(reflectorProbation)
	}
	var in []rrNode
	var recheck time.Time
	for _, n := range nodes {
		nb, err := routing.NodeBGPOf(n, conf)
		if err != nil {
			continue // no address yet, or bad annotations: not a BGP node
		}
		alive, why, at := reflectorHealth(n, own[n.Name], reports, now, notBefore, c.cfg.ReflectorDownGrace)
		if !at.IsZero() && (recheck.IsZero() || at.Before(recheck)) {
			recheck = at
		}
		in = append(in, rrNode{Name: n.Name, AS: nb.AS, Domain: n.Labels[topo], Label: n.Labels[v1alpha1.LabelRouteReflector], Alive: alive, Why: why})
	}
	elected, notes := electReflectors(conf.Status.RouteReflectors, in, int(el.Count))
	for _, note := range notes {
		c.log.Info("route reflector election", "note", note)
	}
	msg := strings.Join(notes, "; ")
	if slices.Equal(elected, conf.Status.RouteReflectors) && (msg == "" || msg == conf.Status.Message) {
		return delayUntil(recheck, now), nil
	}
	conf = conf.DeepCopy()
	if !slices.Equal(elected, conf.Status.RouteReflectors) {
		conf.Status.Changed = &metav1.Time{Time: now}
	}
	conf.Status.RouteReflectors = elected
	if msg != "" {
		conf.Status.Message = msg
	}
	if _, err := c.hr.BGPConfigurations.UpdateStatus(ctx, conf); err != nil {
		return 0, fmt.Errorf("write the elected route reflectors: %w", err)
	}
	c.log.Info("route reflectors elected", "reflectors", elected, "count", el.Count, "topologyKey", topo)
	return delayUntil(recheck, now), nil
}

func delayUntil(at, now time.Time) time.Duration {
	if at.IsZero() {
		return 0
	}
	return max(at.Sub(now), 10*time.Millisecond) + 10*time.Millisecond
}

func (c *Controller) bgpConfig() *v1alpha1.BGPConfiguration {
	o, ok, _ := c.bgpConfigs.GetStore().GetByKey("default")
	if !ok {
		return nil
	}
	return o.(*v1alpha1.BGPConfiguration)
}
