// Package testenv is the root of hostroute's test environments, which unit tests of
// many packages and the end-to-end lab share: a real control plane (cluster), named
// network namespaces (netns), BIRD (bird), a containerd + kubelet node (kubenode), and the
// process handling they all run on (proc). This package holds only what they have in
// common with their callers: the part of testing.TB they use, and polling.
package testenv

import (
	"context"
	"path/filepath"
	"runtime"
	"time"
)

// TB is the part of testing.TB the environments use. *testing.T and *testing.B have it,
// and so does `make lab`'s own implementation, which runs the environments outside a test.
type TB interface {
	Helper()
	Context() context.Context
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	Failed() bool
	TempDir() string
}

// Eventually polls cond every 50 ms until it returns "" and fails t with cond's last
// answer when timeout passes first. A condition says what is still missing, so the
// failure names it rather than only that time ran out.
func Eventually(t interface {
	Helper()
	Fatalf(string, ...any)
}, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		if last = cond(); last == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not true after %s: %s", what, timeout, last)
}

// ErrText is err's message, or "" for nil: the shape Eventually's conditions answer in.
func ErrText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// RepoRoot is the repository's root directory, found from this source file, so tests of
// any package can build the module's commands or read its manifests. Under -trimpath
// the path is not real; nothing here is built that way.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}
