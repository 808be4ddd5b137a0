// Package routingtest has test doubles for code that drives a routing.Speaker (the node
// agent's reconcilers): Fake, an in-memory speaker that records what it is told and
// plays back what a test injects. Only tests import it.
package routingtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hostroute/hostroute/routing"
)

// Fake is an in-memory routing.Speaker for unit tests of code that drives a Speaker. It
// records what it is told (Advertised, PeerConfigs, CurrentPolicy, ShutDown) and lets a
// test inject what BGP would learn (SetBestPath, SetPeerState) and failures (FailNext).
// It follows GoBGP's semantics where a caller could notice: calls other than SetPolicy
// and WatchBestPaths fail before Start; Stop forgets peers, routes and policy and
// reports every best path gone; WatchBestPaths returns at once and delivers the current
// set, then changes, in order on one goroutine per watch until its context ends.
type Fake struct {
	// DefaultState is the session state Peers reports for a neighbour without an
	// injected state; NewFake sets "Established".
	DefaultState string

	mu         sync.Mutex
	started    bool
	global     routing.GlobalConfig
	advertised map[netip.Prefix]netip.Addr
	peers      map[netip.Addr]routing.PeerConfig
	policy     *routing.Policy
	states     map[netip.Addr]routing.PeerState
	shutdown   map[netip.Addr]string
	best       map[netip.Prefix]routing.BestPath
	fail       map[string]error
	watchers   map[*fakeWatch]struct{}
}

var _ routing.Speaker = (*Fake)(nil)

// NewFake returns a stopped Fake whose neighbours are Established.
func NewFake() *Fake {
	return &Fake{
		DefaultState: "Established",
		advertised:   map[netip.Prefix]netip.Addr{},
		peers:        map[netip.Addr]routing.PeerConfig{},
		states:       map[netip.Addr]routing.PeerState{},
		shutdown:     map[netip.Addr]string{},
		best:         map[netip.Prefix]routing.BestPath{},
		fail:         map[string]error{},
		watchers:     map[*fakeWatch]struct{}{},
	}
}

// FailNext makes the next call of the named method ("Advertise", "SetPeers", ...)
// return err without doing anything.
func (f *Fake) FailNext(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[method] = err
}

// enter checks injected failures and Start; f.mu held.
func (f *Fake) enter(method string, needStarted bool) error {
	if err, ok := f.fail[method]; ok {
		delete(f.fail, method)
		return err
	}
	if needStarted && !f.started {
		return fmt.Errorf("fake bgp: %s: not started", method)
	}
	return nil
}

func (f *Fake) Start(_ context.Context, g routing.GlobalConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("Start", false); err != nil {
		return err
	}
	if f.started {
		return errors.New("fake bgp: already started")
	}
	f.started, f.global = true, g
	return nil
}

func (f *Fake) Stop() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("Stop", false); err != nil {
		return err
	}
	f.started = false
	f.advertised = map[netip.Prefix]netip.Addr{}
	f.peers = map[netip.Addr]routing.PeerConfig{}
	f.states = map[netip.Addr]routing.PeerState{}
	f.shutdown = map[netip.Addr]string{}
	f.policy = nil
	for _, pfx := range slices.SortedFunc(maps.Keys(f.best), netip.Prefix.Compare) {
		f.setBestLocked(routing.BestPath{Prefix: pfx})
	}
	return nil
}

func (f *Fake) Advertise(prefix netip.Prefix, nextHop netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("Advertise", true); err != nil {
		return err
	}
	if !prefix.IsValid() || !nextHop.IsValid() || prefix.Addr().Is4() != nextHop.Is4() {
		return fmt.Errorf("fake bgp: advertise %v via %v: need a prefix and a next hop of the same family", prefix, nextHop)
	}
	f.advertised[prefix.Masked()] = nextHop
	return nil
}

func (f *Fake) Withdraw(prefix netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("Withdraw", true); err != nil {
		return err
	}
	delete(f.advertised, prefix.Masked())
	return nil
}

func (f *Fake) SetPeers(peers []routing.PeerConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("SetPeers", true); err != nil {
		return err
	}
	want := map[netip.Addr]routing.PeerConfig{}
	for _, pc := range peers {
		if !pc.Address.IsValid() {
			return fmt.Errorf("fake bgp: set peers: peer %q has no address", pc.Name)
		}
		if _, dup := want[pc.Address]; dup {
			return fmt.Errorf("fake bgp: set peers: %v listed twice", pc.Address)
		}
		want[pc.Address] = pc
	}
	for a := range f.peers {
		if _, ok := want[a]; !ok {
			delete(f.states, a)
			delete(f.shutdown, a)
		}
	}
	f.peers = want
	return nil
}

func (f *Fake) SetPolicy(p routing.Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("SetPolicy", false); err != nil {
		return err
	}
	c := p.Clone()
	f.policy = &c
	return nil
}

func (f *Fake) Peers() ([]routing.PeerState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("Peers", true); err != nil {
		return nil, err
	}
	out := make([]routing.PeerState, 0, len(f.peers))
	for _, a := range slices.SortedFunc(maps.Keys(f.peers), netip.Addr.Compare) {
		st, ok := f.states[a]
		if !ok {
			st = routing.PeerState{State: f.DefaultState}
		}
		st.Config = f.peers[a]
		if reason, down := f.shutdown[a]; down {
			st.State, st.LastError = "Idle", "shut down: "+reason
		}
		out = append(out, st)
	}
	return out, nil
}

