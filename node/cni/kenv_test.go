package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// kenv is one node namespace, one pod namespace and a fake agent. The plugin binary
// runs inside the node namespace (`ip netns exec`), exactly as a runtime on that node
// would run it; nothing is ever configured in the test process's own namespace.
type kenv struct {
	t         *testing.T
	bin       string
	node, pod string
	agent     *fakeAgent
	logFile   string
}

// buildPlugin compiles cmd/hostroute-cni into a temp dir, as the runtime's CNI_PATH.
func buildPlugin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hostroute-cni")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/hostroute/hostroute/cmd/hostroute-cni").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func newKEnv(t *testing.T, bin string) *kenv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test creates network namespaces and veths and must run as root (uid %d)", os.Geteuid())
	}
	e := &kenv{t: t, bin: bin, agent: startFakeAgent(t), logFile: filepath.Join(t.TempDir(), "cni.log")}
	e.node = netns.ForTest(t, "hrtest-cni-node-")
	e.pod = netns.ForTest(t, "hrtest-cni-pod-")
	// The pod's replies need a destination the node owns.
	e.ip(e.node, "addr", "add", "192.0.2.10/32", "dev", "lo")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(e.logFile)
			t.Logf("plugin log:\n%s", b)
		}
	})
	return e
}

// conf is a network config for the plugin; extra keys override the defaults.
func (e *kenv) conf(version string, extra map[string]any) string {
	m := map[string]any{"cniVersion": version, "name": "hostroute", "type": "hostroute-cni",
		"agentSocket": e.agent.socket, "mtu": 1400, "logFile": e.logFile}
	for k, v := range extra {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

type cniRun struct {
	stdout, stderr string
	err            error
	took           time.Duration
}

// run invokes the plugin as a runtime does. env overrides (or with "" removes) variables.
func (e *kenv) run(cmd, containerID, stdin string, env map[string]string) cniRun {
	e.t.Helper()
	vars := map[string]string{
		"CNI_COMMAND": cmd, "CNI_CONTAINERID": containerID, "CNI_NETNS": "/run/netns/" + e.pod,
		"CNI_IFNAME": "eth0", "CNI_PATH": filepath.Dir(e.bin),
		"CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1;K8S_POD_UID=u1",
		"PATH":     os.Getenv("PATH"),
	}
	for k, v := range env {
		vars[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "ip", "netns", "exec", e.node, e.bin)
	for k, v := range vars {
		if v != "" {
			c.Env = append(c.Env, k+"="+v)
		}
	}
	var out, errb bytes.Buffer
	c.Stdin, c.Stdout, c.Stderr = strings.NewReader(stdin), &out, &errb
	start := time.Now()
	err := c.Run()
	return cniRun{stdout: out.String(), stderr: errb.String(), err: err, took: time.Since(start)}
}

func (e *kenv) add(containerID, stdin string, env map[string]string) (*types100.Result, cniRun) {
	e.t.Helper()
	r := e.run("ADD", containerID, stdin, env)
	if r.err != nil {
		e.t.Fatalf("ADD %s: %v\nstdout: %s\nstderr: %s", containerID, r.err, r.stdout, r.stderr)
	}
	var res types100.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		e.t.Fatalf("ADD result %q: %v", r.stdout, err)
	}
	return &res, r
}

func (e *kenv) mustSucceed(what string, r cniRun) {
	e.t.Helper()
	if r.err != nil {
		e.t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", what, r.err, r.stdout, r.stderr)
	}
}

// mustFail asserts a CNI error on stdout with the code and every substring.
func (e *kenv) mustFail(what string, r cniRun, code uint, substrings ...string) *types.Error {
	e.t.Helper()
	if r.err == nil {
		e.t.Fatalf("%s: succeeded, want error code %d\nstdout: %s", what, code, r.stdout)
	}
	var ce types.Error
	if err := json.Unmarshal([]byte(r.stdout), &ce); err != nil {
		e.t.Fatalf("%s: stdout is not a CNI error (%v): %q stderr %q", what, err, r.stdout, r.stderr)
	}
	full := ce.Msg + " | " + ce.Details
	e.t.Logf("%s -> code %d: %s", what, ce.Code, full)
	if ce.Code != code {
		e.t.Errorf("%s: code %d (%s), want %d", what, ce.Code, full, code)
	}
	for _, s := range append(substrings, "hostroute-cni:") {
		if !strings.Contains(full, s) {
			e.t.Errorf("%s: message %q does not contain %q", what, full, s)
		}
	}
	return &ce
}

// ip runs `ip -n ns args...` and fails the test on error.
func (e *kenv) ip(ns string, args ...string) string {
	e.t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("ip -n %s %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ipJSON runs `ip -n ns -N -j args...` and decodes the array. -N: protocols, scopes and
// tables come as numbers, never as names from the host's /etc/iproute2 files.
func (e *kenv) ipJSON(ns string, args ...string) []map[string]any {
	e.t.Helper()
	out := e.ip(ns, append([]string{"-N", "-j"}, args...)...)
	var v []map[string]any
	if strings.TrimSpace(out) == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		e.t.Fatalf("ip -j %v: %v: %s", args, err, out)
	}
	return v
}

// exec runs a command inside ns and returns its combined output and error.
func (e *kenv) exec(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

func (e *kenv) sysctl(ns, path string) string {
	e.t.Helper()
	out, err := e.exec(ns, "cat", "/proc/sys/"+path)
	if err != nil {
		e.t.Fatalf("reading %s in %s: %v: %s", path, ns, err, out)
	}
	return strings.TrimSpace(out)
}

// hrLinks lists the node namespace's interfaces whose names start with "hr".
func (e *kenv) hrLinks() []string {
	e.t.Helper()
	var out []string
	for _, l := range e.ipJSON(e.node, "link", "show") {
		if name, _ := l["ifname"].(string); strings.HasPrefix(name, "hr") {
			out = append(out, name)
		}
	}
	return out
}

// assertClean: no host veth left in the node and no allocation left in the agent.
func (e *kenv) assertClean(what string) {
	e.t.Helper()
	if l := e.hrLinks(); len(l) > 0 {
		e.t.Errorf("%s: host veths left in the node namespace: %v", what, l)
	}
	if h := e.agent.held(); len(h) > 0 {
		e.t.Errorf("%s: the agent still holds allocations: %v", what, h)
	}
}

// ping pings from the node namespace, a few tries for neighbour resolution.
func (e *kenv) ping(args ...string) error {
	var err error
	for range 3 {
		var out string
		if out, err = e.exec(e.node, append([]string{"ping", "-c1", "-W1"}, args...)...); err == nil {
			return nil
		}
		err = fmt.Errorf("%w: %s", err, out)
	}
	return err
}

// withPrev adds an ADD result (stdout) as prevResult, as libcni does for CHECK and DEL.
func withPrev(conf, result string) string {
	var m, pr map[string]any
	_ = json.Unmarshal([]byte(conf), &m)
	_ = json.Unmarshal([]byte(result), &pr)
	m["prevResult"] = pr
	out, _ := json.Marshal(m)
	return string(out)
}

// has reports whether any object has all the given key/values (compared as text).
func has(objs []map[string]any, kv map[string]string) bool {
	for _, o := range objs {
		ok := true
		for k, v := range kv {
			if fmt.Sprint(o[k]) != v {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
