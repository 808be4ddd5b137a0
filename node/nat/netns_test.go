package nat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// The kernel tests run only inside throwaway named network namespaces they create
// themselves ("hrtest-nat-…", internal/testenv/netns), and program nftables there
// through an fd of that namespace. Nothing is ever changed in the root network
// namespace: no link, route, rule, sysctl or nftables object.

// nsPrefix starts the name of every namespace these tests create.
const nsPrefix = "hrtest-nat-"

// TestMain sweeps the namespaces of an earlier run that was killed before its cleanups.
func TestMain(m *testing.M) { netns.TestMain(m, nsPrefix) }

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

// newNetns creates the named network namespace "hrtest-nat-<pid>-<role>-<random>"
// (netns.ForTest: deleted when the test ends, also on failure; a crashed run's are swept
// by TestMain), and returns its name and an fd referring to it that stays open until then.
func newNetns(t *testing.T, role string) (string, int) {
	t.Helper()
	name := netns.ForTest(t, netns.OwnedPrefix(nsPrefix)+role+"-")
	f, err := os.Open(netns.File(name))
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	// Registered after the delete, so it runs before it.
	t.Cleanup(func() { _ = f.Close() })
	return name, int(f.Fd())
}

// nsExec runs a command inside the namespace and returns its stdout and error;
// stderr is folded into the error (nft -j output must not be mixed with warnings).
func nsExec(ns string, stdin string, args ...string) (string, error) {
	cmd := netns.Command(ns, args...)
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
