package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPPool is a range of pod addresses, cut into blocks that the controller assigns to nodes.
//
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ippool
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="Block",type=integer,JSONPath=`.status.blockSize`
// +kubebuilder:printcolumn:name="Namespaces",type=string,JSONPath=`.spec.namespaceSelector`,priority=1
// +kubebuilder:printcolumn:name="NAT",type=boolean,JSONPath=`.spec.natOutgoing`
// +kubebuilder:printcolumn:name="Disabled",type=boolean,JSONPath=`.spec.disabled`
// +kubebuilder:printcolumn:name="Blocks",type=string,JSONPath=`.status.blocksSummary`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IPPoolSpec   `json:"spec"`
	Status IPPoolStatus `json:"status,omitempty"`
}

// IPPoolSpec is what an operator asks of a pool.
//
// +kubebuilder:validation:XValidation:rule="!has(self.blockSize) || !isCIDR(self.cidr) || (cidr(self.cidr).ip().family() == 4 ? (self.blockSize >= 20 && self.blockSize <= 32) : (self.blockSize >= 116 && self.blockSize <= 128))",message="blockSize must be between 20 and 32 for an IPv4 pool and between 116 and 128 for an IPv6 pool"
// +kubebuilder:validation:XValidation:rule="!has(self.blockSize) || !isCIDR(self.cidr) || self.blockSize >= cidr(self.cidr).prefixLength()",message="blockSize must not be shorter than the pool's prefix length"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self.cidr) || has(self.blockSize) || cidr(self.cidr).prefixLength() <= (cidr(self.cidr).ip().family() == 4 ? 26 : 122)",message="the pool is smaller than the default block (/26 for IPv4, /122 for IPv6): set blockSize"
// +kubebuilder:validation:XValidation:rule="has(self.blockSize) == has(oldSelf.blockSize)",message="blockSize is immutable: create a new pool, disable this one and drain it"
type IPPoolSpec struct {
	// CIDR is the pool's address range, in canonical form (network address, e.g. 10.244.0.0/16).
	//
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="cidr must be an IPv4 or IPv6 prefix such as 10.244.0.0/16 or fd00:10:244::/56"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).masked() == cidr(self)",message="cidr must be the network address of the prefix (host bits zero), e.g. 10.244.0.0/16"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="cidr is immutable: create a new pool, disable this one and drain it"
	CIDR string `json:"cidr"`

	// BlockSize is the prefix length of the blocks handed to nodes.
	// Defaults to 26 for IPv4 (64 addresses) and 122 for IPv6.
	//
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="blockSize is immutable: create a new pool, disable this one and drain it"
	BlockSize *int32 `json:"blockSize,omitempty"`

	// NodeSelector chooses the nodes that take blocks from this pool. Empty selects every node.
	//
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// NamespaceSelector chooses the namespaces whose pods take addresses from this pool
	// (ANDed with nodeSelector). A pod in a namespace that some pool's namespaceSelector
	// selects takes its addresses from such pools; every other pod from the pools without
	// a namespaceSelector. Absent or empty ({}): the pool serves every namespace and is one of
	// the pools a node gets its first block of each family from.
	//
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// NATOutgoing masquerades traffic from this pool to destinations outside every pool.
	//
	// +optional
	NATOutgoing bool `json:"natOutgoing,omitempty"`

	// Disabled stops new blocks being assigned from this pool. Existing blocks stay in use.
	//
	// +optional
	Disabled bool `json:"disabled,omitempty"`

	// DisableBGPExport keeps this pool's blocks out of BGP advertisements to external peers
	// (the node-to-node mesh still carries them).
	//
	// +optional
	DisableBGPExport bool `json:"disableBGPExport,omitempty"`

	// Attributes the blocks of this pool carry when a node exports them.
	// +optional
	RouteAttributes `json:",inline"`
}

// Annotations on a Namespace or a Pod that name the pools its pods take addresses from, per
// address family: a JSON list (["blue","green"]) or a comma-separated list of IPPool names,
// tried in order. The pod's annotation wins over its namespace's. A pool named here must
// exist, be of the family, and select the pod's node and namespace; otherwise CNI ADD fails
// and says which.
const (
	AnnotationIPv4Pools = "hostroute.io/ipv4pools"
	AnnotationIPv6Pools = "hostroute.io/ipv6pools"
	// AnnotationIPAddrs on a Pod asks for fixed addresses, at most one per family (a JSON
	// list or a comma-separated list: ["10.244.7.5","fd00:10:244::7:5"]). Each must lie in
	// an enabled IPPool whose namespaceSelector admits the pod (its nodeSelector need not
	// select the node: a pool for fixed addresses only selects no node) and in no
	// IPReservation. The pod's node takes the address's whole block; an address whose
	// block another node holds, or that another pod holds, is refused at ADD.
	AnnotationIPAddrs = "hostroute.io/ip-addrs"
)

// IPPool condition types.
const (
	// PoolReady is true when the pool is valid, enabled and has free blocks.
	PoolReady = "Ready"
	// PoolOverlapping is true when the pool overlaps an older pool; it is then never used.
	PoolOverlapping = "Overlapping"
	// PoolExhausted is true when every block of the pool is assigned.
	PoolExhausted = "Exhausted"
)

// IPPoolStatus is what the controller observed of a pool.
type IPPoolStatus struct {
	// BlockSize is the effective block size (the spec's, or the family default).
	// +optional
	BlockSize int32 `json:"blockSize,omitempty"`
	// Blocks is the number of blocks assigned to nodes.
	// +optional
	Blocks int64 `json:"blocks,omitempty"`
	// Capacity is the number of blocks the pool holds (capped at 2^62 for huge IPv6 pools).
	// +optional
	Capacity int64 `json:"capacity,omitempty"`
	// BlocksSummary is "assigned/capacity", for kubectl's table.
	// +optional
	BlocksSummary string `json:"blocksSummary,omitempty"`
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready, Overlapping, Exhausted.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// IPPoolList is a list of IPPools.
//
// +kubebuilder:object:root=true
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPPool `json:"items"`
}
