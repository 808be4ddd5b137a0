//go:build linux

package bfd

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
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

func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test creates network namespaces and must run as root (uid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("iproute2 is needed (e2e/tools/deps.sh installs it): %v", err)
	}
	sweepStale(t)
	r := make([]byte, 3)
	_, _ = rand.Read(r)
	base := "hrtest-bfd-" + hex.EncodeToString(r)
	l := &lab{a: base + "-a", b: base + "-b", ifA: "hrbfd-a", ifB: "hrbfd-b"}
	for _, ns := range []string{l.a, l.b} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
				t.Errorf("cleanup: ip netns delete %s: %v: %s", ns, err, out)
			}
		})
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	ipCmd(t, "-n", l.a, "link", "add", l.ifA, "type", "veth", "peer", "name", l.ifB, "netns", l.b)
	for _, e := range []struct{ ns, dev, v4, v6 string }{{l.a, l.ifA, "192.0.2.1/24", "2001:db8::1/64"}, {l.b, l.ifB, "192.0.2.2/24", "2001:db8::2/64"}} {
		ipCmd(t, "-n", e.ns, "addr", "add", e.v4, "dev", e.dev)
		ipCmd(t, "-n", e.ns, "addr", "add", e.v6, "dev", e.dev, "nodad")
		// Keep the IPv6 address across link down/up (the default flushes it), in the
		// lab's own namespace only.
		ipCmd(t, "netns", "exec", e.ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/"+e.dev+"/keep_addr_on_down")
		ipCmd(t, "-n", e.ns, "link", "set", e.dev, "up")
	}
	return l
}

// sweepStale deletes this test's namespaces left behind by a run that was killed before
// its cleanups ran (e.g. by the test timeout). Only old ones: a parallel run's are fresh.
func sweepStale(t *testing.T) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !strings.HasPrefix(e.Name(), "hrtest-bfd-") || time.Since(info.ModTime()) < time.Hour {
			continue
		}
		if out, err := exec.Command("ip", "netns", "delete", e.Name()).CombinedOutput(); err != nil {
			t.Logf("sweep %s: %v: %s", e.Name(), err, out)
		}
	}
}

// ipCmd runs ip(8) and fails the test on error.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// listenIn creates a Server inside the named namespace: the thread is locked, moved into
// the namespace for the socket calls only, and moved back. The sockets stay in the
// namespace; the Server's goroutines may run on any thread.
func listenIn(t *testing.T, ns string, local netip.Addr) *Server {
	t.Helper()
	s, err := listenInNS(ns, local, testLogger(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// listenInNS does the namespace switch on a goroutine of its own, so that if the switch
// back fails, the thread stays locked and the runtime retires it when that goroutine
// ends: no other goroutine ever runs in the wrong namespace.
func listenInNS(ns string, local netip.Addr, log *slog.Logger) (*Server, error) {
	type result struct {
		s   *Server
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := listenLocked(ns, local, log)
		ch <- result{s, err}
	}()
	r := <-ch
	return r.s, r.err
}

func listenLocked(ns string, local netip.Addr, log *slog.Logger) (*Server, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("open netns %s: %w", ns, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter netns %s: %w", ns, err)
	}
	s, lerr := Listen(log, local)
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked (see listenInNS).
		if s != nil {
			s.Close()
		}
		return nil, fmt.Errorf("return from netns %s: %w", ns, err)
	}
	runtime.UnlockOSThread()
	if lerr != nil {
		return nil, fmt.Errorf("listen in %s: %w", ns, lerr)
	}
	return s, nil
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
