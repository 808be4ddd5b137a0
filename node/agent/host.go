package agent

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/hostroute/hostroute/api/v1alpha1"
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

// enableForwarding turns on IPv4 and IPv6 forwarding in the agent's network namespace.
func enableForwarding() error {
	for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("enable forwarding (%s): %w", p, err)
		}
	}
	return nil
}

func samePrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
