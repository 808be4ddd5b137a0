package bfdd

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ListenUnix opens the daemon's socket at path (its directory made 0755 if missing, the
// socket itself 0600: only root on the host may drive BFD). A socket file left by a dead
// daemon is replaced; one that a live daemon answers on is an error, so two daemons never
// fight over the node's sessions.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("bfdd: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("bfdd: another bfd daemon serves %s", path)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("bfdd: remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("bfdd: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("bfdd: %w", err)
	}
	return ln, nil
}
