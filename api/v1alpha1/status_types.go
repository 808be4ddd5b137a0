package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeNetworkStatus is one node's network state as its agent last reported it.
// Its name is the node's name.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=nns
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Healthy",type=string,JSONPath=`.status.conditions[?(@.type=="Healthy")].status`
// +kubebuilder:printcolumn:name="Sessions",type=string,JSONPath=`.status.sessionsSummary`
// +kubebuilder:printcolumn:name="Routes",type=integer,JSONPath=`.status.routes.kernel`
// +kubebuilder:printcolumn:name="Updated",type=date,JSONPath=`.status.updated`
type NodeNetworkStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status NodeNetworkStatusStatus `json:"status,omitempty"`
}

// NodeNetworkStatusStatus is the reported state.
type NodeNetworkStatusStatus struct {
	// Updated is when the agent last wrote this status.
	// +optional
	Updated *metav1.Time `json:"updated,omitempty"`
	// AgentVersion is the agent's version.
	// +optional
	AgentVersion string `json:"agentVersion,omitempty"`
	// RouterID and ASNumber the node's speaker uses.
	// +optional
	RouterID string `json:"routerID,omitempty"`
	// +optional
	ASNumber int64 `json:"asNumber,omitempty"`
	// Sessions are the node's BGP sessions.
	// +optional
	// +listType=atomic
	Sessions []BGPSessionStatus `json:"sessions,omitempty"`
	// SessionsSummary is "established/total", for kubectl's table.
	// +optional
	SessionsSummary string `json:"sessionsSummary,omitempty"`
	// Blocks are the node's blocks and their use.
	// +optional
	// +listType=atomic
	Blocks []BlockUsage `json:"blocks,omitempty"`
	// PoolsNeeded are the IPPools the node's pods take addresses from (by their
	// annotations, their namespace's, or namespaceSelector), in name order: the controller
	// keeps the node supplied with a block of each, as it does with the pools that serve
	// every namespace.
	// +optional
	// +listType=set
	PoolsNeeded []string `json:"poolsNeeded,omitempty"`
	// AddressesNeeded are fixed addresses (hostroute.io/ip-addrs) of the node's pods that
	// lie in no block of the node yet, sorted: the controller assigns the node the block
	// holding each, when no other node holds it.
	// +optional
	// +listType=set
	AddressesNeeded []string `json:"addressesNeeded,omitempty"`
	// Routes counts the kernel routes hostroute owns, and how they differ from the RIB.
	// +optional
	Routes RouteCounts `json:"routes,omitempty"`
	// LastError is the most recent error, cleared when the agent is healthy again.
	// +optional
	LastError string `json:"lastError,omitempty"`
	// Conditions: Healthy.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BGPSessionStatus is one BGP session of a node.
type BGPSessionStatus struct {
	Peer string `json:"peer"`
	// Kind is mesh, reflector, reflector-client or external.
	Kind    string `json:"kind"`
	PeerRef string `json:"peerRef,omitempty"`
	LocalAS int64  `json:"localAS"`
	PeerAS  int64  `json:"peerAS"`
	// State is the BGP FSM state (Idle, Connect, Active, OpenSent, OpenConfirm, Established).
	State string       `json:"state"`
	Since *metav1.Time `json:"since,omitempty"`
	// BFDState is Down, Init, Up, AdminDown, or empty when BFD is off.
	// +optional
	BFDState   string `json:"bfdState,omitempty"`
	Received   int64  `json:"received"`
	Accepted   int64  `json:"accepted"`
	Advertised int64  `json:"advertised"`
	// +optional
	LastError string `json:"lastError,omitempty"`
}

// BlockUsage is one block and how full it is.
type BlockUsage struct {
	CIDR     string `json:"cidr"`
	InUse    int32  `json:"inUse"`
	Capacity int32  `json:"capacity"`
}

// RouteCounts compares the kernel with what hostroute wants there.
type RouteCounts struct {
	Kernel  int32 `json:"kernel"`
	Missing int32 `json:"missing"`
	Stale   int32 `json:"stale"`
}

// NodeNetworkStatusList is a list of NodeNetworkStatus.
//
// +kubebuilder:object:root=true
type NodeNetworkStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeNetworkStatus `json:"items"`
}
