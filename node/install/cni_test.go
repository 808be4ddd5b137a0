package install

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// node is a fake host: a CNI bin dir, a conf dir and a plugin binary to install.
type node struct {
	t                     *testing.T
	bin, conf, pluginPath string
}

func newNode(t *testing.T, plugin string) *node {
	t.Helper()
	d := t.TempDir()
	n := &node{t: t, bin: filepath.Join(d, "bin"), conf: filepath.Join(d, "net.d"), pluginPath: filepath.Join(d, "hostroute-cni")}
	for _, p := range []string{n.bin, n.conf} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n.setPlugin(plugin)
	return n
}

func (n *node) setPlugin(s string) {
	if err := os.WriteFile(n.pluginPath, []byte(s), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) write(dir, name, content string, mode os.FileMode) {
	n.t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), mode); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) install(force bool) ([]Action, error) {
	return InstallCNI(CNIOptions{BinDir: n.bin, ConfDir: n.conf, PluginSource: n.pluginPath, Force: force})
}

func (n *node) mustInstall(force bool) []Action {
	n.t.Helper()
	acts, err := n.install(force)
	if err != nil {
		n.t.Fatalf("InstallCNI: %v", err)
	}
	n.noTemps()
	return acts
}

// listing is "name mode" of every entry of dir, sorted.
func (n *node) listing(dir string) []string {
	n.t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		n.t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		info, err := e.Info()
		if err != nil {
			n.t.Fatal(err)
		}
		out = append(out, e.Name()+" "+info.Mode().String())
	}
	return out
}

// noTemps fails when a temporary file is left in either dir.
func (n *node) noTemps() {
	n.t.Helper()
	for _, d := range []string{n.bin, n.conf} {
		for _, e := range n.listing(d) {
			if strings.Contains(e, ".tmp-") {
				n.t.Errorf("temporary file left in %s: %s", d, e)
			}
		}
	}
}

// verbs is "verb base-name" of each action.
func verbs(acts []Action) []string {
	var out []string
	for _, a := range acts {
		out = append(out, a.Verb+" "+filepath.Base(a.Path))
	}
	return out
}

func wantVerbs(t *testing.T, acts []Action, want ...string) {
	t.Helper()
	if got := verbs(acts); !slices.Equal(got, want) {
		t.Fatalf("actions %v, want %v", acts, want)
	}
}

func (n *node) wantFile(path, content string, mode os.FileMode) {
	n.t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		n.t.Fatal(err)
	}
	if string(b) != content {
		n.t.Fatalf("%s = %q, want %q", path, b, content)
	}
	st, err := os.Stat(path)
	if err != nil {
		n.t.Fatal(err)
	}
	if st.Mode().Perm() != mode {
		n.t.Fatalf("%s mode %04o, want %04o", path, st.Mode().Perm(), mode)
	}
}

func TestInstallFreshUpgradeUnchanged(t *testing.T) {
	n := newNode(t, "plugin v1")
	plugin, conf := filepath.Join(n.bin, PluginName), filepath.Join(n.conf, ConflistName)

	acts := n.mustInstall(false)
	wantVerbs(t, acts, "installed hostroute-cni", "installed 10-hostroute.conflist")
	if want := "installed " + plugin + " (sha256 " + sha([]byte("plugin v1")) + ")"; acts[0].String() != want {
		t.Errorf("line %q, want %q", acts[0], want)
	}
	n.wantFile(plugin, "plugin v1", 0o755)
	n.wantFile(conf, string(ShippedConflist()), 0o644)

	wantVerbs(t, n.mustInstall(false), "unchanged hostroute-cni", "unchanged 10-hostroute.conflist")

	// Upgrade: new plugin bytes; an older conflist of ours; a plugin left with a wrong mode.
	n.setPlugin("plugin v2")
	old := strings.Replace(string(ShippedConflist()), `"timeout": "30s"`, `"timeout": "10s"`, 1)
	n.write(n.conf, ConflistName, old, 0o600)
	acts = n.mustInstall(false)
	wantVerbs(t, acts, "upgraded hostroute-cni", "upgraded 10-hostroute.conflist")
	if !strings.Contains(acts[0].Detail, "was "+sha([]byte("plugin v1"))) {
		t.Errorf("upgrade line %q does not name the old sha256", acts[0])
	}
	n.wantFile(plugin, "plugin v2", 0o755)
	n.wantFile(conf, string(ShippedConflist()), 0o644)

	// Same bytes, wrong mode (someone chmod'ed it): rewritten, and the line says why.
	if err := os.Chmod(plugin, 0o644); err != nil {
		t.Fatal(err)
	}
	acts = n.mustInstall(false)
	wantVerbs(t, acts, "upgraded hostroute-cni", "unchanged 10-hostroute.conflist")
	if !strings.Contains(acts[0].Detail, "mode 0755 was 0644") {
		t.Errorf("line %q does not say the mode was fixed", acts[0])
	}
	n.wantFile(plugin, "plugin v2", 0o755)
	wantVerbs(t, n.mustInstall(false), "unchanged hostroute-cni", "unchanged 10-hostroute.conflist")
}

