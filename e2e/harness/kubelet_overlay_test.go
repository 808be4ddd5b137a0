package harness

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/hostroute/hostroute/internal/testenv/cluster"
	"github.com/hostroute/hostroute/node/install"
)

func TestLabConflist(t *testing.T) {
	got, err := labConflist(install.ShippedConflist(), "/tmp/x/run/hostroute/agent.sock")
	if err != nil {
		t.Fatal(err)
	}
	var c, shipped map[string]any
	if err := json.Unmarshal(got, &c); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(install.ShippedConflist(), &shipped)
	if err := install.ValidateOwnConflist(got); err != nil {
		t.Errorf("lab conflist is not hostroute's: %v", err)
	}
	first := c["plugins"].([]any)[0].(map[string]any)
	if first["agentSocket"] != "/tmp/x/run/hostroute/agent.sock" {
		t.Errorf("agentSocket %v", first["agentSocket"])
	}
	// Everything else is as shipped.
	first["agentSocket"] = shipped["plugins"].([]any)[0].(map[string]any)["agentSocket"]
	a, _ := json.Marshal(c)
	b, _ := json.Marshal(shipped)
	if string(a) != string(b) {
		t.Errorf("lab conflist differs from the shipped one beyond agentSocket:\n%s\n%s", a, b)
	}
	if _, err := labConflist([]byte(`{"plugins":[{"type":"ptp"}]}`), "/s"); err == nil {
		t.Error("a conflist whose first plugin is not hostroute-cni was accepted")
	}
}

// TestOverlayRenders runs the cached kubectl's kustomize over the lab overlay and the
// shipped manifests and checks the result is what the lab needs.
func TestOverlayRenders(t *testing.T) {
	kubectl := filepath.Join(toolsDir(), "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Fatalf("kubectl %s: %v (run `make tools`)", kubectl, err)
	}
	dir := t.TempDir()
	conf, err := labConflist(install.ShippedConflist(), "/h/run/hostroute/agent.sock")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeOverlay(dir, overlay{Manifests: filepath.Join(RepoRoot(), "manifests"), Tag: "t7", HostRoot: "/h", Conflist: conf}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	dss := map[string]*appsv1.DaemonSet{}
	var cmName string
	for _, doc := range strings.Split(string(out), "\n---\n") {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "Deployment":
			t.Errorf("Deployment %s is in the lab overlay's output", meta.Metadata.Name)
		case "IPPool":
			t.Errorf("IPPool %s is in the lab overlay's output", meta.Metadata.Name)
		case "ConfigMap":
			cmName = meta.Metadata.Name
			if !strings.Contains(doc, "/h/run/hostroute/agent.sock") {
				t.Errorf("ConfigMap %s lacks the lab conflist:\n%s", cmName, doc)
			}
		case "DaemonSet":
			d := &appsv1.DaemonSet{}
			if err := yaml.Unmarshal([]byte(doc), d); err != nil {
				t.Fatal(err)
			}
			dss[d.Name] = d
		}
	}
	ds, bfdDS := dss["hostroute-node"], dss["hostroute-bfd"]
	if ds == nil || bfdDS == nil {
		t.Fatalf("want DaemonSets hostroute-node and hostroute-bfd in:\n%s", out)
	}
	// The BFD daemon runs on the lab node too, sharing the agent's socket directory.
	bspec := bfdDS.Spec.Template.Spec
	if bspec.NodeSelector[LabKubeletLabel] != "true" || len(bspec.Volumes) != 1 || bspec.Volumes[0].HostPath == nil ||
		bspec.Volumes[0].HostPath.Path != "/h/run/hostroute" || bspec.Containers[0].Image != LabImageName+":t7" ||
		!containsAll(bspec.Containers[0].Args, "--socket=/run/hostroute/bfd.sock") {
		t.Errorf("hostroute-bfd not placed for the lab: nodeSelector %v, volumes %+v, containers %+v", bspec.NodeSelector, bspec.Volumes, bspec.Containers)
	}
	spec := ds.Spec.Template.Spec
	if spec.NodeSelector[LabKubeletLabel] != "true" {
		t.Errorf("nodeSelector %v", spec.NodeSelector)
	}
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		if c.Image != LabImageName+":t7" {
			t.Errorf("container %s image %s, want %s:t7", c.Name, c.Image, LabImageName)
		}
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
		if v.Name == "lab-cni" && (v.ConfigMap == nil || v.ConfigMap.Name != cmName) {
			t.Errorf("volume lab-cni %+v does not name the generated ConfigMap %s", v, cmName)
		}
	}
	for name, want := range map[string]string{"state": "/h/var/lib/hostroute", "run": "/h/run/hostroute",
		"cni-bin": "/h/opt/cni/bin", "cni-conf": "/h/etc/cni/net.d", "lib-modules": "/lib/modules"} {
		if hostPaths[name] != want {
			t.Errorf("hostPath volume %s: %q, want %q", name, hostPaths[name], want)
		}
	}
	env := map[string]string{}
	var agentArgs []string
	for _, c := range spec.Containers {
		if c.Name == "agent" {
			agentArgs = c.Args
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
		}
	}
	if env["KUBERNETES_SERVICE_HOST"] != "127.0.0.1" || env["KUBERNETES_SERVICE_PORT"] != "6443" {
		t.Errorf("agent env %v", env)
	}
	if !containsAll(agentArgs, "--state-dir=/var/lib/hostroute", "--socket=/run/hostroute/agent.sock", "--bfd-socket=/run/hostroute/bfd.sock") {
		t.Errorf("agent args changed: %v", agentArgs)
	}
	var install corev1.Container
	for _, c := range spec.InitContainers {
		if c.Name == "install-cni" {
			install = c
		}
	}
	if !containsAll(install.Args, "--conflist=/lab-cni/10-hostroute.conflist") {
		t.Errorf("install-cni args %v", install.Args)
	}
}

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// toolsDir is where `make tools` puts kubectl and the kubelet.
func toolsDir() string {
	if d := os.Getenv("HOSTROUTE_TOOLS_DIR"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "hostroute", cluster.KubernetesVersion)
}
