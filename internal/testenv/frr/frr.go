// Package frr runs FRR 8.4 (Debian frr) inside a network namespace for hostroute's
// tests: zebra and bgpd, and bfdd when asked, as a ToR. Each daemon is a child of the
// test (internal/testenv/proc), signalled only through its own process handle, never by
// name, and killed by the kernel if the test binary dies.
//
// Hazards handled here:
//   - The daemons drop root for the frr user: their directory (config, PID files, the
//     zserv and vty sockets) is one of its own in the temp dir, owned by frr:frr and
//     world-traversable, not t.TempDir() (whose parents are private to root).
//   - Nothing of /etc/frr is used: the config file, sockets and PID files are passed on
//     the command line, and no TCP vty is opened (-P 0), so two FRRs never collide and
//     an FRR the package installed outside (not started by our install) is untouched.
//   - A directory whose test binary died is swept at the next Start: the daemons whose
//     command line names it are killed by PID, then it is removed.
package frr

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hostroute/hostroute/internal/testenv"
	"github.com/hostroute/hostroute/internal/testenv/proc"
)

// dirPrefix names the daemons' directories in the temp dir.
const dirPrefix = "hostroute-frr-"

// Options chooses the daemons besides zebra and bgpd.
type Options struct {
	// BFD runs bfdd (the configuration's top-level `bfd` block and `neighbor X bfd`).
	BFD bool
}

// FRR is zebra, bgpd (and bfdd) running in a namespace. Dir holds the configuration,
// sockets, PID files and one log per daemon.
type FRR struct {
	NS  string
	Dir string

	spawner *proc.Spawner
	procs   []*proc.Proc // in start order
}

