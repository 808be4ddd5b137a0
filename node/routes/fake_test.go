package routes

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeKernel is an in-memory main table with Linux's matching rule: one route per
// destination (at metric 0), whoever wrote it. Writes take delay, and two at once fail
// the test (the table must have a single writer).
type fakeKernel struct {
	t       *testing.T
	delay   time.Duration
	mu      sync.Mutex
	busy    bool
	routes  map[netip.Prefix]fakeRoute
	gws     map[netip.Addr]netip.Addr // next hop → gateway (absent: on-link)
	writes  int
	failing map[netip.Prefix]error
}

type fakeRoute struct {
	proto int
	r     Route
}

func newFakeKernel(t *testing.T) *fakeKernel {
	return &fakeKernel{t: t, routes: map[netip.Prefix]fakeRoute{}, gws: map[netip.Addr]netip.Addr{}, failing: map[netip.Prefix]error{}}
}

func (k *fakeKernel) write(f func() error) error {
	k.mu.Lock()
	if k.busy {
		k.t.Error("concurrent kernel writes")
	}
	k.busy = true
	k.mu.Unlock()
	time.Sleep(k.delay)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.busy = false
	k.writes++
	return f()
}

func (k *fakeKernel) List() ([]Route, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []Route
	for _, fr := range k.routes {
		switch fr.proto {
		case Protocol:
			out = append(out, fr.r)
		case LegacyProtocol:
			r := fr.r
			r.Legacy = true
			out = append(out, r)
		}
	}
	sortRoutes(out)
	return out, nil
}

func (k *fakeKernel) Add(r Route) error {
	return k.write(func() error {
		if err := k.failing[r.Dst]; err != nil {
			return err
		}
		if _, ok := k.routes[r.Dst]; ok {
			return fmt.Errorf("%s: %w", r.Dst, ErrExists)
		}
		r.Legacy = false
		k.routes[r.Dst] = fakeRoute{Protocol, r}
		return nil
	})
}

func (k *fakeKernel) Replace(r Route) error {
	return k.write(func() error {
		if err := k.failing[r.Dst]; err != nil {
			return err
		}
		r.Legacy = false
		k.routes[r.Dst] = fakeRoute{Protocol, r}
		return nil
	})
}

// Owns: the fake writes Protocol and adopts LegacyProtocol, as NewNetlink does.
func (k *fakeKernel) Owns(p int) bool     { return p == Protocol || k.IsLegacy(p) }
func (k *fakeKernel) IsLegacy(p int) bool { return p == LegacyProtocol }

func (k *fakeKernel) Delete(r Route) error {
	proto := Protocol
	if r.Legacy {
		proto = LegacyProtocol
	}
	return k.write(func() error {
		if fr, ok := k.routes[r.Dst]; ok && fr.proto == proto {
			delete(k.routes, r.Dst)
		}
		return nil
	})
}

func (k *fakeKernel) Occupant(dst netip.Prefix) (int, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	fr, ok := k.routes[dst]
	return fr.proto, ok, nil
}

func (k *fakeKernel) Gateway(nh netip.Addr) (netip.Addr, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if gw, ok := k.gws[nh]; ok {
		return gw, nil
	}
	return nh, nil
}

// foreign puts someone else's route into the table.
func (k *fakeKernel) foreign(r Route, proto int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.routes[r.Dst] = fakeRoute{proto, r}
}

// ours returns hostroute's routes as strings, sorted.
func (k *fakeKernel) ours() []string {
	rs, _ := k.List()
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

func routeStrings(rs []Route) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	slices.Sort(out)
	return out
}
