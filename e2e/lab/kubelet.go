package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/hostroute/hostroute/e2e/harness"
)

// kubeletPods starts n pods through the API on the lab's kubelet node (the kubelet and
// containerd run them; containerd calls hostroute-cni) and gives each pod's network
// namespace a name under /run/netns, so the connectivity matrix and `lab exec` reach them
// like the other pods. The names carry the lab's prefix: `lab down` removes them.
func kubeletPods(l *harness.Lab, n int) ([]*harness.Pod, error) {
	k := l.Kubelet
	var out []*harness.Pod
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("%s-pod-%d", k.Name, i)
		p := k.RunPod(name)
		path, err := k.PodNetNS(p)
		if err != nil {
			return nil, fmt.Errorf("pod %s: %w", name, err)
		}
		ns := fmt.Sprintf("%sk-%d-%s", harness.LabPrefix, os.Getpid(), name)
		target := filepath.Join("/run/netns", ns)
		if err := os.WriteFile(target, nil, 0o444); err != nil {
			return nil, err
		}
		if out, err := exec.Command("mount", "--bind", path, target).CombinedOutput(); err != nil {
			_ = os.Remove(target)
			return nil, fmt.Errorf("naming pod %s's namespace: %w: %s", name, err, strings.TrimSpace(string(out)))
		}
		l.T.Cleanup(func() {
			_ = exec.Command("umount", target).Run()
			_ = os.Remove(target)
		})
		pod := &harness.Pod{Name: name, NS: ns, IP: p.Status.PodIP, UID: string(p.UID), Node: k.Node}
		for _, ip := range p.Status.PodIPs {
			if strings.Contains(ip.IP, ":") {
				pod.IP6 = ip.IP
			}
		}
		out = append(out, pod)
	}
	return out, nil
}
