package sysctl

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// fakeRoot builds a sysctl tree in a temporary directory: key → value.
func fakeRoot(t *testing.T, kv map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for k, v := range kv {
		p := path(root, k)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func read(t *testing.T, root, key string) string {
	t.Helper()
	b, err := os.ReadFile(path(root, key))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func lines(rs []Result) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.String())
	}
	return out
}

func TestApply(t *testing.T) {
	for _, tc := range []struct {
		name string
		kv   map[string]string
		want []string
		err  string
	}{
		{"both off", map[string]string{"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0"},
			[]string{"set net.ipv4.ip_forward = 1 (was 0)", "set net.ipv6.conf.all.forwarding = 1 (was 0)"}, ""},
		{"already on", map[string]string{"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"},
			[]string{"already set net.ipv4.ip_forward = 1", "already set net.ipv6.conf.all.forwarding = 1"}, ""},
		{"no IPv6 on this host", map[string]string{"net.ipv4.ip_forward": "0"},
			[]string{"set net.ipv4.ip_forward = 1 (was 0)", "skipped net.ipv6.conf.all.forwarding: this host has no net.ipv6"}, ""},
		{"IPv4 missing is an error", map[string]string{"net.ipv6.conf.all.forwarding": "0"}, nil, "read sysctl net.ipv4.ip_forward"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, tc.kv)
			rs, err := Apply(root, Node())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := lines(rs); !slices.Equal(got, tc.want) {
				t.Fatalf("results %q, want %q", got, tc.want)
			}
			for k := range tc.kv {
				if got := read(t, root, k); got != "1" {
					t.Errorf("%s = %s after Apply", k, got)
				}
			}
			// Second run: nothing to change.
			rs, err = Apply(root, Node())
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				if r.Status == Changed {
					t.Errorf("second run changed %s", r.Key)
				}
			}
		})
	}
}

func TestIgnoredRA(t *testing.T) {
	root := fakeRoot(t, map[string]string{
		"net.ipv6.conf.all.accept_ra":     "1",
		"net.ipv6.conf.default.accept_ra": "1",
		"net.ipv6.conf.lo.accept_ra":      "1",
		"net.ipv6.conf.eth0.accept_ra":    "1",
		"net.ipv6.conf.eth1.accept_ra":    "2",
		"net.ipv6.conf.hr1234.accept_ra":  "0",
	})
	got, err := IgnoredRA(root)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"eth0"}) {
		t.Fatalf("IgnoredRA = %v, want [eth0]", got)
	}
	if got, err := IgnoredRA(t.TempDir()); err != nil || got != nil {
		t.Fatalf("no IPv6: %v, %v", got, err)
	}
}

// TestApplyRealKernel applies the node settings in a network namespace of the test's own
// (netns.Do, a thread switched into it: /proc/sys/net is per namespace), reading them back as
// numbers. The root namespace is never written.
func TestApplyRealKernel(t *testing.T) {
	name := netns.ForTest(t, "hrtest-sysctl-")
	rootBefore := read(t, ProcSys, "net.ipv4.ip_forward")
	var o struct {
		first, second []Result
		after         [2]string
	}
	err := netns.Do(name, func() error {
		var err error
		if o.first, err = Apply(ProcSys, Node()); err != nil {
			return err
		}
		if o.second, err = Apply(ProcSys, Node()); err != nil {
			return err
		}
		for i, k := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
			b, err := os.ReadFile(path(ProcSys, k))
			if err != nil {
				return err
			}
			o.after[i] = strings.TrimSpace(string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first run: %q", lines(o.first))
	if got := read(t, ProcSys, "net.ipv4.ip_forward"); got != rootBefore {
		t.Fatalf("the root namespace's ip_forward changed from %s to %s", rootBefore, got)
	}
	if o.after != [2]string{"1", "1"} {
		t.Fatalf("after Apply in %s: ip_forward=%s ipv6 forwarding=%s", name, o.after[0], o.after[1])
	}
	if len(o.first) != 2 || o.first[0].Status != Changed || o.first[0].Was != "0" {
		t.Errorf("a new namespace starts with forwarding off; first run said %q", lines(o.first))
	}
	if got := lines(o.second); !slices.Equal(got, []string{"already set net.ipv4.ip_forward = 1", "already set net.ipv6.conf.all.forwarding = 1"}) {
		t.Errorf("second run %q", got)
	}
}
