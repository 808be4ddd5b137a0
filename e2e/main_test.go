package e2e_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// bin holds the commands built once for the whole package.
var bin string

// TestMain builds the binaries and sweeps namespaces a crashed earlier run left behind.
// The test binary doubles as a tiny TCP server/client run inside pod namespaces
// (HOSTROUTE_E2E_HELPER), so TCP checks need no tool on the machine.
func TestMain(m *testing.M) {
	switch os.Getenv("HOSTROUTE_E2E_HELPER") {
	case "tcp-serve":
		tcpServe(os.Getenv("HOSTROUTE_E2E_ADDR"))
		return
	case "tcp-dial":
		tcpDial(os.Getenv("HOSTROUTE_E2E_ADDR"))
		return
	}
	if err := netns.SweepDead(harness.NSPrefix); err != nil {
		fmt.Fprintln(os.Stderr, "sweep:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "hostroute-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	if err := harness.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// tcpServe accepts one connection and writes the peer's address back, so the client
// learns what source address the server saw (no NAT between pods).
func tcpServe(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	fmt.Println("listening")
	_ = l.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Second))
	c, err := l.Accept()
	if err != nil {
		os.Exit(1)
	}
	fmt.Fprintln(c, c.RemoteAddr().(*net.TCPAddr).IP.String())
	c.Close()
}

func tcpDial(addr string) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(1)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && err != io.EOF {
		os.Exit(1)
	}
	fmt.Print(strings.TrimSpace(line))
}

func bytesReader(b []byte) io.Reader { return strings.NewReader(string(b)) }
