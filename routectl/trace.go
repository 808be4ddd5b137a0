package routectl

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/v1alpha1"
	nodestatus "github.com/hostroute/hostroute/node/status"
)

// Hop statuses of a trace. Only HopBroken makes the trace (and routectl) exit 1.
const (
	HopOK        = "ok"        // ✔ checked, fine
	HopBroken    = "broken"    // ✘ checked, the packet does not get through here
	HopUnchecked = "unchecked" // ? could not be checked from where routectl runs
	HopNone      = "none"      // - not applicable (BFD not configured, same node)
)

// Hop names, in path order.
const (
	hopSource = "source"
	hopRoute  = "route"
	hopBGP    = "bgp"
	hopBFD    = "bfd"
	hopBlock  = "block"
	hopPod    = "pod"
)

// Hop is one step of the path a packet takes (JSON of `routectl trace`).
type Hop struct {
	Hop    string `json:"hop"`
	Status string `json:"status"`
	Reason string `json:"reason"`
}

// TraceEndpoint is a resolved SRC or DST.
type TraceEndpoint struct {
	// Arg is what was asked for: a pod (namespace/name) or an address.
	Arg string `json:"arg"`
	// Pod is the pod the address belongs to (namespace/name), when one is known.
	Pod   string `json:"pod,omitempty"`
	IP    string `json:"ip,omitempty"`
	Node  string `json:"node,omitempty"`
	Block string `json:"block,omitempty"`
}

// TraceResult is the JSON of `routectl trace`.
type TraceResult struct {
	Source      TraceEndpoint `json:"source"`
	Destination TraceEndpoint `json:"destination"`
	// RanOn is the node whose agent routectl asked ("" when no agent answered).
	RanOn string `json:"ranOn,omitempty"`
	Hops  []Hop  `json:"hops"`
	OK    bool   `json:"ok"`
}

// traceEnd is SRC or DST with what the API server says about it.
type traceEnd struct {
	arg    string
	podRef string      // namespace/name; "" when the address names no pod
	pod    *corev1.Pod // nil: no such Pod object
	ip     netip.Addr  // invalid: the pod has no address
	node   string      // the node the packet leaves from (SRC) or arrives at (DST): the block's owner, else the pod's node
	block  *v1alpha1.IPAMBlock
	alloc  *v1alpha1.Allocation
	host   bool // ip is the node's own address (a host-network source)
}

// kernelPodRoute is the local kernel's host route (/32, /128) to an address.
type kernelPodRoute struct {
	Ifindex  int
	Ifname   string
	Kind     string // the link's kind (veth, dummy, ...); "" for a physical device
	Protocol int
}

// traceInput is everything the hops are judged from; gatherTrace reads it.
type traceInput struct {
	src, dst traceEnd
	// nodeAddrs are every node's InternalIPs.
	nodeAddrs map[string][]netip.Addr
	// statuses are the NodeNetworkStatuses of the source and destination nodes (absent:
	// none published).
	statuses map[string]*v1alpha1.NodeNetworkStatus
	// local is the answer of the agent routectl reached (nil: none; localErr says why).
	local    *agentv1.RoutingResponse
	localErr string
	// kernel is the local kernel's host route to dst, read when local is dst's node
	// (nil: none found, or not read: kernelErr, or local is another node).
	kernel    *kernelPodRoute
	kernelErr string
	now       time.Time
}

// judgeTrace walks the path from src to dst. It is pure: every fact comes from in.
func judgeTrace(in *traceInput) []Hop {
	t := &tracer{in: in, srcNode: in.src.node, dstNode: in.dst.node}
	t.live = in.local != nil && in.local.GetNode() == t.srcNode
	t.same = t.dstNode != "" && t.dstNode == t.srcNode
	hops := []Hop{t.source(), t.route()}
	bgp, carrier := t.bgp()
	hops = append(hops, bgp, t.bfd(carrier), t.block(), t.pod())
	return hops
}

// tracer carries what one hop tells the next: the route found and its next hops.
type tracer struct {
	in               *traceInput
	srcNode, dstNode string
	live, same       bool
	rt               *agentv1.Route // the source node's route to dst (live only)
	nextHops         []string
}

