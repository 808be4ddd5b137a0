package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/node/ipam"
)

// server is the agent's gRPC service for the CNI plugin and routectl.
type server struct {
	agentv1.UnimplementedAgentServer
	log     *slog.Logger
	node    string
	alloc   *ipam.Allocator
	waitFor time.Duration
	// publish asks the publisher to write allocations to the API: batched, or at once
	// (urgent) when the node is out of addresses, so the controller sees its blocks at
	// the watermark and assigns another.
	publish func(urgent bool)
	changes *broadcast
	// routed reports whether the node's routes are out (BGP converged); nil = always.
	routed func() (bool, string)
	// routing answers the Routing RPC (routectl); nil = unimplemented.
	routing func(context.Context) *agentv1.RoutingResponse
	// choose picks the pools of an ADD from the pod's and its namespace's annotations and
	// the pools' selectors; nil: any block of the node.
	choose func(context.Context, ipam.Owner) (ipam.Choice, error)
	// needPool asks for the node's needed pools to be published now (an ADD waits for a
	// block of a pool the node has none of).
	needPool func()
	// blockHolder says which node holds the block of a fixed address ("" = none yet) and
	// who holds the address there; nil: not checked.
	blockHolder func(ctx context.Context, addr netip.Addr, pool string) (node, who string, err error)
}

// broadcast wakes every waiter when the node's blocks change.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcast() *broadcast { return &broadcast{ch: make(chan struct{})} }

// wait returns a channel closed at the next change.
func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcast) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
}

func (s *server) Allocate(ctx context.Context, req *agentv1.AllocateRequest) (*agentv1.AllocateResponse, error) {
	at := req.GetAttachment()
	o := ipam.Owner{ContainerID: at.GetContainerId(), IfName: at.GetIfname(), PodUID: req.GetPodUid(), Namespace: req.GetNamespace(), Pod: req.GetPodName()}
	// Held while waiting for a block too: a Release of this attachment arriving meanwhile
	// runs after this Allocate, instead of before an allocation that would then leak.
	unlock, err := s.alloc.LockAttachment(ctx, ipam.Attachment{ContainerID: o.ContainerID, IfName: o.IfName})
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	defer unlock()
	deadline := time.Now().Add(s.waitFor)
	checkedFixed := false
	for {
		changed := s.changes.wait()
		addrs, choice, err := s.allocate(ctx, o)
		if _, isStatus := status.FromError(err); isStatus && err != nil {
			return nil, err
		}
		if errors.Is(err, ipam.ErrPoolChoice) {
			return nil, status.Errorf(codes.FailedPrecondition, "pod %s/%s on node %s: %v", o.Namespace, o.Pod, s.node, err)
		}
		if errors.Is(err, ipam.ErrAddrTaken) {
			return nil, status.Errorf(codes.AlreadyExists, "pod %s/%s on node %s: %v", o.Namespace, o.Pod, s.node, err)
		}
		if errors.Is(err, ipam.ErrNoBlock) && !checkedFixed {
			checkedFixed = true
			if serr := s.fixedElsewhere(ctx, o, choice); serr != nil {
				return nil, serr
			}
		}
		if errors.Is(err, errNoPool) {
			if time.Until(deadline) <= 0 {
				return nil, status.Errorf(codes.Unavailable, "pod %s/%s on node %s: %v (waited %s; kubectl get ippools)", o.Namespace, o.Pod, s.node, err, s.waitFor)
			}
		}
		if err == nil {
			s.publish(false)
			s.log.Debug("allocated", "container", o.ContainerID, "ifname", o.IfName, "pod", o.Namespace+"/"+o.Pod, "addresses", addrs)
			return &agentv1.AllocateResponse{Addresses: prefixStrings(addrs)}, nil
		}
		if errors.Is(err, ipam.ErrInvalid) {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		if !errors.Is(err, ipam.ErrFull) && !errors.Is(err, ipam.ErrNoBlock) && !errors.Is(err, errNoPool) {
			return nil, status.Errorf(codes.Internal, "allocate on node %s: %v", s.node, err)
		}
		if errors.Is(err, ipam.ErrNoBlock) && s.needPool != nil {
			s.needPool()
		}
		s.publish(true)
		left := time.Until(deadline)
		if left <= 0 {
			return nil, s.exhausted(err)
		}
		select {
		case <-changed:
		case <-time.After(left):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// errNoPool: no pool of any family serves the pod on this node (yet).
var errNoPool = errors.New("no IPPool serves the pod on this node (none selects the node, or none exists yet)")

// allocate allocates from the pools chosen for the pod, or from any block without a
// chooser; it returns the choice too.
func (s *server) allocate(ctx context.Context, o ipam.Owner) ([]netip.Prefix, ipam.Choice, error) {
	if s.choose == nil {
		addrs, err := s.alloc.Allocate(o)
		return addrs, ipam.Choice{}, err
	}
	if held := s.alloc.Get(ipam.Attachment{ContainerID: o.ContainerID, IfName: o.IfName}); len(held) > 0 {
		return held, ipam.Choice{}, nil // a retried ADD keeps its addresses whatever the annotations say now
	}
	c, err := s.choose(ctx, o)
	if err != nil && !errors.Is(err, ipam.ErrPoolChoice) {
		return nil, c, status.Errorf(codes.Unavailable, "pod %s/%s on node %s: %v", o.Namespace, o.Pod, s.node, err)
	}
	if err != nil {
		return nil, c, err
	}
	if c.Empty() {
		return nil, c, errNoPool
	}
	addrs, err := s.alloc.AllocateFrom(o, c)
	return addrs, c, err
}

// fixedElsewhere refuses a fixed address whose block another node holds: only the node
// holding a block hands out its addresses, so the pod can have it only there.
func (s *server) fixedElsewhere(ctx context.Context, o ipam.Owner, c ipam.Choice) error {
	if s.blockHolder == nil {
		return nil
	}
	for _, fam := range []int{4, 6} {
		addr := c.Fixed(fam)
		if !addr.IsValid() || len(c.Pools(fam)) == 0 {
			continue
		}
		node, who, err := s.blockHolder(ctx, addr, c.Pools(fam)[0])
		if err != nil {
			return status.Errorf(codes.Unavailable, "pod %s/%s on node %s: %v", o.Namespace, o.Pod, s.node, err)
		}
		if node != "" && node != s.node {
			held := "free there"
			if who != "" {
				held = "held there by " + who
			}
			return status.Errorf(codes.AlreadyExists, "pod %s/%s on node %s: fixed address %s lies in a block node %s holds (%s); a fixed address goes only to a pod on the node holding its block",
				o.Namespace, o.Pod, s.node, addr, node, held)
		}
	}
	return nil
}

func (s *server) exhausted(err error) error {
	if errors.Is(err, ipam.ErrNoBlock) {
		return status.Errorf(codes.Unavailable,
			"node %s has no address block yet (waited %s): is hostroute-controller running, and does an IPPool select this node? (kubectl get ippools,ipamblocks)", s.node, s.waitFor)
	}
	return status.Errorf(codes.ResourceExhausted,
		"no free pod address on node %s: %v and no new block arrived within %s; the pools may be exhausted (kubectl get ippools)", s.node, err, s.waitFor)
}

func (s *server) Release(ctx context.Context, req *agentv1.ReleaseRequest) (*agentv1.ReleaseResponse, error) {
	at := req.GetAttachment()
	if at.GetContainerId() == "" {
		return nil, status.Error(codes.InvalidArgument, "container ID is required")
	}
	key := ipam.Attachment{ContainerID: at.GetContainerId(), IfName: at.GetIfname()}
	unlock, err := s.alloc.LockAttachment(ctx, key)
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	defer unlock()
	addrs, err := s.alloc.Release(key)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "release %s/%s: %v", at.GetContainerId(), at.GetIfname(), err)
	}
	if len(addrs) > 0 {
		s.publish(false)
	}
	return &agentv1.ReleaseResponse{Released: addrStrings(addrs)}, nil
}

func (s *server) Get(_ context.Context, req *agentv1.GetRequest) (*agentv1.AllocateResponse, error) {
	at := req.GetAttachment()
	addrs := s.alloc.Get(ipam.Attachment{ContainerID: at.GetContainerId(), IfName: at.GetIfname()})
	if len(addrs) == 0 {
		return nil, status.Errorf(codes.NotFound, "no allocation for container %s interface %s on node %s", at.GetContainerId(), at.GetIfname(), s.node)
	}
	return &agentv1.AllocateResponse{Addresses: prefixStrings(addrs)}, nil
}

func (s *server) GC(_ context.Context, req *agentv1.GCRequest) (*agentv1.GCResponse, error) {
	var valid []ipam.Attachment
	for _, v := range req.GetValid() {
		valid = append(valid, ipam.Attachment{ContainerID: v.GetContainerId(), IfName: v.GetIfname()})
	}
	addrs, err := s.alloc.GC(valid)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "gc: %v", err)
	}
	if len(addrs) > 0 {
		s.log.Info("released allocations of attachments the runtime no longer lists", "addresses", addrs)
		s.publish(false)
	}
	return &agentv1.GCResponse{Released: addrStrings(addrs)}, nil
}

