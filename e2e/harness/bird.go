package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// BIRD is a BIRD 2 daemon running in a namespace (the lab's ToR).
type BIRD struct {
	env  *Env
	NS   string
	Dir  string
	Ctl  string
	cmd  *exec.Cmd
	done chan struct{}
}

// TorConfig describes the ToR's BGP side.
type TorConfig struct {
	AS        uint32            // the ToR's AS (65000)
	Neighbors map[string]uint32 // node address → AS
	BFD       bool              // BFD on every session (100 ms × 3)
	HoldTime  int               // seconds; 0 = BIRD's default
	// Originate are prefixes the ToR originates (as blackholes) and advertises.
	Originate []string
	// Password turns on TCP-MD5 on every session.
	Password string
}

// Config renders the BIRD configuration.
func (c TorConfig) Config() string {
	var b strings.Builder
	fmt.Fprintf(&b, "log stderr all;\nrouter id %s;\nprotocol device {}\n", FabricGateway)
	b.WriteString("protocol kernel { ipv4 { export where source = RTS_BGP; }; merge paths on; }\n")
	if len(c.Originate) > 0 {
		b.WriteString("protocol static originated { ipv4;")
		for _, p := range c.Originate {
			fmt.Fprintf(&b, " route %s blackhole;", p)
		}
		b.WriteString(" }\n")
	}
	if c.BFD {
		b.WriteString(`protocol bfd { interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }` + "\n")
	}
	fmt.Fprintf(&b, "template bgp node {\n  local %s as %d;\n  passive on;\n  error wait time 1, 5;\n", FabricGateway, c.AS)
	if c.HoldTime > 0 {
		fmt.Fprintf(&b, "  hold time %d;\n  keepalive time %d;\n", c.HoldTime, max(1, c.HoldTime/3))
	}
	if c.BFD {
		b.WriteString("  bfd on;\n")
	}
	if c.Password != "" {
		fmt.Fprintf(&b, "  password %q;\n", c.Password)
	}
	b.WriteString("  ipv4 { import all; export where source ~ [ RTS_BGP, RTS_STATIC ]; };\n}\n")
	addrs := make([]string, 0, len(c.Neighbors))
	for addr := range c.Neighbors {
		addrs = append(addrs, addr)
	}
	sort.Strings(addrs)
	for _, addr := range addrs {
		// Named after the address, so a reconfigure that adds a node leaves the others be.
		fmt.Fprintf(&b, "protocol bgp n_%s from node { neighbor %s as %d; }\n", strings.ReplaceAll(addr, ".", "_"), addr, c.Neighbors[addr])
	}
	return b.String()
}

// StartBIRD runs bird in the namespace with the configuration and stops it when the test
// ends (by its PID).
func (e *Env) StartBIRD(ns string, conf string) *BIRD {
	e.T.Helper()
	if _, err := exec.LookPath("bird"); err != nil {
		e.T.Fatalf("BIRD (Debian bird2) is needed as the ToR: run `make deps`: %v", err)
	}
	dir := e.T.TempDir()
	b := &BIRD{env: e, NS: ns, Dir: dir, Ctl: filepath.Join(dir, "bird.ctl"), done: make(chan struct{})}
	cfgPath := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
		e.T.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "bird.log"))
	if err != nil {
		e.T.Fatal(err)
	}
	// nsenter (not `ip netns exec`) so that the PID we hold is bird's own.
	b.cmd = exec.Command("nsenter", "--net=/run/netns/"+ns, "--", "bird", "-f", "-c", cfgPath, "-s", b.Ctl, "-P", filepath.Join(dir, "bird.pid"))
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		e.T.Fatal(err)
	}
	go func() { _ = b.cmd.Wait(); logf.Close(); close(b.done) }()
	e.T.Cleanup(func() {
		_ = b.cmd.Process.Signal(syscall.SIGCONT)
		_ = b.cmd.Process.Kill()
		<-b.done
		if e.T.Failed() {
			out, _ := os.ReadFile(logf.Name())
			e.T.Logf("bird log:\n%s", tail(string(out), 40))
		}
	})
	e.Eventually(10*time.Second, "bird control socket", func() string {
		if _, err := b.Query("show status"); err != nil {
			return err.Error()
		}
		return ""
	})
	return b
}

// Query runs a birdc command.
func (b *BIRD) Query(cmd string) (string, error) {
	out, err := exec.Command("birdc", append([]string{"-s", b.Ctl}, strings.Fields(cmd)...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", cmd, err, out)
	}
	return string(out), nil
}

// Freeze stops the BIRD process (SIGSTOP); Thaw resumes it.
func (b *BIRD) Freeze() error { return b.cmd.Process.Signal(syscall.SIGSTOP) }

// Thaw resumes a frozen BIRD.
func (b *BIRD) Thaw() error { return b.cmd.Process.Signal(syscall.SIGCONT) }

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Reconfigure replaces BIRD's configuration and applies it without a restart.
func (b *BIRD) Reconfigure(conf string) error {
	if err := os.WriteFile(filepath.Join(b.Dir, "bird.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	_, err := b.Query("configure")
	return err
}