func (t *tracer) source() Hop {
	s := t.in.src
	where := fmt.Sprintf("on %s", s.node)
	if s.block != nil {
		where += fmt.Sprintf(" (block %s)", s.block.Spec.CIDR)
	}
	switch {
	case s.host:
		return Hop{hopSource, HopOK, fmt.Sprintf("%s is %s's own address", s.ip, s.node)}
	case s.pod == nil && s.podRef != "":
		return Hop{hopSource, HopBroken, fmt.Sprintf("pod %s does not exist, though %s is allocated to it %s", s.podRef, s.ip, where)}
	case s.pod == nil:
		return Hop{hopSource, HopBroken, fmt.Sprintf("%s is allocated to no pod %s", s.ip, where)}
	}
	probs := podProblems(s.pod, s.ip)
	if s.block != nil && s.block.Spec.Node != s.node {
		probs = append(probs, fmt.Sprintf("runs on %s, but its address is in %s's block", s.node, orDash(s.block.Spec.Node)))
	}
	if len(probs) > 0 {
		return Hop{hopSource, HopBroken, fmt.Sprintf("pod %s %s", s.podRef, strings.Join(probs, ", "))}
	}
	return Hop{hopSource, HopOK, fmt.Sprintf("pod %s is Running with %s %s", s.podRef, s.ip, where)}
}

// podProblems says what is wrong with a pod that should hold ip.
func podProblems(p *corev1.Pod, ip netip.Addr) []string {
	var probs []string
	if p.DeletionTimestamp != nil {
		probs = append(probs, "is terminating")
	}
	if p.Status.Phase != corev1.PodRunning {
		probs = append(probs, "is "+orDash(string(p.Status.Phase)))
	}
	var have []string
	for _, a := range p.Status.PodIPs {
		have = append(have, a.IP)
	}
	switch {
	case !ip.IsValid() && len(have) == 0:
		probs = append(probs, "has no address")
	case !ip.IsValid():
	case len(have) == 0:
		probs = append(probs, fmt.Sprintf("has no address in its status (the allocation says %s)", ip))
	case !slices.Contains(have, ip.String()):
		probs = append(probs, fmt.Sprintf("has %s, not %s", strings.Join(have, ","), ip))
	}
	return probs
}

func (t *tracer) route() Hop {
	dst := t.in.dst.ip
	if !t.live {
		msg := fmt.Sprintf("not checked live: the source is on %s, ", t.srcNode)
		if t.in.local != nil {
			msg += fmt.Sprintf("routectl runs on %s (run it on %s to check)", t.in.local.GetNode(), t.srcNode)
		} else {
			msg += "and no agent answered here: " + t.in.localErr
		}
		if nns := t.in.statuses[t.srcNode]; nns != nil {
			r := nns.Status.Routes
			msg += fmt.Sprintf("; %s reported %s: %d routes missing, %d stale", t.srcNode, t.reported(nns), r.Missing, r.Stale)
		}
		return Hop{hopRoute, HopUnchecked, msg}
	}
	r := longestMatch(t.in.local.GetRoutes(), dst)
	node := t.srcNode
	if r == nil {
		return Hop{hopRoute, HopBroken, fmt.Sprintf("%s has no route to %s (live)", node, dst)}
	}
	t.rt = r
	switch {
	case len(r.GetKernelNextHops()) > 0:
		t.nextHops = r.GetKernelNextHops()
	case len(r.GetWantNextHops()) > 0:
		t.nextHops = r.GetWantNextHops()
	default:
		t.nextHops = r.GetRibNextHops()
	}
	p := r.GetPrefix()
	if r.GetWantBlackhole() || r.GetKernelBlackhole() {
		if t.same {
			return Hop{hopRoute, HopOK, fmt.Sprintf("%s is %s's own block: delivered on the node (live)", p, node)}
		}
		return Hop{hopRoute, HopBroken, fmt.Sprintf("%s holds %s as its own block (blackhole), but %s is %s",
			node, p, dst, cmp.Or(t.dstNode, "in no node's block"))}
	}
	via := hops(false, t.nextHops)
	if t.same {
		return Hop{hopRoute, HopBroken, fmt.Sprintf("%s routes %s %s, though the block is its own (live)", node, p, via)}
	}
	dead := deadHops(r)
	switch {
	case r.GetState() == nodestatus.RouteMissing:
		return Hop{hopRoute, HopBroken, fmt.Sprintf("%s wants %s %s but its kernel has %s: missing",
			node, p, hops(false, r.GetWantNextHops()), hops(false, r.GetKernelNextHops()))}
	case r.GetState() == nodestatus.RouteStale:
		return Hop{hopRoute, HopBroken, fmt.Sprintf("%s's kernel has %s %s, which BGP no longer offers: stale", node, p, via)}
	case len(r.GetWantNextHops()) == 0 && len(r.GetKernelNextHops()) == 0 && len(r.GetRibNextHops()) > 0:
		return Hop{hopRoute, HopBroken, fmt.Sprintf("the RIB has %s %s but BFD declared %s dead: not in the kernel",
			p, hops(false, r.GetRibNextHops()), strings.Join(dead, ","))}
	case r.GetState() == nodestatus.RouteKept:
		return Hop{hopRoute, HopOK, fmt.Sprintf("%s's kernel keeps %s %s while BGP re-learns it (graceful restart, live)", node, p, via)}
	}
	msg := fmt.Sprintf("%s routes %s %s: RIB best path, in the kernel (live)", node, p, via)
	if len(dead) > 0 {
		msg += fmt.Sprintf("; BFD declared %s dead", strings.Join(dead, ","))
	}
	return Hop{hopRoute, HopOK, msg}
}

