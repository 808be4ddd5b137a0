package bfdd

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hostroute/hostroute/routing/bfd"
)

// Client is the agent's side: the same Add, Remove, Events and Sessions as bfd.Server,
// served by the daemon at a socket path. It reconnects by itself; what it was asked for
// while the daemon was unreachable (or restarting) is replayed on reconnect, so Add and
// Remove never fail for want of a connection, only for the daemon's own refusals.
type Client struct {
	log    *slog.Logger
	path   string
	events chan bfd.Event
	done   chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	conn    net.Conn // nil while disconnected
	enc     *json.Encoder
	nextID  uint64
	pending map[uint64]chan message
	want    map[netip.Addr]wanted // every session asked for
	drop    map[netip.Addr]bool   // removed while disconnected: remove on reconnect
	closed  bool
}

type wanted struct {
	local netip.Addr
	cfg   bfd.Config
}

// Timeouts of the client.
const (
	requestTimeout = 2 * time.Second
	redialMin      = 100 * time.Millisecond
	redialMax      = time.Second
)

// Dial returns a Client for the daemon at path and starts connecting in the background.
func Dial(log *slog.Logger, path string) *Client {
	c := &Client{
		log: log.With("component", "bfd-client", "socket", path), path: path,
		events: make(chan bfd.Event, 128), done: make(chan struct{}),
		pending: map[uint64]chan message{}, want: map[netip.Addr]wanted{}, drop: map[netip.Addr]bool{},
	}
	c.wg.Add(1)
	go c.run()
	return c
}

// Add asks for a session with peer (see bfd.Server.Add). While the daemon is unreachable
// the wish is kept and sent on reconnect.
func (c *Client) Add(peer, local netip.Addr, cfg bfd.Config) error {
	peer = peer.Unmap()
	c.mu.Lock()
	c.want[peer] = wanted{local: local, cfg: cfg}
	delete(c.drop, peer)
	c.mu.Unlock()
	_, err := c.call(request{Op: "add", Peer: peer, Local: local, Config: cfg})
	if errors.Is(err, errNotConnected) {
		return nil
	}
	if err != nil {
		c.mu.Lock()
		delete(c.want, peer)
		c.mu.Unlock()
	}
	return err
}

// Remove ends the session with peer (AdminDown goodbyes from the daemon).
func (c *Client) Remove(peer netip.Addr) error {
	peer = peer.Unmap()
	c.mu.Lock()
	delete(c.want, peer)
	c.drop[peer] = true
	c.mu.Unlock()
	_, err := c.call(request{Op: "remove", Peer: peer})
	if errors.Is(err, errNotConnected) {
		return nil
	}
	if err == nil {
		c.mu.Lock()
		delete(c.drop, peer)
		c.mu.Unlock()
	}
	return err
}

// Events delivers the daemon's state changes, after each (re)connection first a snapshot
// (see Snapshot). Lossy like bfd.Server's: the oldest is dropped when the agent lags.
func (c *Client) Events() <-chan bfd.Event { return c.events }

// Sessions asks the daemon for its sessions; nil while it is unreachable.
func (c *Client) Sessions() []bfd.SessionState {
	m, err := c.call(request{Op: "sessions"})
	if err != nil {
		return nil
	}
	return m.Sessions
}

// Connected reports whether the daemon is reachable now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil
}

// Close disconnects; the daemon keeps its sessions (that is the point of it).
func (c *Client) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.done)
		if c.conn != nil {
			c.conn.Close()
		}
	}
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// call sends r and waits for its reply.
func (c *Client) call(r request) (message, error) {
	c.mu.Lock()
	if c.conn == nil {
		c.mu.Unlock()
		return message{}, errNotConnected
	}
	c.nextID++
	r.ID = c.nextID
	ch := make(chan message, 1)
	c.pending[r.ID] = ch
	err := c.enc.Encode(r)
	c.mu.Unlock()
	if err != nil {
		c.forget(r.ID)
		return message{}, fmt.Errorf("bfd daemon: %w", err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return message{}, errNotConnected
		}
		if m.Error != "" {
			return m, errors.New(m.Error)
		}
		return m, nil
	case <-time.After(requestTimeout):
		c.forget(r.ID)
		return message{}, fmt.Errorf("bfd daemon: no answer to %s within %s", r.Op, requestTimeout)
	}
}

func (c *Client) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// run connects, replays, reads, and reconnects until Close.
func (c *Client) run() {
	defer c.wg.Done()
	wait, failing := redialMin, false
	for {
		nc, err := net.Dial("unix", c.path)
		if err != nil {
			if !failing {
				c.log.Warn("bfd daemon unreachable; retrying (BFD sessions are kept by the daemon, not here)", "err", err)
				failing = true
			}
			select {
			case <-c.done:
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, redialMax)
			continue
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			nc.Close()
			return
		}
		c.conn, c.enc = nc, json.NewEncoder(nc)
		c.mu.Unlock()
		c.log.Info("connected to the bfd daemon")
		wait, failing = redialMin, false
		go c.replay()
		c.read(nc)
		c.mu.Lock()
		c.conn, c.enc = nil, nil
		for id, ch := range c.pending {
			close(ch)
			delete(c.pending, id)
		}
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return
		}
		c.log.Warn("lost the bfd daemon; reconnecting")
	}
}

// replay sends what was asked for while disconnected (or before a daemon restart).
func (c *Client) replay() {
	c.mu.Lock()
	var reqs []request
	for peer := range c.drop {
		reqs = append(reqs, request{Op: "remove", Peer: peer})
	}
	for peer, w := range c.want {
		reqs = append(reqs, request{Op: "add", Peer: peer, Local: w.local, Config: w.cfg})
	}
	c.mu.Unlock()
	for _, r := range reqs {
		if _, err := c.call(r); err != nil {
			c.log.Warn("bfd daemon refused a replayed request", "op", r.Op, "peer", r.Peer, "err", err)
			continue
		}
		if r.Op == "remove" {
			c.mu.Lock()
			delete(c.drop, r.Peer)
			c.mu.Unlock()
		}
	}
}

// read dispatches replies and events until the connection fails.
func (c *Client) read(nc net.Conn) {
	sc := bufio.NewScanner(nc)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var m message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			c.log.Warn("bad message from the bfd daemon: reconnecting", "err", err)
			nc.Close()
			return
		}
		if m.Event != nil {
			c.deliver(*m.Event)
			continue
		}
		c.mu.Lock()
		ch := c.pending[m.ID]
		delete(c.pending, m.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
	nc.Close()
}

// deliver never blocks the reader: the oldest event makes room.
func (c *Client) deliver(ev bfd.Event) {
	for {
		select {
		case c.events <- ev:
			return
		default:
		}
		select {
		case <-c.events:
		default:
		}
	}
}
