package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
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

// errAddrInUse marks a start attempt that failed because a port was taken
// between picking it and binding it; Start retries those once.
var errAddrInUse = errors.New("address already in use")

// proc is one child process and what is known about its exit.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *lineWriter
	done chan struct{} // closed once cmd.Wait has returned
	err  error         // cmd.Wait's result; read only after done is closed
}

// spawn starts bin (inside netns, if set) with its output going to sink, and
// records its PID in Dir so that a later Start can clean up after a test
// binary that died without calling Stop.
func (c *Cluster) spawn(netns string, sink io.Writer, name, bin string, args ...string) (*proc, error) {
	path, argv := bin, args
	if netns != "" {
		// nsenter execs bin in place (no fork is needed to enter a network
		// namespace), so the PID recorded below is the server's own.
		path = "nsenter"
		argv = append([]string{"--net=" + netnsPath(netns), "--", bin}, args...)
	}
	cmd := exec.Command(path, argv...)
	out := &lineWriter{prefix: name + ": ", sink: sink}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group, so a ^C in the terminal goes to the test binary
		// only; the children then end through Stop, or through Pdeathsig if
		// the binary just dies, rather than each acting on the signal alone.
		Setpgid: true,
		// If the test binary dies without Stop, the kernel ends the children.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := c.spawner.start(cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	c.procs = append(c.procs, p)
	go func() {
		p.err = cmd.Wait()
		out.flush()
		close(p.done)
	}()
	pidFile := filepath.Join(c.Dir, name+".pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("recording %s PID: %w", name, err)
	}
	return p, nil
}

// exitError describes a process that exited while it should have been
// running, with the end of its output, which is nearly always where the reason
// is.
func (p *proc) exitError() error {
	tail := p.out.tail()
	err := fmt.Errorf("%s exited early (%v); last output:\n%s", p.name, p.err, tail)
	if strings.Contains(tail, "address already in use") {
		return fmt.Errorf("%w: %w", errAddrInUse, err)
	}
	return err
}

// stop sends SIGTERM, waits up to grace for the exit, then sends SIGKILL and
// waits for good. A grace of zero kills at once. Exit statuses are not
// errors: a signalled server exits non-zero by design.
func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if grace > 0 {
		// os.Process.Signal uses a pidfd, so this cannot hit a recycled PID.
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("terminating %s: %w", p.name, err)
		}
		select {
		case <-p.done:
			return nil
		case <-time.After(grace):
			fmt.Fprintf(p.out.sink, "%s: still running %v after SIGTERM; sending SIGKILL\n", p.name, grace)
		}
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", p.name, err)
	}
	<-p.done
	return nil
}

// waitHTTP polls url, served by p, until it answers 200, ctx ends, or any of
// procs exits, so that a process dying at start-up fails Start at once with
// its own last words instead of as a timeout.
func waitHTTP(ctx context.Context, p *proc, url, token string, procs []*proc) error {
	what := p.name
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			// The apiserver's certificate is self-signed, and only readiness
			// is being checked here.
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test apiserver
			DisableKeepAlives: true,
		},
	}
	defer client.CloseIdleConnections()
	var last string
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, q := range procs {
			select {
			case <-q.done:
				return q.exitError()
			default:
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %w (last answer: %s); last output:\n%s",
				what, url, ctx.Err(), last, p.out.tail())
		case <-tick.C:
		}
	}
}

// spawner starts processes from one goroutine locked to its OS thread for the
// cluster's whole life. Pdeathsig fires when the *thread* that forked the
// child exits, not the process, and Go retires threads whenever a goroutine
// exits while locked to one — which network-namespace code in this project
// does on purpose. Forking from an ordinary goroutine would let unrelated code
// SIGKILL the control plane at random; a thread that nothing else can run on
// only goes away when Stop says so.
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
				// The thread returns to the pool rather than exiting; the
				// children are gone by now either way.
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
		return errors.New("cluster stopped")
	}
}

func (s *spawner) close() { s.once.Do(func() { close(s.quit) }) }

// lockedWriter serialises writes from the output copiers of both processes,
// since a caller's io.Writer need not be safe for concurrent use.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// lineWriter prefixes each line of a process's output with its name before
// passing it on, and keeps the last tailLines lines for error messages.
type lineWriter struct {
	prefix string
	sink   io.Writer

	mu      sync.Mutex
	partial []byte
	lines   []string
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.emit(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	// A failing log sink must not block or kill the process, so its errors
	// are dropped rather than returned to the copier.
	return len(b), nil
}

func (w *lineWriter) emit(line string) {
	_, _ = io.WriteString(w.sink, w.prefix+line+"\n")
	w.lines = append(w.lines, line)
	if len(w.lines) > tailLines {
		w.lines = w.lines[len(w.lines)-tailLines:]
	}
}

// flush emits a final line that had no newline.
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.emit(string(w.partial))
		w.partial = nil
	}
}

func (w *lineWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}

// sweepLeftovers removes cluster directories under tmp whose owning process is
// gone, killing the children recorded there first. A child is killed only if
// /proc/PID/cmdline still shows one of our binaries working in that very
// directory, so a recycled PID is never hit. Errors are ignored: the sweep is
// housekeeping and must not fail a test that would otherwise pass.
func sweepLeftovers(tmp string, binaries map[string]bool) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, dirPrefix+"*"))
	for _, dir := range dirs {
		st, err := os.Lstat(dir)
		if err != nil || !st.IsDir() {
			continue
		}
		owner, err := readPID(filepath.Join(dir, ownerFile))
		if err != nil {
			// Start writes owner.pid right after creating the directory, so a
			// young one without it is probably being set up right now.
			if time.Since(st.ModTime()) < time.Minute {
				continue
			}
		} else if owner == os.Getpid() || alive(owner) {
			continue
		}
		var killed []int
		pidFiles, _ := filepath.Glob(filepath.Join(dir, "*.pid"))
		for _, f := range pidFiles {
			name := strings.TrimSuffix(filepath.Base(f), ".pid")
			if !binaries[name] {
				continue
			}
			pid, err := readPID(f)
			if err != nil || !isOurs(pid, name, dir) {
				continue
			}
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed = append(killed, pid)
			}
		}
		// They are not our children, so they cannot be waited for; give the
		// kernel a moment to release their ports before the new cluster binds.
		deadline := time.Now().Add(2 * time.Second)
		for _, pid := range killed {
			for alive(pid) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
		_ = os.RemoveAll(dir)
	}
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

// alive reports whether pid exists. EPERM means it exists but belongs to
// someone else. A zombie counts as alive, which only delays its sweep.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// isOurs reports whether pid is binary `name` started for cluster dir `dir`:
// argv[0] names the binary and some argument (--data-dir, --cert-dir, ...)
// lies inside dir.
func isOurs(pid int, name, dir string) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil || len(b) == 0 {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if filepath.Base(args[0]) != name {
		return false
	}
	for _, a := range args[1:] {
		if strings.HasPrefix(a, dir+string(filepath.Separator)) {
			return true
		}
	}
	return false
}