// deadHops are the RIB next hops BFD took out of the wanted ones.
func deadHops(r *agentv1.Route) []string {
	if r.GetWantBlackhole() {
		return nil
	}
	var out []string
	for _, h := range r.GetRibNextHops() {
		if !slices.Contains(r.GetWantNextHops(), h) {
			out = append(out, h)
		}
	}
	return out
}

// longestMatch is the most specific route that covers a; rows neither wanted nor in the
// kernel do not count.
func longestMatch(routes []*agentv1.Route, a netip.Addr) *agentv1.Route {
	var best *agentv1.Route
	bits := -1
	for _, r := range routes {
		p, err := netip.ParsePrefix(r.GetPrefix())
		if err != nil || !p.Contains(a) || p.Bits() <= bits {
			continue
		}
		if !r.GetWantBlackhole() && !r.GetKernelBlackhole() && len(r.GetWantNextHops()) == 0 &&
			len(r.GetKernelNextHops()) == 0 && len(r.GetRibNextHops()) == 0 {
			continue
		}
		best, bits = r, p.Bits()
	}
	return best
}

// sessions are the source node's BGP sessions: live, else as it last reported.
func (t *tracer) sessions() ([]v1alpha1.BGPSessionStatus, string, bool) {
	if t.live {
		return nodestatus.FromRouting(t.in.local, t.in.now).Sessions, "live", true
	}
	if nns := t.in.statuses[t.srcNode]; nns != nil {
		return nns.Status.Sessions, "as " + t.srcNode + " reported " + t.reported(nns), true
	}
	return nil, "", false
}

