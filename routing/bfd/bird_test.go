//go:build linux

package bfd

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// birdConf is a static BFD neighbour (no BGP needed) at 100 ms × 3, BIRD 2 syntax.
const birdConf = `router id 192.0.2.2;
log stderr all;
debug protocols { states, events };
protocol device { scan time 1; }
protocol bfd {
	interface "*" {
		min rx interval 100 ms;
		min tx interval 100 ms;
		multiplier 3;
	};
	neighbor 192.0.2.1;
}
`

// bird is one BIRD process this test started; it is only ever signalled through its
// own os.Process (a pidfd on Linux), never by name.
type bird struct {
	cmd      *exec.Cmd
	ctl, log string
	done     chan struct{}
}

// startBird runs BIRD in the namespace and registers its cleanup.
func startBird(t *testing.T, ns, dir string) *bird {
	t.Helper()
	for _, bin := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: install Debian bird2 (e2e/tools/deps.sh does): %v", bin, err)
		}
	}
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(birdConf), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &bird{ctl: filepath.Join(dir, "bird.ctl"), log: filepath.Join(dir, "bird.log"), done: make(chan struct{})}
	logf, err := os.OpenFile(b.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	_ = os.Remove(b.ctl)
	// ip netns exec execs bird in place, so the PID is BIRD's own.
	b.cmd = exec.Command("ip", "netns", "exec", ns, "bird", "-f", "-c", conf, "-s", b.ctl, "-P", filepath.Join(dir, "bird.pid"))
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	// If this test process dies before its cleanup, the kernel kills our BIRD too.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start bird: %v", err)
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	t.Cleanup(func() {
		b.stop(t)
		if t.Failed() {
			out, _ := os.ReadFile(b.log)
			t.Logf("BIRD log:\n%s", out)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(b.ctl); err == nil {
			break
		}
		select {
		case <-b.done:
			out, _ := os.ReadFile(b.log)
			t.Fatalf("bird exited at start: %s", out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("bird control socket did not appear within 10 s")
		}
	}
	return b
}

func (b *bird) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := b.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to bird (pid %d): %v", sig, b.cmd.Process.Pid, err)
	}
}

// stop ends this BIRD: SIGCONT (it may be stopped), SIGTERM, and SIGKILL after 5 s.
func (b *bird) stop(t *testing.T) {
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGCONT)
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		t.Logf("bird (pid %d) ignored SIGTERM, killing it", b.cmd.Process.Pid)
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

func (b *bird) sessions(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("birdc", "-s", b.ctl, "show", "bfd", "sessions").CombinedOutput()
	if err != nil {
		t.Fatalf("birdc show bfd sessions: %v: %s", err, out)
	}
	return string(out)
}

// waitBird waits until BIRD lists 192.0.2.1 in state st.
func (b *bird) wait(t *testing.T, st string, timeout time.Duration) string {
	t.Helper()
	var out string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		out = b.sessions(t)
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "192.0.2.1" && f[2] == st {
				return out
			}
		}
	}
	t.Fatalf("BIRD never showed 192.0.2.1 %s within %v:\n%s", st, timeout, out)
	return out
}

// TestBIRDInterop runs our Server against BIRD 2 across the lab's veth: bring-up with
// BIRD's poll to 100 ms, detection of a frozen BIRD (SIGSTOP), recovery (SIGCONT), a
// restarted BIRD with a new discriminator, and our Remove seen by BIRD.
func TestBIRDInterop(t *testing.T) {
	l := newLab(t)
	dir := t.TempDir()
	br := startBird(t, l.b, dir)
	s := listenIn(t, l.a, addrA)
	start := time.Now()
	if err := s.Add(addrB, addrA, Config{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s, addrB, Up, 15*time.Second)
	t.Logf("Up with BIRD after %v", time.Since(start).Round(time.Millisecond))
	x := waitNegotiated(t, s, addrB, 100*time.Millisecond, 300*time.Millisecond)
	t.Logf("ours: %+v", x)
	t.Logf("BIRD:\n%s", br.wait(t, "Up", 5*time.Second))

	var detections []time.Duration
	for round := range 3 {
		drain(s)
		t0 := time.Now()
		br.signal(t, syscall.SIGSTOP)
		ev := waitFor(t, s, addrB, Down, 5*time.Second)
		d := ev.Time.Sub(t0)
		detections = append(detections, d)
		t.Logf("round %d: SIGSTOP -> Down after %v (diag %v)", round, d.Round(time.Millisecond), ev.Diag)
		if ev.Diag != DiagDetectionExpired || d >= time.Second {
			t.Fatalf("round %d: Down %v after %v, want diag 1 within 1 s", round, ev.Diag, d)
		}
		t1 := time.Now()
		br.signal(t, syscall.SIGCONT)
		ev = waitFor(t, s, addrB, Up, 15*time.Second)
		t.Logf("round %d: SIGCONT -> Up after %v", round, ev.Time.Sub(t1).Round(time.Microsecond))
		br.wait(t, "Up", 5*time.Second)
		waitNegotiated(t, s, addrB, 100*time.Millisecond, 300*time.Millisecond)
	}
	t.Logf("detection times against BIRD: %v", detections)

	// Not subtests: BIRD's cleanup must stay with the whole test.
	{ // BIRD restarts: a new discriminator, which we must follow rather than discard.
		drain(s)
		old, _ := sessionOf(s, addrB)
		t0 := time.Now()
		br.stop(t)
		br = startBird(t, l.b, dir)
		ev := waitFor(t, s, addrB, Down, 5*time.Second)
		t.Logf("BIRD restart -> Down after %v: diag %v, remote %v", ev.Time.Sub(t0).Round(time.Millisecond), ev.Diag, ev.RemoteState)
		ev = waitFor(t, s, addrB, Up, 15*time.Second)
		t.Logf("BIRD restart -> Up after %v", ev.Time.Sub(t0).Round(time.Millisecond))
		br.wait(t, "Up", 5*time.Second)
		if now, _ := sessionOf(s, addrB); now.RemoteDiscriminator == old.RemoteDiscriminator {
			t.Errorf("BIRD kept discriminator %d across a restart?", old.RemoteDiscriminator)
		}
	}

	{ // our Remove is seen by BIRD as AdminDown
		if err := s.Remove(addrB); err != nil {
			t.Fatal(err)
		}
		out := br.wait(t, "Down", 5*time.Second)
		t.Logf("BIRD after our Remove:\n%s", out)
	}

	// BIRD logs packets it rejects ("Bad packet from ... - wrong TTL" and the like).
	log, err := os.ReadFile(br.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("BIRD log:\n%s", log)
	if bytes.Contains(log, []byte("Bad packet")) {
		t.Fatal("BIRD rejected some of our packets (see its log above)")
	}
}
