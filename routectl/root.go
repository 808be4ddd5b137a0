// Package routectl is the operator's view of a hostroute network: the command tree and
// the rendering behind cmd/routectl. It reads the local agent over its unix socket (what
// this node does right now) and the API server (what every node last reported), and its
// exit code says whether what it found is healthy, so that it can be scripted:
//
//	0  healthy, nothing found
//	1  something is unhealthy (a session down, kernel out of sync, an IPAM finding)
//	2  routectl could not answer (bad flags, agent or API server unreachable)
package routectl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/client-go/kubernetes"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/client"
)

// Exit codes.
const (
	ExitOK        = 0
	ExitUnhealthy = 1
	ExitError     = 2
)

// DefaultSocket is where the agent serves on every node.
const DefaultSocket = "/run/hostroute/agent.sock"

// SocketEnv, when set, replaces DefaultSocket as --socket's default (for agents run with
// a non-default --socket, as in the lab).
const SocketEnv = "HOSTROUTE_AGENT_SOCKET"

// unhealthyError carries exit code 1: the output was printed, and it shows a problem.
type unhealthyError struct{ msg string }

func (e *unhealthyError) Error() string { return e.msg }

func unhealthy(format string, a ...any) error { return &unhealthyError{fmt.Sprintf(format, a...)} }

// options are the global flags and the clients they lead to.
type options struct {
	kubeconfig string
	socket     string
	node       string
	output     string
	timeout    time.Duration
	out        io.Writer
	now        func() time.Time
}

// Main runs routectl with args and returns the process exit code.
func Main(ctx context.Context, args []string, out, errOut io.Writer) int {
	cmd := NewCommand(out)
	cmd.SetArgs(args)
	cmd.SetErr(errOut)
	err := cmd.ExecuteContext(ctx)
	var uh *unhealthyError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &uh):
		fmt.Fprintln(errOut, "routectl:", err)
		return ExitUnhealthy
	default:
		fmt.Fprintln(errOut, "routectl:", err)
		return ExitError
	}
}

// NewCommand builds the command tree; output goes to out.
func NewCommand(out io.Writer) *cobra.Command {
	o := &options{out: out, now: time.Now}
	root := &cobra.Command{
		Use:   "routectl",
		Short: "Inspect a hostroute pod network: BGP sessions, routes, IPAM",
		Long: `routectl shows the state of a hostroute network.

On a node, it asks the local agent (--socket) what it is doing now; anywhere, it reads
what every agent last reported to the API server (--kubeconfig).

Exit codes: 0 healthy, 1 something unhealthy was found, 2 routectl could not answer.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	f := root.PersistentFlags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "path to a kubeconfig (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
	socket := DefaultSocket
	if v := os.Getenv(SocketEnv); v != "" {
		socket = v
	}
	f.StringVar(&o.socket, "socket", socket, "the node agent's unix socket (default $"+SocketEnv+", else "+DefaultSocket+")")
	f.StringVar(&o.node, "node", "", "the node to show (read from the API server instead of the local agent)")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table, wide, json or yaml")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the agent and the API server")
	root.AddCommand(newStatusCommand(o), newNodesCommand(o), newRoutesCommand(o), newIPAMCommand(o), newPeersCommand(o),
		newTorFiltersCommand(o), newTraceCommand(o))
	return root
}

func (o *options) validateOutput() error {
	switch o.output {
	case "table", "wide", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--output %q: want table, wide, json or yaml", o.output)
}

func (o *options) wide() bool { return o.output == "wide" }

// agent dials the local agent.
func (o *options) agent() (agentv1.AgentClient, func(), error) {
	conn, err := grpc.NewClient("unix://"+o.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("agent socket %s: %w", o.socket, err)
	}
	return agentv1.NewAgentClient(conn), func() { conn.Close() }, nil
}

// api builds the API clients.
func (o *options) api() (*client.Client, kubernetes.Interface, error) {
	cfg, err := client.LoadConfig(o.kubeconfig, "routectl")
	if err != nil {
		return nil, nil, err
	}
	cfg.Timeout = o.timeout
	hr, err := client.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return hr, kube, nil
}

func (o *options) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), o.timeout)
}
