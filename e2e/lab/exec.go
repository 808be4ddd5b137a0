package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/hostroute/hostroute/e2e/harness"
)

// target is something `lab exec` can run a command in: a node, a pod, the ToR or the
// external host — a network namespace plus the environment that makes hostroute's tools
// find the node's agent and API credentials there.
type target struct {
	NetNS string            `json:"netns"`
	Env   map[string]string `json:"env,omitempty"`
	What  string            `json:"what"`
}

const targetsFile = "targets.json"

// writeTargets records the running lab's targets and the admin kubeconfig in stateDir.
func writeTargets(l *harness.Lab) (map[string]target, error) {
	path := "PATH=" + l.Bin + ":" + os.Getenv("PATH")
	ts := map[string]target{
		"tor":      {NetNS: l.TorNS, What: "BIRD ToR", Env: map[string]string{"BIRD_CTL": l.Tor.Ctl}},
		"external": {NetNS: l.ExtNS, What: "external host " + harness.ExtAddr},
	}
	for _, n := range l.Nodes {
		kubeconfig := n.Kubeconfig
		what := "node " + n.Addr
		if l.Kubelet != nil && n == l.Kubelet.Node {
			// routectl there acts as the DaemonSet pod's agent does: with a token bound to
			// that pod, not with the kubelet's node credentials.
			var err error
			if kubeconfig, err = agentPodKubeconfig(l); err != nil {
				return nil, err
			}
			what += " (kubelet + containerd; hostroute from the DaemonSet)"
		}
		ts[n.Name] = target{NetNS: n.NS, What: what, Env: map[string]string{
			"KUBECONFIG": kubeconfig, "HOSTROUTE_AGENT_SOCKET": n.Socket, "PATH": strings.TrimPrefix(path, "PATH=")}}
	}
	for _, p := range l.Pods {
		ts[p.Name] = target{NetNS: p.NS, What: "pod " + p.IP}
	}
	b, err := json.MarshalIndent(ts, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stateDir, targetsFile), b, 0o644); err != nil {
		return nil, err
	}
	kc, err := os.ReadFile(l.Cluster.Kubeconfig)
	if err != nil {
		return nil, err
	}
	return ts, os.WriteFile(filepath.Join(stateDir, "kubeconfig"), kc, 0o600)
}

func agentPodKubeconfig(l *harness.Lab) (string, error) {
	pod, err := l.Kubelet.AgentPod()
	if err != nil {
		return "", err
	}
	tok, err := l.PodToken(pod)
	if err != nil {
		return "", err
	}
	path := filepath.Join(stateDir, l.Kubelet.Name+".kubeconfig")
	return path, harness.WriteKubeconfig(path, "https://127.0.0.1:6443", tok)
}

// execIn runs argv in the named target's namespace, replacing this process so that the
// terminal, signals and the exit code are the command's.
func execIn(name string, argv []string) error {
	b, err := os.ReadFile(filepath.Join(stateDir, targetsFile))
	if errors.Is(err, os.ErrNotExist) {
		return errors.New("no lab is running: start one with `make lab` (or `make lab LAB_DETACH=1`)")
	}
	if err != nil {
		return err
	}
	var ts map[string]target
	if err := json.Unmarshal(b, &ts); err != nil {
		return fmt.Errorf("%s: %w", targetsFile, err)
	}
	t, ok := ts[name]
	if !ok {
		names := make([]string, 0, len(ts))
		for n := range ts {
			names = append(names, n)
		}
		sort.Strings(names)
		return fmt.Errorf("no lab target %q; targets: %s", name, strings.Join(names, ", "))
	}
	if len(argv) == 0 {
		argv = []string{"bash"}
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return err
	}
	// The target's own values replace the caller's: a KUBECONFIG exported for kubectl
	// in the root namespace names an address the node's namespace cannot reach, and
	// with both in the environment the first one wins.
	var env []string
	for _, e := range os.Environ() {
		if k, _, _ := strings.Cut(e, "="); t.Env[k] == "" {
			env = append(env, e)
		}
	}
	for k, v := range t.Env {
		env = append(env, k+"="+v)
	}
	if argv[0] == "birdc" && t.Env["BIRD_CTL"] != "" {
		argv = append([]string{"birdc", "-s", t.Env["BIRD_CTL"]}, argv[1:]...)
	}
	// exec below resolves argv[0] in the target's PATH (ip netns exec runs it).
	return syscall.Exec(ip, append([]string{"ip", "netns", "exec", t.NetNS}, argv...), withPath(env, t.Env["PATH"]))
}

func withPath(env []string, path string) []string {
	if path == "" {
		return env
	}
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, "PATH=") {
			out = append(out, e)
		}
	}
	return append(out, "PATH="+path)
}

// usage tells the person at the keyboard how to use the running lab.
func usage(l *harness.Lab, ts map[string]target) string {
	var b strings.Builder
	names := make([]string, 0, len(ts))
	for n := range ts {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(&b, "\n== using the lab ==\n")
	fmt.Fprintf(&b, "export KUBECONFIG=%s   # admin; kubectl: %s\n", filepath.Join(stateDir, "kubeconfig"), kubectlPath())
	b.WriteString("bin/lab exec NAME -- COMMAND...           # run COMMAND in NAME's network namespace\n")
	fmt.Fprintf(&b, "  e.g. bin/lab exec %s -- routectl status\n", l.Nodes[0].Name)
	if len(l.Pods) > 2 {
		fmt.Fprintf(&b, "       bin/lab exec %s -- ping -c3 %s\n", l.Pods[0].Name, l.Pods[len(l.Pods)-1].IP)
	}
	b.WriteString("       bin/lab exec tor -- birdc show route\n")
	b.WriteString("targets:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-14s %s\n", n, ts[n].What)
	}
	return b.String()
}

func kubectlPath() string {
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "hostroute", "v1.35.4", "kubectl")
}
