package bfd

import (
	"encoding/binary"
	"errors"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cmsg builds one control message carrying an int, as the kernel does for IP_TTL.
func cmsg(level, typ int32, v uint32) []byte {
	b := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(b[unix.CmsgLen(0):], v)
	return b
}

func TestTTLCheck(t *testing.T) {
	s := newServer(nil, &recorder{})
	p := validPacket()
	var buf [headerLen]byte
	b := p.encode(buf[:])
	other := cmsg(unix.SOL_SOCKET, unix.SO_TIMESTAMP, 1)
	cases := []struct {
		name string
		oob  []byte
		want error
	}{
		{"IPv4 TTL 255", cmsg(unix.IPPROTO_IP, unix.IP_TTL, 255), nil},
		{"IPv6 hop limit 255", cmsg(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, 255), nil},
		{"after another message", append(append([]byte(nil), other...), cmsg(unix.IPPROTO_IP, unix.IP_TTL, 255)...), nil},
		{"TTL 254 (one hop away)", cmsg(unix.IPPROTO_IP, unix.IP_TTL, 254), errTTL},
		{"TTL 64", cmsg(unix.IPPROTO_IP, unix.IP_TTL, 64), errTTL},
		{"hop limit 1", cmsg(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, 1), errTTL},
		{"no control message", nil, errTTL},
		{"garbage", []byte{1, 2, 3}, errTTL},
	}
	for _, c := range cases {
		var q packet
		if err := s.check(b, c.oob, &q); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("%s: got %v want %v", c.name, err, c.want)
		}
	}
	oob := cmsg(unix.IPPROTO_IP, unix.IP_TTL, 255)
	var q packet
	if n := testing.AllocsPerRun(100, func() { _ = s.check(b, oob, &q) }); n != 0 {
		t.Fatalf("check allocates %v", n)
	}
}