// blockUsage lists the node's blocks with their use, sorted by CIDR.
func blockUsage(alloc *ipam.Allocator) []*agentv1.BlockUsage {
	var out []*agentv1.BlockUsage
	for blk, allocs := range alloc.Snapshot() {
		if blk.IsValid() {
			out = append(out, &agentv1.BlockUsage{Cidr: blk.String(), InUse: int32(len(allocs)), Capacity: v1alpha1.BlockCapacity(blk)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cidr < out[j].Cidr })
	return out
}

func (s *server) Status(context.Context, *agentv1.StatusRequest) (*agentv1.StatusResponse, error) {
	resp := &agentv1.StatusResponse{Node: s.node, Blocks: blockUsage(s.alloc)}
	resp.Ready = len(resp.Blocks) > 0
	if !resp.Ready {
		resp.Message = fmt.Sprintf("node %s has no address block yet", s.node)
		return resp, nil
	}
	if s.routed != nil {
		resp.Ready, resp.Message = s.routed()
	}
	return resp, nil
}

// Routing is routectl's view of the node: sessions, blocks, RIB against kernel.
func (s *server) Routing(ctx context.Context, _ *agentv1.RoutingRequest) (*agentv1.RoutingResponse, error) {
	if s.routing == nil {
		return nil, status.Error(codes.Unimplemented, "routing state is not available")
	}
	return s.routing(ctx), nil
}

// readiness is the Status RPC's readiness, for /readyz and the Routing RPC.
func (s *server) readiness(ctx context.Context) (bool, string) {
	st, _ := s.Status(ctx, &agentv1.StatusRequest{})
	return st.GetReady(), st.GetMessage()
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}
