package routing

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// Defaults used when the BGPConfiguration is missing or leaves a field unset. They are
// written into every PeerConfig explicitly so the peer set is self-describing in status.
const (
	DefaultAS           uint32 = 64512
	DefaultHoldTime            = 90 * time.Second
	DefaultKeepalive           = 30 * time.Second
	DefaultConnectRetry        = 5 * time.Second
	DefaultRestartTime         = 120 * time.Second
	// maxRestartTime is the largest restart time the 12-bit RFC 4724 field can carry.
	maxRestartTime = 4095 * time.Second
	// nodeEBGPTTL is used for eBGP sessions between nodes (AS-per-rack): nodes in
	// different racks are routed, not directly connected, so TTL 1 would never connect.
	nodeEBGPTTL = 255
)

// ErrNoAddress means a Node has no usable InternalIP yet. ComputePeers skips such other
// nodes without a Problem: it is the normal state of a node that is still joining.
var ErrNoAddress = errors.New("no InternalIP address")

// PeerInputs is everything the peer set depends on, already read by the caller, so the
// computation stays pure and can be re-run on every informer event.
type PeerInputs struct {
	Config  *v1alpha1.BGPConfiguration // nil: defaults
	Peers   []*v1alpha1.BGPPeer
	Nodes   []*corev1.Node    // all nodes, including this one
	Secrets map[string]string // "namespace/name/key" → password
	// SecretErrors says why a password could not be read ("namespace/name/key" → reason,
	// e.g. outside the namespace the agent may read Secrets in), so the Problem names the
	// cause rather than "not found".
	SecretErrors map[string]string
}

// NodeBGP is a node's BGP identity as derived from its Node object.
type NodeBGP struct {
	Name     string
	Address  netip.Addr // first IPv4 InternalIP
	Address6 netip.Addr // first IPv6 InternalIP
	AS       uint32
	RouterID netip.Addr
	// ReflectorClusterID is non-empty exactly when the node is a route reflector.
	ReflectorClusterID string
}

// IsReflector reports whether the node reflects routes for its clients.
func (n NodeBGP) IsReflector() bool { return n.ReflectorClusterID != "" }

// PeerSet is one node's desired neighbours.
type PeerSet struct {
	Local NodeBGP
	Peers []PeerConfig // sorted by Address
	// Transition is true while nodeToNodeMesh is on and route reflectors exist. Every
	// mesh session that the reflector design does not replace is kept, so each node
	// keeps a path to every other node while the reflector sessions come up (make before
	// break). The operator turns nodeToNodeMesh off once the reflector sessions are
	// Established everywhere (routectl status --all); the agent then drops the mesh
	// sessions, and SetPeers removes them only after the new set is in place.
	Transition bool
	// Problems are human-readable, one per bad input; the rest of the set is still valid.
	Problems []string
}

