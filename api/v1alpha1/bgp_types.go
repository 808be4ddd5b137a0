package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPConfiguration holds the cluster's BGP settings. Only the object named "default" is read.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgpconfig
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="the BGPConfiguration must be named 'default'"
// +kubebuilder:printcolumn:name="AS",type=integer,JSONPath=`.spec.asNumber`
// +kubebuilder:printcolumn:name="Mesh",type=boolean,JSONPath=`.spec.nodeToNodeMesh`
// +kubebuilder:printcolumn:name="Reflectors",type=string,JSONPath=`.status.routeReflectors`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:subresource:status
type BGPConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPConfigurationSpec `json:"spec,omitempty"`
	// Status is written by the controller.
	// +optional
	Status BGPConfigurationStatus `json:"status,omitempty"`
}

// BGPConfigurationStatus is what the controller decided for the cluster's BGP.
type BGPConfigurationStatus struct {
	// RouteReflectors are the nodes the controller elected as route reflectors
	// (spec.routeReflectors), sorted. The agents treat each as if it carried
	// LabelRouteReflector=true, unless the node is labelled "false".
	// +optional
	// +listType=set
	RouteReflectors []string `json:"routeReflectors,omitempty"`
	// Changed is when routeReflectors last changed. Until the clients had time to connect
	// to the new choice and report it, their reports do not count against it.
	// +optional
	Changed *metav1.Time `json:"changed,omitempty"`
	// Message explains the election: a shortfall (fewer eligible nodes than asked), a
	// reflector replaced and why.
	// +optional
	Message string `json:"message,omitempty"`
}

// RouteReflectorElection has the controller choose the route reflectors.
type RouteReflectorElection struct {
	// Count is how many reflectors each AS gets (a node's clients are the nodes of its
	// own AS); nodes labelled LabelRouteReflector=true count toward it. 0 elects none.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=16
	Count int32 `json:"count"`
	// TopologyKey is the node label whose values are failure domains (a zone, a rack):
	// the reflectors of an AS are spread across them. Default topology.kubernetes.io/zone.
	// +optional
	// +kubebuilder:validation:MaxLength=316
	TopologyKey string `json:"topologyKey,omitempty"`
}

