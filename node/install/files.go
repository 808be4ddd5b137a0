package install

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Verbs of the actions install-cni and uninstall report.
const (
	Installed = "installed"
	Upgraded  = "upgraded"
	Unchanged = "unchanged"
	Overwrote = "overwrote"
	Disabled  = "disabled"
	Removed   = "removed"
	Kept      = "kept"
)

// Action is one thing done (or found already done) on the node, printed as one line.
type Action struct {
	Verb   string
	Path   string
	Detail string
}

func (a Action) String() string {
	if a.Detail == "" {
		return a.Verb + " " + a.Path
	}
	return a.Verb + " " + a.Path + " (" + a.Detail + ")"
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// tempPattern names the temporary file for name. It starts with a dot and ends in
// ".tmp-<random>", so no runtime ever loads a half-written conflist (libcni reads only
// .conf, .conflist and .json) and `ls` does not show it.
func tempPattern(name string) string { return "." + name + ".tmp-*" }

// writeAtomic replaces dir/name with data: a temporary file in the same directory (a
// rename is atomic only within one file system), written, chmod'ed, fsync'ed, then renamed
// over the target, then the directory fsync'ed so the rename survives a crash. Readers see
// the old file or the new one, never a part. Renaming also works while the old plugin
// binary is being executed (writing into it would fail with ETXTBSY): running plugins
// keep the old inode. The temporary file is removed on every failure.
func writeAtomic(dir, name string, data []byte, mode fs.FileMode) (err error) {
	f, err := os.CreateTemp(dir, tempPattern(name))
	if err != nil {
		return fmt.Errorf("create a temporary file in %s: %w", dir, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	target := filepath.Join(dir, name)
	if err := os.Rename(tmp, target); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, target, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// sweepTemps removes temporary files a crashed earlier run left for name in dir. A run
// going on at the same moment on the same node (there is one hostroute-node pod per node,
// so only by hand) would lose its temporary file and fail; it can simply be run again.
func sweepTemps(dir, name string) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(dir, tempPattern(name)))
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("remove leftover %s: %w", m, err)
		}
		removed = append(removed, m)
	}
	return removed, nil
}

// readIfExists returns a file's bytes and mode, or ok=false when it does not exist.
func readIfExists(path string) (data []byte, mode fs.FileMode, ok bool, err error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	if !st.Mode().IsRegular() {
		return nil, 0, false, fmt.Errorf("%s is not a regular file (%s)", path, st.Mode().Type())
	}
	data, err = os.ReadFile(path)
	if err != nil {
		return nil, 0, false, err
	}
	return data, st.Mode().Perm(), true, nil
}

// place installs data as dir/name with mode, reporting installed, upgraded or unchanged
// (same bytes and mode). verbIfReplacing overrides "upgraded" (e.g. "overwrote").
func place(dir, name string, data []byte, mode fs.FileMode, verbIfReplacing, note string) (Action, error) {
	path := filepath.Join(dir, name)
	old, oldMode, exists, err := readIfExists(path)
	if err != nil {
		return Action{}, err
	}
	a := Action{Verb: Installed, Path: path, Detail: "sha256 " + sha(data)}
	if exists {
		if bytes.Equal(old, data) && oldMode == mode {
			a.Verb = Unchanged
			return a, nil
		}
		a.Verb = Upgraded
		if verbIfReplacing != "" {
			a.Verb = verbIfReplacing
		}
		a.Detail += ", was " + sha(old)
		if bytes.Equal(old, data) {
			a.Detail += fmt.Sprintf(", mode %04o was %04o", mode, oldMode)
		}
	}
	if note != "" {
		a.Detail += "; " + note
	}
	if err := writeAtomic(dir, name, data, mode); err != nil {
		return Action{}, err
	}
	return a, nil
}

// requireDir fails with a hint when dir is not an existing directory: a typo in a flag or
// a missing host mount must not create a directory no runtime reads.
func requireDir(dir, what string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s %s: %w (is the host directory mounted there?)", what, dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s %s is not a directory", what, dir)
	}
	return nil
}
