// Package kubenode runs a real Kubernetes node for hostroute's end-to-end tests:
// Debian's containerd and runc and a kubelet, inside a lab node's network namespace.
package kubenode
