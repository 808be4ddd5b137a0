package rpcbench

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
)

// Both stub agents answer Allocate with the fixed host prefix, in process.
func TestStubAgentsAllocate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &agentv1.AllocateRequest{Attachment: &agentv1.Attachment{ContainerId: "c", Ifname: "eth0"}}

	gs, err := startGRPC(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("unix://"+gs.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := agentv1.NewAgentClient(conn).Allocate(ctx, req)
	if err != nil || len(resp.GetAddresses()) != 1 || resp.GetAddresses()[0] != stubAddress {
		t.Errorf("gRPC Allocate = %v, %v; want [%s]", resp.GetAddresses(), err, stubAddress)
	}
	conn.Close()
	if err := gs.Close(); err != nil {
		t.Errorf("gRPC server: %v", err)
	}

	ts, err := startTTRPC(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", ts.Socket)
	if err != nil {
		t.Fatal(err)
	}
	tc := ttrpc.NewClient(c)
	var tresp agentv1.AllocateResponse
	if err := tc.Call(ctx, serviceName, allocateMethod, req, &tresp); err != nil || len(tresp.GetAddresses()) != 1 || tresp.GetAddresses()[0] != stubAddress {
		t.Errorf("ttrpc Allocate = %v, %v; want [%s]", tresp.GetAddresses(), err, stubAddress)
	}
	tc.Close()
	if err := ts.Close(); err != nil {
		t.Errorf("ttrpc server: %v", err)
	}
}
