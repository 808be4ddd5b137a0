//go:build !linux

package routectl

import (
	"errors"
	"net/netip"
)

func hostRoute(netip.Addr) (*kernelPodRoute, error) {
	return nil, errors.New("reading kernel routes needs Linux")
}