// BGPConfigurationSpec is the cluster-wide BGP configuration.
type BGPConfigurationSpec struct {
	// ASNumber is the cluster's AS, used by every node without its own AS annotation.
	//
	// +optional
	// +kubebuilder:default=64512
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	ASNumber int64 `json:"asNumber,omitempty"`

	// NodeToNodeMesh makes every node peer with every other node. Turn it off when using
	// route reflectors or AS-per-rack designs.
	//
	// +optional
	// +kubebuilder:default=true
	NodeToNodeMesh *bool `json:"nodeToNodeMesh,omitempty"`

	// ListenPort is the BGP port the nodes listen on.
	//
	// +optional
	// +kubebuilder:default=179
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	ListenPort int32 `json:"listenPort,omitempty"`

	// RouteReflectorClusterID is the cluster ID reflector nodes use when a node carries
	// no cluster ID annotation of its own.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",message="routeReflectorClusterID must be an IPv4 address such as 224.0.0.1"
	RouteReflectorClusterID string `json:"routeReflectorClusterID,omitempty"`

	// RouteReflectors turns on reflector election: the controller chooses
	// routeReflectors.count nodes per AS, spread across failure domains, keeps its choice
	// while those nodes live, and replaces one whose node is gone, NotReady, or whose
	// sessions most of its clients report down. Its choice is in status.routeReflectors.
	// Labels still win: LabelRouteReflector=true makes a node a reflector (and counts
	// toward the count), "false" keeps a node from being elected.
	// +optional
	RouteReflectors *RouteReflectorElection `json:"routeReflectors,omitempty"`

	// Timers for node-to-node sessions.
	// +optional
	Timers *BGPTimers `json:"timers,omitempty"`

	// GracefulRestart settings for node-to-node sessions.
	// +optional
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`

	// BFD settings for node-to-node sessions.
	// +optional
	BFD *BFDSettings `json:"bfd,omitempty"`

	// ServiceClusterIPs are the Service cluster IP ranges (the API server's
	// --service-cluster-ip-range) every node announces, as they are, to its BGPPeers.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	ServiceClusterIPs []ServiceIPRange `json:"serviceClusterIPs,omitempty"`

	// ServiceExternalIPs are ranges of Services' spec.externalIPs. Every node announces
	// each range to its BGPPeers; an external IP inside a range of a Service with
	// externalTrafficPolicy Local is also announced as a /32 (/128) by the nodes that have
	// a ready endpoint of that Service, and by no other node.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	ServiceExternalIPs []ServiceIPRange `json:"serviceExternalIPs,omitempty"`

	// ServiceLoadBalancerIPs are the ranges in which LoadBalancer ingress IPs
	// (status.loadBalancer.ingress[].ip, as a load-balancer controller writes them) are
	// announced to BGPPeers as /32 (/128): by every node, or, with externalTrafficPolicy
	// Local, only by the nodes that have a ready endpoint of the Service. An ingress IP
	// outside every range is not announced; the ranges themselves are not announced.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	ServiceLoadBalancerIPs []ServiceIPRange `json:"serviceLoadBalancerIPs,omitempty"`
}

// ServiceIPRange is a range of Service addresses to announce, with the BGP attributes
// its routes carry.
type ServiceIPRange struct {
	// CIDR is the range, e.g. 10.96.0.0/12 or 198.51.100.0/24.
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="cidr must be an IPv4 or IPv6 prefix such as 198.51.100.0/24"
	CIDR string `json:"cidr"`

	// Attributes the routes of this range carry.
	// +optional
	RouteAttributes `json:",inline"`
}

// RouteAttributes are BGP attributes added to the routes a node exports.
type RouteAttributes struct {
	// Communities are RFC 1997 communities, each "ASN:VALUE" with both parts from 0 to
	// 65535, e.g. "65000:100".
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=11
	// +kubebuilder:validation:items:Pattern=`^[0-9]{1,5}:[0-9]{1,5}$`
	Communities []string `json:"communities,omitempty"`

	// LargeCommunities are RFC 8092 large communities, each "ASN:DATA1:DATA2" with every
	// part from 0 to 4294967295, e.g. "64512:1:200".
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=32
	// +kubebuilder:validation:items:Pattern=`^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$`
	LargeCommunities []string `json:"largeCommunities,omitempty"`

	// LocalPreference is set on the routes sent over iBGP (a BGPPeer in the node's own
	// AS); eBGP neighbours never see it. The highest of the values that apply wins.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	LocalPreference *int64 `json:"localPreference,omitempty"`
}

// RouteFilter is one rule of a BGPPeer's export or import filter: the first rule whose
// prefix (and, when set, community) matches decides.
//
// +kubebuilder:validation:XValidation:rule="!has(self.maxLength) || !isCIDR(self.cidr) || self.maxLength >= cidr(self.cidr).prefixLength()",message="maxLength must not be shorter than the prefix"
// +kubebuilder:validation:XValidation:rule="!has(self.minLength) || !isCIDR(self.cidr) || self.minLength >= cidr(self.cidr).prefixLength()",message="minLength must not be shorter than the prefix"
// +kubebuilder:validation:XValidation:rule="!has(self.minLength) || !has(self.maxLength) || self.minLength <= self.maxLength",message="minLength must not be longer than maxLength"
type RouteFilter struct {
	// CIDR the route's prefix must lie in (equal to it, or longer when maxLength is set).
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="cidr must be an IPv4 or IPv6 prefix such as 10.244.0.0/16"
	CIDR string `json:"cidr"`
	// MinLength is the shortest prefix length that matches (default: the CIDR's).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	MinLength *int32 `json:"minLength,omitempty"`
	// MaxLength is the longest prefix length that matches (default: the CIDR's, i.e. only
	// the prefix itself, unless minLength is set: then the family's longest).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	MaxLength *int32 `json:"maxLength,omitempty"`
	// Community, when set, must also be on the route ("ASN:VALUE").
	// +optional
	// +kubebuilder:validation:MaxLength=11
	// +kubebuilder:validation:Pattern=`^[0-9]{1,5}:[0-9]{1,5}$`
	Community string `json:"community,omitempty"`
	// Action is what a matching route gets: Accept or Reject.
	// +kubebuilder:validation:Enum=Accept;Reject
	Action FilterAction `json:"action"`
}

// FilterAction is a RouteFilter's verdict.
type FilterAction string

// Filter actions.
const (
	FilterAccept FilterAction = "Accept"
	FilterReject FilterAction = "Reject"
)

// BGPTimers are BGP session timers.
//
// +kubebuilder:validation:XValidation:rule="!has(self.holdTime) || !has(self.keepaliveTime) || duration(self.keepaliveTime) < duration(self.holdTime)",message="keepaliveTime must be shorter than holdTime"
type BGPTimers struct {
	// HoldTime; 0 disables keepalives, otherwise at least 3s. Default 90s.
	// +optional
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`
	// KeepaliveTime; default a third of the hold time.
	// +optional
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`
	// ConnectRetryTime; default 5s.
	// +optional
	ConnectRetryTime *metav1.Duration `json:"connectRetryTime,omitempty"`
}

// GracefulRestart configures RFC 4724 graceful restart.
type GracefulRestart struct {
	// Enabled turns graceful restart on. Default true.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// RestartTime is how long peers keep our routes while we restart. Default 120s.
	// +optional
	RestartTime *metav1.Duration `json:"restartTime,omitempty"`
}

// BFDSettings configures RFC 5880/5881 single-hop BFD.
type BFDSettings struct {
	// Enabled turns BFD on.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// MinRxInterval is the slowest rate we want to receive control packets at. Default 100ms.
	// +optional
	MinRxInterval *metav1.Duration `json:"minRxInterval,omitempty"`
	// MinTxInterval is the fastest rate we want to send at. Default 100ms.
	// +optional
	MinTxInterval *metav1.Duration `json:"minTxInterval,omitempty"`
	// Multiplier is the detection multiplier. Default 3.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	Multiplier int32 `json:"multiplier,omitempty"`
}

// BGPConfigurationList is a list of BGPConfigurations.
//
// +kubebuilder:object:root=true
type BGPConfigurationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPConfiguration `json:"items"`
}

// BGPPeer is a BGP neighbour outside the node mesh: a top-of-rack switch, a route server.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgppeer
// +kubebuilder:printcolumn:name="Peer",type=string,JSONPath=`.spec.peerIP`
// +kubebuilder:printcolumn:name="AS",type=integer,JSONPath=`.spec.asNumber`
// +kubebuilder:printcolumn:name="BFD",type=boolean,JSONPath=`.spec.bfd.enabled`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec describes one external neighbour and the nodes that peer with it.
type BGPPeerSpec struct {
	// PeerIP is the neighbour's address.
	//
	// +kubebuilder:validation:MaxLength=39
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="peerIP must be an IPv4 or IPv6 address such as 192.0.2.1"
	PeerIP string `json:"peerIP"`

	// ASNumber is the neighbour's AS.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	ASNumber int64 `json:"asNumber"`

	// NodeSelector chooses the nodes that peer with this neighbour. Empty selects every node.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// PasswordSecretRef names a Secret key holding the TCP-MD5 password.
	// +optional
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`

	// Timers override the defaults for this neighbour.
	// +optional
	Timers *BGPTimers `json:"timers,omitempty"`

	// EBGPMultihop is the TTL for eBGP sessions to a neighbour that is not directly connected.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	EBGPMultihop int32 `json:"ebgpMultihop,omitempty"`

	// BFD for this neighbour.
	// +optional
	BFD *BFDSettings `json:"bfd,omitempty"`

	// GracefulRestart for this neighbour.
	// +optional
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`

	// Import lists the prefixes accepted from this neighbour and installed in the kernel.
	// Nothing is imported when empty.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Import []PrefixMatch `json:"import,omitempty"`

	// ImportFilters are evaluated before Import, first match wins: a Reject refuses the
	// route, an Accept lets it on to Import (which must still list it). A route no rule
	// matches goes on to Import too.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	ImportFilters []RouteFilter `json:"importFilters,omitempty"`

	// Export changes what the nodes send this neighbour.
	// +optional
	Export *PeerExport `json:"export,omitempty"`
}

// PeerExport is what nodes send one BGPPeer beyond the defaults (their blocks, and the
// Service addresses of the BGPConfiguration).
type PeerExport struct {
	// Filters are evaluated first, first match wins: a Reject keeps the route from this
	// neighbour, an Accept sends it as usual. A route no rule matches is sent as usual.
	// Filters cannot send a route the node would not otherwise export.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Filters []RouteFilter `json:"filters,omitempty"`

	// Attributes added to every route sent to this neighbour.
	// +optional
	RouteAttributes `json:",inline"`
}

// SecretKeyRef points at one key of a Secret.
type SecretKeyRef struct {
	// Namespace of the Secret.
	// +kubebuilder:validation:MinLength=1
	Namespace string `json:"namespace"`
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Key within the Secret's data.
	// +kubebuilder:validation:MinLength=1
	Key string `json:"key"`
}

// PrefixMatch matches a prefix and, optionally, longer prefixes inside it.
//
// +kubebuilder:validation:XValidation:rule="!has(self.maxLength) || !isCIDR(self.cidr) || self.maxLength >= cidr(self.cidr).prefixLength()",message="maxLength must not be shorter than the prefix"
type PrefixMatch struct {
	// CIDR is the prefix, e.g. 0.0.0.0/0 or 198.51.100.0/24.
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="cidr must be an IPv4 or IPv6 prefix"
	CIDR string `json:"cidr"`
	// MaxLength also accepts more specific prefixes up to this length.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	MaxLength *int32 `json:"maxLength,omitempty"`
}

// BGPPeerList is a list of BGPPeers.
//
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}

// Node annotations and labels read by hostroute. Hazard: with NodeRestriction a kubelet
// may still set annotations (and labels outside the reserved prefixes) on its own Node,
// so AnnotationASNumber and AnnotationRouterID are node-controlled: a compromised node
// can move itself into another AS or claim another speaker's router ID. ComputePeers
// ignores a router ID that another node or a BGPPeer already uses; the AS is trusted.
const (
	// AnnotationASNumber overrides the cluster AS for one node (AS-per-rack).
	AnnotationASNumber = "hostroute.io/as-number"
	// AnnotationRouterID sets the node's BGP router ID (default: its IPv4 address).
	AnnotationRouterID = "hostroute.io/router-id"
	// AnnotationRouteReflectorClusterID sets the cluster ID of a node that LabelRouteReflector
	// makes a route reflector; on any other node it is ignored (a kubelet can annotate its
	// own Node, so an annotation must never grant the role).
	AnnotationRouteReflectorClusterID = "hostroute.io/route-reflector-cluster-id"
	// LabelRouteReflector marks a node as a route reflector ("true") or keeps the
	// controller's election (BGPConfiguration spec.routeReflectors) from choosing it
	// ("false"). It lives under the
	// node-restriction.kubernetes.io/ prefix, which the NodeRestriction admission plugin
	// forbids kubelets to set on their own Node: a reflector receives and re-advertises
	// every node's routes, so a compromised node must not be able to make itself one.
	LabelRouteReflector = "node-restriction.kubernetes.io/hostroute-route-reflector"
	// LegacyLabelRouteReflector is the former reflector label. A kubelet can set it on its
	// own Node, so it is no longer read; a node still carrying it gets a Problem telling
	// the operator to move to LabelRouteReflector.
	LegacyLabelRouteReflector = "hostroute.io/route-reflector"
)
