package gobgp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hostroute/hostroute/routing"
)

// The GoBGP tests run real in-process speakers on loopback. Every "node" has its own
// 127.0.<test>.<n> address (all of 127/8 works on lo), router ID and listener on one
// free port shared by the test's nodes. GoBGP's package-level settings are the same for
// all of them (multipath on), so several servers per process are fine. Set
// HOSTROUTE_BGP_DEBUG=1 to see the speakers' logs on stderr.

const gbAS = 64512

func gbPfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// gbTimers keep sessions and failures quick.
var gbTimers = routing.PeerConfig{HoldTime: 3 * time.Second, ConnectRetry: time.Second}

type gbNode struct {
	t    *testing.T
	name string
	addr netip.Addr
	as   uint32
	s    *Speaker
	logs *gbLogs
}

// freePort picks a TCP port by listening on :0 and closing it.
func gbFreePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// newNode starts a speaker at addr; listen=false gives it ListenPort -1 (it can only
// dial out).
func gbStart(t *testing.T, name, addr string, as uint32, port uint16, listen bool) *gbNode {
	t.Helper()
	n := &gbNode{t: t, name: name, addr: netip.MustParseAddr(addr), as: as, logs: &gbLogs{}}
	var h slog.Handler = n.logs
	if os.Getenv("HOSTROUTE_BGP_DEBUG") != "" {
		h = gbTee{n.logs, slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}).WithAttrs([]slog.Attr{slog.String("node", name)})}
	}
	n.s = NewWithOptions(slog.New(h), Options{LocalAddresses: []netip.Addr{n.addr}, PeerPort: port, RejectScanInterval: 100 * time.Millisecond})
	g := routing.GlobalConfig{AS: as, RouterID: n.addr, ListenPort: int32(port), ListenAddresses: []string{addr}}
	if !listen {
		g.ListenPort, g.ListenAddresses = -1, nil
	}
	if err := n.s.Start(context.Background(), g); err != nil {
		t.Fatalf("%s: start: %v", name, err)
	}
	t.Cleanup(func() { _ = n.s.Stop() })
	return n
}

// peerOf is n's configuration for a session to other. The lower address is passive.
func (n *gbNode) peerOf(other *gbNode, kind routing.PeerKind) routing.PeerConfig {
	pc := gbTimers
	pc.Address, pc.PeerAS, pc.Kind, pc.Name = other.addr, other.as, kind, other.name
	pc.Passive = n.addr.Less(other.addr)
	return pc
}

func (n *gbNode) setPeers(peers ...routing.PeerConfig) {
	n.t.Helper()
	if err := n.s.SetPeers(peers); err != nil {
		n.t.Fatalf("%s: set peers: %v", n.name, err)
	}
}

func (n *gbNode) advertise(prefix string, nextHop netip.Addr) {
	n.t.Helper()
	if err := n.s.Advertise(gbPfx(prefix), nextHop); err != nil {
		n.t.Fatalf("%s: advertise %s: %v", n.name, prefix, err)
	}
}

func (n *gbNode) setPolicy(p routing.Policy) {
	n.t.Helper()
	if err := n.s.SetPolicy(p); err != nil {
		n.t.Fatalf("%s: set policy: %v", n.name, err)
	}
}

func (n *gbNode) peerState(addr netip.Addr) routing.PeerState {
	n.t.Helper()
	ps, err := n.s.Peers()
	if err != nil {
		n.t.Fatalf("%s: peers: %v", n.name, err)
	}
	for _, p := range ps {
		if p.Config.Address == addr {
			return p
		}
	}
	return routing.PeerState{}
}

// waitEstablished waits for the session to other and returns how long it took.
func (n *gbNode) waitEstablished(other *gbNode, timeout time.Duration) time.Duration {
	n.t.Helper()
	start := time.Now()
	gbWaitFor(n.t, timeout, fmt.Sprintf("%s: session to %s established", n.name, other.name), func() bool {
		return n.peerState(other.addr).State == "Established"
	})
	return time.Since(start)
}

