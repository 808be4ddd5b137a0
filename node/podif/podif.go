// Package podif names the node side of a pod's veth, for the two parts that must agree on
// it: the CNI plugin, which creates the interfaces, and the pod guard in the agent's
// nftables table, which recognises pods' packets by that name. It has no dependencies, so
// neither pulls in the other.
package podif

// HostVethPrefix starts the name of the host side of every pod veth. Hazard: any other
// interface named hr… on a node is taken for a pod's by the pod guard.
const HostVethPrefix = "hr"
