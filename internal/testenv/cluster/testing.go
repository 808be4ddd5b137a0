package cluster

import (
	"errors"
	"time"

	"github.com/hostroute/hostroute/internal/testenv"
)

// StartForTest starts a cluster for t and stops it when t and its subtests
// finish. A missing binary fails the test, not skips it: a skipped
// integration test looks like a passing one, and `make test` builds the
// binaries first. If t failed, the end of each process's output is logged
// before the cluster goes away, since Stop removes the default log file.
func StartForTest(t testenv.TB, o Options) *Cluster {
	t.Helper()
	start := time.Now()
	c, err := Start(t.Context(), o)
	if errors.Is(err, ErrToolsMissing) {
		t.Fatalf("cluster: %v\nrun `make tools` to build kube-apiserver %s and etcd into ~/.cache/hostroute, or point HOSTROUTE_TOOLS_DIR at them",
			err, KubernetesVersion)
	}
	if err != nil {
		t.Fatalf("cluster: starting control plane: %v", err)
	}
	t.Logf("cluster: control plane at %s ready in %v (dir %s)", c.URL, time.Since(start).Round(time.Millisecond), c.Dir)
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range c.procs {
				t.Logf("cluster: last output of %s:\n%s", p.Name, p.out.tail())
			}
		}
		if err := c.Stop(); err != nil {
			t.Errorf("cluster: stopping control plane: %v", err)
		}
	})
	return c
}
