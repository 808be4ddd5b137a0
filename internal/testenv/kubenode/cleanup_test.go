package kubenode

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hostroute/hostroute/internal/testenv/proc"
)

const mountinfo = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
40 22 254:0 /tmp/hostroute-kubenode-1/kubelet /tmp/hostroute-kubenode-1/kubelet rw shared:1 - ext4 /dev/vda rw
41 40 0:50 / /tmp/hostroute-kubenode-1/kubelet/pods/u/volumes/kubernetes.io~projected/kube-api-access-x rw - tmpfs tmpfs rw
42 22 0:4 net:[4026532] /tmp/hostroute-kubenode-1/containerd/state/io.containerd.grpc.v1.cri/netns/cni-1 rw - nsfs nsfs rw
43 22 0:51 / /tmp/hostroute-kubenode-10/kubelet rw - ext4 /dev/vda rw
44 22 0:52 / /tmp/with\040space rw - tmpfs tmpfs rw
`

func TestMountsUnder(t *testing.T) {
	ms, err := parseMountinfo(strings.NewReader(mountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 9 {
		t.Fatalf("parsed %d mounts, want 9", len(ms))
	}
	if ms[8].Point != "/tmp/with space" {
		t.Errorf("escaped mount point: %q", ms[8].Point)
	}
	got := mountsUnder(ms, "/tmp/hostroute-kubenode-1")
	want := []string{
		"/tmp/hostroute-kubenode-1/kubelet/pods/u/volumes/kubernetes.io~projected/kube-api-access-x",
		"/tmp/hostroute-kubenode-1/containerd/state/io.containerd.grpc.v1.cri/netns/cni-1",
		"/tmp/hostroute-kubenode-1/kubelet",
	}
	if !slices.Equal(got, want) {
		t.Errorf("mountsUnder: got\n%q\nwant (deepest first, never the sibling -10 node)\n%q", got, want)
	}
	if cg := cgroupMounts(ms); !slices.Equal(cg, []string{"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/unified"}) {
		t.Errorf("cgroupMounts: %q", cg)
	}
}

func TestSandboxOrder(t *testing.T) {
	in := []Sandbox{{Name: "ds", HostNetwork: true}, {Name: "a"}, {Name: "ds2", HostNetwork: true}, {Name: "b"}}
	var names []string
	for _, s := range sandboxOrder(in) {
		names = append(names, s.Name)
	}
	if want := []string{"a", "b", "ds", "ds2"}; !slices.Equal(names, want) {
		t.Errorf("sandboxOrder: %v, want pod-network sandboxes first: %v", names, want)
	}
}

func TestKubeletArgs(t *testing.T) {
	l := newLayout("/tmp/hostroute-kubenode-7")
	args := strings.Join(kubeletArgs(l, "n1", "192.0.2.5", "/k", map[string]string{"b": "2", "a": "1"}), " ")
	for _, want := range []string{"--hostname-override n1", "--node-ip 192.0.2.5", "--node-labels a=1,b=2",
		"--root-dir /tmp/hostroute-kubenode-7/kubelet", "--cert-dir /tmp/hostroute-kubenode-7/kubelet/pki"} {
		if !strings.Contains(args, want) {
			t.Errorf("kubelet args %q lack %q", args, want)
		}
	}
	if l.CgroupRoot != "/hostroute-kubenode-7" {
		t.Errorf("cgroup root %q", l.CgroupRoot)
	}
	cfg := kubeletConfig(l)
	for _, want := range []string{`cgroupRoot: "/hostroute-kubenode-7"`, "makeIPTablesUtilChains: false",
		"containerRuntimeEndpoint: unix:///tmp/hostroute-kubenode-7/containerd.sock", `nodefs.available: "1%"`} {
		if !strings.Contains(cfg, want) {
			t.Errorf("kubelet config lacks %q:\n%s", want, cfg)
		}
	}
	cd := containerdConfig(l, PauseImage)
	for _, want := range []string{"restrict_oom_score_adj = true", "netns_mounts_under_state_dir = true",
		`bin_dir = "/tmp/hostroute-kubenode-7/host/opt/cni/bin"`, `sandbox_image = "hostroute.test/pause:1"`} {
		if !strings.Contains(cd, want) {
			t.Errorf("containerd config lacks %q", want)
		}
	}
}

func TestCheckToolsMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := CheckTools("/nonexistent/kubelet")
	if !errors.Is(err, ErrToolMissing) || !strings.Contains(err.Error(), "containerd not found") {
		t.Errorf("CheckTools with an empty PATH: %v, want ErrToolMissing naming containerd", err)
	}
}

func TestCheckToolsMissingPlugin(t *testing.T) {
	bin, err := os.Executable() // any executable stands in for the kubelet
	if err != nil {
		t.Fatal(err)
	}
	err = CheckTools(bin, "/nonexistent/cni/portmap")
	if !errors.Is(err, ErrToolMissing) || !strings.Contains(err.Error(), "/nonexistent/cni/portmap") {
		t.Errorf("CheckTools with a missing plugin: %v, want ErrToolMissing naming it", err)
	}
}

// TestSweep plays a test binary that died without Stop: its node dir (dead owner) still
// holds a mount, a cgroup and a process using the dir. Sweep removes all of them and
// leaves a live owner's dir alone.
func TestSweep(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("the sweep test mounts and makes cgroups and must run as root (uid %d)", os.Geteuid())
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", DirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	live, err := os.MkdirTemp("", DirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cleanDir(dir); _ = cleanDir(live) })
	for d, pid := range map[string]int{dir: dead.Process.Pid, live: os.Getpid()} {
		if err := os.WriteFile(filepath.Join(d, proc.OwnerFile), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The live dir's owner is this process, which Sweep never touches.
	if err := os.MkdirAll(filepath.Join(dir, "kubelet", "pods"), 0o755); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "kubelet", "pods")
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if err := createCgroupRoot(lastElem(dir)); err != nil {
		t.Fatal(err)
	}
	// tail keeps the dir on its command line for as long as it runs (a shell running
	// "sleep" may exec it and lose the argument before the sweep looks).
	logFile := filepath.Join(dir, "containerd.log")
	if err := os.WriteFile(logFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	leftover := exec.Command("tail", "-f", logFile)
	if err := leftover.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { _ = leftover.Wait(); close(waited) }()
	// The sweep finds processes by their arguments: make sure the leftover shows them.
	for deadline := time.Now().Add(5 * time.Second); !slices.Contains(proc.PIDsUsing(dir), leftover.Process.Pid); {
		if time.Now().After(deadline) {
			t.Fatalf("process %d (%v) never showed the dead node's dir in its arguments", leftover.Process.Pid, proc.Cmdline(leftover.Process.Pid))
		}
		time.Sleep(10 * time.Millisecond)
	}

	Sweep()

	select {
	case <-waited:
	case <-time.After(15 * time.Second): // a loaded machine may be slow to reap it
		t.Errorf("process %d using the dead node's dir survived the sweep (alive: %v, arguments %v)",
			leftover.Process.Pid, proc.Alive(leftover.Process.Pid), proc.Cmdline(leftover.Process.Pid))
		_ = leftover.Process.Kill()
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("dead node's dir %s survived the sweep (%v)", dir, err)
	}
	mounts, _ := readMounts()
	if m := mountsUnder(mounts, dir); len(m) > 0 {
		t.Errorf("mounts survived the sweep: %v", m)
	}
	for _, mp := range cgroupMounts(mounts) {
		if _, err := os.Stat(filepath.Join(mp, lastElem(dir))); !os.IsNotExist(err) {
			t.Errorf("cgroup %s survived the sweep (%v)", filepath.Join(mp, lastElem(dir)), err)
		}
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the sweep removed a live owner's dir: %v", err)
	}
}
