// Package proc starts, stops and sweeps the daemons hostroute's test environments run:
// etcd, kube-apiserver and its components, containerd and the kubelet, BIRD. One
// implementation, because the hazards are the same for all of them:
//
//   - Pdeathsig (the kernel kills a child when its parent dies) fires when the *thread*
//     that forked the child exits, and Go retires threads whenever a goroutine exits
//     while locked to one, which network-namespace code does on purpose. A Spawner forks
//     from one goroutine locked to its thread until Close, so unrelated code can never
//     SIGKILL a daemon at random.
//   - A daemon inside a network namespace is started with `nsenter --net`, which execs
//     in place: the PID held is the daemon's own, so signals reach it and not a wrapper.
//     (`ip netns exec` would also unshare the mount namespace and remount /sys, hiding
//     the cgroup mounts runc needs.)
//   - A test binary killed before its cleanups leaves its daemons' directories (and with
//     them shims, mounts, ports): SweepDirs finds those whose owner is gone.
//
// Every process is signalled through its own os.Process (a pidfd on Linux), never by
// name, and a recycled PID is never hit.
package proc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Spawner starts processes from one goroutine locked to its OS thread until Close (see
// the package comment). Close it only once its processes are gone: the thread's exit
// would SIGKILL them.
type Spawner struct {
	reqs chan spawnReq
	quit chan struct{}
	once sync.Once
}

type spawnReq struct {
	cmd   *exec.Cmd
	reply chan error
}

// NewSpawner starts the spawning goroutine.
func NewSpawner() *Spawner {
	s := &Spawner{reqs: make(chan spawnReq), quit: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		for {
			select {
			case r := <-s.reqs:
				r.reply <- r.cmd.Start()
			case <-s.quit:
				// The thread returns to the pool rather than exiting; the children
				// are gone by now either way.
				runtime.UnlockOSThread()
				return
			}
		}
	}()
	return s
}

func (s *Spawner) start(cmd *exec.Cmd) error {
	r := spawnReq{cmd: cmd, reply: make(chan error, 1)}
	select {
	case s.reqs <- r:
		return <-r.reply
	case <-s.quit:
		return errors.New("spawner closed")
	}
}

// Close ends the spawning goroutine; later Spawns fail. It is safe to call twice.
func (s *Spawner) Close() { s.once.Do(func() { close(s.quit) }) }

// Spec describes one process.
type Spec struct {
	// Name names the process in errors and its PID file, Dir/NAME.pid.
	Name string
	// NetNS is a network namespace under /run/netns to run in; "" runs in the caller's.
	NetNS string
	// Dir is the working directory and holds the PID file; "" inherits the caller's
	// and writes none.
	Dir string
	// Out receives stdout and stderr; nil discards them. If Out has a Flush() method,
	// it is called once the process has exited and all its output is written.
	Out io.Writer
	// Notes receives the lines Stop writes about the process (that it ignored SIGTERM);
	// nil: Out.
	Notes io.Writer
	Bin   string
	Args  []string
}

// Proc is one running (or exited) child.
type Proc struct {
	Name  string
	Cmd   *exec.Cmd
	notes io.Writer
	done  chan struct{} // closed once cmd.Wait returned
	err   error         // cmd.Wait's result, read after done
}

// Spawn starts the process in its own process group (a ^C in the terminal goes to the
// test binary only, which then stops its children in order) with Pdeathsig SIGKILL (if
// the test binary just dies, the kernel ends them).
func (s *Spawner) Spawn(sp Spec) (*Proc, error) {
	path, argv := sp.Bin, sp.Args
	if sp.NetNS != "" {
		path = "nsenter"
		argv = append([]string{"--net=/run/netns/" + sp.NetNS, "--", sp.Bin}, sp.Args...)
	}
	cmd := exec.Command(path, argv...)
	cmd.Stdout, cmd.Stderr = sp.Out, sp.Out
	cmd.Dir = sp.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.start(cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", sp.Name, err)
	}
	p := &Proc{Name: sp.Name, Cmd: cmd, notes: sp.Notes, done: make(chan struct{})}
	if p.notes == nil {
		p.notes = sp.Out
	}
	go func() {
		p.err = cmd.Wait()
		if f, ok := sp.Out.(interface{ Flush() }); ok {
			f.Flush()
		}
		close(p.done)
	}()
	if sp.Dir != "" {
		pidFile := filepath.Join(sp.Dir, sp.Name+".pid")
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
			_ = p.Stop(0)
			return nil, fmt.Errorf("recording %s PID: %w", sp.Name, err)
		}
	}
	return p, nil
}

// PID is the process's PID.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process is gone, with its exit error.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Stop sends SIGCONT (a frozen process could not act on what follows) and SIGTERM,
// waits up to grace for the exit, then sends SIGKILL and waits for good. A grace of zero
// kills at once. Exit statuses are not errors: a signalled daemon exits non-zero by
// design. Stop on a nil Proc (one never started) does nothing.
func (p *Proc) Stop(grace time.Duration) error {
	if p == nil {
		return nil
	}
	if done, _ := p.Exited(); done {
		return nil
	}
	if grace > 0 {
		_ = p.Cmd.Process.Signal(syscall.SIGCONT)
		if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("terminating %s: %w", p.Name, err)
		}
		select {
		case <-p.done:
			return nil
		case <-time.After(grace):
			if p.notes != nil {
				fmt.Fprintf(p.notes, "%s: still running %v after SIGTERM; sending SIGKILL\n", p.Name, grace)
			}
		}
	}
	if err := p.Cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", p.Name, err)
	}
	<-p.done
	return nil
}
