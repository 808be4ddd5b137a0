// Command ttrpcclient is grpcclient on ttrpc: a ttrpc client over the unix socket given as
// its argument, one Allocate with the agentv1 messages, exit. It prints nothing on
// success.
//
// Built as is, it takes the messages from api/agent/v1, whose package also holds the gRPC
// stubs, so all of gRPC is linked and initialised though unused. With the build tag
// rpcbench_nogrpc and agent.pb.go laid over this directory (go build -overlay, as the
// benchmark does) the same messages are compiled into this program instead: what a
// switch to ttrpc would ship, with no gRPC stubs in the message package.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/containerd/ttrpc"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: ttrpcclient SOCKET")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "ttrpcclient:", err)
		os.Exit(1)
	}
}

func run(socket string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", socket, err)
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	var resp AllocateResponse
	if err := c.Call(ctx, "hostroute.agent.v1.Agent", "Allocate", &AllocateRequest{
		Attachment: &Attachment{ContainerId: "bench", Ifname: "eth0"},
		PodUid:     "uid", Namespace: "default", PodName: "bench",
	}, &resp); err != nil {
		return fmt.Errorf("allocate: %w", err)
	}
	if len(resp.GetAddresses()) == 0 {
		return fmt.Errorf("allocate: no addresses")
	}
	return nil
}
