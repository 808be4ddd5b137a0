// Package bfd is hostroute's Bidirectional Forwarding Detection: RFC 5880 asynchronous
// mode over RFC 5881 single-hop UDP, IPv4 and IPv6, interoperable with BIRD 2 and FRR.
// GoBGP v3 has no BFD, and the one in GoBGP v4 loops BGP flaps against BIRD, so the node
// agent runs this beside its speaker and resets a BGP neighbour when its session leaves Up.
//
// One Server per network namespace owns UDP port 3784 (IP_RECVTTL/IPV6_RECVHOPLIMIT, so
// that anything not received with TTL 255 — i.e. routed from off-link — is dropped) and
// sends from one socket per family bound to a random port in 49152–65535 with TTL 255.
// Sessions are configured, never learned: a packet is matched on Your Discriminator, or,
// when that is 0, on its source address, and only if it says Down or AdminDown.
//
// Behaviour peers depend on (each one was seen breaking BIRD or FRR when wrong):
//   - while not Up we send at ≥ 1 s; on Up we start a Poll Sequence down to DesiredMinTx,
//     and answer the peer's Poll with a Final at once, outside the transmit schedule;
//   - every interval is jittered to 75–100 % (75–90 % with multiplier 1);
//   - detection time = the peer's multiplier × max(our RequiredMinRx, its DesiredMinTx);
//   - a Down with a new My Discriminator while Up is a restarted peer: we follow it to
//     Down (diag 3) and come up again with it, rather than discarding it;
//   - Required Min Echo RX is 0, no authentication (packets with the A bit are dropped),
//     no Demand mode (the peer's D bit is ignored).
//
// Two liberties, both shared with FRR: a state change is sent at once rather than at the
// next tick (one extra packet per change; it makes bring-up take one round trip instead
// of seconds), and all sessions of a family share one source port (RFC 5881 says SHOULD
// be unique per session; peers demultiplex on discriminators, not ports).
//
// Hazards for callers:
//   - AdminDown from the peer is not a path failure (RFC 5882 3.2), yet it arrives as
//     Down with DiagNeighborDown; Event.PeerAdminDown tells it apart. BIRD 2.0.12 itself
//     drops BGP on AdminDown, so Remove (which sends AdminDown) tears down BIRD's BGP too.
//   - Close sends nothing: the peer notices after its detection time. Remove (one peer)
//     or Shutdown (every peer) first for a clean goodbye.
//   - Sockets belong to the network namespace of the thread that created them: call
//     Listen from a goroutine locked into the target namespace. Add creates no sockets,
//     so it may be called from anywhere.
//   - Events are lossy under backlog (drop-oldest, see Server.Events); Sessions is the
//     authoritative snapshot.
//   - Intervals below MinInterval are refused: a Go process on a busy node cannot keep
//     them, and a late packet looks like a dead link.
package bfd
