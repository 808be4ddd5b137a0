package cni

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
)

// fakeAgent is an in-memory node agent over 10.99.0.0/24 (and fd99::/120 when dual),
// served on a unix socket like the real one. Switches make it fail the way the real
// agent does.
type fakeAgent struct {
	agentv1.UnimplementedAgentServer
	socket string

	mu        sync.Mutex
	dual      bool
	exhausted bool // Allocate: RESOURCE_EXHAUSTED
	noBlock   bool // Allocate: UNAVAILABLE; Status: not ready
	allocs    map[[2]string]int
	lastReq   *agentv1.AllocateRequest
}

func startFakeAgent(t *testing.T) *fakeAgent {
	t.Helper()
	// Not t.TempDir(): a unix socket path must fit in 108 bytes, and test names are long.
	dir, err := os.MkdirTemp("", "hrcni")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	a := &fakeAgent{socket: filepath.Join(dir, "agent.sock"), allocs: map[[2]string]int{}}
	lis, err := net.Listen("unix", a.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	agentv1.RegisterAgentServer(srv, a)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return a
}

func (a *fakeAgent) set(f func(a *fakeAgent)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

// held returns the attachments with an allocation.
func (a *fakeAgent) held() map[[2]string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[[2]string]int{}
	for k, v := range a.allocs {
		out[k] = v
	}
	return out
}

func (a *fakeAgent) addresses(n int) []string {
	out := []string{netip.AddrFrom4([4]byte{10, 99, 0, byte(n)}).String() + "/32"}
	if a.dual {
		out = append(out, fmt.Sprintf("fd99::%x/128", n))
	}
	return out
}

func key(at *agentv1.Attachment) [2]string { return [2]string{at.GetContainerId(), at.GetIfname()} }

func (a *fakeAgent) Allocate(_ context.Context, req *agentv1.AllocateRequest) (*agentv1.AllocateResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastReq = req
	if req.GetAttachment().GetContainerId() == "" {
		return nil, status.Error(codes.InvalidArgument, "container ID is required")
	}
	if n, ok := a.allocs[key(req.GetAttachment())]; ok {
		return &agentv1.AllocateResponse{Addresses: a.addresses(n)}, nil
	}
	if a.noBlock {
		return nil, status.Error(codes.Unavailable, "node test has no address block yet (waited 0s): is hostroute-controller running?")
	}
	if a.exhausted {
		return nil, status.Error(codes.ResourceExhausted, "no free pod address on node test: block 10.99.0.0/24 is full")
	}
	used := map[int]bool{}
	for _, n := range a.allocs {
		used[n] = true
	}
	for n := 1; n < 255; n++ {
		if !used[n] {
			a.allocs[key(req.GetAttachment())] = n
			return &agentv1.AllocateResponse{Addresses: a.addresses(n)}, nil
		}
	}
	return nil, status.Error(codes.ResourceExhausted, "no free pod address on node test")
}

func (a *fakeAgent) Release(_ context.Context, req *agentv1.ReleaseRequest) (*agentv1.ReleaseResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n, ok := a.allocs[key(req.GetAttachment())]
	if !ok {
		return &agentv1.ReleaseResponse{}, nil
	}
	delete(a.allocs, key(req.GetAttachment()))
	return &agentv1.ReleaseResponse{Released: a.addresses(n)}, nil
}

func (a *fakeAgent) Get(_ context.Context, req *agentv1.GetRequest) (*agentv1.AllocateResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n, ok := a.allocs[key(req.GetAttachment())]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no allocation for container %s interface %s on node test",
			req.GetAttachment().GetContainerId(), req.GetAttachment().GetIfname())
	}
	return &agentv1.AllocateResponse{Addresses: a.addresses(n)}, nil
}

func (a *fakeAgent) GC(_ context.Context, req *agentv1.GCRequest) (*agentv1.GCResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	valid := map[[2]string]bool{}
	for _, v := range req.GetValid() {
		valid[key(v)] = true
	}
	resp := &agentv1.GCResponse{}
	for k, n := range a.allocs {
		if !valid[k] {
			delete(a.allocs, k)
			resp.Released = append(resp.Released, a.addresses(n)...)
		}
	}
	return resp, nil
}

func (a *fakeAgent) Status(context.Context, *agentv1.StatusRequest) (*agentv1.StatusResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.noBlock {
		return &agentv1.StatusResponse{Node: "test", Message: "node test has no address block yet"}, nil
	}
	return &agentv1.StatusResponse{Ready: true, Node: "test",
		Blocks: []*agentv1.BlockUsage{{Cidr: "10.99.0.0/24", InUse: int32(len(a.allocs)), Capacity: 256}}}, nil
}
