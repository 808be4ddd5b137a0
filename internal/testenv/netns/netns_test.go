package netns

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

// TestSocketsKeepTheirNamespace: a listener opened in a namespace is reached from inside
// it (by name and by path) and not from the test's own namespace, and ForwardForTest
// makes an address in there lead to a server on the test's loopback.
func TestSocketsKeepTheirNamespace(t *testing.T) {
	ns := ForTest(t, OwnedPrefix("hrtest-netns-"))
	l, err := ListenIn(ns, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, "inside")
			c.Close()
		}
	}()
	for _, ref := range []string{ns, File(ns)} {
		c, err := DialIn(t.Context(), ref, "tcp", addr)
		if err != nil {
			t.Fatalf("dial %s from %s: %v", addr, ref, err)
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if strings.TrimSpace(line) != "inside" {
			t.Errorf("from %s: %q", ref, line)
		}
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("%s answered in the test's own namespace too", addr)
	}

	// The other way round: a server on the test's loopback, reached from inside.
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		c, err := srv.Accept()
		if err == nil {
			fmt.Fprintln(c, "outside")
			c.Close()
		}
	}()
	ForwardForTest(t, ns, "127.0.0.1:6443", srv.Addr().String())
	c, err := DialIn(t.Context(), ns, "tcp", "127.0.0.1:6443")
	if err != nil {
		t.Fatalf("forwarder: %v", err)
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if strings.TrimSpace(line) != "outside" {
		t.Errorf("through the forwarder: %q", line)
	}
	self, _ := os.Readlink("/proc/self/ns/net")
	if err := Do(ns, func() error {
		in, _ := os.Readlink("/proc/thread-self/ns/net")
		if in == self {
			return fmt.Errorf("Do ran in the caller's namespace %s", self)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if now, _ := os.Readlink("/proc/thread-self/ns/net"); now != self {
		t.Errorf("after Do this thread is in %s, want %s", now, self)
	}
}
