package routectl

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// hostRoute reads the kernel's host route (/32 or /128) to ip in the main table over
// netlink, with its device's name and kind; nil when there is none. Protocols stay
// numbers: names from /etc/iproute2 differ from host to host.
func hostRoute(ip netip.Addr) (*kernelPodRoute, error) {
	fam := unix.AF_INET
	if ip.Is6() {
		fam = unix.AF_INET6
	}
	b, err := syscall.NetlinkRIB(unix.RTM_GETROUTE, fam)
	if err != nil {
		return nil, fmt.Errorf("netlink route dump: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return nil, fmt.Errorf("netlink route dump: %w", err)
	}
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Type != unix.RTM_NEWROUTE || len(m.Data) < unix.SizeofRtMsg {
			continue
		}
		// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
		dstLen, table, proto := int(m.Data[1]), uint32(m.Data[4]), int(m.Data[5])
		if dstLen != ip.BitLen() {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(m)
		if err != nil {
			continue
		}
		var dst netip.Addr
		oif := 0
		for _, a := range attrs {
			switch a.Attr.Type {
			case unix.RTA_DST:
				dst, _ = netip.AddrFromSlice(a.Value)
			case unix.RTA_OIF:
				if len(a.Value) == 4 {
					oif = int(binary.NativeEndian.Uint32(a.Value))
				}
			case unix.RTA_TABLE:
				if len(a.Value) == 4 {
					table = binary.NativeEndian.Uint32(a.Value)
				}
			}
		}
		if table != unix.RT_TABLE_MAIN || dst.Unmap() != ip {
			continue
		}
		r := &kernelPodRoute{Ifindex: oif, Protocol: proto}
		if oif > 0 {
			if r.Ifname, r.Kind, err = linkOf(oif); err != nil {
				return r, err
			}
		}
		return r, nil
	}
	return nil, nil
}

// linkOf is the name and kind (IFLA_INFO_KIND) of link index.
func linkOf(index int) (name, kind string, err error) {
	b, err := syscall.NetlinkRIB(unix.RTM_GETLINK, unix.AF_UNSPEC)
	if err != nil {
		return "", "", fmt.Errorf("netlink link dump: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return "", "", fmt.Errorf("netlink link dump: %w", err)
	}
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Type != unix.RTM_NEWLINK || len(m.Data) < unix.SizeofIfInfomsg {
			continue
		}
		// struct ifinfomsg: family, pad, type (2), index (4), flags, change.
		if int(int32(binary.NativeEndian.Uint32(m.Data[4:8]))) != index {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(m)
		if err != nil {
			return "", "", fmt.Errorf("link %d: %w", index, err)
		}
		for _, a := range attrs {
			switch a.Attr.Type {
			case unix.IFLA_IFNAME:
				name = cString(a.Value)
			case unix.IFLA_LINKINFO:
				kind = linkKind(a.Value)
			}
		}
		return name, kind, nil
	}
	return "", "", fmt.Errorf("no link with index %d", index)
}

// linkKind reads IFLA_INFO_KIND out of a nested IFLA_LINKINFO.
func linkKind(b []byte) string {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) &^ unix.NLA_F_NESTED
		if l < 4 || l > len(b) {
			return ""
		}
		if typ == unix.IFLA_INFO_KIND {
			return cString(b[4:l])
		}
		b = b[min((l+3)&^3, len(b)):]
	}
	return ""
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
