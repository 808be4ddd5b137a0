package controller

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

func TestReleaseDecision(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	grace := 5 * time.Minute
	const cidr = "10.0.0.0/26"
	empty := &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: cidr}}
	used := &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: cidr},
		Status: v1alpha1.IPAMBlockStatus{Allocations: []v1alpha1.Allocation{{Address: "10.0.0.5"}}}}
	nns := func(ago time.Duration, inUse int32, listed bool) *v1alpha1.NodeNetworkStatus {
		s := &v1alpha1.NodeNetworkStatus{}
		s.Status.Updated = &metav1.Time{Time: now.Add(-ago)}
		if listed {
			s.Status.Blocks = []v1alpha1.BlockUsage{{CIDR: cidr, InUse: inUse}}
		}
		return s
	}
	for _, tc := range []struct {
		name   string
		b      *v1alpha1.IPAMBlock
		nns    *v1alpha1.NodeNetworkStatus
		marked time.Duration // how long ago the node was first seen gone; 0 = now
		want   bool
	}{
		{"no status, just gone, empty block: stale status is no proof", empty, nil, 0, false},
		{"no status, gone for the grace", used, nil, grace, true},
		{"no status, gone for less than the grace", used, nil, grace - time.Second, false},
		{"agent reporting, allocations", used, nns(2*time.Second, 1, true), 10 * grace, false},
		{"agent reporting, block empty in both statuses", empty, nns(2*time.Second, 0, true), 0, true},
		{"agent reporting, agent still counts an address", empty, nns(2*time.Second, 1, true), 0, false},
		{"agent reporting, block not listed by the agent", empty, nns(2*time.Second, 0, false), 0, false},
		{"status older than the fresh window but written after the node went", empty, nns(30*time.Second, 0, true), time.Minute, true},
		{"status written before the node went and not fresh", empty, nns(30*time.Second, 0, true), 10 * time.Second, false},
		{"agent silent for the grace, allocations", used, nns(grace+time.Second, 1, true), 0, true},
		{"agent silent for the grace within the wire precision", used, nns(grace, 1, true), 0, false},
		{"agent silent for less than the grace, allocations", used, nns(grace-time.Second, 1, true), grace, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var marked time.Time
			if tc.marked > 0 {
				marked = now.Add(-tc.marked)
			}
			d := releaseDecision(tc.b, tc.nns, marked, now, grace)
			if d.release != tc.want {
				t.Fatalf("release = %v (%q), want %v", d.release, d.reason, tc.want)
			}
			if !d.release && (d.wait <= 0 || d.wait > freshStatus) {
				t.Fatalf("kept with recheck after %s, want within (0, %s]", d.wait, freshStatus)
			}
		})
	}
}
