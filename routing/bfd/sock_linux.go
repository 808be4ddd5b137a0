package bfd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Source ports for control packets (RFC 5881 4). Receivers must not insist on them:
// BIRD sends from other ports.
const (
	srcPortMin = 49152
	srcPortMax = 65535
)

// tosNetControl is DSCP CS6 (network control), as FRR and BIRD mark BFD, so that a
// congested queue drops data before it drops the packets that say the link is alive.
const tosNetControl = 0xc0

// sockets sends from one socket per family; [0] IPv4, [1] IPv6.
type sockets struct{ tx [2]*net.UDPConn }

var errNoFamily = errors.New("bfd: no socket for the address family")

func (k *sockets) send(b, oob []byte, dst netip.AddrPort) error {
	c := k.tx[0]
	if dst.Addr().Is6() {
		c = k.tx[1]
	}
	if c == nil {
		return errNoFamily
	}
	_, _, err := c.WriteMsgUDPAddrPort(b, oob, dst)
	return err
}

// openFamily opens the receive socket on port 3784 (reporting each packet's TTL or hop
// limit and arrival interface) and the send socket on a random port of the RFC 5881 range (sending with TTL
// 255). local, when of this family, is bound on both; otherwise the wildcard is.
func openFamily(local netip.Addr, v6 bool) (rx, tx *net.UDPConn, err error) {
	network, bind := "udp4", netip.IPv4Unspecified()
	if v6 {
		network, bind = "udp6", netip.IPv6Unspecified()
	}
	if local.IsValid() && local.Is6() == v6 {
		bind = local
	}
	rx, err = listenUDP(network, netip.AddrPortFrom(bind, port), func(fd int) error {
		// The arrival interface too (IP_PKTINFO), for the check that a packet came
		// in on the interface of the route to its peer.
		if v6 {
			return errors.Join(
				unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1),
				unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1))
		}
		return errors.Join(
			unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVTTL, 1),
			unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1))
	})
	if err != nil {
		return nil, nil, err
	}
	txOpts := func(fd int) error {
		if v6 {
			return errors.Join(
				unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, ttlSingle),
				unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tosNetControl))
		}
		return errors.Join(
			unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, ttlSingle),
			unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, tosNetControl))
	}
	for range 64 {
		p := uint16(srcPortMin + rand.IntN(srcPortMax-srcPortMin+1))
		tx, err = listenUDP(network, netip.AddrPortFrom(bind, p), txOpts)
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		rx.Close()
		return nil, nil, err
	}
	// Nobody sends to the send socket; a tiny buffer keeps stray datagrams from
	// pinning memory. Best effort.
	_ = tx.SetReadBuffer(1)
	return rx, tx, nil
}

// listenUDP binds a UDP socket after applying opts to it.
func listenUDP(network string, addr netip.AddrPort, opts func(fd int) error) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var oerr error
		if err := c.Control(func(fd uintptr) { oerr = opts(int(fd)) }); err != nil {
			return err
		}
		return oerr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, addr.String())
	if err != nil {
		return nil, fmt.Errorf("bfd: listen %s %v: %w", network, addr, err)
	}
	return pc.(*net.UDPConn), nil
}

// isNoIPv6 reports an error from a namespace or kernel without IPv6.
func isNoIPv6(err error) bool {
	return errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EADDRNOTAVAIL) ||
		errors.Is(err, syscall.EPROTONOSUPPORT)
}

// pktinfo returns the control message that makes the kernel send from local, or nil
// for the zero or unspecified address (the routing table then picks the source).
func pktinfo(local netip.Addr) []byte {
	if !local.IsValid() || local.IsUnspecified() {
		return nil
	}
	if local.Is4() {
		return unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: local.As4()})
	}
	return unix.PktInfo6(&unix.Inet6Pktinfo{Addr: local.As16()})
}

// hopLimit finds the IP_TTL or IPV6_HOPLIMIT control message without allocating.
func hopLimit(oob []byte) (int, bool) {
	// x/sys reads the header before checking it fits: guard, or a short buffer reads
	// past its end (checkptr catches it under -race).
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0, false
		}
		if len(data) >= 4 && (h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TTL ||
			h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_HOPLIMIT) {
			return int(int32(binary.NativeEndian.Uint32(data))), true
		}
		oob = rest
	}
	return 0, false
}
