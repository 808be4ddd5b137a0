// Package bird runs BIRD 2 (Debian bird2) inside a network namespace for hostroute's
// tests: the lab's ToR, a BFD peer, a second BGP router in a benchmark. Each BIRD is
// signalled only through its own process handle, never by name.
package bird

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// TB is the part of testing.TB Start uses; the lab implements it too.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	Failed() bool
	TempDir() string
}

// BIRD is a BIRD 2 daemon running in a namespace.
type BIRD struct {
	NS   string
	Dir  string
	Ctl  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs bird in the namespace with the configuration, waits for its control socket
// and stops it when the test ends (by its PID). A missing bird fails the test.
func Start(t TB, ns string, conf string) *BIRD {
	t.Helper()
	for _, bin := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s (Debian bird2) is needed: run `make deps`: %v", bin, err)
		}
	}
	dir := t.TempDir()
	b := &BIRD{NS: ns, Dir: dir, Ctl: filepath.Join(dir, "bird.ctl"), done: make(chan struct{})}
	cfgPath := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	logf, err := os.Create(filepath.Join(dir, "bird.log"))
	if err != nil {
		t.Fatalf("%v", err)
	}
	// nsenter (not `ip netns exec`) so that the PID we hold is bird's own.
	b.cmd = exec.Command("nsenter", "--net=/run/netns/"+ns, "--", "bird", "-f", "-c", cfgPath, "-s", b.Ctl, "-P", filepath.Join(dir, "bird.pid"))
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	go func() { _ = b.cmd.Wait(); logf.Close(); close(b.done) }()
	t.Cleanup(func() {
		_ = b.cmd.Process.Signal(syscall.SIGCONT)
		_ = b.cmd.Process.Kill()
		<-b.done
		if t.Failed() {
			t.Logf("bird log:\n%s", tail(b.Log(), 40))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := b.Query("show status")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bird control socket: not up after 10s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return b
}

// Query runs a birdc command.
func (b *BIRD) Query(cmd string) (string, error) {
	out, err := exec.Command("birdc", append([]string{"-s", b.Ctl}, strings.Fields(cmd)...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", cmd, err, out)
	}
	return string(out), nil
}

// Freeze stops the BIRD process (SIGSTOP); Thaw resumes it.
func (b *BIRD) Freeze() error { return b.cmd.Process.Signal(syscall.SIGSTOP) }

// Thaw resumes a frozen BIRD.
func (b *BIRD) Thaw() error { return b.cmd.Process.Signal(syscall.SIGCONT) }

// Log returns what BIRD logged so far.
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
	if err := os.WriteFile(filepath.Join(b.Dir, "bird.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	_, err := b.Query("configure")
	return err
}