// Start runs the daemons in the named namespace with the configuration (one frr.conf
// for all of them), waits until bgpd answers on its vty socket, and stops them when the
// test ends (logging the end of each log if the test failed). A missing FRR fails the
// test with the package to install.
func Start(t testenv.TB, ns, conf string, o Options) *FRR {
	t.Helper()
	daemons := []string{"zebra", "bgpd"}
	if o.BFD {
		daemons = []string{"zebra", "bfdd", "bgpd"}
	}
	for _, d := range daemons {
		if _, err := os.Stat(daemonPath(d)); err != nil {
			t.Fatalf("%s (Debian frr) is needed: run `make deps` (e2e/tools/deps.sh): %v", daemonPath(d), err)
		}
	}
	if _, err := exec.LookPath("vtysh"); err != nil {
		t.Fatalf("vtysh (Debian frr) is needed: run `make deps` (e2e/tools/deps.sh): %v", err)
	}
	proc.SweepDirs(dirPrefix, sweep)
	dir, err := makeDir()
	if err != nil {
		t.Fatalf("frr: %v", err)
	}
	f := &FRR{NS: ns, Dir: dir, spawner: proc.NewSpawner()}
	t.Cleanup(func() {
		f.stop()
		if t.Failed() {
			for _, d := range daemons {
				t.Logf("frr %s log (%s):\n%s", d, ns, tail(withoutOthersLines(f.Log(d)), 30))
			}
		}
		_ = os.RemoveAll(dir)
	})
	if err := os.WriteFile(f.confPath(), []byte(conf), 0o644); err != nil {
		t.Fatalf("frr: %v", err)
	}
	for _, d := range daemons {
		if err := f.spawn(d); err != nil {
			t.Fatalf("frr: %v", err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, qerr := f.VTY("show bgp summary")
		if qerr == nil {
			return f
		}
		for _, p := range f.procs {
			if done, werr := p.Exited(); done {
				t.Fatalf("frr %s in %s exited at start (%v):\n%s", p.Name, ns, werr, tail(f.Log(p.Name), 20))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("frr in %s: bgpd's vty not up after 10s: %v", ns, qerr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func daemonPath(name string) string { return filepath.Join("/usr/lib/frr", name) }

// makeDir makes the daemons' directory (proc.MakeDir, so a dead owner's is swept) and
// hands it to the frr user.
func makeDir() (string, error) {
	dir, err := proc.MakeDir(dirPrefix)
	if err != nil {
		return "", err
	}
	u, err := user.Lookup("frr")
	if err == nil {
		var uid, gid int
		uid, err = strconv.Atoi(u.Uid)
		if err == nil {
			gid, err = strconv.Atoi(u.Gid)
		}
		if err == nil {
			err = os.Chown(dir, uid, gid)
		}
	}
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("directory for the frr user: %w", err)
	}
	return dir, nil
}

// sweep kills the daemons a dead test binary left running in dir, by PID, and removes it.
func sweep(dir string) {
	proc.KillAndWait(proc.PIDsUsing(dir, "zebra", "bgpd", "bfdd"), 5*time.Second)
	_ = os.RemoveAll(dir)
}

func (f *FRR) confPath() string { return filepath.Join(f.Dir, "frr.conf") }

// spawn starts one daemon in the foreground (its PID is the one we hold).
func (f *FRR) spawn(name string) error {
	logf, err := os.OpenFile(filepath.Join(f.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the daemon holds its own copy
	p, err := f.spawner.Spawn(proc.Spec{Name: name, NetNS: f.NS, Dir: f.Dir, Out: logf, Bin: daemonPath(name),
		Args: []string{"-f", f.confPath(), "-i", filepath.Join(f.Dir, name+".frr.pid"), "-z", filepath.Join(f.Dir, "zserv.api"),
			"--vty_socket", f.Dir, "-A", "127.0.0.1", "-P", "0", "--log", "stdout"}})
	if err != nil {
		return err
	}
	f.procs = append(f.procs, p)
	// bgpd and bfdd connect to zebra's zserv socket: give zebra a moment to make it.
	if name == "zebra" {
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := os.Stat(filepath.Join(f.Dir, "zserv.api")); err == nil {
				break
			}
			if done, werr := p.Exited(); done {
				return fmt.Errorf("zebra in %s exited at start (%v):\n%s", f.NS, werr, tail(f.Log(name), 20))
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("zebra in %s: no zserv socket after 5s", f.NS)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// stop ends the daemons in reverse start order (SIGTERM, then SIGKILL after 5 s).
func (f *FRR) stop() {
	for i := len(f.procs) - 1; i >= 0; i-- {
		_ = f.procs[i].Stop(5 * time.Second)
	}
	f.procs = nil
	f.spawner.Close()
}

// VTY runs vtysh commands (each one -c) against the daemons and returns the output.
func (f *FRR) VTY(cmds ...string) (string, error) {
	args := []string{"--vty_socket", f.Dir}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("vtysh", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vtysh %q: %w: %s", cmds, err, out)
	}
	return string(out), nil
}

// Apply loads configuration text into the running daemons (vtysh -f), as an operator
// pasting it would. vtysh carries on past a bad line and fails at the end, naming it.
func (f *FRR) Apply(conf string) error {
	path := filepath.Join(f.Dir, fmt.Sprintf("apply-%d.conf", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	out, err := exec.Command("vtysh", "--vty_socket", f.Dir, "-f", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("vtysh -f: %w: %s", err, out)
	}
	return nil
}

// PIDs are the running daemons' PIDs by name.
func (f *FRR) PIDs() map[string]int {
	out := map[string]int{}
	for _, p := range f.procs {
		if done, _ := p.Exited(); !done {
			out[p.Name] = p.PID()
		}
	}
	return out
}

// Log returns what a daemon (zebra, bgpd, bfdd) logged so far.
func (f *FRR) Log(daemon string) string {
	out, _ := os.ReadFile(filepath.Join(f.Dir, daemon+".log"))
	return string(out)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// withoutOthersLines drops the complaints of each daemon about the lines of the shared
// frr.conf that belong to another daemon.
func withoutOthersLines(log string) string {
	var keep []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, "No such command on config line") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
