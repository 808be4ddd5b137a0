package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPAMBlock is one block of a pool, assigned to one node. The controller writes the spec;
// only the agent of spec.node writes the allocations in its status.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ipamblock
// +kubebuilder:subresource:status
// +kubebuilder:selectablefield:JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.pool`
// +kubebuilder:printcolumn:name="Draining",type=boolean,JSONPath=`.spec.draining`,priority=1
// +kubebuilder:printcolumn:name="InUse",type=integer,JSONPath=`.status.inUse`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPAMBlock struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IPAMBlockSpec   `json:"spec"`
	Status IPAMBlockStatus `json:"status,omitempty"`
}

// IPAMBlockSpec is the assignment of a block to a node.
type IPAMBlockSpec struct {
	// CIDR is the block's prefix.
	//
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self).masked() == cidr(self)",message="cidr must be a prefix in canonical form, e.g. 10.244.3.64/26"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="cidr is immutable"
	CIDR string `json:"cidr"`

	// Pool is the name of the IPPool the block was cut from.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="pool is immutable"
	Pool string `json:"pool"`

	// Node is the node the block is assigned to (its affinity).
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node"`

	// Draining asks the node's agent to hand out no more addresses from the block: the
	// controller sets it on an extra block that stayed empty for the empty-block grace,
	// and deletes the block once the agent confirms it empty (status.drained). It clears
	// it again if the block is in use after all.
	//
	// +optional
	Draining bool `json:"draining,omitempty"`
}

// Allocation is one address in use, and who uses it.
type Allocation struct {
	// Address is the allocated IP.
	// +kubebuilder:validation:MaxLength=39
	Address string `json:"address"`
	// PodUID is the UID of the pod the address belongs to.
	// +optional
	PodUID string `json:"podUID,omitempty"`
	// Namespace of the pod.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Pod is the pod's name.
	// +optional
	Pod string `json:"pod,omitempty"`
	// ContainerID is the runtime's sandbox ID (the CNI container ID).
	// +optional
	ContainerID string `json:"containerID,omitempty"`
	// Interface is the interface name inside the pod (CNI_IFNAME).
	// +optional
	Interface string `json:"interface,omitempty"`
}

// IPAMBlockStatus is the node agent's published view of the block's allocations.
type IPAMBlockStatus struct {
	// Allocations lists every address in use in the block.
	// +optional
	// +listType=map
	// +listMapKey=address
	Allocations []Allocation `json:"allocations,omitempty"`
	// InUse is len(allocations), for kubectl's table.
	// +optional
	InUse int32 `json:"inUse,omitempty"`
	// Capacity is the number of addresses in the block.
	// +optional
	Capacity int32 `json:"capacity,omitempty"`
	// Drained is the agent's answer to spec.draining: it hands out no address from the
	// block any more and holds none in it, so the controller may take the block back.
	// +optional
	Drained bool `json:"drained,omitempty"`
}

// IPAMBlockList is a list of IPAMBlocks.
//
// +kubebuilder:object:root=true
type IPAMBlockList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAMBlock `json:"items"`
}

// Annotations the controller sets on blocks.
const (
	// AnnotationOrphanedAt records when the controller first saw the block's node gone,
	// so the grace period survives a controller restart.
	AnnotationOrphanedAt = "hostroute.io/orphaned-at"
	// AnnotationEmptySince records when the controller first saw an extra block of a live
	// node empty, so the empty-block grace survives a controller restart.
	AnnotationEmptySince = "hostroute.io/empty-since"
)
