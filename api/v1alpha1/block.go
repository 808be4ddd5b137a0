package v1alpha1

import "net/netip"

// maxBlockCapacityShift caps BlockCapacity at 2^30 addresses so that it fits the int32
// of IPAMBlockStatus.Capacity even for a prefix no pool would hand out (the schema
// allows blocks of /20 to /32 and /116 to /128, at most 4096 addresses).
const maxBlockCapacityShift = 30

// BlockCapacity is the number of addresses in a block, the value of
// IPAMBlockStatus.Capacity: the agent publishes it and the controller measures the
// watermark against it, so both must count alike.
func BlockCapacity(block netip.Prefix) int32 {
	shift := block.Addr().BitLen() - block.Bits()
	if shift > maxBlockCapacityShift {
		shift = maxBlockCapacityShift
	}
	return 1 << shift
}
