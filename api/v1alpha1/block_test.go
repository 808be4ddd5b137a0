package v1alpha1

import (
	"net/netip"
	"testing"
)

func TestBlockCapacity(t *testing.T) {
	for in, want := range map[string]int32{
		"10.244.3.64/26": 64,
		"10.0.0.0/20":    4096,
		"10.0.0.7/32":    1,
		"fd00::/122":     64,
		"fd00::/116":     4096,
		"fd00::1/128":    1,
		"10.0.0.0/0":     1 << 30, // capped: 2^32 does not fit an int32
		"fd00::/64":      1 << 30,
	} {
		if got := BlockCapacity(netip.MustParsePrefix(in)); got != want {
			t.Errorf("BlockCapacity(%s) = %d, want %d", in, got, want)
		}
	}
}
