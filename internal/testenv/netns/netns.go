// Package netns creates named network namespaces for hostroute's tests and lab, and
// removes them again — at the end of a test, and, for leftovers of a crashed run, at the
// next start. Every name starts with a prefix the caller owns (e.g. "hrtest-"), so the
// sweep never touches anyone else's namespace.
package netns

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/hostroute/hostroute/internal/testenv"
)

// Add creates the named namespace with `ip netns add` and brings its loopback up.
func Add(name string) error {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return Exec(name, "ip", "link", "set", "lo", "up")
}

// Delete removes the named namespace; a missing one is not an error.
func Delete(name string) error {
	if _, err := os.Stat("/run/netns/" + name); os.IsNotExist(err) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns delete %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Exec runs a command inside the namespace and returns its error with its output.
func Exec(name string, args ...string) error {
	_, err := Output(name, args...)
	return err
}

// Command is the command args run inside the named namespace with `ip netns exec`, for
// callers that need its stdin or separate output streams.
func Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", name}, args...)...)
}

// Output runs a command inside the namespace and returns its combined output.
func Output(name string, args ...string) (string, error) {
	out, err := Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Sweep deletes every namespace whose name starts with prefix.
func Sweep(prefix string) error {
	return sweep(prefix, func(string) bool { return true })
}

// OwnedPrefix is prefix plus this process's PID: namespaces named with it can be told
// apart from those of another run going on at the same time.
func OwnedPrefix(prefix string) string { return fmt.Sprintf("%s%d-", prefix, os.Getpid()) }

// SweepDead deletes the namespaces named OwnedPrefix(prefix)+… whose owning process is
// gone: what a crashed run left behind, never a live run's.
func SweepDead(prefix string) error {
	return sweep(prefix, func(rest string) bool {
		pid, _, _ := strings.Cut(rest, "-")
		n, err := strconv.Atoi(pid)
		if err != nil || n <= 0 {
			return true
		}
		_, err = os.Stat(fmt.Sprintf("/proc/%d", n))
		return err != nil // its run is gone
	})
}

// TestMain is a TestMain for a package whose tests name their namespaces with
// OwnedPrefix(prefix): it sweeps what a killed earlier run left (SweepDead, never a live
// run's), runs the tests and exits with their result. Without root nothing is swept;
// the tests then fail with that reason themselves.
func TestMain(m *testing.M, prefix string) {
	if os.Geteuid() == 0 {
		if err := SweepDead(prefix); err != nil {
			fmt.Fprintln(os.Stderr, "sweep:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// sweep deletes the namespaces named prefix+rest for which doomed(rest) says so.
func sweep(prefix string, doomed func(rest string) bool) error {
	entries, err := os.ReadDir("/run/netns")
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || !doomed(rest) {
			continue
		}
		if err := Delete(e.Name()); err != nil {
			return err
		}
	}
	return nil
}

// Handle opens a netlink handle inside the network namespace ns (a name or a path, see
// File).
func Handle(name string) (*netlink.Handle, error) {
	ns, err := vnetns.GetFromPath(File(name))
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", name, err)
	}
	return h, nil
}

// ForTest creates a namespace named prefix + random suffix that is deleted when the test
// ends, pass or fail. It fails the test with the reason when it cannot (e.g. not root).
func ForTest(t testenv.TB, prefix string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test creates network namespaces and must run as root (uid %d)", os.Geteuid())
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := prefix + hex.EncodeToString(b)
	if err := Add(name); err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := Delete(name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return name
}

// ForwardForTest makes listen (e.g. 127.0.0.1:6443) inside the namespace ns lead to
// target, dialled from the caller's namespace (e.g. the test's apiserver on loopback),
// until the test ends.
func ForwardForTest(t testenv.TB, ns, listen, target string) {
	t.Helper()
	l, err := ListenIn(ns, "tcp", listen)
	if err != nil {
		t.Fatalf("forwarder from %s in %s to %s: %v", listen, ns, target, err)
	}
	go Forward(l, target)
	// Not waited for: a connection whose far end outlives the test would hold it.
	t.Cleanup(func() { l.Close() })
}
