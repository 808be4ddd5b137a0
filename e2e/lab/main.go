// Command lab runs hostroute's lab: a control plane, a BIRD ToR, three nodes each running
// hostroute-node, two pods per node wired by hostroute-cni, and an external host behind
// the ToR — all in network namespaces it owns (prefix hrlab-). `make lab` runs it.
//
//	lab up        build, bring the lab up, print its state, wait for Ctrl-C, tear down
//	lab up -dual-stack  the same with IPv6 too (nodes, pods, ToR sessions, external host)
//	lab up -nodes-per-rack 2  AS per rack: racks of two nodes, each rack its own AS, eBGP to the ToR
//	lab up -detach  the same, but return once it is up (exit 0 only if every ping passed)
//	lab down      stop a detached lab and remove everything it made
//	lab exec NAME -- CMD...  run CMD in a node's, pod's, the ToR's or the external host's namespace
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// stateDir holds the running lab's PID and output.
const stateDir = "/run/hostroute-lab"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: lab up [-detach] | lab down | lab exec NAME -- COMMAND...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "up":
		fs := flag.NewFlagSet("up", flag.ExitOnError)
		detach := fs.Bool("detach", false, "return once the lab is up; `lab down` stops it")
		nodes := fs.Int("nodes", 3, "number of nodes")
		dual := fs.Bool("dual-stack", false, "IPv6 too: nodes, pods and the external host get both families")
		perRack := fs.Int("nodes-per-rack", 0, "AS per rack: this many nodes in each rack's AS (64601, 64602, …), eBGP to the ToR, no node-to-node mesh (0: one AS, full mesh)")
		foreground := fs.Bool("serve", false, "internal: run the lab in this process")
		_ = fs.Parse(os.Args[2:])
		switch {
		case *detach:
			err = detached(*nodes, *dual, *perRack)
		default:
			err = up(*nodes, *dual, *perRack, *foreground)
		}
	case "down":
		err = down()
	case "exec":
		args := os.Args[2:]
		if len(args) == 0 {
			err = errors.New("usage: lab exec NAME -- COMMAND...")
			break
		}
		name, rest := args[0], args[1:]
		if len(rest) > 0 && rest[0] == "--" {
			rest = rest[1:]
		}
		err = execIn(name, rest)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func progress(format string, args ...any) {
	fmt.Printf(">> "+format+"\n", args...)
}