func (f *Fake) BestPaths() ([]routing.BestPath, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("BestPaths", true); err != nil {
		return nil, err
	}
	out := make([]routing.BestPath, 0, len(f.best))
	for _, pfx := range slices.SortedFunc(maps.Keys(f.best), netip.Prefix.Compare) {
		out = append(out, cloneBest(f.best[pfx]))
	}
	return out, nil
}

func (f *Fake) ShutdownPeer(addr netip.Addr, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ShutdownPeer", true); err != nil {
		return err
	}
	if _, ok := f.peers[addr]; !ok {
		return fmt.Errorf("fake bgp: shutdown peer %v: not a neighbour", addr)
	}
	f.shutdown[addr] = reason
	return nil
}

func (f *Fake) EnablePeer(addr netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("EnablePeer", true); err != nil {
		return err
	}
	if _, ok := f.peers[addr]; !ok {
		return fmt.Errorf("fake bgp: enable peer %v: not a neighbour", addr)
	}
	delete(f.shutdown, addr)
	return nil
}

// Advertised returns our own prefixes with their next hops.
func (f *Fake) Advertised() map[netip.Prefix]netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.advertised)
}

// PeerConfigs returns the neighbours as last set, sorted by address.
func (f *Fake) PeerConfigs() []routing.PeerConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]routing.PeerConfig, 0, len(f.peers))
	for _, a := range slices.SortedFunc(maps.Keys(f.peers), netip.Addr.Compare) {
		out = append(out, f.peers[a])
	}
	return out
}

// CurrentPolicy returns the policy last set; ok is false if none was.
func (f *Fake) CurrentPolicy() (p routing.Policy, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.policy == nil {
		return routing.Policy{}, false
	}
	return f.policy.Clone(), true
}

// ShutDown returns the neighbours shut down by ShutdownPeer, with the reasons.
func (f *Fake) ShutDown() map[netip.Addr]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.shutdown)
}

// Started reports whether the Fake runs.
func (f *Fake) Started() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.started
}

// SetPeerState injects what Peers reports for addr (Config is filled in by Peers).
func (f *Fake) SetPeerState(addr netip.Addr, st routing.PeerState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states[addr] = st
}

// SetBestPath injects a learned best-path set (empty NextHops = the prefix is gone) and
// queues it to every watcher, unless nothing changed.
func (f *Fake) SetBestPath(bp routing.BestPath) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setBestLocked(bp)
}

func (f *Fake) setBestLocked(bp routing.BestPath) {
	bp = cloneBest(bp)
	bp.Prefix = bp.Prefix.Masked()
	slices.SortFunc(bp.NextHops, netip.Addr.Compare)
	old, had := f.best[bp.Prefix]
	if len(bp.NextHops) == 0 {
		if !had {
			return
		}
		delete(f.best, bp.Prefix)
		bp.Stale = false
	} else {
		if had && old.Stale == bp.Stale && slices.Equal(old.NextHops, bp.NextHops) {
			return
		}
		f.best[bp.Prefix] = bp
	}
	for w := range f.watchers {
		w.push(cloneBest(bp))
	}
}

// WatchBestPaths delivers the current best paths, then every change, to fn.
func (f *Fake) WatchBestPaths(ctx context.Context, fn func(routing.BestPath)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("WatchBestPaths", false); err != nil {
		return err
	}
	w := &fakeWatch{wake: make(chan struct{}, 1)}
	for _, pfx := range slices.SortedFunc(maps.Keys(f.best), netip.Prefix.Compare) {
		w.push(cloneBest(f.best[pfx]))
	}
	f.watchers[w] = struct{}{}
	go func() {
		defer func() {
			f.mu.Lock()
			delete(f.watchers, w)
			f.mu.Unlock()
		}()
		w.run(ctx, fn)
	}()
	return nil
}

// Sync waits until every watcher has delivered everything queued so far (or ctx ends).
func (f *Fake) Sync(ctx context.Context) error {
	f.mu.Lock()
	ws := slices.Collect(maps.Keys(f.watchers))
	f.mu.Unlock()
	for _, w := range ws {
		if err := w.drained(ctx); err != nil {
			return err
		}
	}
	return nil
}

// fakeWatch is an unbounded queue (like GoBGP's), so SetBestPath never blocks on a slow
// callback.
type fakeWatch struct {
	mu    sync.Mutex
	queue []routing.BestPath
	busy  bool
	wake  chan struct{}
}

func (w *fakeWatch) push(bp routing.BestPath) {
	w.mu.Lock()
	w.queue = append(w.queue, bp)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *fakeWatch) run(ctx context.Context, fn func(routing.BestPath)) {
	for {
		w.mu.Lock()
		if len(w.queue) == 0 {
			w.busy = false
			w.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
				continue
			}
		}
		bp := w.queue[0]
		w.queue = w.queue[1:]
		w.busy = true
		w.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		fn(bp)
	}
}

func (w *fakeWatch) drained(ctx context.Context) error {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		w.mu.Lock()
		idle := len(w.queue) == 0 && !w.busy
		w.mu.Unlock()
		if idle {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func cloneBest(bp routing.BestPath) routing.BestPath {
	bp.NextHops = slices.Clone(bp.NextHops)
	return bp
}