// bgp judges the session the route came from and returns it (nil: none to judge BFD on).
func (t *tracer) bgp() (Hop, *v1alpha1.BGPSessionStatus) {
	if t.same {
		return Hop{hopBGP, HopNone, fmt.Sprintf("not needed: source and destination are on %s", t.srcNode)}, nil
	}
	if t.dstNode == "" && len(t.nextHops) == 0 {
		return Hop{hopBGP, HopNone, fmt.Sprintf("no node to reach: %s is in no block", t.in.dst.ip)}, nil
	}
	ss, from, ok := t.sessions()
	if !ok {
		return Hop{hopBGP, HopUnchecked, fmt.Sprintf("%s's sessions are unknown: no agent here and no NodeNetworkStatus", t.srcNode)}, nil
	}
	noRoute := t.live && t.rt == nil
	// The session to the next hop, or (no route) to the block's owner.
	var primary *v1alpha1.BGPSessionStatus
	for i := range ss {
		s := &ss[i]
		if slices.Contains(t.nextHops, s.Peer) {
			primary = s
			break
		}
		if len(t.nextHops) == 0 && (s.Kind == "mesh" && s.PeerRef == t.dstNode || t.ownerAddr(s.Peer)) {
			primary = s
		}
	}
	if primary != nil {
		desc := t.sessionText(primary)
		switch {
		case primary.State != nodestatus.Established && noRoute:
			return Hop{hopBGP, HopBroken, fmt.Sprintf("session %s: no route (%s)", desc, from)}, primary
		case primary.State != nodestatus.Established && t.rt != nil:
			return Hop{hopBGP, HopBroken, fmt.Sprintf("session %s: the route is left from before it went down (%s)", desc, from)}, primary
		case primary.State != nodestatus.Established:
			return Hop{hopBGP, HopBroken, fmt.Sprintf("session %s (%s)", desc, from)}, primary
		case noRoute:
			return Hop{hopBGP, HopBroken, fmt.Sprintf("session %s, %s received, but none covers %s (%s)",
				desc, prefixes(primary.Received), t.in.dst.ip, from)}, primary
		}
		return Hop{hopBGP, HopOK, fmt.Sprintf("session %s, %s received (%s)", desc, prefixes(primary.Received), from)}, primary
	}
	// No session to the next hop: the route comes over an external session (a ToR) or a
	// route reflector.
	var ext []*v1alpha1.BGPSessionStatus
	var carrier *v1alpha1.BGPSessionStatus
	for i := range ss {
		if s := &ss[i]; s.Kind != "mesh" {
			ext = append(ext, s)
			if carrier == nil && s.State == nodestatus.Established {
				carrier = s
			}
		}
	}
	to := strings.Join(t.nextHops, ",")
	if to == "" {
		to = t.dstNode
		if a := t.in.nodeAddrs[t.dstNode]; len(a) > 0 {
			to += " (" + a[0].String() + ")"
		}
	}
	if len(ext) == 0 {
		return Hop{hopBGP, HopBroken, fmt.Sprintf("no session to %s and no external session (%s)", to, from)}, nil
	}
	var descs []string
	for _, s := range ext {
		descs = append(descs, t.sessionText(s))
	}
	if carrier == nil || noRoute {
		why := "none Established"
		if carrier != nil {
			why = "no route"
		}
		return Hop{hopBGP, HopBroken, fmt.Sprintf("no session to %s; external sessions: %s: %s (%s)", to, strings.Join(descs, "; "), why, from)}, carrier
	}
	return Hop{hopBGP, HopOK, fmt.Sprintf("no session to %s: learned over the external sessions: %s (%s)", to, strings.Join(descs, "; "), from)}, carrier
}

// sessionText names a session and its state: "192.0.2.2 (mesh, node-2) is Active since 12s".
func (t *tracer) sessionText(s *v1alpha1.BGPSessionStatus) string {
	name := s.Kind
	if s.PeerRef != "" {
		name += ", " + s.PeerRef
	}
	state := s.State
	if state != nodestatus.Established {
		state = "is " + state
	}
	out := fmt.Sprintf("%s (%s) %s", s.Peer, name, state)
	if s.Since != nil {
		out += " since " + age(t.in.now, s.Since.Time)
	}
	if s.LastError != "" && s.State != nodestatus.Established {
		out += " (last error: " + s.LastError + ")"
	}
	return out
}

func (t *tracer) ownerAddr(a string) bool {
	for _, x := range t.in.nodeAddrs[t.dstNode] {
		if x.String() == a {
			return true
		}
	}
	return false
}

func (t *tracer) bfd(s *v1alpha1.BGPSessionStatus) Hop {
	switch {
	case t.same:
		return Hop{hopBFD, HopNone, "not needed: no BGP session on the path"}
	case s == nil:
		return Hop{hopBFD, HopNone, "no session to check"}
	case s.BFDState == "":
		return Hop{hopBFD, HopNone, fmt.Sprintf("none configured on session %s", s.Peer)}
	case s.BFDState == "Up":
		return Hop{hopBFD, HopOK, fmt.Sprintf("Up on session %s", s.Peer)}
	}
	return Hop{hopBFD, HopBroken, fmt.Sprintf("%s on session %s: its next hop counts as dead", s.BFDState, s.Peer)}
}

