package kubenode

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one daemon the node runs (containerd, kubelet).
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait returned
	err  error         // cmd.Wait's result, read after done
}

// spawner forks every daemon from one goroutine locked to its OS thread for the
// node's whole life. Pdeathsig fires when the forking *thread* exits, and Go retires
// threads whenever a goroutine exits locked to one (which namespace-switching code
// does on purpose): forking from an ordinary goroutine would let unrelated code
// SIGKILL containerd at random.
type spawner struct {
	reqs chan spawnReq
	quit chan struct{}
	once sync.Once
}

type spawnReq struct {
	cmd   *exec.Cmd
	reply chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq), quit: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		for {
			select {
			case r := <-s.reqs:
				r.reply <- r.cmd.Start()
			case <-s.quit:
				runtime.UnlockOSThread()
				return
			}
		}
	}()
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	r := spawnReq{cmd: cmd, reply: make(chan error, 1)}
	select {
	case s.reqs <- r:
		return <-r.reply
	case <-s.quit:
		return errors.New("node stopped")
	}
}

func (s *spawner) close() { s.once.Do(func() { close(s.quit) }) }

// spawn starts bin inside the network namespace netns with nsenter, which execs in
// place, so the PID recorded in dir/NAME.pid is the daemon's own. nsenter --net
// enters only the network namespace: `ip netns exec` would also unshare the mount
// namespace and remount /sys, hiding the cgroup mounts runc needs.
func (n *Node) spawn(name, netns string, log io.Writer, bin string, args ...string) (*proc, error) {
	argv := append([]string{"--net=/run/netns/" + netns, "--", bin}, args...)
	cmd := exec.Command("nsenter", argv...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Dir = n.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := n.spawner.start(cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	if err := os.WriteFile(filepath.Join(n.Dir, name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		return p, fmt.Errorf("recording %s PID: %w", name, err)
	}
	return p, nil
}

// exited reports whether the daemon is gone, with its exit error.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILL. Exit statuses are not errors.
func (p *proc) stop(grace time.Duration) error {
	if p == nil {
		return nil
	}
	if done, _ := p.exited(); done {
		return nil
	}
	if grace > 0 {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("terminating %s: %w", p.name, err)
		}
		select {
		case <-p.done:
			return nil
		case <-time.After(grace):
		}
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", p.name, err)
	}
	<-p.done
	return nil
}

// cmdline returns /proc/PID/cmdline split into arguments (nil if gone).
func cmdline(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// usesDir reports whether some argument of the command line lies in dir or names a
// file in it (e.g. --config DIR/config.toml, -address DIR/containerd.sock).
func usesDir(args []string, dir string) bool {
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

// pidsUsing lists processes whose command line points into dir: what is left of a
// node's daemons and containerd's shims (they carry -address DIR/containerd.sock).
func pidsUsing(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if usesDir(cmdline(pid), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killAndWait SIGKILLs pids (not our children, so they cannot be waited for) and
// polls until they are gone or timeout passes.
func killAndWait(pids []int, timeout time.Duration) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func readPID(path string) (int, error) {
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
