package nat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The kernel tests run only inside throwaway named network namespaces they create
// themselves ("hrtest-nat-…", see `ip netns add`), and program nftables there
// through an fd of that namespace. Nothing is ever changed in the root network
// namespace: no link, route, rule, sysctl or nftables object.

// requireRoot fails (rather than skips) the test when it cannot create network
// namespaces, so a run without privileges is not mistaken for a passing one.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to create network namespaces and program nftables in them")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("this test needs %s: %v", bin, err)
		}
	}
}

// testLogger writes the Manager's logs into the test output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newNetns creates the named network namespace "hrtest-nat-<role>-<random>",
// deletes it when the test ends (also on failure), and returns its name and an fd
// referring to it that stays open until then.
func newNetns(t *testing.T, role string) (string, int) {
	t.Helper()
	name := fmt.Sprintf("hrtest-nat-%s-%08x", role, rand.Uint32())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	// Registered after the delete, so it runs before it.
	t.Cleanup(func() { _ = f.Close() })
	return name, int(f.Fd())
}

// nsExec runs a command inside the namespace and returns its stdout and error;
// stderr is folded into the error.
func nsExec(ns string, stdin string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s in %s: %w: %s", strings.Join(args, " "), ns, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// mustExec is nsExec failing the test on error.
func mustExec(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := nsExec(ns, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// nftScript loads an nft script into the namespace.
func nftScript(t *testing.T, ns, script string) {
	t.Helper()
	if _, err := nsExec(ns, script, "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// nftObjects is the output of `nft -j list …`: a list of one-key objects.
type nftObjects struct {
	Nftables []map[string]json.RawMessage `json:"nftables"`
}

// nftJSON runs `nft -j list <what…>` in the namespace and decodes it.
func nftJSON(t *testing.T, ns string, what ...string) nftObjects {
	t.Helper()
	out := mustExec(t, ns, append([]string{"nft", "-j", "list"}, what...)...)
	var objs nftObjects
	if err := json.Unmarshal([]byte(out), &objs); err != nil {
		t.Fatalf("decode nft -j list %s: %v\n%s", strings.Join(what, " "), err, out)
	}
	return objs
}

// all decodes every object of the given kind ("set", "chain", "rule", …).
func all[T any](t *testing.T, objs nftObjects, kind string) []T {
	t.Helper()
	var res []T
	for _, o := range objs.Nftables {
		raw, ok := o[kind]
		if !ok {
			continue
		}
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("decode %s %s: %v", kind, raw, err)
		}
		res = append(res, v)
	}
	return res
}
