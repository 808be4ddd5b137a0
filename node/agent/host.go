package agent

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/node/sysctl"
)

// relevantUpdate filters out updates that cannot change what the agent programs: status
// writes (the agent's own allocation publishing, the controller's pool status, kubelet
// heartbeats) would otherwise turn every pod start into a full pass.
func relevantUpdate(old, cur any) bool {
	switch o := old.(type) {
	case *v1alpha1.IPAMBlock:
		c, ok := cur.(*v1alpha1.IPAMBlock)
		return !ok || o.Spec != c.Spec
	case *v1alpha1.IPPool:
		c, ok := cur.(*v1alpha1.IPPool)
		return !ok || !equality.Semantic.DeepEqual(o.Spec, c.Spec)
	case *corev1.Node:
		c, ok := cur.(*corev1.Node)
		return !ok || !equality.Semantic.DeepEqual(o.Labels, c.Labels) ||
			!equality.Semantic.DeepEqual(o.Annotations, c.Annotations) ||
			!equality.Semantic.DeepEqual(o.Status.Addresses, c.Status.Addresses)
	}
	return true
}

// listenUnix listens on a root-only unix socket, replacing a stale one.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		lis.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return lis, nil
}

// enableForwarding turns on IPv4 forwarding, and IPv6 forwarding where the host has
// IPv6, in the agent's network namespace: the settings `hostroute-node sysctls` applies
// from the DaemonSet's privileged init container, for an agent run with --sysctls
// (directly on a host, or in a lab namespace). It writes only what differs, so it also
// works where /proc/sys is read-only but already right.
func enableForwarding() error {
	_, err := sysctl.Apply(sysctl.ProcSys, sysctl.Node())
	return err
}
