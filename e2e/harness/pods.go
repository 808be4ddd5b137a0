package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	agentv1 "github.com/hostroute/hostroute/api/agent/v1"
	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// Status asks the agent over its socket.
func (n *Node) Status() (*agentv1.StatusResponse, error) {
	c, err := n.Agent()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return agentv1.NewAgentClient(c).Status(ctx, &agentv1.StatusRequest{})
}

// Agent dials the agent's socket.
func (n *Node) Agent() (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+n.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// NetConf is the CNI network configuration the harness feeds the plugin.
func (n *Node) NetConf() []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"hostroute","type":"hostroute-cni","mtu":1500,"agentSocket":%q}`, n.Socket))
}

// Pod is a pod sandbox: a namespace wired by the CNI plugin.
type Pod struct {
	Name string
	// Namespace is the pod's Kubernetes namespace ("" = default).
	Namespace   string
	NS          string
	ContainerID string
	UID         string
	IP          string // the IPv4 address (or the only one)
	IP6         string // the IPv6 address of a dual-stack pod
	Node        *Node
}

// CNIResult is the part of a CNI result the tests read.
type CNIResult struct {
	CNIVersion string `json:"cniVersion"`
	IPs        []struct {
		Address string `json:"address"`
	} `json:"ips"`
	Code int    `json:"code"`
	Msg  string `json:"msg"`
}

// CNI runs the plugin binary in the node's namespace exactly as a runtime does: the
// CNI_* environment and the network configuration on stdin. It returns stdout and the
// exit error.
func (n *Node) CNI(command string, p *Pod, conf []byte) ([]byte, error) {
	cmd := exec.Command("ip", "netns", "exec", n.NS, filepath.Join(n.env.Bin, "hostroute-cni"))
	cmd.Env = CNIEnv(command, p, n.env.Bin+":/usr/lib/cni")
	cmd.Stdin = bytes.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil && stderr.Len() > 0 {
		err = fmt.Errorf("%w (stderr: %s)", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), err
}

// CNIEnv is the environment a runtime gives a CNI plugin for p (the process's own, plus
// CNI_* with the Kubernetes pod arguments), plugins looked up in cniPath.
func CNIEnv(command string, p *Pod, cniPath string) []string {
	netnsPath := ""
	if p.NS != "" {
		netnsPath = "/run/netns/" + p.NS
	}
	return append(os.Environ(),
		"CNI_COMMAND="+command,
		"CNI_CONTAINERID="+p.ContainerID,
		"CNI_NETNS="+netnsPath,
		"CNI_IFNAME=eth0",
		"CNI_PATH="+cniPath,
		fmt.Sprintf("CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=%s", p.KubeNamespace(), p.Name, p.ContainerID, p.UID),
	)
}

// NewPod makes a pod sandbox namespace (not yet wired).
func (n *Node) NewPod(name string) *Pod {
	n.env.T.Helper()
	ns := netns.ForTest(n.env.T, n.env.Prefix+"p-")
	return &Pod{Name: name, NS: ns, ContainerID: "ctr-" + ns, UID: "uid-" + ns, Node: n}
}

// KubeNamespace is the pod's Kubernetes namespace.
func (p *Pod) KubeNamespace() string {
	if p.Namespace == "" {
		return "default"
	}
	return p.Namespace
}

// Add runs CNI ADD for the pod and records its address.
func (p *Pod) Add() error {
	out, err := p.Node.CNI("ADD", p, p.Node.NetConf())
	if err != nil {
		return fmt.Errorf("CNI ADD %s: %w: %s", p.Name, err, out)
	}
	var r CNIResult
	if err := json.Unmarshal(out, &r); err != nil || len(r.IPs) == 0 {
		return fmt.Errorf("CNI ADD %s: bad result %q: %v", p.Name, out, err)
	}
	p.IP, p.IP6 = "", ""
	for _, ip := range r.IPs {
		a := strings.Split(ip.Address, "/")[0]
		switch {
		case strings.Contains(a, ":") && p.IP6 == "":
			p.IP6 = a
		case !strings.Contains(a, ":") && p.IP == "":
			p.IP = a
		}
	}
	if p.IP == "" { // an IPv6-only pod
		p.IP = p.IP6
	}
	return nil
}

// Del runs CNI DEL for the pod.
func (p *Pod) Del() error {
	out, err := p.Node.CNI("DEL", p, p.Node.NetConf())
	if err != nil {
		return fmt.Errorf("CNI DEL %s: %w: %s", p.Name, err, out)
	}
	return nil
}

// Exec runs a command in the pod's namespace.
func (p *Pod) Exec(args ...string) (string, error) { return netns.Output(p.NS, args...) }