// ComputePeers returns node self's neighbours. It fails only when self cannot run BGP
// (not found, no address, bad annotations); any other bad input becomes a Problem and
// only that neighbour (or import entry) is left out, so one typo cannot take down the
// node's other sessions. The result does not depend on the order of the inputs.
//
// Node fields never steer peering (see peerableNodes): a node whose address is a
// BGPPeer's peerIP (any BGPPeer, whatever it selects) or another node's address has no
// node sessions at all, on either end, and the BGPPeer keeps its session.
func ComputePeers(self string, in PeerInputs) (PeerSet, error) {
	nodes := sortedByName(in.Nodes, func(n *corev1.Node) string { return n.Name })
	i := slices.IndexFunc(nodes, func(n *corev1.Node) bool { return n.Name == self })
	if i < 0 {
		return PeerSet{}, fmt.Errorf("node %q not found", self)
	}
	selfNode := nodes[i]
	var ps PeerSet
	problem := func(format string, a ...any) { ps.Problems = append(ps.Problems, fmt.Sprintf(format, a...)) }
	bgpPeers := sortedByName(in.Peers, func(p *v1alpha1.BGPPeer) string { return p.Name })
	local, others, left, err := peerableNodes(self, nodes, bgpPeers, in.Config, problem)
	if err != nil {
		return PeerSet{}, err
	}
	ps.Local = local
	taken := map[netip.Addr]string{} // neighbour address → what already uses it
	add := func(p PeerConfig, what string) bool {
		if prev, ok := taken[p.Address]; ok {
			problem("%s: address %s is already used by %s; skipped", what, p.Address, prev)
			return false
		}
		taken[p.Address] = what
		ps.Peers = append(ps.Peers, p)
		return true
	}
	// A node that is left out (others is then empty) counts as a reflector for no one,
	// as in the other nodes' view, which do not see it at all.
	reflectors := local.IsReflector() && !left
	for _, o := range others {
		reflectors = reflectors || o.IsReflector()
	}
	var spec v1alpha1.BGPConfigurationSpec
	if in.Config != nil {
		spec = in.Config.Spec
	}
	mesh := spec.NodeToNodeMesh == nil || *spec.NodeToNodeMesh
	ps.Transition = mesh && reflectors

	base := PeerConfig{LocalAS: local.AS, BFD: spec.BFD != nil && spec.BFD.Enabled}
	var why string
	base.HoldTime, base.KeepaliveInterval, base.ConnectRetry, why = resolveTimers(spec.Timers)
	if why != "" {
		problem("BGPConfiguration: %s", why)
	}
	base.GracefulRestart, base.RestartTime = resolveGR(spec.GracefulRestart)
	myReflectors := 0
	for _, o := range others {
		kind, ok := relation(local, o, mesh, reflectors)
		if !ok {
			continue
		}
		p, why := nodeSession(base, local, o, kind)
		if why != "" {
			problem("Node %s: %s; not peered", o.Name, why)
			continue
		}
		if add(p, "Node "+o.Name) && kind == KindReflector {
			myReflectors++
		}
	}

	externals := 0
	for _, bp := range bgpPeers {
		p, ok, whys := externalPeer(bp, local, selfNode.Labels, spec, in.Secrets, in.SecretErrors)
		for _, w := range whys {
			problem("BGPPeer %s: %s", bp.Name, w)
		}
		if ok && add(p, "BGPPeer "+bp.Name) {
			externals++
		}
	}

	switch {
	case left: // the Problem that left it out says why it has no node sessions
	case !mesh && !reflectors && externals == 0:
		problem("no BGP peers: nodeToNodeMesh is off and no route reflectors or BGPPeers select this node")
	case reflectors && !local.IsReflector() && myReflectors == 0 && externals == 0:
		problem("no route reflector in AS %d: without nodeToNodeMesh this node peers with no other node", local.AS)
	}
	slices.SortFunc(ps.Peers, func(a, b PeerConfig) int {
		return cmp.Or(a.Address.Compare(b.Address), strings.Compare(a.Name, b.Name))
	})
	slices.Sort(ps.Problems)
	ps.Problems = slices.Compact(ps.Problems)
	return ps, nil
}

// relation says whether self has a session with other and of which kind. With
// reflectors, only iBGP pairs become reflector/client (a reflector in another AS would
// not reflect to us); during the transition every pair the reflector design leaves
// unconnected keeps its mesh session, which makes both sides agree on each session.
func relation(self, other NodeBGP, mesh, reflectors bool) (PeerKind, bool) {
	switch {
	case !reflectors:
		return KindMesh, mesh
	case self.IsReflector() && other.IsReflector():
		return KindMesh, true
	case self.IsReflector() && self.AS == other.AS:
		return KindReflectorClient, true
	case other.IsReflector() && self.AS == other.AS:
		return KindReflector, true
	}
	return KindMesh, mesh
}

