package cni

import (
	"errors"
	"net"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestUplinkMTU(t *testing.T) {
	mtus := map[int]int{2: 1500, 3: 9000, 4: 1450, 5: 40}
	mtuOf := func(idx int) (int, error) {
		if m, ok := mtus[idx]; ok {
			return m, nil
		}
		return 0, errors.New("no such device")
	}
	_, v4def, _ := net.ParseCIDR("0.0.0.0/0")
	_, v6def, _ := net.ParseCIDR("::/0")
	_, specific, _ := net.ParseCIDR("10.0.0.0/8")
	for _, tc := range []struct {
		name   string
		routes []netlink.Route
		want   int
		ok     bool
	}{
		{"none", nil, 0, false},
		{"one default", []netlink.Route{{LinkIndex: 3}}, 9000, true},
		{"explicit 0/0", []netlink.Route{{Dst: v4def, LinkIndex: 3}}, 9000, true},
		{"v4 and v6 defaults: the smaller", []netlink.Route{{LinkIndex: 3}, {Dst: v6def, LinkIndex: 4}}, 1450, true},
		{"ECMP legs: the smallest", []netlink.Route{{MultiPath: []*netlink.NexthopInfo{{LinkIndex: 3}, {LinkIndex: 2}}}}, 1500, true},
		{"a specific route is not the uplink", []netlink.Route{{Dst: specific, LinkIndex: 4}, {LinkIndex: 3}}, 9000, true},
		{"unknown device skipped", []netlink.Route{{LinkIndex: 99}, {LinkIndex: 2}}, 1500, true},
		{"absurd MTU skipped", []netlink.Route{{LinkIndex: 5}}, 0, false},
		{"no device (blackhole default)", []netlink.Route{{LinkIndex: 0}}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, ok := uplinkMTU(tc.routes, mtuOf)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("uplinkMTU = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
