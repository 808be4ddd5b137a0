// Command testapp is the workload of the lab kubelet's test pods: a TCP and UDP echo
// server, and a prober that dials TCP addresses and logs each result to stdout, where
// the kubelet's container log file keeps it for the test to read (the lab has no
// `kubectl logs`: the kubelet's serving address is inside a network namespace).
//
//	testapp -listen :8080 -probe 10.244.1.2:8080,203.0.113.2:8080 -interval 1s
//
// Log lines the tests match: "listening :8080", "probe ADDR ok REMOTE-SEEN-AS" and
// "probe ADDR fail ERROR". The TCP echo answers a connection's first line with the
// caller's address as the server saw it, so a probe shows whether NAT was on the path.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "", "serve TCP and UDP echo on this address (empty: no server)")
	probe := flag.String("probe", "", "comma-separated host:port TCP addresses to probe")
	interval := flag.Duration("interval", time.Second, "time between two rounds of probes")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *listen, splitList(*probe), *interval); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func run(ctx context.Context, listen string, probes []string, interval time.Duration) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if listen != "" {
		tl, err := net.Listen("tcp", listen)
		if err != nil {
			return err
		}
		ul, err := net.ListenPacket("udp", listen)
		if err != nil {
			return err
		}
		context.AfterFunc(ctx, func() { tl.Close(); ul.Close() })
		fmt.Println("listening", listen)
		wg.Add(2)
		go func() { defer wg.Done(); serveTCP(tl) }()
		go func() { defer wg.Done(); serveUDP(ul) }()
	}
	if len(probes) > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); probeLoop(ctx, probes, interval) }()
	}
	<-ctx.Done()
	return nil
}

// serveTCP answers each connection's lines: the first with the peer's address, the
// rest echoed.
func serveTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			r := bufio.NewReader(c)
			first := true
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if first {
					line = c.RemoteAddr().(*net.TCPAddr).IP.String() + "\n"
					first = false
				}
				if _, err := c.Write([]byte(line)); err != nil {
					return
				}
			}
		}()
	}
}

// serveUDP echoes every datagram to its sender.
func serveUDP(c net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		_, _ = c.WriteTo(buf[:n], from)
	}
}

func probeLoop(ctx context.Context, addrs []string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, a := range addrs {
			if seen, err := probeOnce(ctx, a); err != nil {
				fmt.Println("probe", a, "fail", err)
			} else {
				fmt.Println("probe", a, "ok", seen)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probeOnce dials addr, sends a line and returns the first line of the answer.
func probeOnce(ctx context.Context, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte("hello\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}