func TestInstallCustomConflist(t *testing.T) {
	n := newNode(t, "p")
	custom := strings.Replace(string(ShippedConflist()), `"1.0.0"`, `"1.1.0"`, 1)
	if _, err := InstallCNI(CNIOptions{BinDir: n.bin, ConfDir: n.conf, PluginSource: n.pluginPath, Conflist: []byte(custom)}); err != nil {
		t.Fatal(err)
	}
	n.wantFile(filepath.Join(n.conf, ConflistName), custom, 0o644)

	foreign := strings.Replace(custom, `"name": "hostroute"`, `"name": "mine"`, 1)
	_, err := InstallCNI(CNIOptions{BinDir: n.bin, ConfDir: n.conf, PluginSource: n.pluginPath, Conflist: []byte(foreign)})
	if err == nil || !strings.Contains(err.Error(), `network name is "mine"`) {
		t.Fatalf("a conflist of another network was installed as hostroute's: %v", err)
	}
	n.wantFile(filepath.Join(n.conf, ConflistName), custom, 0o644)
}

// TestInstallRefusesForeignAtOurPath: someone else's network at 10-hostroute.conflist is
// not overwritten, and nothing at all is written (not even the plugin).
func TestInstallRefusesForeignAtOurPath(t *testing.T) {
	n := newNode(t, "p")
	foreign := `{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"calico"}]}`
	n.write(n.conf, ConflistName, foreign, 0o644)

	acts, err := n.install(false)
	if err == nil {
		t.Fatalf("installed over another network's config: %v", acts)
	}
	p := filepath.Join(n.conf, ConflistName)
	for _, want := range []string{p, `"k8s-pod-network"`, "--force"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	n.wantFile(p, foreign, 0o644)
	if got := n.listing(n.bin); len(got) != 0 {
		t.Errorf("a refused install wrote into the bin dir: %v", got)
	}
	n.noTemps()

	acts = n.mustInstall(true)
	wantVerbs(t, acts, "installed hostroute-cni", "overwrote 10-hostroute.conflist")
	if !strings.Contains(acts[1].String(), `it held network "k8s-pod-network"; --force`) {
		t.Errorf("force line %q does not say what it overrode", acts[1])
	}
	n.wantFile(p, string(ShippedConflist()), 0o644)
	wantVerbs(t, n.mustInstall(false), "unchanged hostroute-cni", "unchanged 10-hostroute.conflist")
}

// TestInstallRefusesEarlierConflist: the Calico migration case. 10-calico.conflist sorts
// before ours, so the runtime would keep using it: refused; with --force it is moved
// aside, not deleted.
func TestInstallRefusesEarlierConflist(t *testing.T) {
	n := newNode(t, "p")
	calico := `{"cniVersion":"0.3.1","name":"k8s-pod-network","plugins":[{"type":"calico"},{"type":"bandwidth"}]}`
	n.write(n.conf, "10-calico.conflist", calico, 0o644)
	n.write(n.conf, "calico-kubeconfig", "not a network", 0o600)
	n.write(n.conf, "99-loopback.conf", `{"cniVersion":"0.3.1","name":"lo","type":"loopback"}`, 0o644)
	before := n.listing(n.conf)

	_, err := n.install(false)
	if err == nil {
		t.Fatal("installed behind an earlier network config")
	}
	for _, want := range []string{filepath.Join(n.conf, "10-calico.conflist"), `"k8s-pod-network"`, "sorts before", "--force"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if after := n.listing(n.conf); !slices.Equal(before, after) {
		t.Errorf("a refused install changed the conf dir: %v -> %v", before, after)
	}
	if got := n.listing(n.bin); len(got) != 0 {
		t.Errorf("a refused install wrote into the bin dir: %v", got)
	}

	acts := n.mustInstall(true)
	wantVerbs(t, acts, "installed hostroute-cni", "installed 10-hostroute.conflist", "disabled 10-calico.conflist")
	if !strings.Contains(acts[2].String(), `network "k8s-pod-network" sorted before ours; renamed to 10-calico.conflist.hostroute-disabled; --force`) {
		t.Errorf("force line %q", acts[2])
	}
	n.wantFile(filepath.Join(n.conf, "10-calico.conflist"+DisabledSuffix), calico, 0o644)
	want := []string{"10-calico.conflist.hostroute-disabled -rw-r--r--", "10-hostroute.conflist -rw-r--r--",
		"99-loopback.conf -rw-r--r--", "calico-kubeconfig -rw-------"}
	if got := n.listing(n.conf); !slices.Equal(got, want) {
		t.Errorf("conf dir %v, want %v", got, want)
	}
	// Ours is now the first config: a plain run is fine again.
	wantVerbs(t, n.mustInstall(false), "unchanged hostroute-cni", "unchanged 10-hostroute.conflist")
}

func TestInstallSweepsLeftoversAndFailsClean(t *testing.T) {
	n := newNode(t, "p")
	n.write(n.bin, ".hostroute-cni.tmp-123", "half", 0o600)
	n.write(n.conf, ".10-hostroute.conflist.tmp-456", "half", 0o600)
	acts := n.mustInstall(false)
	wantVerbs(t, acts, "removed .hostroute-cni.tmp-123", "removed .10-hostroute.conflist.tmp-456",
		"installed hostroute-cni", "installed 10-hostroute.conflist")

	// A failure half-way (the plugin's path is taken by a directory): an error naming it,
	// and no temporary file in either dir.
	m := newNode(t, "p")
	if err := os.MkdirAll(filepath.Join(m.bin, PluginName, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := m.install(false); err == nil || !strings.Contains(err.Error(), filepath.Join(m.bin, PluginName)) {
		t.Fatalf("error %v, want one naming the plugin path", err)
	}
	m.noTemps()
	if _, err := os.Stat(filepath.Join(m.conf, ConflistName)); !os.IsNotExist(err) {
		t.Errorf("conflist written although the plugin failed: %v", err)
	}

	// Missing dirs are an error, not created.
	_, err := InstallCNI(CNIOptions{BinDir: filepath.Join(t.TempDir(), "nope"), ConfDir: n.conf, PluginSource: n.pluginPath})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("missing bin dir: %v", err)
	}
	_, err = InstallCNI(CNIOptions{BinDir: n.bin, ConfDir: n.conf, PluginSource: filepath.Join(t.TempDir(), "absent")})
	if err == nil || !strings.Contains(err.Error(), "absent") {
		t.Fatalf("missing plugin source: %v", err)
	}
}

// TestWriteAtomicFailure: when the rename fails (the target is a non-empty directory),
// the temporary file is gone and the target untouched.
func TestWriteAtomicFailure(t *testing.T) {
	d := t.TempDir()
	if err := os.MkdirAll(filepath.Join(d, "target", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(d, "target", []byte("x"), 0o644); err == nil {
		t.Fatal("rename over a non-empty directory succeeded")
	}
	es, _ := os.ReadDir(d)
	if len(es) != 1 || es[0].Name() != "target" {
		t.Fatalf("dir after a failed write: %v", es)
	}
	if err := writeAtomic(d, "f", []byte("data"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(d, "f"))
	st, _ := os.Stat(filepath.Join(d, "f"))
	if !bytes.Equal(b, []byte("data")) || st.Mode().Perm() != 0o640 {
		t.Fatalf("f = %q mode %v", b, st.Mode())
	}
}
