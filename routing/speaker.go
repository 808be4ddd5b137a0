package routing

import (
	"context"
	"net/netip"
	"time"
)

// PeerKind says why a node peers with a neighbour.
type PeerKind string

// Peer kinds.
const (
	KindMesh            PeerKind = "mesh"             // node-to-node full mesh
	KindReflector       PeerKind = "reflector"        // this node is a client of a reflector node
	KindReflectorClient PeerKind = "reflector-client" // this node reflects for a client node
	KindExternal        PeerKind = "external"         // a BGPPeer (ToR, route server)
)

// PeerConfig is one BGP neighbour as the speaker must configure it.
type PeerConfig struct {
	Address  netip.Addr
	PeerAS   uint32
	LocalAS  uint32
	Kind     PeerKind
	Name     string // the BGPPeer or Node it comes from, for status and logs
	Password string // TCP-MD5; empty = none
	// Passive waits for the neighbour to connect (exactly one side of a session dials).
	Passive           bool
	HoldTime          time.Duration // 0 = default 90s
	KeepaliveInterval time.Duration // 0 = hold/3
	ConnectRetry      time.Duration // 0 = 5s
	EBGPMultihopTTL   uint8         // 0 = directly connected
	// RouteReflectorClient makes this node reflect routes to the neighbour, with ClusterID.
	RouteReflectorClient bool
	ClusterID            string
	GracefulRestart      bool
	RestartTime          time.Duration
	// LocalRestarting sets the restart flag: only when our forwarding state survived.
	LocalRestarting bool
	BFD             bool
	// Families to negotiate; empty = the address family of Address.
	IPv4, IPv6 bool
	// Import lists the prefixes accepted from an external neighbour (nothing when empty).
	Import []PrefixRange
}

// Families are the address families the session negotiates: IPv4 and IPv6 as set, or
// the family of Address when neither is.
func (p PeerConfig) Families() (v4, v6 bool) {
	if !p.IPv4 && !p.IPv6 {
		return p.Address.Is4(), !p.Address.Is4()
	}
	return p.IPv4, p.IPv6
}

// PrefixRange matches Prefix and more specifics up to MaxLen (MaxLen 0 = exact).
type PrefixRange struct {
	Prefix netip.Prefix
	MaxLen int
}

// PeerState is one neighbour's session as the speaker reports it.
type PeerState struct {
	Config     PeerConfig
	State      string // Idle, Connect, Active, OpenSent, OpenConfirm, Established
	Since      time.Time
	Received   uint64
	Accepted   uint64
	Advertised uint64
	LastError  string
}

// BestPath is the set of equal-cost best next hops for a prefix (empty NextHops = gone).
type BestPath struct {
	Prefix   netip.Prefix
	NextHops []netip.Addr
	// Stale is true while the paths are kept for a restarting peer (graceful restart).
	Stale bool
}

// GlobalConfig configures the local speaker.
type GlobalConfig struct {
	AS       uint32
	RouterID netip.Addr
	// ListenPort: 0 = 179, -1 = do not listen.
	ListenPort      int32
	ListenAddresses []string
}

// Speaker is the narrow BGP interface the node agent uses.
type Speaker interface {
	Start(ctx context.Context, g GlobalConfig) error
	// Stop sends a Cease to every neighbour (they withdraw at once) and stops.
	Stop() error
	// Advertise and Withdraw the node's own prefixes, next hop = nextHop.
	Advertise(prefix netip.Prefix, nextHop netip.Addr) error
	Withdraw(prefix netip.Prefix) error
	// SetPeers makes the neighbour set equal to peers: adds new ones first, then removes
	// the ones that are gone (make before break), and re-creates changed ones.
	SetPeers(peers []PeerConfig) error
	// SetPolicy installs the import/export policy.
	SetPolicy(p Policy) error
	// Peers lists the neighbours with state and counters.
	Peers() ([]PeerState, error)
	// BestPaths returns the current best paths (a full resync).
	BestPaths() ([]BestPath, error)
	// WatchBestPaths calls fn for every change of a prefix's best path set, in order,
	// until ctx ends.
	WatchBestPaths(ctx context.Context, fn func(BestPath)) error
	// ShutdownPeer takes a session down at once (BFD said the neighbour is gone) and
	// withdraws its routes; EnablePeer lets it come back.
	ShutdownPeer(addr netip.Addr, reason string) error
	EnablePeer(addr netip.Addr) error
}

// Policy is what a node imports and exports.
type Policy struct {
	// OwnBlocks are the node's own blocks: exported, never imported back.
	OwnBlocks []netip.Prefix
	// ExtraExports are other prefixes this node exports (e.g. /32s outside its blocks).
	ExtraExports []netip.Prefix
	// BlockOwners maps every assigned block in the cluster to the node address that owns
	// it: a block route is accepted from a mesh/reflector neighbour only when the path's
	// next hop is that owner (no node can hijack another's pods).
	BlockOwners map[netip.Prefix]netip.Addr
	// BlockOwnerAS maps every assigned block to the AS of the node it is assigned to
	// (OwnerMaps builds it with BlockOwners). When it is non-nil, a prefix inside a pool
	// from an external neighbour (a ToR carrying blocks between racks) is accepted only
	// when it is an assigned block, in that neighbour's import list, and its AS path
	// originates in the owner's AS: a node, or the ToR, cannot announce another node's
	// block or a more specific of one through the ToR. Hazards: nil turns that check
	// off, and pool prefixes from external neighbours follow the import list alone; over
	// iBGP (a BGPPeer in the node's own AS) a block's AS path is empty, names no AS and
	// is refused: blocks go between nodes of one AS over the mesh or reflectors.
	BlockOwnerAS map[netip.Prefix]uint32
	// Pools are the pool prefixes; longer prefixes inside a pool follow BlockOwners.
	Pools []netip.Prefix
	// ExternalImports per external neighbour address.
	ExternalImports map[netip.Addr][]PrefixRange
	// NoExportToExternal are prefixes never sent to external neighbours (disableBGPExport).
	NoExportToExternal []netip.Prefix
	// ServiceExports are the Service addresses and ranges this node announces (routing.
	// ServiceRoutes), to external neighbours only: nodes have no use for them.
	ServiceExports []netip.Prefix
	// Tags add attributes to exported routes (ExportAttrs), in order.
	Tags []Tag
	// ExportFilters per external neighbour address: the first matching rule decides
	// whether one of our routes goes to it (Reject: no; Accept: as usual). Their community
	// conditions match the communities Tags give the route for that neighbour.
	ExportFilters map[netip.Addr][]Filter
	// ImportFilters per external neighbour address, before its import list (Accepts).
	ImportFilters map[netip.Addr][]Filter
}
