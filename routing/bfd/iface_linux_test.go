package bfd

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cmsgBytes builds one control message with the given payload.
func cmsgBytes(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func TestArrivalIface(t *testing.T) {
	v4 := make([]byte, unix.SizeofInet4Pktinfo)
	binary.NativeEndian.PutUint32(v4, 7)
	v6 := make([]byte, unix.SizeofInet6Pktinfo)
	binary.NativeEndian.PutUint32(v6[16:], 9)
	ttl := cmsg(unix.IPPROTO_IP, unix.IP_TTL, 255)
	for _, c := range []struct {
		name string
		oob  []byte
		want int
	}{
		{"IPv4 after the TTL", append(append([]byte(nil), ttl...), cmsgBytes(unix.IPPROTO_IP, unix.IP_PKTINFO, v4)...), 7},
		{"IPv6", cmsgBytes(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, v6), 9},
		{"only a TTL", ttl, 0},
		{"short pktinfo", cmsgBytes(unix.IPPROTO_IP, unix.IP_PKTINFO, v4[:4]), 0},
		{"none", nil, 0},
		{"garbage", []byte{1, 2, 3}, 0},
	} {
		if got := arrivalIface(c.oob); got != c.want {
			t.Errorf("%s: ifindex %d, want %d", c.name, got, c.want)
		}
	}
}

// TestArrivalInterfaceCheck: packets with the peer's address that arrive on another
// interface than the route to the peer are discarded and counted, whatever they say;
// when the route moves, the new interface is accepted after at most ifaceRecheck.
func TestArrivalInterfaceCheck(t *testing.T) {
	r := &recorder{keep: true}
	s := newServer(nil, r)
	s.fams = [2]bool{true, true}
	routeIf, lookups := 2, 0
	s.iface = func(p netip.Addr) int {
		lookups++
		if p != peerAddr {
			t.Errorf("lookup of %v, want the peer %v", p, peerAddr)
		}
		return routeIf
	}
	s.add(peerAddr, ourAddr, nil, defCfg, t0)
	x := s.byPeer[peerAddr]
	if x.ifindex != 2 || lookups != 1 {
		t.Fatalf("after Add: cached ifindex %d after %d lookups, want 2 after 1", x.ifindex, lookups)
	}
	x.remoteDisc, x.remoteMult, x.lastRx = 55, 3, t0
	x.setState(Up, DiagNone, t0)
	down := &packet{State: Down, DetectMult: 3, Length: headerLen, MyDisc: 55, DesiredMinTx: 1000000, RequiredMinRx: 100000}
	withDisc := *down
	withDisc.YourDisc = x.localDisc

	at := t0.Add(time.Millisecond)
	for i, p := range []*packet{down, &withDisc, down} {
		m := msg(p, peerAddr, at)
		m.ifindex = 5 // a pod's veth
		s.handleRx(m, at)
		if x.state != Up || x.stats.RxPackets != 0 || x.stats.Discarded != uint64(i+1) {
			t.Fatalf("Down #%d from the peer's address on ifindex 5: state %v, rx %d, discarded %d", i, x.state, x.stats.RxPackets, x.stats.Discarded)
		}
	}
	if lookups != 1 {
		t.Errorf("%d lookups within %s, want 1 (a flood must not cost a lookup per packet)", lookups, ifaceRecheck)
	}

	// The route moves to ifindex 5: after ifaceRecheck the peer is heard there.
	routeIf = 5
	later := t0.Add(ifaceRecheck + time.Millisecond)
	up := &packet{State: Up, DetectMult: 3, Length: headerLen, MyDisc: 55, YourDisc: x.localDisc, DesiredMinTx: 1000000, RequiredMinRx: 100000}
	m := msg(up, peerAddr, later)
	m.ifindex = 5
	s.handleRx(m, later)
	if x.stats.RxPackets != 1 || x.ifindex != 5 || lookups != 2 {
		t.Fatalf("after the route moved: rx %d, cached ifindex %d, %d lookups; want 1, 5, 2", x.stats.RxPackets, x.ifindex, lookups)
	}
	// Unknown arrival interface (no control message): not checked.
	m = msg(up, peerAddr, later)
	s.handleRx(m, later)
	if x.stats.RxPackets != 2 {
		t.Fatalf("packet without an arrival interface: rx %d, want 2", x.stats.RxPackets)
	}
}
