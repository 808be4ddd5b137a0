// Package bfdd runs hostroute's BFD apart from the node agent, so that BFD outlives the
// agent: `hostroute-node bfd` holds the sessions (and UDP port 3784) and the agent drives
// it over a unix socket. A crashed, killed or upgraded agent then changes nothing its peers
// can see on BFD — the sessions stay Up, with the C bit set (RFC 5880 4.1: BFD does not
// share fate with the control plane) — and their BGP graceful restart keeps the node's
// routes until the agent is back. A dead node, a cut link or a frozen kernel still stops
// the packets, and peers drop its routes within the detection time.
//
// The protocol is JSON lines: the agent sends requests (add, remove, sessions) with an id
// and gets one reply per id; the daemon also pushes every session state change, and on
// each new connection first a snapshot of the sessions' current states, so an agent that
// starts (again) learns which peers are dead without waiting for a change.
//
// Hazards: the daemon keeps what the last agent asked for, also peers no agent wants
// any more; the agent prunes them once it knows its peers (it lists Sessions). Stopping
// the daemon (SIGTERM) says AdminDown to every peer: BIRD 2.0.12 drops BGP on it, so
// restart the daemon only when it changes (the shipped DaemonSet updates OnDelete).
package bfdd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/hostroute/hostroute/routing/bfd"
)

// Backend is the part of bfd.Server the daemon serves.
type Backend interface {
	Add(peer, local netip.Addr, cfg bfd.Config) error
	Remove(peer netip.Addr) error
	Events() <-chan bfd.Event
	Sessions() []bfd.SessionState
}

// request is one line from the agent.
type request struct {
	ID     uint64     `json:"id"`
	Op     string     `json:"op"` // "add", "remove", "sessions"
	Peer   netip.Addr `json:"peer"`
	Local  netip.Addr `json:"local"`
	Config bfd.Config `json:"config"`
}

// message is one line from the daemon: a reply (ID set) or an event.
type message struct {
	ID       uint64             `json:"id,omitempty"`
	Error    string             `json:"error,omitempty"`
	Sessions []bfd.SessionState `json:"sessions,omitempty"`
	Event    *bfd.Event         `json:"event,omitempty"`
}

// clientBuffer is how many messages may wait for one slow agent; past it the daemon
// drops the connection (the agent reconnects and gets a fresh snapshot: nothing is lost).
const clientBuffer = 256

// Serve answers agents on ln until ctx ends, then closes ln. It does not stop b.
func Serve(ctx context.Context, log *slog.Logger, b Backend, ln net.Listener) error {
	d := &daemon{log: log.With("component", "bfdd"), b: b, conns: map[*conn]struct{}{}}
	go d.fanOut(ctx)
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				d.closeAll()
				return nil
			}
			return fmt.Errorf("bfdd: accept: %w", err)
		}
		go d.serve(ctx, c)
	}
}

type daemon struct {
	log *slog.Logger
	b   Backend

	mu    sync.Mutex
	conns map[*conn]struct{}
}

// conn is one agent connection; out is drained by its writer.
type conn struct {
	c    net.Conn
	out  chan message
	once sync.Once
}

func (c *conn) close() { c.once.Do(func() { c.c.Close() }) }

// send queues m; a full queue closes the connection (see clientBuffer).
func (c *conn) send(m message) {
	select {
	case c.out <- m:
	default:
		c.close()
	}
}

// fanOut copies every state change to every connected agent.
func (d *daemon) fanOut(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-d.b.Events():
			if !ok {
				return
			}
			d.mu.Lock()
			for c := range d.conns {
				c.send(message{Event: &ev})
			}
			d.mu.Unlock()
		}
	}
}

func (d *daemon) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for c := range d.conns {
		c.close()
	}
}

// serve runs one agent connection: registered for events first, then the snapshot, so
// no change falls between the two (a duplicate is harmless: the agent's handling is
// idempotent).
func (d *daemon) serve(ctx context.Context, nc net.Conn) {
	c := &conn{c: nc, out: make(chan message, clientBuffer)}
	d.mu.Lock()
	d.conns[c] = struct{}{}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.conns, c)
		d.mu.Unlock()
		c.close()
	}()
	for _, ev := range Snapshot(d.b.Sessions()) {
		c.send(message{Event: &ev})
	}
	go func() {
		enc := json.NewEncoder(nc)
		for {
			select {
			case <-ctx.Done():
				c.close()
				return
			case m := <-c.out:
				if err := enc.Encode(m); err != nil {
					c.close()
					return
				}
			}
		}
	}()
	d.log.Info("agent connected")
	sc := bufio.NewScanner(nc)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		var r request
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			d.log.Warn("bad request from agent: closing", "err", err)
			return
		}
		c.send(d.handle(r))
	}
	d.log.Info("agent disconnected", "err", sc.Err())
}

func (d *daemon) handle(r request) message {
	m := message{ID: r.ID}
	var err error
	switch r.Op {
	case "add":
		err = d.b.Add(r.Peer, r.Local, r.Config)
	case "remove":
		err = d.b.Remove(r.Peer)
	case "sessions":
		m.Sessions = d.b.Sessions()
	default:
		err = fmt.Errorf("unknown op %q", r.Op)
	}
	if err != nil {
		m.Error = err.Error()
	}
	return m
}

// Snapshot turns sessions into the events an agent would have seen had it watched all
// along: Up sessions, and Down ones that were Up before (a diagnostic says why). A
// session that never came up yields nothing: to the agent that is "not known dead", as
// with the in-process server, so a peer that runs no BFD is not shut.
func Snapshot(ss []bfd.SessionState) []bfd.Event {
	var out []bfd.Event
	for _, s := range ss {
		if s.State == bfd.Up || (s.State == bfd.Down && s.Diag != bfd.DiagNone) {
			out = append(out, bfd.Event{Peer: s.Peer, State: s.State, Diag: s.Diag, RemoteState: s.RemoteState, Time: s.Since})
		}
	}
	return out
}

// errNotConnected is returned by requests made while the daemon is unreachable.
var errNotConnected = errors.New("bfd daemon not connected")