func (t *tracer) block() Hop {
	d := t.in.dst
	if d.block == nil {
		if d.host {
			return Hop{hopBlock, HopOK, fmt.Sprintf("%s is %s's own address, in no block", d.ip, d.node)}
		}
		return Hop{hopBlock, HopBroken, fmt.Sprintf("%s is in no IPAMBlock", d.ip)}
	}
	cidr, owner := d.block.Spec.CIDR, d.block.Spec.Node
	if owner == "" {
		return Hop{hopBlock, HopBroken, fmt.Sprintf("block %s is assigned to no node", cidr)}
	}
	head := fmt.Sprintf("block %s is assigned to %s", cidr, owner)
	if a := t.in.nodeAddrs[owner]; len(a) > 0 {
		head += " (" + joinAddrs(a) + ")"
	}
	var probs, notes []string
	// The next hop must be the block's owner; anything else is a hijack or a stale path.
	if t.rt != nil && !t.same && len(t.nextHops) > 0 {
		var others []string
		for _, h := range t.nextHops {
			if !t.ownerAddr(h) {
				others = append(others, h+t.whose(h))
			}
		}
		switch {
		case len(others) > 0:
			probs = append(probs, fmt.Sprintf("the next hop is %s", strings.Join(others, ",")))
		default:
			notes = append(notes, "the next hop")
		}
		if p := t.rt.GetPrefix(); p != cidr {
			notes = append(notes, "route "+p)
		}
	}
	nns := t.in.statuses[owner]
	switch {
	case nns == nil:
		probs = append(probs, owner+" never published a NodeNetworkStatus")
	default:
		ok, msg := nodestatus.Healthy(nns, t.in.now, staleAfter)
		if !ok {
			if nns.Status.Updated != nil && t.in.now.Sub(nns.Status.Updated.Time) <= staleAfter {
				msg += " (reported " + t.reported(nns) + ")"
			}
			probs = append(probs, fmt.Sprintf("%s is unhealthy: %s", owner, msg))
		} else if !slices.ContainsFunc(nns.Status.Blocks, func(b v1alpha1.BlockUsage) bool { return b.CIDR == cidr }) {
			probs = append(probs, fmt.Sprintf("%s does not report holding it (reported %s)", owner, t.reported(nns)))
		} else {
			notes = append(notes, fmt.Sprintf("%s healthy, reported %s", owner, t.reported(nns)))
		}
	}
	if len(probs) > 0 {
		return Hop{hopBlock, HopBroken, head + " but " + strings.Join(probs, "; ")}
	}
	return Hop{hopBlock, HopOK, head + ": " + strings.Join(notes, "; ")}
}

// whose names the node an address belongs to: " (node-3)".
func (t *tracer) whose(a string) string {
	for n, as := range t.in.nodeAddrs {
		for _, x := range as {
			if x.String() == a {
				return " (" + n + ")"
			}
		}
	}
	return ""
}

