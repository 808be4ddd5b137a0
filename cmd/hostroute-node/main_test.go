package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hostroute/hostroute/node/nat"
)

func TestSubcommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		name string
		rest []string
	}{
		{nil, "run", nil},
		{[]string{"--node-name", "n1", "--nat=false"}, "run", []string{"--node-name", "n1", "--nat=false"}},
		{[]string{"run", "--node-name", "n1"}, "run", []string{"--node-name", "n1"}},
		{[]string{"install-cni", "--force"}, "install-cni", []string{"--force"}},
		{[]string{"sysctls"}, "sysctls", []string{}},
		{[]string{"uninstall", "--bin-dir", "/x"}, "uninstall", []string{"--bin-dir", "/x"}},
		// A flag value that happens to be a subcommand's name is not one.
		{[]string{"--node-name", "uninstall"}, "run", []string{"--node-name", "uninstall"}},
	} {
		name, rest := subcommand(tc.args)
		if name != tc.name || !slices.Equal(rest, tc.rest) {
			t.Errorf("subcommand(%q) = %q %q, want %q %q", tc.args, name, rest, tc.name, tc.rest)
		}
	}
}

// TestInstallCNICommand runs the subcommand as the init container does, against
// temporary dirs: it installs, and it fails (non-zero exit in main) on Calico's conflist.
func TestInstallCNICommand(t *testing.T) {
	d := t.TempDir()
	bin, conf, plugin := filepath.Join(d, "bin"), filepath.Join(d, "net.d"), filepath.Join(d, "hostroute-cni")
	for _, p := range []string{bin, conf} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(plugin, []byte("plugin"), 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"install-cni", "--bin-dir", bin, "--conf-dir", conf, "--plugin", plugin}
	if err := dispatch(args); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(conf, "10-hostroute.conflist")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "10-calico.conflist"), []byte(`{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"calico"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	err := dispatch(args)
	if err == nil || !strings.Contains(err.Error(), "10-calico.conflist") {
		t.Fatalf("install next to Calico: %v", err)
	}
	if err := dispatch(append(args, "--force")); err != nil {
		t.Fatal(err)
	}
	if err := dispatch([]string{"install-cni", "stray"}); err == nil {
		t.Fatal("a stray argument was accepted")
	}
}

// TestSysctlsCommand runs the subcommand on a fake /proc/sys (the real one is the host's).
func TestSysctlsCommand(t *testing.T) {
	root := t.TempDir()
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv6/conf/eth0/accept_ra"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(k)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, k), []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := dispatch([]string{"sysctls", "--proc-sys", root}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(root, "net/ipv4/ip_forward"))
	if strings.TrimSpace(string(b)) != "1" {
		t.Fatalf("ip_forward = %q", b)
	}
}

type recordNAT struct{ got []nat.Config }

func (r *recordNAT) Apply(c nat.Config) error { r.got = append(r.got, c); return nil }

// --nat=false still builds the table (it carries the pod guard), only without masquerade.
func TestNATFalseKeepsTheGuard(t *testing.T) {
	pools := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	for _, masq := range []bool{true, false} {
		r := &recordNAT{}
		if err := (natApplier{m: r, masquerade: masq}).Apply(pools, pools); err != nil {
			t.Fatal(err)
		}
		if len(r.got) != 1 || len(r.got[0].AllPools) != 1 || (len(r.got[0].NATPools) == 1) != masq {
			t.Fatalf("masquerade %v: applied %+v", masq, r.got)
		}
	}
}
