package cni

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// cmdAdd allocates the pod's addresses and wires the veth.
//
// After Allocate, any failure undoes everything before returning, in DEL's order: first
// the host veth (which takes the pod end and the host routes with it), then the agent
// allocation. The reverse order would let the agent hand the address to another pod
// while a route to it still points at this veth. retErr is the named result the
// deferred rollback inspects; nothing below may shadow it.
func cmdAdd(c *call) (retErr error) {
	args, conf, log := c.args, c.conf, c.log

	pod, err := ParsePodArgs(args.Args)
	if err != nil {
		return toCNI(err)
	}
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return toCNI(withCode(types.ErrInvalidEnvironmentVariables,
			fmt.Errorf("CNI_NETNS=%q is not a usable network namespace: %w", args.Netns, err)))
	}
	defer podNS.Close()
	hostName := HostVethName(args.ContainerID, args.IfName)
	// Held until after the rollback below (defers run last-in first-out): a concurrent
	// ADD or DEL of this attachment waits, then sees the finished attachment.
	lk, err := lockAttachment(conf.AgentSocket, hostName, conf.Timeout)
	if err != nil {
		return toCNI(err)
	}
	defer lk.unlock()
	ag, err := newAgent(conf.AgentSocket, conf.Timeout)
	if err != nil {
		return toCNI(err)
	}
	defer ag.Close()

	// A repeated ADD of an attachment an earlier ADD finished gets the same result; the
	// rollback below must not run for it, or it would tear down the earlier ADD's work.
	if result, ok := existingAttachment(ag, podNS, conf, args, hostName); ok {
		log.Info("attachment already wired: repeating its result")
		if printErr := types.PrintResult(result, conf.Std.CNIVersion); printErr != nil {
			return toCNI(withCode(types.ErrIOFailure, fmt.Errorf("writing the result to stdout: %w", printErr)))
		}
		return nil
	}

	// Registered before Allocate: a timed-out Allocate may still complete in the agent.
	defer func() {
		if retErr == nil {
			return
		}
		if _, delErr := deleteHostVeth(hostName); delErr != nil {
			log.Error("rollback: deleting host veth", "veth", hostName, "err", delErr)
			appendDetails(retErr, fmt.Sprintf("rollback could not delete %s: %v", hostName, delErr))
			return // keep the allocation: the route may still point at the old veth
		}
		// Nothing to release if the agent could not even be reached.
		if ag.lastDialErr() != nil {
			return
		}
		if relErr := ag.Release(context.Background(), args.ContainerID, args.IfName); relErr != nil {
			log.Error("rollback: releasing the allocation", "err", relErr)
			appendDetails(retErr, fmt.Sprintf("rollback could not release the addresses (%v); DEL or GC will", relErr))
		}
	}()

	// The Allocate round trip and the veth set-up that needs no address overlap: ADD
	// latency is what a pod start waits on. Both finish before any return, so the
	// deferred rollback sees the whole outcome.
	type allocated struct {
		addrs []netip.Prefix
		err   error
	}
	allocCh := make(chan allocated, 1)
	go func() {
		addrs, err := ag.Allocate(context.Background(), args.ContainerID, args.IfName, pod)
		allocCh <- allocated{addrs, err}
	}()
	if conf.MTU == 0 {
		mtu, dev := detectMTU()
		conf.MTU = mtu
		log.Debug("pod MTU from the uplink", "mtu", mtu, "device", dev)
	}
	pv, prepErr := prepareVeth(podNS, hostName, args.IfName, conf.MTU)
	alloc := <-allocCh
	if alloc.err != nil {
		return toCNI(alloc.err)
	}
	log.Info("allocated", "addresses", alloc.addrs, "pod", pod.Namespace+"/"+pod.Name, "took", time.Since(c.start))
	if prepErr != nil {
		return toCNI(prepErr)
	}
	addrs := alloc.addrs
	w, err := finishVeth(podNS, pv, addrs, conf.RouteProtocol)
	if err != nil {
		return toCNI(err)
	}
	result := buildResult(conf, args, hostName, w, addrs)
	if printErr := types.PrintResult(result, conf.Std.CNIVersion); printErr != nil {
		return toCNI(withCode(types.ErrIOFailure, fmt.Errorf("writing the result to stdout: %w", printErr)))
	}
	return nil
}

