// Package rpcbench measures the RPC stack of the CNI plugin → node agent call the way a
// pod pays for it: the container runtime execs hostroute-cni for every ADD, so each call
// costs a process start, Go runtime and package init, a dial and one unary Allocate, not
// only a warm round trip. BenchmarkPluginRPC compares today's gRPC with ttrpc, against a
// Go program that does nothing; the client programs are under cmd/.
package rpcbench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
)

// The ttrpc server registers Allocate under gRPC's service name, so both stacks serve
// the same method with the same agentv1 messages.
const (
	serviceName    = "hostroute.agent.v1.Agent"
	allocateMethod = "Allocate"
	// stubAddress is what the stub agent allocates to every attachment.
	stubAddress = "10.244.1.7/32"
)

func allocateResponse() *agentv1.AllocateResponse {
	return &agentv1.AllocateResponse{Addresses: []string{stubAddress}}
}

// grpcAgent is an agent whose Allocate answers at once; every other method is
// unimplemented.
type grpcAgent struct {
	agentv1.UnimplementedAgentServer
}

func (grpcAgent) Allocate(context.Context, *agentv1.AllocateRequest) (*agentv1.AllocateResponse, error) {
	return allocateResponse(), nil
}

// server is one stub agent listening on a unix socket.
type server struct {
	Socket string
	stop   func()
	done   chan error
}

// Close stops the server and returns what its Serve returned, if it failed.
func (s *server) Close() error {
	s.stop()
	return <-s.done
}

// startGRPC serves the stub agent over gRPC on dir/grpc.sock.
func startGRPC(dir string) (*server, error) {
	sock := filepath.Join(dir, "grpc.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", sock, err)
	}
	gs := grpc.NewServer()
	agentv1.RegisterAgentServer(gs, grpcAgent{})
	s := &server{Socket: sock, stop: gs.Stop, done: make(chan error, 1)}
	go func() {
		err := gs.Serve(l)
		if errors.Is(err, grpc.ErrServerStopped) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}

// startTTRPC serves the stub Allocate over ttrpc on dir/ttrpc.sock, registered with
// ttrpc's untyped API (no generated code).
func startTTRPC(dir string) (*server, error) {
	sock := filepath.Join(dir, "ttrpc.sock")
	ts, err := ttrpc.NewServer()
	if err != nil {
		return nil, fmt.Errorf("creating the ttrpc server: %w", err)
	}
	ts.Register(serviceName, map[string]ttrpc.Method{
		allocateMethod: func(_ context.Context, unmarshal func(any) error) (any, error) {
			var req agentv1.AllocateRequest
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			return allocateResponse(), nil
		},
	})
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", sock, err)
	}
	s := &server{Socket: sock, done: make(chan error, 1)}
	s.stop = func() { _ = ts.Close() }
	go func() {
		err := ts.Serve(context.Background(), l)
		if errors.Is(err, ttrpc.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}
