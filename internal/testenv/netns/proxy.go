package netns

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"

	vnetns "github.com/vishvananda/netns"
)

// DialIn opens a connection from inside the named namespace.
func DialIn(name, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNS(name, func() error {
		var err error
		c, err = net.Dial(network, addr)
		return err
	})
	return c, err
}

// ListenIn opens a listener inside the named namespace. A socket keeps the namespace it
// was created in, so the calling process can serve it from anywhere: this is how a test
// gives processes in a namespace a loopback address that leads to a server on the test
// process's own loopback, without any route, address or forwarding in the root namespace.
func ListenIn(name, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNS(name, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// inNS runs f on a thread switched into the named namespace. Sockets f creates keep
// that namespace after the thread switches back.
func inNS(name string, f func() error) error {
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	target, err := vnetns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer target.Close()
	if err := vnetns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", name, err)
	}
	ferr := f()
	if err := vnetns.Set(orig); err != nil {
		// Leave the thread locked: the runtime retires it when this goroutine ends,
		// so no other goroutine ever runs in the wrong namespace.
		return fmt.Errorf("return from netns %s: %w", name, err)
	}
	runtime.UnlockOSThread()
	if ferr != nil {
		return fmt.Errorf("in netns %s: %w", name, ferr)
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
