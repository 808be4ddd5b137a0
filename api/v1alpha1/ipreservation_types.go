package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPReservation holds addresses back from every pool: no pod is ever given an address in
// its CIDRs (addresses a network team uses elsewhere, a gateway, a range being migrated).
// Pods that already held such an address when the reservation was made keep it and are
// listed in the status until they go.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ipres
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="CIDRs",type=string,JSONPath=`.spec.reservedCIDRs`
// +kubebuilder:printcolumn:name="Holders",type=integer,JSONPath=`.status.holderCount`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPReservation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IPReservationSpec   `json:"spec"`
	Status IPReservationStatus `json:"status,omitempty"`
}

// IPReservationSpec lists the reserved ranges.
type IPReservationSpec struct {
	// ReservedCIDRs are prefixes (10.244.7.0/28) or single addresses (10.244.7.1, taken as
	// /32 or /128) never handed out.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1024
	// +listType=set
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="self.all(c, isCIDR(c) || isIP(c))",message="every reservedCIDRs entry must be an IPv4 or IPv6 prefix (10.244.7.0/28) or address (10.244.7.1)"
	// +kubebuilder:validation:XValidation:rule="self.all(c, !isCIDR(c) || cidr(c).masked() == cidr(c))",message="a reservedCIDRs prefix must be the network address (host bits zero), e.g. 10.244.7.0/28"
	ReservedCIDRs []string `json:"reservedCIDRs"`
}

// IPReservationStatus reports who still holds a reserved address.
type IPReservationStatus struct {
	// Holders are the allocations inside the reserved CIDRs (made before the reservation),
	// at most 100 of them.
	// +optional
	// +listType=atomic
	Holders []ReservedHolder `json:"holders,omitempty"`
	// HolderCount is the number of such allocations (all of them).
	// +optional
	HolderCount int32 `json:"holderCount,omitempty"`
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// ReservedHolder is one pod holding a reserved address.
type ReservedHolder struct {
	Address   string `json:"address"`
	Node      string `json:"node"`
	Block     string `json:"block"`
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
}

// IPReservationList is a list of IPReservations.
//
// +kubebuilder:object:root=true
type IPReservationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPReservation `json:"items"`
}
