package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/hostroute/hostroute/node/install"
)

// The lab's kustomize overlay over the shipped manifests/ for the kubelet node. It
// changes only what a lab in network namespaces on one machine needs:
//
//   - images: the image the test built and imported, under its own name and a tag
//     per build (a new tag is how a rolling update is started);
//   - the controller Deployment is dropped: the lab runs its controllers itself;
//   - the shipped default IPPool is dropped: the lab creates the same pool
//     (LabPool) before any node exists, and the test checks the two agree;
//   - the DaemonSet runs only on the kubelet node (nodeSelector LabKubeletLabel;
//     the other lab nodes run their agents as processes);
//   - the agent reaches the API server at 127.0.0.1:6443, the node namespace's
//     forwarder (no kube-proxy, no Service routing in the lab);
//   - the hostPath volumes point at the node's own HostRoot instead of the
//     machine's /var/lib/hostroute, /run/hostroute, /opt/cni/bin and
//     /etc/cni/net.d, which containerd's CNI dirs are too;
//   - install-cni installs a lab conflist from a ConfigMap: the shipped one with
//     agentSocket at the host path of the agent's socket, since the plugin runs on
//     the host, where /run/hostroute is not the agent's run dir.
//
// Paths inside the containers (--state-dir, --socket, mount paths) are unchanged.

// LabKubeletLabel selects the lab's kubelet node for the DaemonSet.
const LabKubeletLabel = "hostroute.io/lab-kubelet"

// LabImageName is the repository the lab's hostroute images are imported under.
const LabImageName = "hostroute.test/hostroute"

// overlay is what renderOverlay needs.
type overlay struct {
	Manifests string // the shipped manifests/ directory, relative to the overlay's (kustomize refuses absolute paths)
	Tag       string // image tag under LabImageName
	HostRoot  string // the kubelet node's stand-in for /
	Conflist  []byte // the lab conflist install-cni installs
}

// labConflist is the shipped conflist with the hostroute plugin's agentSocket set to
// socket; everything else is kept as shipped.
func labConflist(shipped []byte, socket string) ([]byte, error) {
	var c map[string]any
	if err := json.Unmarshal(shipped, &c); err != nil {
		return nil, fmt.Errorf("shipped conflist: %w", err)
	}
	plugins, _ := c["plugins"].([]any)
	if len(plugins) == 0 {
		return nil, fmt.Errorf("shipped conflist has no plugins")
	}
	first, ok := plugins[0].(map[string]any)
	if !ok || first["type"] != install.PluginName {
		return nil, fmt.Errorf("shipped conflist: first plugin is %v, want %s", plugins[0], install.PluginName)
	}
	first["agentSocket"] = socket
	return json.MarshalIndent(c, "", "  ")
}

// renderOverlay returns the overlay's files by name.
func renderOverlay(o overlay) map[string]string {
	host := func(p string) string { return strconv.Quote(filepath.Join(o.HostRoot, p)) }
	return map[string]string{
		"kustomization.yaml": fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
images:
  - name: hostroute/hostroute
    newName: %s
    newTag: %s
configMapGenerator:
  - name: hostroute-lab-cni
    namespace: hostroute-system
    files:
      - %s
patches:
  - path: drop-controller.yaml
  - path: drop-default-pool.yaml
  - path: daemonset.yaml
  - path: bfd-daemonset.yaml
`, strconv.Quote(o.Manifests), LabImageName, strconv.Quote(o.Tag), install.ConflistName),
		install.ConflistName: string(o.Conflist) + "\n",
		"drop-controller.yaml": `$patch: delete
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hostroute-controller
  namespace: hostroute-system
`,
		"drop-default-pool.yaml": `$patch: delete
apiVersion: hostroute.io/v1alpha1
kind: IPPool
metadata:
  name: default-ipv4
`,
		"daemonset.yaml": fmt.Sprintf(`apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: hostroute-node
  namespace: hostroute-system
spec:
  template:
    spec:
      nodeSelector:
        %s: "true"
      initContainers:
        - name: install-cni
          args: [--conflist=/lab-cni/%s]
          volumeMounts:
            - {name: lab-cni, mountPath: /lab-cni, readOnly: true}
      containers:
        - name: agent
          env:
            - {name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}
            - {name: KUBERNETES_SERVICE_PORT, value: "6443"}
      volumes:
        - {name: state, hostPath: {path: %s, type: DirectoryOrCreate}}
        - {name: run, hostPath: {path: %s, type: DirectoryOrCreate}}
        - {name: cni-bin, hostPath: {path: %s, type: DirectoryOrCreate}}
        - {name: cni-conf, hostPath: {path: %s, type: DirectoryOrCreate}}
        - {name: lab-cni, configMap: {name: hostroute-lab-cni}}
`, LabKubeletLabel, install.ConflistName,
			host("/var/lib/hostroute"), host("/run/hostroute"), host("/opt/cni/bin"), host("/etc/cni/net.d")),
		// The BFD daemon shares the agent's socket directory.
		"bfd-daemonset.yaml": fmt.Sprintf(`apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: hostroute-bfd
  namespace: hostroute-system
spec:
  template:
    spec:
      nodeSelector:
        %s: "true"
      volumes:
        - {name: run, hostPath: {path: %s, type: DirectoryOrCreate}}
`, LabKubeletLabel, host("/run/hostroute")),
	}
}

// writeOverlay writes the overlay's files into dir (replacing earlier ones);
// o.Manifests may be absolute there.
func writeOverlay(dir string, o overlay) error {
	if filepath.IsAbs(o.Manifests) {
		rel, err := filepath.Rel(dir, o.Manifests)
		if err != nil {
			return err
		}
		o.Manifests = rel
	}
	for name, body := range renderOverlay(o) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}
