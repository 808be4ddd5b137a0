package kubenode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Sandbox is a pod sandbox as containerd reports it.
type Sandbox struct {
	ID        string
	Namespace string
	Name      string
	UID       string
	Ready     bool
	// HostNetwork: the sandbox uses the node's network namespace (no CNI call).
	HostNetwork bool
	// PID is the sandbox (pause) process; /proc/PID/ns/net is the pod's network
	// namespace. Zero once the sandbox is stopped.
	PID int
}

// NetNSPath is the pod's network namespace as a path nsenter and setns accept.
func (s Sandbox) NetNSPath() string { return "/proc/" + strconv.Itoa(s.PID) + "/ns/net" }

// verboseInfo is the part of containerd's verbose status ("info") used here.
type verboseInfo struct {
	PID int `json:"pid"`
}

func pidFromInfo(info map[string]string) int {
	var v verboseInfo
	if err := json.Unmarshal([]byte(info["info"]), &v); err != nil {
		return 0
	}
	return v.PID
}

// Sandboxes lists the node's pod sandboxes, ready or not.
func (n *Node) Sandboxes(ctx context.Context) ([]Sandbox, error) {
	resp, err := n.rt.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{})
	if err != nil {
		return nil, fmt.Errorf("CRI ListPodSandbox: %w", err)
	}
	var out []Sandbox
	for _, sb := range resp.Items {
		st, err := n.rt.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: sb.Id, Verbose: true})
		if err != nil {
			return nil, fmt.Errorf("CRI PodSandboxStatus %s: %w", sb.Id, err)
		}
		s := Sandbox{ID: sb.Id, Ready: sb.State == cri.PodSandboxState_SANDBOX_READY}
		if m := sb.Metadata; m != nil {
			s.Namespace, s.Name, s.UID = m.Namespace, m.Name, m.Uid
		}
		if ns := st.GetStatus().GetLinux().GetNamespaces().GetOptions(); ns != nil {
			s.HostNetwork = ns.Network == cri.NamespaceMode_NODE
		}
		if s.Ready {
			s.PID = pidFromInfo(st.Info)
		}
		out = append(out, s)
	}
	return out, nil
}

// PodSandbox returns the ready sandbox of the pod with uid.
func (n *Node) PodSandbox(ctx context.Context, uid string) (Sandbox, error) {
	sbs, err := n.Sandboxes(ctx)
	if err != nil {
		return Sandbox{}, err
	}
	for _, s := range sbs {
		if s.UID == uid && s.Ready && s.PID > 0 {
			return s, nil
		}
	}
	return Sandbox{}, fmt.Errorf("no ready sandbox for pod UID %s on node %s", uid, n.Name)
}

// ContainerPID returns the main process of a container (ID as in the pod status,
// with or without the containerd:// prefix).
func (n *Node) ContainerPID(ctx context.Context, id string) (int, error) {
	const prefix = "containerd://"
	if len(id) > len(prefix) && id[:len(prefix)] == prefix {
		id = id[len(prefix):]
	}
	st, err := n.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		return 0, fmt.Errorf("CRI ContainerStatus %s: %w", id, err)
	}
	pid := pidFromInfo(st.Info)
	if pid <= 0 {
		return 0, fmt.Errorf("container %s has no running process", id)
	}
	return pid, nil
}

// sandboxOrder puts sandboxes with their own network first: their CNI DEL needs
// the network's agent, which may itself be a hostNetwork pod.
func sandboxOrder(sbs []Sandbox) []Sandbox {
	out := slices.Clone(sbs)
	slices.SortStableFunc(out, func(a, b Sandbox) int {
		switch {
		case a.HostNetwork == b.HostNetwork:
			return 0
		case b.HostNetwork:
			return -1
		default:
			return 1
		}
	})
	return out
}

// removeSandboxes stops (CNI DEL, containers killed) and removes every sandbox.
func (n *Node) removeSandboxes(ctx context.Context) error {
	sbs, err := n.Sandboxes(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range sandboxOrder(sbs) {
		if _, err := n.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: s.ID}); err != nil {
			errs = append(errs, fmt.Errorf("stopping sandbox of %s/%s: %w", s.Namespace, s.Name, err))
			continue
		}
		if _, err := n.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: s.ID}); err != nil {
			errs = append(errs, fmt.Errorf("removing sandbox of %s/%s: %w", s.Namespace, s.Name, err))
		}
	}
	return errors.Join(errs...)
}
