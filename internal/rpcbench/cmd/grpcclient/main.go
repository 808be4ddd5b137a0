// Command grpcclient does what hostroute-cni does to reach the node agent on every ADD,
// and nothing else: a gRPC client over the unix socket given as its argument, one
// Allocate, exit. It prints nothing on success.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: grpcclient SOCKET")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "grpcclient:", err)
		os.Exit(1)
	}
}

func run(socket string) error {
	// As node/cni/agent.go: passthrough target, a dialer that always dials the socket.
	conn, err := grpc.NewClient("passthrough:///hostroute-agent",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}))
	if err != nil {
		return fmt.Errorf("creating the client: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := agentv1.NewAgentClient(conn).Allocate(ctx, &agentv1.AllocateRequest{
		Attachment: &agentv1.Attachment{ContainerId: "bench", Ifname: "eth0"},
		PodUid:     "uid", Namespace: "default", PodName: "bench",
	})
	if err != nil {
		return fmt.Errorf("allocate: %w", err)
	}
	if len(resp.GetAddresses()) == 0 {
		return fmt.Errorf("allocate: no addresses")
	}
	return nil
}