// nodeSession builds a node-to-node session. It runs over IPv4 when both nodes have an
// IPv4 address (and then also carries IPv6 when both have one, so dual-stack needs one
// session per pair), over IPv6 when both have only IPv6.
func nodeSession(p PeerConfig, self, o NodeBGP, kind PeerKind) (PeerConfig, string) {
	both6 := self.Address6.IsValid() && o.Address6.IsValid()
	var mine netip.Addr
	switch {
	case self.Address.IsValid() && o.Address.IsValid():
		mine, p.Address, p.IPv4, p.IPv6 = self.Address, o.Address, true, both6
	case both6:
		mine, p.Address, p.IPv6 = self.Address6, o.Address6, true
	default:
		return p, "no address family in common with this node"
	}
	if mine == p.Address {
		return p, fmt.Sprintf("has this node's address %s", mine)
	}
	p.PeerAS, p.Kind, p.Name = o.AS, kind, o.Name
	switch kind {
	case KindMesh:
		// Exactly one side dials, so the two never race into a collision.
		p.Passive = mine.Less(p.Address)
	case KindReflectorClient:
		p.RouteReflectorClient, p.ClusterID, p.Passive = true, self.ReflectorClusterID, true
	}
	if p.PeerAS != p.LocalAS {
		p.EBGPMultihopTTL = nodeEBGPTTL
	}
	return p, ""
}

// externalPeer turns a non-nil BGPPeer into a session if it selects the node. ok is
// false when the peer does not apply or is unusable; whys explain what was wrong (an
// import entry can be wrong while the peer is still used).
func externalPeer(bp *v1alpha1.BGPPeer, local NodeBGP, nodeLabels map[string]string,
	spec v1alpha1.BGPConfigurationSpec, secrets, secretErrs map[string]string) (p PeerConfig, ok bool, whys []string) {
	s := bp.Spec
	sel, err := metav1.LabelSelectorAsSelector(s.NodeSelector)
	if s.NodeSelector == nil { // nil selects every node here, Nothing in apimachinery
		sel, err = labels.Everything(), nil
	}
	if err != nil {
		return p, false, []string{fmt.Sprintf("invalid nodeSelector: %v; peer skipped", err)}
	}
	if !sel.Matches(labels.Set(nodeLabels)) {
		return p, false, nil
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(s.PeerIP))
	if err != nil || addr.Zone() != "" || addr.IsUnspecified() {
		return p, false, []string{fmt.Sprintf("peerIP %q is not an IP address; peer skipped", s.PeerIP)}
	}
	addr = addr.Unmap()
	if addr == local.Address || addr == local.Address6 {
		return p, false, nil // the node is this neighbour itself (e.g. it is the route server)
	}
	if (addr.Is4() && !local.Address.IsValid()) || (addr.Is6() && !local.Address6.IsValid()) {
		return p, false, []string{fmt.Sprintf("peerIP %s is of an address family this node has no address in; peer skipped", addr)}
	}
	if s.ASNumber < 1 || s.ASNumber > 4294967295 {
		return p, false, []string{fmt.Sprintf("asNumber %d is outside 1..4294967295; peer skipped", s.ASNumber)}
	}
	if s.EBGPMultihop < 0 || s.EBGPMultihop > 255 {
		return p, false, []string{fmt.Sprintf("ebgpMultihop %d is outside 1..255; peer skipped", s.EBGPMultihop)}
	}
	p = PeerConfig{Address: addr, PeerAS: uint32(s.ASNumber), LocalAS: local.AS, Kind: KindExternal,
		Name: bp.Name, EBGPMultihopTTL: uint8(s.EBGPMultihop), IPv4: addr.Is4(), IPv6: addr.Is6()}
	if r := s.PasswordSecretRef; r != nil {
		key := r.Namespace + "/" + r.Name + "/" + r.Key
		if why, bad := secretErrs[key]; bad {
			return p, false, []string{fmt.Sprintf("password Secret %s/%s: %s; peer skipped", r.Namespace, r.Name, why)}
		}
		pw, found := secrets[key]
		if !found {
			return p, false, []string{fmt.Sprintf("password Secret %s/%s key %q not found; peer skipped", r.Namespace, r.Name, r.Key)}
		}
		p.Password = pw
	}
	var why string
	if p.HoldTime, p.KeepaliveInterval, p.ConnectRetry, why = resolveTimers(spec.Timers, s.Timers); why != "" {
		whys = append(whys, why)
	}
	p.GracefulRestart, p.RestartTime = resolveGR(spec.GracefulRestart, s.GracefulRestart)
	p.BFD = spec.BFD != nil && spec.BFD.Enabled
	if s.BFD != nil {
		p.BFD = s.BFD.Enabled
	}
	for _, m := range s.Import {
		pfx, err := netip.ParsePrefix(strings.TrimSpace(m.CIDR))
		if err != nil {
			whys = append(whys, fmt.Sprintf("import cidr %q is not a CIDR; entry skipped", m.CIDR))
			continue
		}
		pr := PrefixRange{Prefix: pfx.Masked()}
		if m.MaxLength != nil {
			if pr.MaxLen = int(*m.MaxLength); pr.MaxLen < pfx.Bits() || pr.MaxLen > pfx.Addr().BitLen() {
				whys = append(whys, fmt.Sprintf("import %s maxLength %d is outside %d..%d; entry skipped",
					pr.Prefix, pr.MaxLen, pfx.Bits(), pfx.Addr().BitLen()))
				continue
			}
		}
		p.Import = append(p.Import, pr)
	}
	return p, true, whys
}

