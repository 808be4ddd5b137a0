//go:build !linux

package bfd

import (
	"errors"
	"net"
	"net/netip"
)

// BFD needs the received TTL (IP_RECVTTL) and per-packet source selection, which this
// package only implements for Linux, where hostroute runs.

var errUnsupported = errors.New("bfd: only supported on Linux")

type sockets struct{ tx [2]*net.UDPConn }

func (k *sockets) send(b, oob []byte, dst netip.AddrPort) error { return errUnsupported }

func openFamily(netip.Addr, bool) (rx, tx *net.UDPConn, err error) { return nil, nil, errUnsupported }

func isNoIPv6(error) bool { return false }

func pktinfo(netip.Addr) []byte { return nil }

func hopLimit([]byte) (int, bool) { return 0, false }

type routeIfaces struct{}

func newRouteIfaces() (*routeIfaces, error) { return nil, errUnsupported }

func (*routeIfaces) lookup(netip.Addr) int { return 0 }

func (*routeIfaces) close() {}

func arrivalIface([]byte) int { return 0 }
