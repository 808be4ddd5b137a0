package proc

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// OwnerFile, in a directory made by MakeDir, holds the PID of the process it belongs to.
const OwnerFile = "owner.pid"

// MakeDir creates a fresh directory prefix* in the temp dir, owned by this process
// (OwnerFile), for an environment's files, daemons' PID files and logs.
func MakeDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, OwnerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("writing owner PID: %w", err)
	}
	return dir, nil
}

// SweepDirs calls clean for every directory prefix* in the temp dir whose owner is gone:
// what a test binary killed before its cleanups left. A directory whose owner is alive,
// or that is younger than a minute and has no owner file yet (MakeDir is writing it right
// now), is left alone.
func SweepDirs(prefix string, clean func(dir string)) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, dir := range dirs {
		st, err := os.Lstat(dir)
		if err != nil || !st.IsDir() {
			continue
		}
		owner, err := ReadPID(filepath.Join(dir, OwnerFile))
		if err != nil {
			if time.Since(st.ModTime()) < time.Minute {
				continue
			}
		} else if owner == os.Getpid() || Alive(owner) {
			continue
		}
		clean(dir)
	}
}

// ReadPID reads a PID file.
func ReadPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: bad PID %q", path, b)
	}
	return pid, nil
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// Cmdline returns /proc/PID/cmdline split into arguments (nil if gone).
func Cmdline(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// UsesDir reports whether some argument of the command line lies in dir or names a
// file in it (e.g. --config DIR/config.toml, --data-dir=DIR/etcd).
func UsesDir(args []string, dir string) bool {
	for _, a := range args {
		if _, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(a, "-") {
			a = v
		}
		if a == dir || strings.HasPrefix(a, dir+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// PIDsUsing lists the processes (this one aside) whose arguments point into dir: what
// is left of an environment's daemons, and of what they started (containerd's shims
// carry -address DIR/containerd.sock). With names, only processes whose program (the
// base of argv[0]) is one of them count.
func PIDsUsing(dir string, names ...string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		args := Cmdline(pid)
		if len(args) == 0 || (len(names) > 0 && !slices.Contains(names, filepath.Base(args[0]))) {
			continue
		}
		if UsesDir(args, dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// KillAndWait SIGKILLs pids (not our children, so they cannot be waited for) and polls
// until they are gone or timeout passes, so their ports and mounts are free after it.
func KillAndWait(pids []int, timeout time.Duration) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for Alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}
