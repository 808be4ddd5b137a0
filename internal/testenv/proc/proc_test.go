package proc

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestUsesDir(t *testing.T) {
	const dir = "/tmp/hostroute-kubenode-1"
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"containerd", "--config", dir + "/containerd.toml"}, true},
		{[]string{"containerd-shim-runc-v2", "-namespace", "k8s.io", "-address", dir + "/containerd.sock"}, true},
		{[]string{"kubelet", "--root-dir=" + dir + "/kubelet"}, true},
		{[]string{"etcd", "--data-dir", dir}, true},
		{[]string{dir + "/host/opt/cni/bin/portmap"}, true},
		{[]string{"kubelet", "--root-dir", dir + "0/kubelet"}, false},
		{[]string{"cat", "x=" + dir + "/log"}, false}, // not a flag
		{[]string{"sleep", "100"}, false},
		{nil, false},
	} {
		if got := UsesDir(tc.args, dir); got != tc.want {
			t.Errorf("UsesDir(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

// syncBuffer is an Out that records whether Spawn flushed it after the exit.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	flushed bool
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushed = true
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitOutput(t *testing.T, b *syncBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(b.String(), want); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q: no %q within 5s", b.String(), want)
		}
	}
}

// TestSpawnAndStop: the PID file names the process, output arrives and is flushed after
// the exit, SIGTERM is enough for a process that honours it, a frozen one that ignores
// SIGTERM is killed after the grace with a note, and Stop twice (or on nil) is harmless.
func TestSpawnAndStop(t *testing.T) {
	s := NewSpawner()
	defer s.Close()
	dir := t.TempDir()
	out := &syncBuffer{}
	p, err := s.Spawn(Spec{Name: "polite", Dir: dir, Out: out, Bin: "sh", Args: []string{"-c", "echo up; exec sleep 60"}})
	if err != nil {
		t.Fatal(err)
	}
	waitOutput(t, out, "up")
	pid, err := ReadPID(filepath.Join(dir, "polite.pid"))
	if err != nil || pid != p.PID() {
		t.Fatalf("PID file: %d, %v; want %d", pid, err, p.PID())
	}
	if done, _ := p.Exited(); done {
		t.Fatal("exited at once")
	}
	start := time.Now()
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("SIGTERM took %v, want well under the grace", took)
	}
	if !out.flushed {
		t.Errorf("Out not flushed after the exit")
	}
	if err := p.Stop(time.Second); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	var none *Proc
	if err := none.Stop(time.Second); err != nil {
		t.Errorf("Stop on nil: %v", err)
	}

	notes := &syncBuffer{}
	stubborn, err := s.Spawn(Spec{Name: "stubborn", Out: notes, Bin: "sh", Args: []string{"-c", "trap '' TERM; echo trapped; while :; do sleep 0.05; done"}})
	if err != nil {
		t.Fatal(err)
	}
	waitOutput(t, notes, "trapped")
	if err := stubborn.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := stubborn.Stop(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if done, _ := stubborn.Exited(); !done {
		t.Fatal("still running after Stop")
	}
	if !strings.Contains(notes.String(), "stubborn: still running 300ms after SIGTERM; sending SIGKILL") {
		t.Errorf("notes %q, want the SIGKILL note", notes.String())
	}
}

// TestSpawnInNetNS: with NetNS the process is the program itself (nsenter execs in
// place), so the PID held is the one signals must reach.
func TestSpawnInNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("this test creates a network namespace and must run as root (uid %d)", os.Geteuid())
	}
	name := "hrtest-proc-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", name).Run() })
	s := NewSpawner()
	defer s.Close()
	p, err := s.Spawn(Spec{Name: "sleeper", NetNS: name, Bin: "sleep", Args: []string{"60"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(0)
	var args []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if args = Cmdline(p.PID()); len(args) > 0 && args[0] == "sleep" {
			break
		}
	}
	if len(args) == 0 || args[0] != "sleep" {
		t.Fatalf("PID %d runs %q, want sleep itself", p.PID(), args)
	}
	self, _ := os.Readlink("/proc/self/ns/net")
	its, err := os.Readlink("/proc/" + strconv.Itoa(p.PID()) + "/ns/net")
	if err != nil || its == self {
		t.Errorf("sleep's network namespace %q (%v) is the test's own %q", its, err, self)
	}
}

// TestSweepDirs: a directory whose owner is gone is swept with the processes using it;
// a live owner's directory and a young one without an owner file are left alone.
func TestSweepDirs(t *testing.T) {
	prefix := "hostroute-proctest-" + strconv.Itoa(os.Getpid()) + "-"
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	mk := func(owner string) string {
		dir, err := os.MkdirTemp("", prefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		if owner != "" {
			if err := os.WriteFile(filepath.Join(dir, OwnerFile), []byte(owner+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	gone := mk(strconv.Itoa(dead.Process.Pid))
	live, err := MakeDir(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(live) })
	young := mk("")

	// The path is sh's $0: in the command line, and sh stays (not the last command).
	leftover := exec.Command("sh", "-c", "sleep 60; exit 0", filepath.Join(gone, "x.sock"))
	bystander := exec.Command("sh", "-c", "sleep 60; exit 0", filepath.Join(live, "x.sock"))
	for _, c := range []*exec.Cmd{leftover, bystander} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		// Until the exec, /proc shows the test binary's command line.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if args := Cmdline(c.Process.Pid); len(args) > 0 && args[0] == "sh" {
				break
			}
		}
	}
	if got := PIDsUsing(gone); len(got) != 1 || got[0] != leftover.Process.Pid {
		t.Fatalf("PIDsUsing(%s) = %v, want [%d]", gone, got, leftover.Process.Pid)
	}
	if got := PIDsUsing(gone, "etcd"); len(got) != 0 {
		t.Fatalf("PIDsUsing with names [etcd] = %v, want none (the leftover is sleep)", got)
	}

	var swept []string
	SweepDirs(prefix, func(dir string) {
		swept = append(swept, dir)
		KillAndWait(PIDsUsing(dir), 5*time.Second)
		_ = os.RemoveAll(dir)
	})
	if len(swept) != 1 || swept[0] != gone {
		t.Fatalf("swept %v, want only %s (live %s, young %s stay)", swept, gone, live, young)
	}
	if Alive(leftover.Process.Pid) {
		t.Errorf("the leftover using %s survived the sweep", gone)
	}
	if !Alive(bystander.Process.Pid) {
		t.Errorf("a process using the live owner's dir was killed")
	}
}
