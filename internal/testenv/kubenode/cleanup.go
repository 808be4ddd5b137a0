package kubenode

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hostroute/hostroute/internal/testenv/proc"
)

// mountEntry is one line of /proc/self/mountinfo, the parts used here.
type mountEntry struct {
	Point  string
	FSType string
}

// parseMountinfo reads mountinfo lines: field 5 is the mount point (octal-escaped),
// the file system type follows the " - " separator.
func parseMountinfo(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		line := s.Text()
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		pf := strings.Fields(post)
		if !ok || len(f) < 5 || len(pf) < 1 {
			continue
		}
		out = append(out, mountEntry{Point: unescapeMount(f[4]), FSType: pf[0]})
	}
	return out, s.Err()
}

// unescapeMount undoes mountinfo's \NNN octal escapes (space, tab, newline, backslash).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func readMounts() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMountinfo(f)
}

// mountsUnder returns the mount points inside dir (dir itself included), deepest
// first, so that each is unmounted before the one it sits on. Only paths under dir are
// ever returned: a node never unmounts anything of the machine's.
func mountsUnder(mounts []mountEntry, dir string) []string {
	var out []string
	for _, m := range mounts {
		if m.Point == dir || strings.HasPrefix(m.Point, dir+"/") {
			out = append(out, m.Point)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return slices.Compact(out)
}

// unmountAll detaches every mount under dir: the kubelet's bind of its root dir, pod
// volumes (tmpfs), container root file systems (overlay), sandbox /dev/shm and the
// pod network namespaces (nsfs) containerd keeps under its state dir. A mount stacked
// twice shows up twice; the loop repeats until none is left.
func unmountAll(dir string) error {
	for range 5 {
		mounts, err := readMounts()
		if err != nil {
			return err
		}
		points := mountsUnder(mounts, dir)
		if len(points) == 0 {
			return nil
		}
		for _, p := range points {
			if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("unmount %s: %w", p, err)
			}
		}
	}
	return fmt.Errorf("mounts under %s remain after 5 rounds", dir)
}

// cgroupMounts returns the mount points of the cgroup hierarchies (v1 and v2).
func cgroupMounts(mounts []mountEntry) []string {
	var out []string
	for _, m := range mounts {
		if m.FSType == "cgroup" || m.FSType == "cgroup2" {
			out = append(out, m.Point)
		}
	}
	return slices.Compact(out)
}

// createCgroupRoot makes the node's cgroup (the kubelet's cgroupRoot) in every
// hierarchy, so that everything the kubelet and runc create for pods sits below one
// directory per node: teardown and the sweep can find, kill and remove it all without
// touching anyone else's cgroups.
func createCgroupRoot(name string) error {
	mounts, err := readMounts()
	if err != nil {
		return err
	}
	for _, mp := range cgroupMounts(mounts) {
		d := filepath.Join(mp, name)
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("creating cgroup %s: %w", d, err)
		}
		// A v1 cpuset cgroup starts with no CPUs and no memory nodes, and no task
		// can join it until they are set: copy the parent's.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(mp, f)); err == nil && strings.Contains(mp, "cpuset") {
				_ = os.WriteFile(filepath.Join(d, f), b, 0o644)
			}
		}
	}
	return nil
}

// cgroupPIDs lists the processes in the node's cgroup tree of every hierarchy.
func cgroupPIDs(name string) []int {
	mounts, _ := readMounts()
	seen := map[int]bool{}
	var pids []int
	for _, mp := range cgroupMounts(mounts) {
		_ = filepath.WalkDir(filepath.Join(mp, name), func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// removeCgroupRoot kills what still runs in the node's cgroups and removes them,
// leaves first. A cgroup whose last task just died can be busy for a moment, hence
// the retries.
func removeCgroupRoot(name string) error {
	if pids := cgroupPIDs(name); len(pids) > 0 {
		proc.KillAndWait(pids, 5*time.Second)
	}
	mounts, err := readMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range cgroupMounts(mounts) {
		root := filepath.Join(mp, name)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs) // children before parents
		for _, d := range dirs {
			var err error
			for range 50 {
				if err = os.Remove(d); err == nil || errors.Is(err, os.ErrNotExist) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// fixedHostDirs are the machine's directories the daemons create whatever their
// configuration says: the kubelet's device-plugin socket dir and container-log
// symlinks, containerd's shim sockets (/run/containerd/s/HASH, removed with each
// shim) and libcni's result cache (/var/lib/cni/results, removed on DEL).
func fixedHostDirs() []string {
	return []string{"/var/lib/kubelet", hostDevicePluginDir, hostContainerLogDir,
		"/run/containerd", "/run/containerd/s", "/var/lib/cni", "/var/lib/cni/results"}
}

// Host paths the kubelet writes whatever its configuration says: the device-plugin
// socket and a symlink per container log.
const (
	hostDevicePluginDir = "/var/lib/kubelet/device-plugins"
	hostContainerLogDir = "/var/log/containers"
)

// removeHostLeftovers removes the kubelet's fixed-path files that belong to this
// node: container-log symlinks pointing into dir, and the device-plugin socket with
// the directories, if this node made them (recorded in dir at start).
func removeHostLeftovers(dir string) {
	entries, _ := os.ReadDir(hostContainerLogDir)
	for _, e := range entries {
		p := filepath.Join(hostContainerLogDir, e.Name())
		if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, dir+"/") {
			_ = os.Remove(p)
		}
	}
	made, _ := os.ReadFile(filepath.Join(dir, madeHostDirsFile))
	lines := strings.Fields(string(made))
	if len(lines) == 0 {
		return
	}
	_ = os.Remove(filepath.Join(hostDevicePluginDir, "kubelet.sock"))
	// Deepest first; os.Remove refuses a directory that is not empty, so anything
	// someone else put there stays.
	slices.SortFunc(lines, func(a, b string) int { return len(b) - len(a) })
	for _, d := range lines {
		_ = os.Remove(d)
	}
}

// madeHostDirsFile lists the fixed host directories that did not exist before this
// node started, so teardown removes exactly those (and only when empty).
const madeHostDirsFile = "made-host-dirs"

// recordMissingHostDirs notes which of the kubelet's fixed host directories do not
// exist yet.
func recordMissingHostDirs(dir string) error {
	var missing []string
	for _, d := range fixedHostDirs() {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			missing = append(missing, d)
		}
	}
	return os.WriteFile(filepath.Join(dir, madeHostDirsFile), []byte(strings.Join(missing, "\n")+"\n"), 0o644)
}
