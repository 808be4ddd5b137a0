package install

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
)

// Names hostroute installs on a node.
const (
	// PluginName is the plugin binary in the CNI bin dir; the conflist's "type" names it.
	PluginName = "hostroute-cni"
	// ConflistName is hostroute's network config file in the CNI conf dir.
	ConflistName = "10-hostroute.conflist"
	// NetworkName is the conflist's "name". It is how install-cni and uninstall tell
	// hostroute's config from another network's: a file at our path with another name is
	// never overwritten (without --force) or removed.
	NetworkName = "hostroute"
	// DisabledSuffix is appended to another network's config that install-cni --force
	// moved out of the way. Container runtimes load only .conf, .conflist and .json files,
	// so the renamed file is inert but kept for whoever wants that network back.
	DisabledSuffix = ".hostroute-disabled"
)

// shippedConflist is the canonical network config, the one the DaemonSet installs. A
// string, not a []byte, so nobody can change it in place. manifests/cni holds a copy for
// people who install by hand; a test keeps the two identical.
//
//go:embed 10-hostroute.conflist
var shippedConflist string

// ShippedConflist returns the network config built into this binary.
func ShippedConflist() []byte { return []byte(shippedConflist) }

// configExtensions are the file extensions libcni (and so containerd and CRI-O) load from
// the conf dir; any other file there is ignored by the runtime.
func configExtensions() []string { return []string{".conf", ".conflist", ".json"} }

// IsNetworkConfig reports whether the container runtime would read a file of that name
// from the CNI conf dir.
func IsNetworkConfig(name string) bool {
	return slices.Contains(configExtensions(), filepath.Ext(name))
}

// netConf is the part of a .conf or .conflist that tells whose network a file is.
type netConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"` // a single-plugin .conf
	Plugins    []struct {
		Type string `json:"type"`
	} `json:"plugins"`
}

// NetworkOf returns the network name a CNI config file declares.
func NetworkOf(data []byte) (string, error) {
	var c netConf
	if err := json.Unmarshal(data, &c); err != nil {
		return "", fmt.Errorf("not a CNI network config: %w", err)
	}
	if c.Name == "" {
		return "", errors.New("not a CNI network config: no name")
	}
	return c.Name, nil
}

// ValidateOwnConflist checks a conflist that is to be installed as hostroute's: it must be
// hostroute's network (uninstall and later upgrades recognise it by that name) and chain
// the hostroute-cni plugin first.
func ValidateOwnConflist(data []byte) error {
	var c netConf
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("not a CNI conflist: %w", err)
	}
	switch {
	case c.CNIVersion == "":
		return errors.New("no cniVersion")
	case c.Name != NetworkName:
		return fmt.Errorf("network name is %q; hostroute-node installs only the network named %q", c.Name, NetworkName)
	case len(c.Plugins) == 0 || c.Plugins[0].Type != PluginName:
		return fmt.Errorf("the first plugin must be of type %q", PluginName)
	}
	return nil
}

// ConfFile is a file in the CNI conf dir as install-cni sees it.
type ConfFile struct {
	Name string // base name
	// Network is the declared network name; empty when the file cannot be read as one.
	Network string
	// Err says why Network is empty.
	Err error
}

func (f ConfFile) describe() string {
	if f.Err != nil {
		return fmt.Sprintf("unreadable as a CNI config: %v", f.Err)
	}
	return fmt.Sprintf("network %q", f.Network)
}

// Ours reports whether the file declares hostroute's network.
func (f ConfFile) Ours() bool { return f.Err == nil && f.Network == NetworkName }

// Conflict is a config file that stands in the way of hostroute's conflist.
type Conflict struct {
	File ConfFile
	// Target is true for a foreign file at hostroute's own path; false for a file that
	// sorts before it and so would be the one the runtime uses.
	Target bool
}

// Conflicts decides which files in the conf dir keep hostroute's conflist from being the
// network the runtime uses. files are all entries of the conf dir (any order).
//
// The rules, for someone replacing another pod network (Calico writes
// 10-calico.conflist, which sorts before 10-hostroute.conflist):
//   - containerd and CRI-O use the lexically first .conf/.conflist/.json file (unless
//     configured with a default network name). Installing next to a network that sorts
//     first would look successful while every new pod still lands on the old network, so
//     that is a conflict, whatever that file's network is — even one named hostroute
//     (an old hand-made copy): only one of them can be in effect.
//   - a file at our own path that is not hostroute's network is someone else's config
//     and is a conflict too.
//   - files that sort after ours are not: the runtime never reads them.
//
// The caller refuses on any conflict unless forced. Refusing is what an engineer
// migrating a node expects: a node that still runs Calico pods keeps Calico until they
// drain it and say so; it does not silently get a second pod network.
func Conflicts(files []ConfFile) []Conflict {
	var out []Conflict
	for _, f := range files {
		switch {
		case f.Name == ConflistName:
			if !f.Ours() {
				out = append(out, Conflict{File: f, Target: true})
			}
		case IsNetworkConfig(f.Name) && f.Name < ConflistName:
			out = append(out, Conflict{File: f})
		}
	}
	slices.SortFunc(out, func(a, b Conflict) int {
		switch {
		case a.File.Name < b.File.Name:
			return -1
		case a.File.Name > b.File.Name:
			return 1
		}
		return 0
	})
	return out
}

// refusal is the message for one conflict when --force was not given.
func (c Conflict) refusal(dir string) string {
	p := filepath.Join(dir, c.File.Name)
	if c.Target {
		return fmt.Sprintf("%s holds %s, not hostroute's: refusing to overwrite it (run install-cni with --force to replace it)",
			p, c.File.describe())
	}
	return fmt.Sprintf("%s (%s) sorts before %s, so the container runtime would keep using it: "+
		"remove that network from the node first, or run install-cni with --force to move it aside as %s",
		p, c.File.describe(), ConflistName, c.File.Name+DisabledSuffix)
}
