package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
)

// agent is a connection to the node agent for one plugin invocation.
//
// gRPC reports both "could not connect" and "the agent answered UNAVAILABLE (no block
// yet)" as codes.Unavailable. The two need different advice, so the dialer records its
// last error: an Unavailable with a failed dial means the agent is not there at all.
type agent struct {
	socket  string
	timeout time.Duration
	conn    *grpc.ClientConn
	api     agentv1.AgentClient

	mu      sync.Mutex
	dialErr error // last dial result; written by gRPC's connect goroutine
}

func newAgent(socket string, timeout time.Duration) (*agent, error) {
	a := &agent{socket: socket, timeout: timeout}
	// passthrough: the target is only a label; the dialer below always dials the socket.
	conn, err := grpc.NewClient("passthrough:///hostroute-agent",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(a.dial))
	if err != nil {
		return nil, fmt.Errorf("creating the node agent client for %s: %w", socket, err)
	}
	a.conn, a.api = conn, agentv1.NewAgentClient(conn)
	return a, nil
}

func (a *agent) Close() error { return a.conn.Close() }

func (a *agent) dial(ctx context.Context, _ string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", a.socket)
	a.mu.Lock()
	a.dialErr = err
	a.mu.Unlock()
	return c, err
}

func (a *agent) lastDialErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dialErr
}

func attachment(containerID, ifName string) *agentv1.Attachment {
	return &agentv1.Attachment{ContainerId: containerID, Ifname: ifName}
}

// Allocate asks the agent for the attachment's addresses and checks they are host
// prefixes (/32, /128): the routing below assumes one address per route.
func (a *agent) Allocate(ctx context.Context, containerID, ifName string, pod PodArgs) ([]netip.Prefix, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	resp, err := a.api.Allocate(ctx, &agentv1.AllocateRequest{
		Attachment: attachment(containerID, ifName),
		PodUid:     pod.UID, Namespace: pod.Namespace, PodName: pod.Name,
	})
	if err != nil {
		return nil, a.explain("Allocate", err)
	}
	return parseAddresses(resp.GetAddresses())
}

// Get returns the attachment's addresses as the agent has them on disk.
func (a *agent) Get(ctx context.Context, containerID, ifName string) ([]netip.Prefix, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	resp, err := a.api.Get(ctx, &agentv1.GetRequest{Attachment: attachment(containerID, ifName)})
	if err != nil {
		return nil, a.explain("Get", err)
	}
	return parseAddresses(resp.GetAddresses())
}

// Release frees the attachment's addresses; an unknown attachment is not an error.
func (a *agent) Release(ctx context.Context, containerID, ifName string) error {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	if _, err := a.api.Release(ctx, &agentv1.ReleaseRequest{Attachment: attachment(containerID, ifName)}); err != nil {
		return a.explain("Release", err)
	}
	return nil
}

// GC releases every allocation not in valid.
func (a *agent) GC(ctx context.Context, valid []types.GCAttachment) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	req := &agentv1.GCRequest{}
	for _, v := range valid {
		req.Valid = append(req.Valid, attachment(v.ContainerID, v.IfName))
	}
	resp, err := a.api.GC(ctx, req)
	if err != nil {
		return nil, a.explain("GC", err)
	}
	return resp.GetReleased(), nil
}

// Status is the agent's readiness.
func (a *agent) Status(ctx context.Context) (*agentv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	resp, err := a.api.Status(ctx, &agentv1.StatusRequest{})
	if err != nil {
		return nil, a.explain("Status", err)
	}
	return resp, nil
}

// explain maps a failed agent call to a CNI code and a message an operator can act on.
func (a *agent) explain(op string, err error) error {
	st := status.Convert(err)
	ce := &codedError{cause: err}
	switch dialErr := a.lastDialErr(); {
	case st.Code() == codes.Unavailable && dialErr != nil:
		ce.code = types.ErrTryAgainLater
		ce.msg = fmt.Sprintf("cannot reach the hostroute node agent at %s: %s; is the hostroute-node pod running on this node?",
			a.socket, syscallText(dialErr))
	case st.Code() == codes.DeadlineExceeded:
		ce.code = types.ErrTryAgainLater
		ce.msg = fmt.Sprintf("the hostroute node agent at %s did not answer %s within %s (the \"timeout\" key); "+
			"it may be waiting for the controller to assign this node an address block", a.socket, op, a.timeout)
	case st.Code() == codes.Unavailable:
		ce.code = types.ErrTryAgainLater
		ce.msg = fmt.Sprintf("the hostroute node agent is not ready (%s): %s", op, st.Message())
	case st.Code() == codes.ResourceExhausted:
		ce.code = ErrPoolExhausted
		ce.msg = fmt.Sprintf("pod address pool exhausted (agent: %s); enlarge or add an IPPool, or delete unused pods", st.Message())
	case st.Code() == codes.AlreadyExists:
		ce.code = ErrAddressTaken
		ce.msg = fmt.Sprintf("the pod's fixed address is taken (agent: %s)", st.Message())
	case st.Code() == codes.FailedPrecondition:
		ce.code = ErrPoolChoice
		ce.msg = fmt.Sprintf("the pod's IPPool choice cannot be honoured (agent: %s); fix the annotation or the IPPool", st.Message())
	case st.Code() == codes.InvalidArgument:
		ce.code = types.ErrInvalidEnvironmentVariables
		ce.msg = fmt.Sprintf("the hostroute node agent rejected %s for CNI_CONTAINERID/CNI_IFNAME: %s", op, st.Message())
	case st.Code() == codes.NotFound:
		ce.code = types.ErrUnknownContainer
		ce.msg = fmt.Sprintf("the hostroute node agent has no allocation for this container (%s): %s", op, st.Message())
	default:
		ce.code = types.ErrInternal
		ce.msg = fmt.Sprintf("hostroute node agent call %s failed: %s: %s", op, st.Code(), st.Message())
	}
	return ce
}

// syscallText shortens "dial unix /x: connect: no such file or directory" to the part
// after the address; the message names the socket already.
func syscallText(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}

func parseAddresses(in []string) ([]netip.Prefix, error) {
	if len(in) == 0 {
		return nil, fmt.Errorf("the hostroute node agent returned no addresses")
	}
	out := make([]netip.Prefix, 0, len(in))
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("the hostroute node agent returned a bad address %q: %w", s, err)
		}
		if !p.IsSingleIP() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return nil, fmt.Errorf("the hostroute node agent returned %q; want a host prefix such as 10.244.1.7/32 or fd00::7/128", s)
		}
		out = append(out, p)
	}
	return out, nil
}