// buildResult describes the attachment. IPConfig.Interface is an index into
// Result.Interfaces (1 = the pod end), not a kernel ifindex.
func buildResult(conf *Config, args *skel.CmdArgs, hostName string, w *wired, addrs []netip.Prefix) *types100.Result {
	r := &types100.Result{
		// The version of this Go type, not of the config: PrintResult converts from it to
		// conf's cniVersion, and a 1.x Result labelled "0.4.0" would be printed unconverted.
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: hostName, Mac: w.hostMAC.String(), Mtu: conf.MTU},
			{Name: args.IfName, Mac: w.podMAC.String(), Mtu: conf.MTU, Sandbox: args.Netns},
		},
	}
	for _, a := range addrs {
		gw := gateway(family(a))
		r.IPs = append(r.IPs, &types100.IPConfig{Interface: types100.Int(1), Address: *prefixNet(a), Gateway: gw.AsSlice()})
	}
	for _, fam := range families(addrs) {
		r.Routes = append(r.Routes, &types.Route{Dst: *defaultNet(fam), GW: gateway(fam).AsSlice()})
	}
	return r
}

// cmdDel removes the attachment. It is idempotent and never needs the pod's netns: the
// host veth name is derived from (container ID, ifname), and when the netns is already
// gone the kernel has removed the veth pair with it.
//
// Order: the veth (and with it the /32 route) first, then the agent release, so the
// address is never free while a route still sends its traffic here. If the veth cannot
// be removed the addresses stay allocated and the error makes the runtime retry. If the
// agent cannot be reached the veth is gone but DEL still fails (code 11): a success
// would make the runtime forget the pod and leak the addresses until GC. It holds the
// attachment lock like ADD, and removes the lock file once the attachment is gone.
func cmdDel(c *call) error {
	args, conf, log := c.args, c.conf, c.log

	hostName := HostVethName(args.ContainerID, args.IfName)
	lk, err := lockAttachment(conf.AgentSocket, hostName, conf.Timeout)
	if err != nil {
		return toCNI(err)
	}
	defer lk.unlock()
	deleted, err := deleteHostVeth(hostName)
	if err != nil {
		return toCNI(fmt.Errorf("removing the pod's host interface (the addresses stay allocated until DEL succeeds): %w", err))
	}
	log.Info("host veth", "veth", hostName, "deleted", deleted)

	ag, err := newAgent(conf.AgentSocket, conf.Timeout)
	if err != nil {
		return toCNI(err)
	}
	defer ag.Close()
	err = ag.Release(context.Background(), args.ContainerID, args.IfName)
	var ce *codedError
	if errors.As(err, &ce) && ce.code == types.ErrUnknownContainer {
		err = nil
	}
	if err != nil {
		return toCNI(fmt.Errorf("removed interface %s, but could not release the pod's addresses (the runtime retries DEL; until then they stay allocated): %w", hostName, err))
	}
	lk.remove()
	return nil
}

// existingAttachment returns the result of an attachment that is already complete: the
// agent holds its addresses and the host and pod sides are as ADD leaves them (what
// CHECK verifies). Anything less is not complete, and ADD wires it afresh.
func existingAttachment(ag *agent, podNS ns.NetNS, conf *Config, args *skel.CmdArgs, hostName string) (*types100.Result, bool) {
	addrs, err := ag.Get(context.Background(), args.ContainerID, args.IfName)
	if err != nil || len(addrs) == 0 {
		return nil, false
	}
	if len(checkHost(hostName, addrs, conf.RouteProtocol)) > 0 {
		return nil, false
	}
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return nil, false
	}
	w := &wired{hostMAC: host.Attrs().HardwareAddr}
	complete := false
	_ = podNS.Do(func(ns.NetNS) error {
		if len(checkPod(args.IfName, addrs)) > 0 {
			return nil
		}
		l, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return nil
		}
		w.podMAC, complete = l.Attrs().HardwareAddr, true
		return nil
	})
	if !complete {
		return nil, false
	}
	return buildResult(conf, args, hostName, w, addrs), true
}
