package bfdd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hostroute/hostroute/routing/bfd"
)

// fakeBackend stands in for bfd.Server.
type fakeBackend struct {
	mu       sync.Mutex
	sessions map[netip.Addr]bfd.SessionState
	events   chan bfd.Event
	adds     int
}

func newFake() *fakeBackend {
	return &fakeBackend{sessions: map[netip.Addr]bfd.SessionState{}, events: make(chan bfd.Event, 16)}
}

func (f *fakeBackend) Add(peer, local netip.Addr, _ bfd.Config) error {
	if peer.IsUnspecified() {
		return errors.New("bfd: add 0.0.0.0: not a unicast peer address")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adds++
	if _, ok := f.sessions[peer]; !ok {
		f.sessions[peer] = bfd.SessionState{Peer: peer, Local: local, State: bfd.Down}
	}
	return nil
}

func (f *fakeBackend) Remove(peer netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sessions, peer)
	return nil
}

func (f *fakeBackend) Events() <-chan bfd.Event { return f.events }

func (f *fakeBackend) Sessions() []bfd.SessionState {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []bfd.SessionState
	for _, s := range f.sessions {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b bfd.SessionState) int { return a.Peer.Compare(b.Peer) })
	return out
}

func (f *fakeBackend) set(peer netip.Addr, st bfd.State, d bfd.Diag) {
	f.mu.Lock()
	s := f.sessions[peer]
	s.State, s.Diag = st, d
	f.sessions[peer] = s
	f.mu.Unlock()
	f.events <- bfd.Event{Peer: peer, State: st, Diag: d}
}

func (f *fakeBackend) peers() []netip.Addr {
	var out []netip.Addr
	for _, s := range f.Sessions() {
		out = append(out, s.Peer)
	}
	return out
}

// startDaemon serves b at path until the returned stop is called.
func startDaemon(t *testing.T, b Backend, path string) (stop func()) {
	t.Helper()
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, slog.New(slog.DiscardHandler), b, ln) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func nextEvent(t *testing.T, c *Client) bfd.Event {
	t.Helper()
	select {
	case ev := <-c.Events():
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
		return bfd.Event{}
	}
}

var (
	peerA = netip.MustParseAddr("192.0.2.2")
	peerB = netip.MustParseAddr("192.0.2.3")
	local = netip.MustParseAddr("192.0.2.1")
)

// The agent starts before the daemon, asks for sessions, restarts the daemon, removes one
// while it is away: the daemon always ends up holding exactly what the agent wants.
func TestClientReplaysAcrossDaemonRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bfd.sock")
	c := Dial(slog.New(slog.DiscardHandler), path)
	defer c.Close()
	if err := c.Add(peerA, local, bfd.Config{}); err != nil {
		t.Fatalf("Add before the daemon runs: %v (want it kept for later)", err)
	}
	if err := c.Add(peerB, local, bfd.Config{}); err != nil {
		t.Fatal(err)
	}
	first := newFake()
	stop := startDaemon(t, first, path)
	eventually(t, "both sessions replayed to the daemon", func() bool { return len(first.peers()) == 2 })

	stop()
	eventually(t, "the client notices", func() bool { return !c.Connected() })
	if err := c.Remove(peerB); err != nil {
		t.Fatalf("Remove while the daemon is away: %v", err)
	}
	second := newFake()
	second.sessions[peerB] = bfd.SessionState{Peer: peerB, State: bfd.Up} // held from before
	startDaemon(t, second, path)
	eventually(t, "the new daemon holds only peer A", func() bool {
		return slices.Equal(second.peers(), []netip.Addr{peerA})
	})
	if err := c.Add(netip.IPv4Unspecified(), local, bfd.Config{}); err == nil {
		t.Fatal("the daemon's refusal of a bad peer did not reach the caller")
	}
	if got := c.Sessions(); len(got) != 1 || got[0].Peer != peerA {
		t.Fatalf("Sessions() = %+v", got)
	}
}

// A new connection first gets the sessions' states (Up, and Down after having been Up),
// then every change; a session that never came up is not reported dead.
func TestSnapshotThenChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bfd.sock")
	b := newFake()
	never := netip.MustParseAddr("192.0.2.4")
	b.sessions[peerA] = bfd.SessionState{Peer: peerA, State: bfd.Up}
	b.sessions[peerB] = bfd.SessionState{Peer: peerB, State: bfd.Down, Diag: bfd.DiagDetectionExpired}
	b.sessions[never] = bfd.SessionState{Peer: never, State: bfd.Down}
	startDaemon(t, b, path)
	c := Dial(slog.New(slog.DiscardHandler), path)
	defer c.Close()
	got := map[netip.Addr]bfd.State{}
	for range 2 {
		ev := nextEvent(t, c)
		got[ev.Peer] = ev.State
	}
	if got[peerA] != bfd.Up || got[peerB] != bfd.Down {
		t.Fatalf("snapshot %v, want A Up and B Down", got)
	}
	b.set(peerA, bfd.Down, bfd.DiagDetectionExpired)
	if ev := nextEvent(t, c); ev.Peer != peerA || ev.State != bfd.Down || ev.Diag != bfd.DiagDetectionExpired {
		t.Fatalf("change: %+v", ev)
	}
}

// A live daemon's socket is never taken over; a dead one's file is replaced.
func TestListenUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "bfd.sock")
	startDaemon(t, newFake(), path)
	if _, err := ListenUnix(path); err == nil {
		t.Fatal("a second daemon took over a live daemon's socket")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v, want 0600", fi.Mode(), err)
	}

	stale := filepath.Join(t.TempDir(), "bfd.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the file stays, nobody answers: a crashed daemon's leftover
	ln2, err := ListenUnix(stale)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln2.Close()
}
