//go:build linux

package bfd

import (
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// lab is two network namespaces joined by a veth: a has 192.0.2.1/24 and 2001:db8::1/64
// on ifA, b has .2 and ::2 on ifB. Nothing is created in, or sent to, the namespace the
// test runs in: the veth is created inside a and its peer moved straight into b.
type lab struct{ a, b, ifA, ifB string }

var (
	addrA  = netip.MustParseAddr("192.0.2.1")
	addrB  = netip.MustParseAddr("192.0.2.2")
	addrA6 = netip.MustParseAddr("2001:db8::1")
	addrB6 = netip.MustParseAddr("2001:db8::2")
)

// nsPrefix starts the name of every namespace these tests create.
const nsPrefix = "hrtest-bfd-"

// TestMain sweeps the namespaces of an earlier run that was killed before its cleanups.
func TestMain(m *testing.M) { netns.TestMain(m, nsPrefix) }

func newLab(t *testing.T) *lab {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("iproute2 is needed (e2e/tools/deps.sh installs it): %v", err)
	}
	prefix := netns.OwnedPrefix(nsPrefix)
	l := &lab{a: netns.ForTest(t, prefix+"a-"), b: netns.ForTest(t, prefix+"b-"), ifA: "hrbfd-a", ifB: "hrbfd-b"}
	ipCmd(t, "-n", l.a, "link", "add", l.ifA, "type", "veth", "peer", "name", l.ifB, "netns", l.b)
	for _, e := range []struct{ ns, dev, v4, v6 string }{{l.a, l.ifA, "192.0.2.1/24", "2001:db8::1/64"}, {l.b, l.ifB, "192.0.2.2/24", "2001:db8::2/64"}} {
		ipCmd(t, "-n", e.ns, "addr", "add", e.v4, "dev", e.dev)
		ipCmd(t, "-n", e.ns, "addr", "add", e.v6, "dev", e.dev, "nodad")
		// Keep the IPv6 address across link down/up (the default flushes it), in the
		// lab's own namespace only.
		if err := netns.Exec(e.ns, "sysctl", "-qw", "net.ipv6.conf."+e.dev+".keep_addr_on_down=1"); err != nil {
			t.Fatal(err)
		}
		ipCmd(t, "-n", e.ns, "link", "set", e.dev, "up")
	}
	return l
}

// ipCmd runs ip(8) and fails the test on error.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// listenIn creates a Server inside the named namespace (netns.Do: a locked thread moved
// into the namespace for the socket calls only). The sockets stay in the namespace; the
// Server's goroutines may run on any thread.
func listenIn(t *testing.T, ns string, local netip.Addr) *Server {
	t.Helper()
	var s *Server
	err := netns.Do(ns, func() error {
		var err error
		s, err = Listen(testLogger(t, ns), local)
		return err
	})
	if err != nil {
		if s != nil {
			s.Close()
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testLogger(t *testing.T, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})).With("ns", name)
}

// drain discards queued events so the next wait sees only new ones.
func drain(s *Server) {
	for {
		select {
		case <-s.Events():
		default:
			return
		}
	}
}

// waitFor returns the first event for peer in state st, or fails after timeout.
func waitFor(t *testing.T, s *Server, peer netip.Addr, st State, timeout time.Duration) Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-s.Events():
			if !ok {
				t.Fatalf("events closed while waiting for %v %v", peer, st)
			}
			if ev.Peer == peer && ev.State == st {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %v for %v within %v; sessions: %+v", st, peer, timeout, s.Sessions())
		}
	}
}

// session returns the snapshot of one peer's session.
func sessionOf(s *Server, peer netip.Addr) (SessionState, bool) {
	for _, x := range s.Sessions() {
		if x.Peer == peer {
			return x, true
		}
	}
	return SessionState{}, false
}

// waitNegotiated waits until the session is Up with both polls done at the given rates.
func waitNegotiated(t *testing.T, s *Server, peer netip.Addr, tx, detect time.Duration) SessionState {
	t.Helper()
	var x SessionState
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		x, _ = sessionOf(s, peer)
		if x.State == Up && !x.Polling && x.TxInterval == tx && x.DetectTime == detect {
			return x
		}
	}
	t.Fatalf("%v never negotiated tx %v detect %v: %+v", peer, tx, detect, x)
	return x
}
