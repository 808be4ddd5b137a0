//go:build linux

package bfd

import (
	"strings"
	"testing"
	"time"

	"github.com/hostroute/hostroute/internal/testenv/bird"
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

// bfdPeer is BIRD (internal/testenv/bird) as a static BFD neighbour of 192.0.2.1.
type bfdPeer struct{ *bird.BIRD }

// sessions is BIRD's `show bfd sessions`.
func (b bfdPeer) sessions(t *testing.T) string {
	t.Helper()
	out, err := b.Query("show bfd sessions")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// wait waits until BIRD lists 192.0.2.1 in state st.
func (b bfdPeer) wait(t *testing.T, st string, timeout time.Duration) string {
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
	br := bfdPeer{bird.Start(t, l.b, birdConf)}
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
		if err := br.Freeze(); err != nil {
			t.Fatal(err)
		}
		ev := waitFor(t, s, addrB, Down, 5*time.Second)
		d := ev.Time.Sub(t0)
		detections = append(detections, d)
		t.Logf("round %d: SIGSTOP -> Down after %v (diag %v)", round, d.Round(time.Millisecond), ev.Diag)
		if ev.Diag != DiagDetectionExpired || d >= time.Second {
			t.Fatalf("round %d: Down %v after %v, want diag 1 within 1 s", round, ev.Diag, d)
		}
		t1 := time.Now()
		if err := br.Thaw(); err != nil {
			t.Fatal(err)
		}
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
		if err := br.Restart(); err != nil {
			t.Fatal(err)
		}
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
	log := br.Log()
	t.Logf("BIRD log:\n%s", log)
	if strings.Contains(log, "Bad packet") {
		t.Fatal("BIRD rejected some of our packets (see its log above)")
	}
}
