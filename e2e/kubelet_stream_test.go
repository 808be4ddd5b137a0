package e2e_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// stream sends sequence-numbered UDP datagrams from a socket in ns to an echo server
// at a fixed interval and records which ones come back.
type stream struct {
	conn     net.PacketConn
	interval time.Duration
	stopSend chan struct{}
	done     sync.WaitGroup

	mu       sync.Mutex
	sent     int
	got      map[uint64]bool
	lastEcho time.Time
}

type streamResult struct {
	sent, lost int
	longestGap time.Duration // longest run of lost datagrams, as time
}

func startStream(t *testing.T, ns string, dst netip.AddrPort, interval time.Duration) *stream {
	t.Helper()
	c, err := netns.ListenPacketIn(ns, "udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stream{conn: c, interval: interval, stopSend: make(chan struct{}), got: map[uint64]bool{}}
	t.Cleanup(func() { c.Close() })
	to := net.UDPAddrFromAddrPort(dst)
	s.done.Add(2)
	go func() {
		defer s.done.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		buf := make([]byte, 8)
		for seq := uint64(0); ; seq++ {
			select {
			case <-s.stopSend:
				return
			case <-tick.C:
			}
			binary.BigEndian.PutUint64(buf, seq)
			_, _ = c.WriteTo(buf, to)
			s.mu.Lock()
			s.sent++
			s.mu.Unlock()
		}
	}()
	go func() {
		defer s.done.Done()
		buf := make([]byte, 64)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if n == 8 {
				s.mu.Lock()
				s.got[binary.BigEndian.Uint64(buf)] = true
				s.lastEcho = time.Now()
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *stream) received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

func (s *stream) sinceLastEcho() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Since(s.lastEcho)
}

// stop ends sending, gives the last echoes half a second, and counts.
func (s *stream) stop() streamResult {
	close(s.stopSend)
	time.Sleep(500 * time.Millisecond)
	_ = s.conn.Close()
	s.done.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := streamResult{sent: s.sent}
	run, longest := 0, 0
	for seq := 0; seq < s.sent; seq++ {
		if s.got[uint64(seq)] {
			run = 0
			continue
		}
		r.lost++
		run++
		longest = max(longest, run)
	}
	r.longestGap = time.Duration(longest) * s.interval
	return r
}
