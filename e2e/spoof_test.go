package e2e_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/netns"
	"github.com/hostroute/hostroute/node/nat"
)

// TestSpoofFromPod: a pod with NET_RAW on node-1 forges, from a raw socket with its own
// IP headers (TTL 255, as a single-hop BFD peer must send), BFD Down control packets
// claiming to be the ToR and node-2, and TCP RSTs and SYNs to node-1's BGP port claiming
// to be the ToR. Without the pod guard the BFD Down alone takes node-1's sessions down
// within a second (a Down with Your Discriminator 0 is matched by source address, RFC
// 5880 6.8.6, so nothing secret is needed), and node-1 drops node-2's block from its
// kernel. With it node-1's sessions stay Established and BFD Up, its routes stay, and
// the guard's counters show the forged packets reached the node and were dropped there.
func TestSpoofFromPod(t *testing.T) {
	l := newLab(t, 2, true, 0)
	// BFD on the node-to-node mesh too, so that node-2's session can be attacked.
	cfg := &v1alpha1.BGPConfiguration{Spec: v1alpha1.BGPConfigurationSpec{BFD: &v1alpha1.BFDSettings{Enabled: true}}}
	cfg.Name = "default"
	if _, err := l.e.HR.BGPConfigurations.Create(l.e.Ctx, cfg); err != nil {
		t.Fatal(err)
	}
	n1 := l.nodes[0]
	blocks := l.blocks(t)
	routed := func() string {
		if hops := kernelRoute(t, n1.NS, blocks["node-2"]); len(hops) != 1 || hops[0] != l.nodes[1].Addr {
			return fmt.Sprintf("node-1 route to node-2's block %s: %v", blocks["node-2"], hops)
		}
		if hops := kernelRoute(t, n1.NS, extNet); len(hops) != 1 {
			return fmt.Sprintf("node-1 route to the ToR's prefix: %v", hops)
		}
		return ""
	}
	healthy := func() string {
		ss, err := routingSessions(n1)
		if err != nil {
			return err.Error()
		}
		peers := map[string]bool{}
		for _, s := range ss {
			if s.State != "Established" || s.BfdState != "Up" {
				return fmt.Sprintf("node-1 session to %s (%s): BGP %s, BFD %q", s.Peer, s.Name, s.State, s.BfdState)
			}
			peers[s.Peer] = true
		}
		for _, want := range []string{harness.FabricGateway, l.nodes[1].Addr} {
			if !peers[want] {
				return fmt.Sprintf("node-1 has no session to %s: %+v", want, ss)
			}
		}
		return routed()
	}
	l.e.Eventually(30*time.Second, "node-1's sessions Established with BFD Up, routes in place", healthy)

	pod := n1.NewPod("attacker")
	if err := pod.Add(); err != nil {
		t.Fatal(err)
	}
	fd := rawSocket(t, pod.NS)
	dst := netip.MustParseAddr(n1.Addr)
	forged := []netip.Addr{netip.MustParseAddr(harness.FabricGateway), netip.MustParseAddr(l.nodes[1].Addr)}
	tor := forged[0]

	stop := make(chan struct{})
	sent := make(chan error, 1)
	go func() {
		var err error
		defer func() { sent <- err }()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, src := range forged {
				if err = sendRaw(fd, ipv4(src, dst, syscall.IPPROTO_UDP, udp(49152+rand.N(uint16(1000)), 3784, bfdDown(0)))); err != nil {
					return
				}
			}
			// A blind reset: guessed ephemeral ports, random sequence numbers,
			// both directions of who dialled whom; and a SYN on the same tuples.
			for range 20 {
				sport := 32768 + rand.N(uint16(28000))
				for _, ports := range [][2]uint16{{sport, 179}, {179, sport}} {
					for _, flags := range []byte{tcpRST | tcpACK, tcpSYN} {
						if err = sendRaw(fd, ipv4(tor, dst, syscall.IPPROTO_TCP, tcp(tor, dst, ports[0], ports[1], flags))); err != nil {
							return
						}
					}
				}
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	deadline := time.Now().Add(3 * time.Second)
	var failure string
	for time.Now().Before(deadline) && failure == "" {
		failure = healthy()
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	if err := <-sent; err != nil {
		t.Fatalf("sending forged packets from the pod: %v", err)
	}
	if failure != "" {
		t.Fatalf("while the pod forged packets: %s", failure)
	}

	// The packets did reach node-1 and were dropped by the guard, not lost on the way.
	pre := nftDrops(t, n1.NS, nat.ChainPodPrerouting)
	in := nftDrops(t, n1.NS, nat.ChainPodInput)
	t.Logf("node-1's pod guard dropped %d forged-source packets (%s), %d for control-plane ports (%s)",
		pre, nat.ChainPodPrerouting, in, nat.ChainPodInput)
	if pre < 300 {
		t.Errorf("chain %s dropped %d packets, want at least 300 (the forged BFD and TCP packets)", nat.ChainPodPrerouting, pre)
	}

	// A pod's own address cannot reach the BGP and BFD ports either.
	own := netip.MustParseAddr(pod.IP)
	for range 10 {
		if err := sendRaw(fd, ipv4(own, dst, syscall.IPPROTO_UDP, udp(49152, 3784, bfdDown(0)))); err != nil {
			t.Fatal(err)
		}
	}
	if got := nftDrops(t, n1.NS, nat.ChainPodInput); got < in+10 {
		t.Errorf("chain %s dropped %d packets after 10 BFD packets from the pod's own address, want at least %d", nat.ChainPodInput, got, in+10)
	}
	if msg := healthy(); msg != "" {
		t.Fatalf("after the attack: %s", msg)
	}
}

// routingSessions reads the node's BGP sessions through the agent's Routing RPC.
func routingSessions(n *harness.Node) ([]*agentv1.Session, error) {
	c, err := n.Agent()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := agentv1.NewAgentClient(c).Routing(ctx, &agentv1.RoutingRequest{})
	if err != nil {
		return nil, fmt.Errorf("routing RPC: %w", err)
	}
	return resp.GetSessions(), nil
}

var dropCounter = regexp.MustCompile(`counter packets (\d+) bytes \d+ drop`)

// nftDrops sums the drop counters of one chain of table inet hostroute in ns.
func nftDrops(t *testing.T, ns, chain string) int {
	t.Helper()
	out, err := netns.Output(ns, "nft", "list", "chain", "inet", nat.TableName, chain)
	if err != nil {
		t.Fatalf("nft list chain %s in %s: %v\n%s", chain, ns, err, out)
	}
	sum := 0
	for _, m := range dropCounter.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		sum += n
	}
	return sum
}

// rawSocket opens an IPPROTO_RAW socket (IP_HDRINCL implied: we write the whole IP
// header) in the pod's namespace; it keeps that namespace wherever it is used.
func rawSocket(t *testing.T, ns string) int {
	t.Helper()
	fd := -1
	if err := netns.Do(ns, func() error {
		var err error
		fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
		return err
	}); err != nil {
		t.Fatalf("raw socket in %s: %v", ns, err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return fd
}

func sendRaw(fd int, pkt []byte) error {
	to := &syscall.SockaddrInet4{Addr: [4]byte(pkt[16:20])}
	if err := syscall.Sendto(fd, pkt, 0, to); err != nil {
		return fmt.Errorf("sendto %v: %w", netip.AddrFrom4(to.Addr), err)
	}
	return nil
}

// ipv4 builds an IPv4 header with TTL 255 around payload. The kernel fills in the
// header checksum (and the ID, left 0) of an IPPROTO_RAW packet.
func ipv4(src, dst netip.Addr, proto byte, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	h[1] = 0xc0 // CS6, as BFD is marked
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	h[8] = 255
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return append(h, payload...)
}

// udp builds a UDP datagram without checksum (0 is allowed over IPv4).
func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

// bfdDown is a BFD control packet (RFC 5880 4.1), version 1, State Down, Diag 0,
// detect multiplier 3, 1 s intervals, with a made-up My Discriminator.
func bfdDown(yourDisc uint32) []byte {
	b := make([]byte, 24)
	b[0] = 1 << 5
	b[1] = 1 << 6 // State Down, no flags
	b[2] = 3
	b[3] = 24
	binary.BigEndian.PutUint32(b[4:], 0x5eed0001)
	binary.BigEndian.PutUint32(b[8:], yourDisc)
	binary.BigEndian.PutUint32(b[12:], 1_000_000)
	binary.BigEndian.PutUint32(b[16:], 1_000_000)
	return b
}

const (
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// tcp builds a 20-byte TCP segment with random sequence numbers and its checksum.
func tcp(src, dst netip.Addr, sport, dport uint16, flags byte) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], rand.Uint32())
	binary.BigEndian.PutUint32(b[8:], rand.Uint32())
	b[12] = 5 << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	s, d := src.As4(), dst.As4()
	pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, syscall.IPPROTO_TCP, 0, 20)
	binary.BigEndian.PutUint16(b[16:], checksum(append(pseudo, b...)))
	return b
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