// up runs the lab in this process until SIGINT/SIGTERM.
func up(nodes int, dual bool, perRack int, served bool) error {
	if os.Geteuid() != 0 {
		return errors.New("the lab creates network namespaces: run it as root")
	}
	if !served {
		if err := down(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(stateDir, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	t := newLabTB(ctx)
	defer t.cleanup()
	ok := t.run(func() {
		bin := filepath.Join(t.TempDir(), "bin")
		progress("building hostroute binaries...")
		if err := harness.Build(bin); err != nil {
			t.Fatal(err)
		}
		stack := "IPv4"
		if dual {
			stack = "dual-stack (IPv4 and IPv6)"
		}
		progress("starting etcd + kube-apiserver, BIRD ToR (AS %d, BFD), %d nodes (node-%d a kubelet + containerd node running the shipped DaemonSet), 2 pods per node, external host, %s...", harness.TorAS, nodes, nodes, stack)
		start := time.Now()
		if perRack > 0 {
			progress("AS per rack: %d nodes per rack, racks in AS %d, %d, …; eBGP to the ToR, no node-to-node mesh", perRack, harness.RackASOf(1, perRack), harness.RackASOf(perRack+1, perRack))
		}
		l := harness.NewLab(t, bin, harness.LabPrefix, harness.LabOptions{Nodes: nodes, PodsPerNode: 2, BFD: true, Controllers: 2, KubeletNode: true, DualStack: dual,
			ASPerRack: perRack > 0, NodesPerRack: perRack})
		pods, err := kubeletPods(l, 2)
		if err != nil {
			t.Fatal(err)
		}
		l.Pods = append(l.Pods, pods...)
		progress("lab up in %s", time.Since(start).Round(100*time.Millisecond))
		report(l)
		ts, err := writeTargets(l)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = os.Remove(filepath.Join(stateDir, targetsFile))
			_ = os.Remove(filepath.Join(stateDir, "kubeconfig"))
		})
		fmt.Print(usage(l, ts))
	})
	status := "READY"
	if !ok {
		status = "FAILED"
	}
	fmt.Println(status)
	if ok {
		fmt.Println("the lab stays up; Ctrl-C (or `make lab-down`) tears it down")
		<-ctx.Done()
	}
	progress("tearing down...")
	return nil
}

// report prints each node's state, the ToR's view and the connectivity matrix.
func report(l *harness.Lab) {
	l.WaitMesh(30 * time.Second)
	for _, n := range l.Nodes {
		fmt.Printf("\n== %s: routectl status ==\n", n.Name)
		// routectl exits non-zero on an unhealthy node; its output says why.
		out, _ := exec.Command("ip", "netns", "exec", n.NS, filepath.Join(l.Bin, "routectl"), "status",
			"--socket", n.Socket, "--kubeconfig", n.Kubeconfig).CombinedOutput()
		fmt.Print(string(out))
	}
	// The lab's pods are Pod objects, so the check judges real pods (exit 0: nothing found).
	fmt.Printf("\n== %s: routectl ipam check ==\n", l.Nodes[0].Name)
	check, _ := exec.Command("ip", "netns", "exec", l.Nodes[0].NS, filepath.Join(l.Bin, "routectl"), "ipam", "check",
		"--socket", l.Nodes[0].Socket, "--kubeconfig", l.Nodes[0].Kubeconfig).CombinedOutput()
	fmt.Print(string(check))
	out, _ := l.Tor.Query("show protocols")
	fmt.Printf("\n== ToR (BIRD, AS %d) ==\n%s", harness.TorAS, out)
	out, _ = l.Tor.Query("show route")
	fmt.Print(out)
	fmt.Println("\n== connectivity (ping, one packet) ==")
	matrix, ok := l.Matrix()
	fmt.Print(matrix)
	if !ok {
		l.T.Fatalf("connectivity matrix has failures")
	}
}

// detached starts `lab up -serve` in the background, waits for it to report, prints its
// output and returns (the lab keeps running).
func detached(nodes int, dual bool, perRack int) error {
	if err := down(); err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(stateDir, "lab.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "up", "-serve", "-nodes", strconv.Itoa(nodes), fmt.Sprintf("-dual-stack=%v", dual), "-nodes-per-rack", strconv.Itoa(perRack))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	printed := 0
	for deadline := time.Now().Add(10 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		b, _ := os.ReadFile(logPath)
		s := string(b)
		if len(s) > printed {
			fmt.Print(s[printed:])
			printed = len(s)
		}
		switch {
		case strings.Contains(s, "\nREADY\n"):
			fmt.Println("lab is up (detached); `make lab-down` removes it")
			return nil
		case strings.Contains(s, "\nFAILED\n"):
			return errors.New("the lab came up with failures; `make lab-down` removes it")
		}
		if cmd.ProcessState != nil || syscall.Kill(cmd.Process.Pid, 0) != nil {
			return fmt.Errorf("the lab process exited; see %s", logPath)
		}
	}
	return errors.New("timed out waiting for the lab")
}

// down stops a running lab (by its recorded PID, only if it is this program) and sweeps
// whatever a crashed one left: its namespaces.
func down() error {
	pidFile := filepath.Join(stateDir, "pid")
	if b, err := os.ReadFile(pidFile); err == nil {
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid > 0 && pid != os.Getpid() && isLab(pid) {
			progress("stopping the running lab (pid %d)...", pid)
			_ = syscall.Kill(pid, syscall.SIGTERM)
			for i := 0; i < 300 && isLab(pid); i++ {
				time.Sleep(100 * time.Millisecond)
			}
			if isLab(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_ = os.Remove(pidFile)
	}
	return netns.Sweep(harness.LabPrefix)
}

func isLab(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), "lab") && strings.Contains(string(b), "up")
}
