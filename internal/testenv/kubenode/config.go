package kubenode

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// layout is where one node keeps everything, all under its directory.
type layout struct {
	Dir        string
	Socket     string // containerd's gRPC socket
	Root       string // containerd's root (images, snapshots)
	State      string // containerd's state (tasks, sandbox netns, shm)
	RuncRoot   string
	CNIBinDir  string
	CNIConfDir string
	KubeletDir string
	PodLogDir  string
	ResolvConf string
	CgroupRoot string // the kubelet's cgroupRoot, e.g. /hostroute-kubenode-123
}

func newLayout(dir string) layout {
	return layout{
		Dir:        dir,
		Socket:     dir + "/containerd.sock",
		Root:       dir + "/containerd/root",
		State:      dir + "/containerd/state",
		RuncRoot:   dir + "/containerd/runc",
		CNIBinDir:  dir + "/host/opt/cni/bin",
		CNIConfDir: dir + "/host/etc/cni/net.d",
		KubeletDir: dir + "/kubelet",
		PodLogDir:  dir + "/pod-logs",
		ResolvConf: dir + "/resolv.conf",
		CgroupRoot: "/" + lastElem(dir),
	}
}

func lastElem(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

// containerdConfig renders containerd 1.6's config (version 2). Every path is the
// node's own, so nothing of the machine's /var/lib/containerd, /run/containerd or
// /opt/containerd is used:
//   - restrict_oom_score_adj: the test runs without CAP_SYS_RESOURCE over its
//     own score, so containerd must not lower a container's oom_score_adj;
//   - netns_mounts_under_state_dir: pod network namespaces are bind-mounted under
//     STATE/.../netns instead of the machine-wide /run/netns, so teardown finds
//     exactly this node's;
//   - the CNI dirs are the node's fake host /opt/cni/bin and /etc/cni/net.d,
//     which the DaemonSet's hostPath volumes also point at; max_conf_num = 1, as
//     the kubelet's old network plugin: the first conflist wins.
func containerdConfig(l layout, sandboxImage string) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
  level = "warn"
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = %[6]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[7]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[8]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[9]q
    conf_dir = %[10]q
    max_conf_num = 1
`, l.Root, l.State, l.Socket, l.Socket+".ttrpc", l.Dir+"/containerd/opt", l.RuncRoot+"-v1",
		sandboxImage, l.RuncRoot, l.CNIBinDir, l.CNIConfDir)
}

// kubeletConfig renders the KubeletConfiguration of a lab node:
//   - cgroupfs under the node's own cgroupRoot; cgroup v1 allowed (this machine's);
//   - no swap check, no iptables chains (the kubelet would write them into the
//     namespace it runs in, and its canary chains are not wanted anywhere);
//   - eviction thresholds near zero and image GC off: a developer's disk at 90%
//     must not evict the DaemonSet or delete the imported images, which cannot be
//     pulled again;
//   - its endpoints in the node namespace only, with no anonymous access; the
//     read-only port off.
func kubeletConfig(l layout) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: %[1]s
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
containerRuntimeEndpoint: unix://%[2]s
podLogsDir: %[3]s
resolvConf: %[4]s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
registerNode: true
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
`, strconv.Quote(l.CgroupRoot), l.Socket, strconv.Quote(l.PodLogDir), strconv.Quote(l.ResolvConf))
}

// kubeletArgs are the kubelet's flags next to its config file. --node-ip pins the
// Node's InternalIP to the fabric address hostroute peers with; without it the
// kubelet resolves the node name through DNS first, which in a lab namespace only
// times out (20 s before the node registers).
func kubeletArgs(l layout, name, nodeIP, kubeconfig string, labels map[string]string) []string {
	args := []string{
		"--config", l.Dir + "/kubelet.yaml",
		"--kubeconfig", kubeconfig,
		"--root-dir", l.KubeletDir,
		"--cert-dir", l.KubeletDir + "/pki",
		"--hostname-override", name,
		"--node-ip", nodeIP,
		"--v", "2",
	}
	if len(labels) > 0 {
		keys := make([]string, 0, len(labels))
		for k := range labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var kv []string
		for _, k := range keys {
			kv = append(kv, k+"="+labels[k])
		}
		args = append(args, "--node-labels", strings.Join(kv, ","))
	}
	return args
}