func (t *tracer) pod() Hop {
	d := t.in.dst
	if d.host {
		return Hop{hopPod, HopNone, fmt.Sprintf("%s is a node, not a pod", d.ip)}
	}
	if d.pod == nil {
		switch {
		case d.podRef != "" && d.alloc != nil:
			return Hop{hopPod, HopBroken, fmt.Sprintf("pod %s does not exist, but %s is still allocated to it (uid %s) in block %s: leaked? (routectl ipam check)",
				d.podRef, d.ip, orDash(d.alloc.PodUID), d.block.Spec.CIDR)}
		case d.podRef != "":
			return Hop{hopPod, HopBroken, fmt.Sprintf("pod %s does not exist", d.podRef)}
		case d.block != nil:
			return Hop{hopPod, HopBroken, fmt.Sprintf("no pod has %s: it is not allocated in block %s", d.ip, d.block.Spec.CIDR)}
		}
		return Hop{hopPod, HopBroken, fmt.Sprintf("no pod has %s", d.ip)}
	}
	probs := podProblems(d.pod, d.ip)
	if d.block != nil && d.pod.Spec.NodeName != d.block.Spec.Node {
		probs = append(probs, fmt.Sprintf("runs on %s, but its address is in %s's block", orDash(d.pod.Spec.NodeName), d.block.Spec.Node))
	}
	if len(probs) > 0 {
		return Hop{hopPod, HopBroken, fmt.Sprintf("pod %s %s", d.podRef, strings.Join(probs, ", "))}
	}
	head := fmt.Sprintf("pod %s is Running on %s with %s", d.podRef, d.pod.Spec.NodeName, d.ip)
	onDst := t.in.local != nil && t.in.local.GetNode() == d.pod.Spec.NodeName
	if !onDst {
		here := "no agent answered here"
		if t.in.local != nil {
			here = "routectl runs on " + t.in.local.GetNode()
		}
		return Hop{hopPod, HopOK, head + "; checked from the API only (" + here + ")"}
	}
	k := t.in.kernel
	host := netip.PrefixFrom(d.ip, d.ip.BitLen())
	switch {
	case t.in.kernelErr != "":
		return Hop{hopPod, HopUnchecked, head + "; the kernel's route could not be read: " + t.in.kernelErr}
	case k == nil:
		return Hop{hopPod, HopBroken, fmt.Sprintf("%s; but %s's kernel has no route %s (live)", head, d.pod.Spec.NodeName, host)}
	case k.Kind != "veth":
		return Hop{hopPod, HopBroken, fmt.Sprintf("%s; but %s is on dev %s (%s), not a veth (live)", head, host, k.Ifname, cmp.Or(k.Kind, "no link kind"))}
	}
	return Hop{hopPod, HopOK, fmt.Sprintf("%s; kernel: %s dev %s (veth, proto %d, live)", head, host, k.Ifname, k.Protocol)}
}

// reported is how long ago a node published its status: "3s ago".
func (t *tracer) reported(nns *v1alpha1.NodeNetworkStatus) string {
	if nns.Status.Updated == nil {
		return "never"
	}
	return age(t.in.now, nns.Status.Updated.Time) + " ago"
}

func prefixes(n int64) string {
	if n == 1 {
		return "1 prefix"
	}
	return fmt.Sprintf("%d prefixes", n)
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// traceResult is what `routectl trace` prints.
func traceResult(in *traceInput, hops []Hop) TraceResult {
	end := func(e traceEnd) TraceEndpoint {
		te := TraceEndpoint{Arg: e.arg, Pod: e.podRef, Node: e.node}
		if e.ip.IsValid() {
			te.IP = e.ip.String()
		}
		if e.block != nil {
			te.Block = e.block.Spec.CIDR
		}
		return te
	}
	r := TraceResult{Source: end(in.src), Destination: end(in.dst), Hops: hops, OK: true}
	if in.local != nil {
		r.RanOn = in.local.GetNode()
	}
	for _, h := range hops {
		if h.Status == HopBroken {
			r.OK = false
		}
	}
	return r
}

var hopMarks = map[string]string{HopOK: "✔", HopBroken: "✘", HopUnchecked: "?", HopNone: "-"}

// renderTrace prints a header and one line per hop: mark, hop, reason.
func renderTrace(w io.Writer, r TraceResult) {
	end := func(e TraceEndpoint) string {
		s := e.Pod
		if s == "" {
			s = e.IP
		} else if e.IP != "" {
			s += " " + e.IP
		}
		if e.Node != "" {
			s += " (" + e.Node + ")"
		}
		return s
	}
	from := "no agent answered here"
	if r.RanOn != "" {
		from = "routectl on " + r.RanOn
	}
	fmt.Fprintf(w, "trace %s → %s, %s\n", end(r.Source), end(r.Destination), from)
	for _, h := range r.Hops {
		fmt.Fprintf(w, "%s %-7s %s\n", hopMarks[h.Status], h.Hop, h.Reason)
	}
}

// brokenHops is the exit message of a trace with a broken hop ("" when none is).
func brokenHops(r TraceResult) string {
	var bad []string
	for _, h := range r.Hops {
		if h.Status == HopBroken {
			bad = append(bad, h.Hop)
		}
	}
	if len(bad) == 0 {
		return ""
	}
	return fmt.Sprintf("trace %s → %s: %d of %d hops broken: %s", r.Source.Arg, r.Destination.Arg, len(bad), len(r.Hops), strings.Join(bad, ", "))
}
