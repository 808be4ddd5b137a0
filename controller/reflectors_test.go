package controller

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

func TestElectReflectors(t *testing.T) {
	n := func(name, domain string) rrNode { return rrNode{Name: name, AS: 64512, Domain: domain, Alive: true} }
	dead := func(r rrNode) rrNode { r.Alive, r.Why = false, "gone"; return r }
	label := func(r rrNode, v string) rrNode { r.Label = v; return r }
	as := func(r rrNode, a uint32) rrNode { r.AS = a; return r }
	cases := []struct {
		name  string
		prev  []string
		nodes []rrNode
		count int
		want  []string
		note  string // a substring of the notes
	}{
		{"spread across domains", nil, []rrNode{n("a1", "a"), n("a2", "a"), n("b1", "b"), n("b2", "b")}, 2, []string{"a1", "b1"}, "elected"},
		{"three in two domains", nil, []rrNode{n("a1", "a"), n("a2", "a"), n("b1", "b")}, 3, []string{"a1", "a2", "b1"}, ""},
		{"stable: alive ones stay", []string{"a2", "b2"}, []rrNode{n("a1", "a"), n("a2", "a"), n("b1", "b"), n("b2", "b")}, 2, []string{"a2", "b2"}, ""},
		{"a dead one is replaced in its domain", []string{"a1", "b1"}, []rrNode{dead(n("a1", "a")), n("a2", "a"), n("b1", "b"), n("b2", "b")}, 2,
			[]string{"a2", "b1"}, "a1 is no longer a route reflector: gone"},
		{"explicit true counts toward the count", nil, []rrNode{label(n("a1", "a"), "true"), n("a2", "a"), n("b1", "b")}, 2, []string{"b1"}, ""},
		{"explicit false is never elected", nil, []rrNode{label(n("a1", "a"), "false"), n("a2", "a"), n("b1", "b")}, 2, []string{"a2", "b1"}, ""},
		{"a node labelled later leaves the election", []string{"a1", "b1"}, []rrNode{label(n("a1", "a"), "false"), n("a2", "a"), n("b1", "b")}, 2, []string{"a2", "b1"}, ""},
		{"count lowered drops from the crowded domain", []string{"a1", "a2", "b1"}, []rrNode{n("a1", "a"), n("a2", "a"), n("b1", "b")}, 2, []string{"a1", "b1"}, "asks for 2"},
		{"shortfall", nil, []rrNode{n("a1", "a"), dead(n("a2", "a"))}, 2, []string{"a1"}, "1 of 2 route reflectors"},
		{"per AS", nil, []rrNode{n("a1", "a"), as(n("r1", "a"), 64601), as(n("r2", "b"), 64601)}, 1, []string{"a1", "r1"}, ""},
		{"dead never elected", nil, []rrNode{dead(n("a1", "a")), n("b1", "b")}, 1, []string{"b1"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, notes := electReflectors(c.prev, c.nodes, c.count)
			if !slices.Equal(got, c.want) {
				t.Errorf("elected %v, want %v (notes %q)", got, c.want, notes)
			}
			if c.note != "" && !strings.Contains(strings.Join(notes, "; "), c.note) {
				t.Errorf("notes %q lack %q", notes, c.note)
			}
			again, _ := electReflectors(got, c.nodes, c.count)
			if !slices.Equal(again, got) {
				t.Errorf("not stable: a second election gives %v after %v", again, got)
			}
		})
	}
}

func TestReflectorHealth(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(-d)} }
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "rr"}, Status: corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.1"}}}}
	own := &v1alpha1.NodeNetworkStatus{ObjectMeta: metav1.ObjectMeta{Name: "rr"}, Status: v1alpha1.NodeNetworkStatusStatus{Updated: at(time.Second)}}
	report := func(name, state string, since time.Duration) *v1alpha1.NodeNetworkStatus {
		return &v1alpha1.NodeNetworkStatus{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: v1alpha1.NodeNetworkStatusStatus{
			Updated: at(0), Sessions: []v1alpha1.BGPSessionStatus{{Peer: "192.0.2.1", Kind: "reflector", State: state, Since: at(since)}}}}
	}
	notReady := node.DeepCopy()
	notReady.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown, Reason: "NodeStatusUnknown"}}
	stale := own.DeepCopy()
	stale.Status.Updated = at(10 * time.Minute)
	grace := 10 * time.Second
	cases := []struct {
		name      string
		n         *corev1.Node
		own       *v1alpha1.NodeNetworkStatus
		reports   []*v1alpha1.NodeNetworkStatus
		notBefore time.Time
		alive     bool
		recheck   bool
	}{
		{"healthy", node, own, []*v1alpha1.NodeNetworkStatus{report("c1", "Established", time.Minute), report("c2", "Established", time.Minute)}, time.Time{}, true, false},
		{"not ready", notReady, own, nil, time.Time{}, false, false},
		{"never reported", node, nil, nil, time.Time{}, false, false},
		{"stale report", node, stale, nil, time.Time{}, false, false},
		{"most clients see it down past the grace", node, own, []*v1alpha1.NodeNetworkStatus{report("c1", "Active", time.Minute), report("c2", "Idle", time.Minute), report("c3", "Established", time.Minute)}, time.Time{}, false, false},
		{"half is not most", node, own, []*v1alpha1.NodeNetworkStatus{report("c1", "Active", time.Minute), report("c2", "Established", time.Minute)}, time.Time{}, true, false},
		{"down within the grace: recheck", node, own, []*v1alpha1.NodeNetworkStatus{report("c1", "Active", 2*time.Second)}, time.Time{}, true, true},
		{"probation: reports before it do not count", node, own, []*v1alpha1.NodeNetworkStatus{report("c1", "Active", time.Minute)}, now.Add(-5 * time.Second), true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			alive, why, recheck := reflectorHealth(c.n, c.own, reflectorReports(c.reports, now), now, c.notBefore, grace)
			if alive != c.alive || recheck.IsZero() == c.recheck {
				t.Errorf("alive %v (%s), recheck %v; want alive %v, recheck %v", alive, why, recheck, c.alive, c.recheck)
			}
			if !alive && why == "" {
				t.Error("dead without a reason")
			}
		})
	}
}