// resolveTimers merges timer layers, later ones (the BGPPeer) overriding earlier ones
// (the cluster) field by field. A keepalive is inherited only together with the hold
// time it was chosen for: a layer that sets holdTime alone gets a third of it, so a
// short peer hold time never inherits the cluster's longer keepalive.
func resolveTimers(layers ...*v1alpha1.BGPTimers) (hold, keep, retry time.Duration, why string) {
	hold, retry = DefaultHoldTime, DefaultConnectRetry
	var keepSet bool
	for _, t := range layers {
		if t == nil {
			continue
		}
		if t.HoldTime != nil {
			hold, keepSet = t.HoldTime.Duration, false
		}
		if t.KeepaliveTime != nil {
			keep, keepSet = t.KeepaliveTime.Duration, true
		}
		if t.ConnectRetryTime != nil {
			retry = t.ConnectRetryTime.Duration
		}
	}
	if hold < 0 || (hold > 0 && hold < 3*time.Second) {
		why = fmt.Sprintf("holdTime %s must be 0 or at least 3s; using %s", hold, DefaultHoldTime)
		hold, keepSet = DefaultHoldTime, false
	}
	if !keepSet {
		keep = hold / 3
	}
	if keep < 0 || (hold > 0 && keep >= hold) || (hold == 0 && keep != 0) {
		why = fmt.Sprintf("keepaliveTime %s must be shorter than holdTime %s; using %s", keep, hold, hold/3)
		keep = hold / 3
	}
	if retry <= 0 {
		retry = DefaultConnectRetry
	}
	return hold, keep, retry, why
}

// resolveGR merges graceful-restart layers like resolveTimers. GR is on unless turned
// off, because it is what keeps routes in place while an agent restarts.
func resolveGR(layers ...*v1alpha1.GracefulRestart) (bool, time.Duration) {
	on, rt := true, DefaultRestartTime
	for _, g := range layers {
		if g == nil {
			continue
		}
		if g.Enabled != nil {
			on = *g.Enabled
		}
		if g.RestartTime != nil && g.RestartTime.Duration > 0 {
			rt = min(g.RestartTime.Duration, maxRestartTime)
		}
	}
	if !on {
		return false, 0
	}
	return true, rt
}

func clusterAS(cfg *v1alpha1.BGPConfiguration) (uint32, error) {
	if cfg == nil || cfg.Spec.ASNumber == 0 {
		return DefaultAS, nil
	}
	if cfg.Spec.ASNumber < 1 || cfg.Spec.ASNumber > 4294967295 {
		return 0, fmt.Errorf("BGPConfiguration asNumber %d is outside 1..4294967295", cfg.Spec.ASNumber)
	}
	return uint32(cfg.Spec.ASNumber), nil
}

// sortedByName copies xs without nils, sorted by name, so list order from an informer
// never changes the result (including which of two conflicting inputs wins).
func sortedByName[T any](xs []*T, name func(*T) string) []*T {
	out := make([]*T, 0, len(xs))
	for _, x := range xs {
		if x != nil {
			out = append(out, x)
		}
	}
	slices.SortStableFunc(out, func(a, b *T) int { return strings.Compare(name(a), name(b)) })
	return out
}
