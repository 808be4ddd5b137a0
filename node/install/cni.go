// Package install puts hostroute's CNI plugin and network config on a node, and takes
// hostroute off a node again. It is what `hostroute-node install-cni` and
// `hostroute-node uninstall` run: the DaemonSet's image has no shell, so the copying and
// deciding that an init container would do with cp and mv is done here, testably.
//
// What it installs is exactly two files: the plugin binary (hostroute-cni) in the CNI bin
// dir and the conflist (10-hostroute.conflist) in the CNI conf dir. The conflist chains
// the portmap plugin for hostPort; portmap is not shipped: it comes from the host's CNI
// plugins package (containernetworking-plugins), which every kubeadm-style node has in
// /opt/cni/bin. A node without it fails pods that ask for a hostPort, with the runtime
// naming the missing plugin.
package install

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Defaults of the install-cni flags: the host's CNI dirs as the DaemonSet mounts them.
const (
	DefaultInstallBinDir  = "/host/opt/cni/bin"
	DefaultInstallConfDir = "/host/etc/cni/net.d"
	DefaultPluginSource   = "/hostroute-cni"
)

// CNIOptions says what to install where.
type CNIOptions struct {
	BinDir, ConfDir string
	// PluginSource is the path of the plugin binary to copy.
	PluginSource string
	// Conflist is the network config to install; nil means the shipped one.
	Conflist []byte
	// Force replaces another network's config at our path and moves configs that sort
	// before ours aside (renamed with DisabledSuffix), instead of refusing.
	Force bool
}

// InstallCNI installs (or upgrades in place) the plugin and the conflist and returns one
// Action per file it looked at. It decides everything before it writes anything: a
// refusal leaves the node as it was. The plugin is written before the conflist, because
// the runtime reports the network ready as soon as a conflist appears, and the first pod
// must find the binary. On an error after some writes, the actions done so far are
// returned with it.
func InstallCNI(o CNIOptions) ([]Action, error) {
	conflist := o.Conflist
	if conflist == nil {
		conflist = ShippedConflist()
	}
	if err := ValidateOwnConflist(conflist); err != nil {
		return nil, fmt.Errorf("conflist to install: %w", err)
	}
	plugin, err := os.ReadFile(o.PluginSource)
	if err != nil {
		return nil, fmt.Errorf("plugin binary: %w", err)
	}
	if len(plugin) == 0 {
		return nil, fmt.Errorf("plugin binary %s is empty", o.PluginSource)
	}
	if err := requireDir(o.BinDir, "CNI bin dir"); err != nil {
		return nil, err
	}
	if err := requireDir(o.ConfDir, "CNI conf dir"); err != nil {
		return nil, err
	}
	var acts []Action
	for _, t := range [][2]string{{o.BinDir, PluginName}, {o.ConfDir, ConflistName}} {
		left, err := sweepTemps(t[0], t[1])
		for _, p := range left {
			acts = append(acts, Action{Verb: Removed, Path: p, Detail: "left over by an interrupted run"})
		}
		if err != nil {
			return acts, err
		}
	}

	files, err := ReadConfDir(o.ConfDir)
	if err != nil {
		return acts, err
	}
	conflicts := Conflicts(files)
	if len(conflicts) > 0 && !o.Force {
		var msgs []string
		for _, c := range conflicts {
			msgs = append(msgs, c.refusal(o.ConfDir))
		}
		return acts, errors.New("not installing: " + strings.Join(msgs, "; "))
	}

	a, err := place(o.BinDir, PluginName, plugin, 0o755, "", "")
	if err != nil {
		return acts, fmt.Errorf("install the plugin: %w", err)
	}
	acts = append(acts, a)

	verb, note := "", ""
	for _, c := range conflicts {
		if c.Target {
			verb, note = Overwrote, fmt.Sprintf("it held %s; --force", c.File.describe())
		}
	}
	a, err = place(o.ConfDir, ConflistName, conflist, 0o644, verb, note)
	if err != nil {
		return acts, fmt.Errorf("install the conflist: %w", err)
	}
	acts = append(acts, a)

	// Only now that ours is in place: moving the other networks first would leave the
	// node without any network config for a moment.
	for _, c := range conflicts {
		if c.Target {
			continue
		}
		from := filepath.Join(o.ConfDir, c.File.Name)
		to := from + DisabledSuffix
		if err := os.Rename(from, to); err != nil {
			return acts, fmt.Errorf("move %s aside: %w", from, err)
		}
		acts = append(acts, Action{Verb: Disabled, Path: from,
			Detail: fmt.Sprintf("%s sorted before ours; renamed to %s; --force", c.File.describe(), filepath.Base(to))})
	}
	if len(conflicts) > 0 {
		if err := syncDir(o.ConfDir); err != nil {
			return acts, err
		}
	}
	return acts, nil
}

// ReadConfDir reads what install-cni needs of the conf dir: every entry's name, and the
// network name of our own file and of every config that sorts before it (the others are
// never read by the runtime, so their content does not matter). Subdirectories are
// skipped, as libcni does.
func ReadConfDir(dir string) ([]ConfFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read CNI conf dir: %w", err)
	}
	var out []ConfFile
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		f := ConfFile{Name: e.Name()}
		if f.Name == ConflistName || (IsNetworkConfig(f.Name) && f.Name < ConflistName) {
			data, err := os.ReadFile(filepath.Join(dir, f.Name))
			if err == nil {
				f.Network, err = NetworkOf(data)
			}
			f.Err = err
		}
		out = append(out, f)
	}
	return out, nil
}