// best returns the learned next hops of prefix ("" list when none).
func (n *gbNode) best(prefix string) []netip.Addr {
	n.t.Helper()
	bps, err := n.s.BestPaths()
	if err != nil {
		n.t.Fatalf("%s: best paths: %v", n.name, err)
	}
	for _, bp := range bps {
		if bp.Prefix == gbPfx(prefix) {
			return bp.NextHops
		}
	}
	return nil
}

// waitBest waits until BestPaths shows exactly nextHops for prefix and returns the time
// it took.
func (n *gbNode) waitBest(prefix string, timeout time.Duration, nextHops ...netip.Addr) time.Duration {
	n.t.Helper()
	slices.SortFunc(nextHops, netip.Addr.Compare)
	start := time.Now()
	gbWaitFor(n.t, timeout, fmt.Sprintf("%s: best paths of %s = %v (have %v)", n.name, prefix, nextHops, "…"), func() bool {
		return slices.Equal(n.best(prefix), nextHops)
	})
	return time.Since(start)
}

func gbWaitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// watch records WatchBestPaths callbacks with their arrival times.
type gbWatch struct {
	mu     sync.Mutex
	events []gbEvent
}

type gbEvent struct {
	at time.Time
	bp routing.BestPath
}

func (n *gbNode) watch() *gbWatch {
	n.t.Helper()
	w := &gbWatch{}
	ctx, cancel := context.WithCancel(context.Background())
	n.t.Cleanup(cancel)
	err := n.s.WatchBestPaths(ctx, func(bp routing.BestPath) {
		w.mu.Lock()
		w.events = append(w.events, gbEvent{time.Now(), bp})
		w.mu.Unlock()
	})
	if err != nil {
		n.t.Fatalf("%s: watch: %v", n.name, err)
	}
	return w
}

// of returns the events for prefix.
func (w *gbWatch) of(prefix string) []gbEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []gbEvent
	for _, e := range w.events {
		if e.bp.Prefix == gbPfx(prefix) {
			out = append(out, e)
		}
	}
	return out
}

// waitSet waits for an event of prefix with exactly nextHops (empty = gone) that
// arrived at or after since, and returns its arrival time.
func (w *gbWatch) waitSet(t *testing.T, since time.Time, prefix string, timeout time.Duration, nextHops ...netip.Addr) time.Time {
	t.Helper()
	slices.SortFunc(nextHops, netip.Addr.Compare)
	var at time.Time
	gbWaitFor(t, timeout, fmt.Sprintf("watch event %s = %v", prefix, nextHops), func() bool {
		for _, e := range w.of(prefix) {
			if !e.at.Before(since) && slices.Equal(e.bp.NextHops, nextHops) {
				at = e.at
				return true
			}
		}
		return false
	})
	return at
}

// gbLogs is a slog.Handler keeping every record as "msg k=v k=v".
type gbLogs struct {
	mu    sync.Mutex
	lines []string
	attrs []slog.Attr
}

func (r *gbLogs) Enabled(context.Context, slog.Level) bool { return true }

func (r *gbLogs) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Level.String() + " " + rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	r.mu.Lock()
	r.lines = append(r.lines, b.String())
	r.mu.Unlock()
	return nil
}

func (r *gbLogs) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *gbLogs) WithGroup(string) slog.Handler      { return r }

// count returns how many records contain every one of parts.
func (r *gbLogs) count(parts ...string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := 0
	for _, l := range r.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			c++
		}
	}
	return c
}

type gbTee [2]slog.Handler

func (h gbTee) Enabled(ctx context.Context, l slog.Level) bool {
	return h[0].Enabled(ctx, l) || h[1].Enabled(ctx, l)
}

func (h gbTee) Handle(ctx context.Context, r slog.Record) error {
	_ = h[0].Handle(ctx, r.Clone())
	if h[1].Enabled(ctx, r.Level) {
		return h[1].Handle(ctx, r)
	}
	return nil
}

func (h gbTee) WithAttrs(a []slog.Attr) slog.Handler {
	return gbTee{h[0].WithAttrs(a), h[1].WithAttrs(a)}
}

func (h gbTee) WithGroup(g string) slog.Handler {
	return gbTee{h[0].WithGroup(g), h[1].WithGroup(g)}
}
