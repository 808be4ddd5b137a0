package kubenode

import (
	"context"
	"fmt"
	"net"
	"runtime"

	vnetns "github.com/vishvananda/netns"
)

// DialIn opens a connection from inside the network namespace at nsPath (a
// /run/netns/NAME file or a /proc/PID/ns/net link). A socket keeps the namespace it
// was created in, so only the dial runs on a switched thread.
func DialIn(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNS(nsPath, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// ListenPacketIn opens a packet socket inside the network namespace at nsPath.
func ListenPacketIn(nsPath, network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := inNS(nsPath, func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// inNS runs f on a thread switched into the namespace at nsPath. If the thread
// cannot switch back it stays locked, so the runtime retires it with the goroutine
// and no other goroutine ever runs in the wrong namespace.
func inNS(nsPath string, f func() error) error {
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	target, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer target.Close()
	if err := vnetns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", nsPath, err)
	}
	ferr := f()
	if err := vnetns.Set(orig); err != nil {
		return fmt.Errorf("return from netns %s: %w", nsPath, err)
	}
	runtime.UnlockOSThread()
	if ferr != nil {
		return fmt.Errorf("in netns %s: %w", nsPath, ferr)
	}
	return nil
}
