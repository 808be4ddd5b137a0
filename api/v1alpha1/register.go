package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of every hostroute resource.
const GroupName = "hostroute.io"

// SchemeGroupVersion is group version used to register these objects.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

// AddToScheme registers the hostroute.io/v1alpha1 types with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion,
		&IPPool{}, &IPPoolList{},
		&IPAMBlock{}, &IPAMBlockList{},
		&BGPConfiguration{}, &BGPConfigurationList{},
		&BGPPeer{}, &BGPPeerList{},
		&NodeNetworkStatus{}, &NodeNetworkStatusList{},
		&IPReservation{}, &IPReservationList{},
	)
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}

// Resource names as served by the API server.
const (
	ResourceIPPools            = "ippools"
	ResourceIPAMBlocks         = "ipamblocks"
	ResourceBGPConfigurations  = "bgpconfigurations"
	ResourceBGPPeers           = "bgppeers"
	ResourceNodeNetworkStatuss = "nodenetworkstatuses"
	ResourceIPReservations     = "ipreservations"
)
