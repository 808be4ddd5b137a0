package routectl

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/api/v1alpha1"
)

// fakeAgent answers Routing with a fixed state.
type fakeAgent struct {
	agentv1.UnimplementedAgentServer
	resp *agentv1.RoutingResponse
}

func (f *fakeAgent) Routing(context.Context, *agentv1.RoutingRequest) (*agentv1.RoutingResponse, error) {
	return f.resp, nil
}

func serveFake(t *testing.T, resp *agentv1.RoutingResponse) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	agentv1.RegisterAgentServer(srv, &fakeAgent{resp: resp})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return sock
}

func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// TestExitCodes: 0 healthy, 1 unhealthy (with the output still printed), 2 when
// routectl cannot answer.
func TestExitCodes(t *testing.T) {
	good := serveFake(t, healthyFixture())
	bad := serveFake(t, routingFixture())
	if out, errOut, code := run(t, "--socket", good, "status"); code != ExitOK {
		t.Errorf("healthy status: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code := run(t, "--socket", bad, "status")
	if code != ExitUnhealthy || !strings.Contains(out, "Active !") || !strings.Contains(errOut, "tor (192.0.2.254) Active") {
		t.Errorf("unhealthy status: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if _, _, code := run(t, "--socket", good, "routes"); code != ExitOK {
		t.Errorf("routes in sync: exit %d", code)
	}
	if _, _, code := run(t, "--socket", bad, "routes"); code != ExitUnhealthy {
		t.Errorf("routes out of sync: exit %d", code)
	}
	if _, errOut, code := run(t, "--socket", filepath.Join(t.TempDir(), "none.sock"), "--timeout", "1s", "status"); code != ExitError {
		t.Errorf("no agent: exit %d (%s)", code, errOut)
	}
	if _, _, code := run(t, "--socket", good, "status", "-o", "xml"); code != ExitError {
		t.Errorf("bad -o: exit %d", code)
	}
	if _, _, code := run(t, "no-such-command"); code != ExitError {
		t.Errorf("unknown command: exit %d", code)
	}
}

// TestLiveJSON: `status -o json` decodes into a NodeNetworkStatus and `routes -o json`
// into the agent API's RoutingResponse.
func TestLiveJSON(t *testing.T) {
	sock := serveFake(t, routingFixture())
	out, _, _ := run(t, "--socket", sock, "status", "-o", "json")
	var nns v1alpha1.NodeNetworkStatus
	if err := json.Unmarshal([]byte(out), &nns); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if nns.Name != "node-1" || len(nns.Status.Sessions) != 3 || nns.Status.Routes.Missing != 1 || nns.Status.SessionsSummary != "2/3" {
		t.Errorf("decoded %+v", nns.Status)
	}
	out, _, _ = run(t, "--socket", sock, "routes", "-o", "json")
	var r agentv1.RoutingResponse
	if err := protojson.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(r.GetRoutes()) != 5 || r.GetNode() != "node-1" {
		t.Errorf("decoded %v", &r)
	}
}
