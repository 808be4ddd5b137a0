package kubenode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hostroute/hostroute/internal/testenv"
	"github.com/hostroute/hostroute/internal/testenv/proc"
)

// Stop ends the node and removes every trace of it; it is safe to call twice.
//
// Order matters: the kubelet goes first (it would restart what is stopped next);
// then every pod sandbox is stopped and removed through the CRI — pods with their
// own network first, while a hostNetwork CNI agent (hostroute-node) still runs and
// can answer the plugin's DEL — then containerd. What survives (shims, container
// processes, e.g. after a CNI DEL failed) is killed through the node's cgroups and
// command lines. Finally every mount under Dir is detached (the kubelet's bind of
// its root dir, volumes, container root file systems, the sandboxes' network
// namespaces), the cgroups and the kubelet's fixed-path host files are removed, and
// Dir goes.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() { n.stopErr = n.stop() })
	return n.stopErr
}

func (n *Node) stop() error {
	var errs []error
	if err := n.kubelet.Stop(10 * time.Second); err != nil {
		errs = append(errs, err)
	}
	if n.rt != nil {
		if exited, _ := n.containerd.Exited(); !exited {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			if err := n.removeSandboxes(ctx); err != nil {
				errs = append(errs, err)
			}
			cancel()
		}
	}
	if n.conn != nil {
		_ = n.conn.Close()
	}
	if err := n.containerd.Stop(10 * time.Second); err != nil {
		errs = append(errs, err)
	}
	n.spawner.Close()
	if n.logFile != nil {
		_ = n.logFile.Close()
	}
	if err := cleanDir(n.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cleanDir removes what a node left: processes using dir, processes in its cgroups,
// mounts under dir, its cgroups, its host files and dir itself. It serves both Stop
// and the sweep of a crashed run's node.
func cleanDir(dir string) error {
	var errs []error
	if pids := proc.PIDsUsing(dir); len(pids) > 0 {
		proc.KillAndWait(pids, 5*time.Second)
	}
	if err := removeCgroupRoot(lastElem(dir)); err != nil {
		errs = append(errs, err)
	}
	if err := unmountAll(dir); err != nil {
		errs = append(errs, err)
	}
	removeHostLeftovers(dir)
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("removing %s: %w", dir, err))
	}
	return errors.Join(errs...)
}

// Sweep cleans up the nodes of test processes that are gone (killed before Stop):
// their daemons die with them (Pdeathsig), but shims, containers, mounts and cgroups
// stay. Errors are ignored: the sweep is housekeeping.
func Sweep() { proc.SweepDirs(DirPrefix, func(dir string) { _ = cleanDir(dir) }) }

// StartForTest starts a node for t and stops it when t ends. A missing tool fails
// the test with the reason (a skipped node test would look like a passing one). If t
// failed, the end of the daemons' log is logged first, since Stop removes it.
func StartForTest(t testenv.TB, cfg Config) *Node {
	t.Helper()
	start := time.Now()
	n, err := Start(t.Context(), cfg)
	if errors.Is(err, ErrToolMissing) {
		t.Fatalf("kubenode: %v", err)
	}
	if err != nil {
		t.Fatalf("kubenode: starting node %s: %v", cfg.Name, err)
	}
	t.Logf("kubenode: node %s (containerd + kubelet) up in %v (dir %s)", cfg.Name, time.Since(start).Round(time.Millisecond), n.Dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kubenode: last lines of %s:\n%s", n.LogPath(), n.LogTail(60))
		}
		start := time.Now()
		if err := n.Stop(); err != nil {
			t.Errorf("kubenode: stopping node %s: %v", n.Name, err)
		}
		t.Logf("kubenode: node %s stopped and cleaned in %v", n.Name, time.Since(start).Round(time.Millisecond))
	})
	return n
}
