// Package bird runs BIRD 2 (Debian bird2) inside a network namespace for hostroute's
// tests: the lab's ToR, a BFD peer, a second BGP router in a benchmark. Each BIRD is a
// child of the test (internal/testenv/proc), signalled only through its own process
// handle, never by name, and killed by the kernel if the test binary dies.
package bird

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hostroute/hostroute/internal/testenv"
	"github.com/hostroute/hostroute/internal/testenv/proc"
)

// BIRD is a BIRD 2 daemon running in a namespace. Dir holds its configuration, control
// socket (Ctl), PID file and log, which survives Restart.
type BIRD struct {
	NS  string
	Dir string
	Ctl string

	spawner *proc.Spawner
	p       *proc.Proc
}

// Start runs bird in the named namespace with the configuration, waits until its
// control socket answers, and stops it when the test ends (logging the end of its log
// if the test failed). A missing bird or birdc fails the test with the package to
// install.
func Start(t testenv.TB, ns string, conf string) *BIRD {
	t.Helper()
	for _, bin := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s (Debian bird2) is needed: run `make deps` (e2e/tools/deps.sh): %v", bin, err)
		}
	}
	dir := t.TempDir()
	b := &BIRD{NS: ns, Dir: dir, Ctl: filepath.Join(dir, "bird.ctl"), spawner: proc.NewSpawner()}
	if err := os.WriteFile(b.confPath(), []byte(conf), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		_ = b.p.Stop(0)
		b.spawner.Close()
		if t.Failed() {
			t.Logf("bird log (%s):\n%s", ns, tail(b.Log(), 40))
		}
	})
	if err := b.start(); err != nil {
		t.Fatalf("%v", err)
	}
	return b
}

func (b *BIRD) confPath() string { return filepath.Join(b.Dir, "bird.conf") }

// start runs bird and waits for its control socket, or for its exit.
func (b *BIRD) start() error {
	logf, err := os.OpenFile(filepath.Join(b.Dir, "bird.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// bird's own copy: the process holds it open, so closing ours right away is safe.
	defer logf.Close()
	_ = os.Remove(b.Ctl)
	b.p, err = b.spawner.Spawn(proc.Spec{Name: "bird", NetNS: b.NS, Dir: b.Dir, Out: logf, Bin: "bird",
		Args: []string{"-f", "-c", b.confPath(), "-s", b.Ctl}})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, qerr := b.Query("show status")
		if qerr == nil {
			return nil
		}
		if done, werr := b.p.Exited(); done {
			return fmt.Errorf("bird in %s exited at start (%v):\n%s", b.NS, werr, tail(b.Log(), 20))
		}
		if time.Now().After(deadline) {
			_ = b.p.Stop(0)
			return fmt.Errorf("bird in %s: control socket not up after 10s: %w", b.NS, qerr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Query runs a birdc command.
func (b *BIRD) Query(cmd string) (string, error) {
	out, err := exec.Command("birdc", append([]string{"-s", b.Ctl}, strings.Fields(cmd)...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", cmd, err, out)
	}
	return string(out), nil
}

// PID is the running bird's PID.
func (b *BIRD) PID() int { return b.p.PID() }

// Freeze stops the BIRD process (SIGSTOP): it neither sends nor answers anything, as a
// hung router would. Thaw resumes it.
func (b *BIRD) Freeze() error { return b.p.Signal(syscall.SIGSTOP) }

// Thaw resumes a frozen BIRD.
func (b *BIRD) Thaw() error { return b.p.Signal(syscall.SIGCONT) }

// Restart stops BIRD as an operator would (SIGTERM: it shuts its sessions down) and
// starts it again with the same configuration, so it comes back with new session state
// (BFD discriminators, BGP sessions).
func (b *BIRD) Restart() error {
	if err := b.p.Stop(5 * time.Second); err != nil {
		return err
	}
	return b.start()
}

// Log returns what BIRD logged so far, over every restart.
func (b *BIRD) Log() string {
	out, _ := os.ReadFile(filepath.Join(b.Dir, "bird.log"))
	return string(out)
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Reconfigure replaces BIRD's configuration and applies it without a restart.
func (b *BIRD) Reconfigure(conf string) error {
	if err := os.WriteFile(b.confPath(), []byte(conf), 0o644); err != nil {
		return err
	}
	_, err := b.Query("configure")
	return err
}
