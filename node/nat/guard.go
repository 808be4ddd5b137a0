package nat

import (
	"encoding/binary"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/hostroute/hostroute/node/podif"
)

// The pod guard: what `table inet hostroute` drops from pod interfaces so that a pod
// (with CAP_NET_RAW it writes any IP header it likes) cannot disturb its node's
// control plane:
//
//	chain pod-prerouting {
//		type filter hook prerouting priority raw; policy accept;
//		iifname "hr*" icmpv6 type { nd-router-advert, nd-neighbor-solicit } accept
//		iifname "hr*" fib saddr . iif oif missing counter drop
//	}
//	chain pod-input {
//		type filter hook input priority filter; policy accept;
//		iifname "hr*" tcp dport 179 counter drop
//		iifname "hr*" udp dport { 3784, 3785, 4784 } counter drop
//	}
//
// The first is a strict reverse-path check: a packet from a pod veth is dropped unless
// the route back to its source goes out of that same veth. The CNI plugin routes each
// pod address (/32, /128) to its veth, so a pod may use only its own addresses; forging
// the ToR, another node or this node itself fails. It runs in prerouting, so it also
// covers forwarded packets (a pod forging a node's address towards the ToR), and at raw
// priority, before conntrack makes an entry for a forged flow. The ND exemption is the
// usual one (firewalld's): duplicate address detection sends from ::, which has no route.
// The kernel's own rp_filter is no substitute: the effective value is max(all, iface),
// which the administrator may have set to 2 (loose), and it has no IPv6 counterpart.
//
// The second keeps even a pod's own address off the node's BGP and BFD ports (BFD
// single-hop 3784, echo 3785, multihop 4784): nothing in a pod has business peering
// with its node, and a pod that could would be one TCP handshake away from injecting
// routes. Only packets for the node itself (the input hook) are dropped: a pod's BGP
// towards another machine is forwarded and untouched. The agent's metrics port is left
// open on purpose: Prometheus usually runs in a pod, and the node's agent is reached
// through that pod's veth; the endpoint is read-only, and the reverse-path check already
// keeps a pod from speaking to it with anyone's address but its own.
//
// Pod interfaces are recognised by name, the "hr" prefix node/cni gives every host-side
// veth: hazard, any other interface named hr… on the node is treated as a pod's.
const (
	ChainPodPrerouting = "pod-prerouting"
	ChainPodInput      = "pod-input"

	// PodIfacePrefix starts the name of the host side of every pod veth (node/podif).
	PodIfacePrefix = podif.HostVethPrefix
)

// Control-plane ports dropped from pods.
var (
	podDropTCP = []uint16{179}
	podDropUDP = []uint16{3784, 3785, 4784}
)

// addPodGuard queues the two guard chains into the batch of Apply.
func addPodGuard(c *nftables.Conn, t *nftables.Table) {
	accept := nftables.ChainPolicyAccept
	pre := c.AddChain(&nftables.Chain{
		Name: ChainPodPrerouting, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &accept,
	})
	for _, typ := range []byte{134, 135} { // nd-router-advert, nd-neighbor-solicit
		c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: slices.Concat(podIface(),
			[]expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{typ}},
				&expr.Verdict{Kind: expr.VerdictAccept},
			})})
	}
	// `fib saddr . iif oif missing`: the output interface of the route to the source,
	// restricted to the input interface, is 0 when that route leaves elsewhere.
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: slices.Concat(podIface(),
		[]expr.Any{
			&expr.Fib{Register: 1, FlagSADDR: true, FlagIIF: true, ResultOIF: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
		}, drop())})

	in := c.AddChain(&nftables.Chain{
		Name: ChainPodInput, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	for _, pp := range []struct {
		proto byte
		ports []uint16
	}{{unix.IPPROTO_TCP, podDropTCP}, {unix.IPPROTO_UDP, podDropUDP}} {
		for _, port := range pp.ports {
			c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: slices.Concat(podIface(),
				[]expr.Any{
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{pp.proto}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
				}, drop())})
		}
	}
}

// podIface matches `iifname "hr*"`: nft compiles a trailing * to a comparison of the
// prefix bytes only, without the name's terminating NUL.
func podIface() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(PodIfacePrefix)},
	}
}

// drop counts and drops, so `nft list table inet hostroute` shows what pods attempted.
func drop() []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
}
