// Package v1alpha1 holds the hostroute.io/v1alpha1 API: the cluster-scoped resources
// that describe address pools, per-node address blocks, BGP settings and node status.
//
// +kubebuilder:object:generate=true
// +groupName=hostroute.io
package v1alpha1
