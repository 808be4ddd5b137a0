package netns

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"

	vnetns "github.com/vishvananda/netns"
)

// File is the file of a network namespace: ns itself when it is a path (such as a pod
// sandbox's /proc/PID/ns/net), else the name's file under /run/netns.
func File(ns string) string {
	if strings.ContainsRune(ns, '/') {
		return ns
	}
	return "/run/netns/" + ns
}

// DialIn opens a connection from inside the network namespace ns (a name or a path, see
// File). A socket keeps the namespace it was created in, so only the dial runs on a
// switched thread.
func DialIn(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := Do(ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil && c != nil {
		c.Close()
		return nil, err
	}
	return c, err
}

// ListenIn opens a listener inside the network namespace ns. A socket keeps the
// namespace it was created in, so the calling process can serve it from anywhere: this
// is how a test gives processes in a namespace a loopback address that leads to a server
// on the test process's own loopback, without any route, address or forwarding in the
// root namespace.
func ListenIn(ns, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := Do(ns, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil && l != nil {
		l.Close()
		return nil, err
	}
	return l, err
}

// ListenPacketIn opens a packet socket inside the network namespace ns.
func ListenPacketIn(ns, network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := Do(ns, func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil && c != nil {
		c.Close()
		return nil, err
	}
	return c, err
}

// Do runs f on a thread switched into the network namespace ns (a name or a path, see
// File) and waits for it. Sockets f creates keep that namespace; goroutines f starts do
// not (they run on other threads). f runs on a goroutine of its own: if the switch back
// fails, that goroutine ends with its thread still locked, so the runtime retires the
// thread and no other code ever runs in the wrong namespace. Do's error then says so,
// and anything f created should be closed.
func Do(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- doLocked(File(ns), f) }()
	return <-errc
}

func doLocked(path string, f func() error) error {
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	target, err := vnetns.GetFromPath(path)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
	if err := vnetns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	ferr := f()
	if err := vnetns.Set(orig); err != nil {
		// Stay locked: the thread is retired with this goroutine.
		return fmt.Errorf("return from netns %s: %w (after %v)", path, err, ferr)
	}
	runtime.UnlockOSThread()
	if ferr != nil {
		return fmt.Errorf("in netns %s: %w", path, ferr)
	}
	return nil
}

// Forward accepts connections on l and pipes each to target (dialled from the caller's
// namespace) until l is closed.
func Forward(l net.Listener, target string) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			return // closed (net.ErrClosed) or broken: either way the forwarder ends
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			u, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer u.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
			<-done
		}()
	}
}
