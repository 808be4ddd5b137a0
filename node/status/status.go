// Package status turns a node agent's routing state (the Routing RPC's answer) into the
// NodeNetworkStatus the agent publishes, and decides whether the node is healthy. The
// agent (for the Healthy condition and its metrics) and routectl (for its exit code on a
// live `status`) share it, so a node is never healthy to one and unhealthy to the other.
//
// It imports only the API packages: routectl must not link the agent's netlink and BGP
// code, and the CNI plugin (which imports api/agent/v1) must not link this.
package status

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/v1alpha1"
)

// Route states of agentv1.Route.State.
const (
	RouteOK      = "ok"
	RouteMissing = "missing" // wanted, and absent from the kernel or different there
	RouteStale   = "stale"   // in the kernel (hostroute's protocol), not wanted
	RouteKept    = "kept"    // not wanted, kept on purpose during a graceful restart
)

// ConditionHealthy is the condition type the agent sets.
const ConditionHealthy = "Healthy"

// Reasons of the Healthy condition. Health reports the first that applies (in the order
// of its switch), so the reason names what to look at first.
const (
	ReasonNotReady       = "AgentNotReady"
	ReasonNoBlock        = "NoBlock"
	ReasonSessionDown    = "BGPSessionDown"
	ReasonKernelOutOfSyn = "KernelOutOfSync"
	ReasonReconcileError = "ReconcileError"
	ReasonHealthy        = "Healthy"
)

// Established is the BGP FSM state of a working session.
const Established = "Established"

// FromRouting converts the agent's answer into the published status. now stamps Updated.
func FromRouting(r *agentv1.RoutingResponse, now time.Time) v1alpha1.NodeNetworkStatusStatus {
	st := v1alpha1.NodeNetworkStatusStatus{
		RouterID:  r.GetRouterId(),
		ASNumber:  int64(r.GetAsNumber()),
		LastError: r.GetLastError(),
		Routes:    CountsOf(r),
	}
	if !now.IsZero() {
		t := metav1.NewTime(now)
		st.Updated = &t
	}
	up := 0
	for _, s := range r.GetSessions() {
		bs := v1alpha1.BGPSessionStatus{
			Peer: s.GetPeer(), Kind: s.GetKind(), PeerRef: s.GetName(),
			LocalAS: int64(s.GetLocalAs()), PeerAS: int64(s.GetPeerAs()), State: s.GetState(),
			BFDState: s.GetBfdState(), Received: int64(s.GetReceived()), Accepted: int64(s.GetAccepted()),
			Advertised: int64(s.GetAdvertised()), LastError: s.GetLastError(),
		}
		if s.GetSinceUnix() > 0 {
			t := metav1.NewTime(time.Unix(s.GetSinceUnix(), 0))
			bs.Since = &t
		}
		if bs.State == Established {
			up++
		}
		st.Sessions = append(st.Sessions, bs)
	}
	st.SessionsSummary = fmt.Sprintf("%d/%d", up, len(st.Sessions))
	for _, b := range r.GetBlocks() {
		st.Blocks = append(st.Blocks, v1alpha1.BlockUsage{CIDR: b.GetCidr(), InUse: b.GetInUse(), Capacity: b.GetCapacity()})
	}
	healthy, reason, msg := Health(r.GetReady(), r.GetMessage(), &st)
	cond := metav1.Condition{Type: ConditionHealthy, Status: metav1.ConditionTrue, Reason: reason, Message: msg}
	if !healthy {
		cond.Status = metav1.ConditionFalse
	}
	if st.Updated != nil {
		cond.LastTransitionTime = *st.Updated
	}
	st.Conditions = []metav1.Condition{cond}
	return st
}

// CountsOf is the route counts of a routing answer: its tallies when it has them (a
// snapshot that leaves out the rows in order), else counted from its rows.
func CountsOf(r *agentv1.RoutingResponse) v1alpha1.RouteCounts {
	if c := r.GetRouteCounts(); c != nil {
		return v1alpha1.RouteCounts{Kernel: int32(c.GetKernel()), Missing: int32(c.GetMissing()), Stale: int32(c.GetStale())}
	}
	return Counts(r.GetRoutes())
}

// Counts tallies the kernel routes hostroute owns and how they differ from what it wants.
func Counts(routes []*agentv1.Route) v1alpha1.RouteCounts {
	var c v1alpha1.RouteCounts
	for _, r := range routes {
		if r.GetKernelBlackhole() || len(r.GetKernelNextHops()) > 0 {
			c.Kernel++
		}
		switch r.GetState() {
		case RouteMissing:
			c.Missing++
		case RouteStale:
			c.Stale++
		}
	}
	return c
}

// Health decides whether a node is healthy: its agent is ready, it has a block, every
// BGP session is Established, the kernel matches the RIB and the last pass succeeded.
// An idle session is unhealthy even when others carry the traffic: it is lost redundancy
// an operator should hear about.
func Health(ready bool, readyMsg string, st *v1alpha1.NodeNetworkStatusStatus) (healthy bool, reason, message string) {
	var down []string
	for _, s := range st.Sessions {
		if s.State != Established {
			down = append(down, fmt.Sprintf("%s (%s) %s", nameOr(s.PeerRef, s.Peer), s.Peer, s.State))
		}
	}
	// Sessions and blocks come before readiness: the agent is not ready because of them,
	// and they name the peer or the missing block.
	switch {
	case len(st.Blocks) == 0:
		return false, ReasonNoBlock, "the node has no address block"
	case len(down) > 0:
		return false, ReasonSessionDown, fmt.Sprintf("%d of %d BGP sessions not Established: %s",
			len(down), len(st.Sessions), strings.Join(down, ", "))
	case !ready:
		return false, ReasonNotReady, nonEmpty(readyMsg, "agent not ready")
	case st.Routes.Missing > 0 || st.Routes.Stale > 0:
		return false, ReasonKernelOutOfSyn, fmt.Sprintf("kernel differs from the RIB: %d missing, %d stale", st.Routes.Missing, st.Routes.Stale)
	case st.LastError != "":
		return false, ReasonReconcileError, st.LastError
	}
	return true, ReasonHealthy, fmt.Sprintf("%d BGP sessions Established, kernel in sync", len(st.Sessions))
}

// Healthy reads the Healthy condition of a published status; a status older than
// staleAfter is unhealthy whatever it says (its agent stopped reporting).
func Healthy(nns *v1alpha1.NodeNetworkStatus, now time.Time, staleAfter time.Duration) (bool, string) {
	st := nns.Status
	if st.Updated == nil {
		return false, "never reported"
	}
	if age := now.Sub(st.Updated.Time); staleAfter > 0 && age > staleAfter {
		return false, fmt.Sprintf("no report for %s (agent down?)", age.Round(time.Second))
	}
	for _, c := range st.Conditions {
		if c.Type == ConditionHealthy {
			return c.Status == metav1.ConditionTrue, c.Message
		}
	}
	return false, "no Healthy condition"
}

func nameOr(name, fallback string) string { return nonEmpty(name, fallback) }

func nonEmpty(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}
