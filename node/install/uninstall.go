package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hostroute/hostroute/node/routes"
)

// Defaults of the uninstall flags: host paths, because an operator runs uninstall on the
// host itself or in a privileged pod that mounts the host's root at the same paths.
const (
	DefaultUninstallBinDir  = "/opt/cni/bin"
	DefaultUninstallConfDir = "/etc/cni/net.d"
)

// Protocols are the kernel route protocol numbers uninstall removes: the agent's
// (blackholes for its blocks, routes learned by BGP) and the CNI plugin's (per-pod /32
// and /128 routes), as configured, and the numbers older versions wrote.
//
// Hazard: the legacy numbers 196 and 197 are FRR's static and openfabric. On a host where
// FRR writes them, uninstall would delete FRR's routes: set NoLegacy there.
type Protocols struct {
	Agent, CNI int  // 0: routes.Protocol, routes.CNIProtocol
	NoLegacy   bool // leave routes of routes.LegacyProtocol and LegacyCNIProtocol alone
}

type namedProtocol struct {
	proto int
	who   string
}

// named lists the numbers with what they are, each number once.
func (ps Protocols) named() []namedProtocol {
	agent, cni := ps.Agent, ps.CNI
	if agent == 0 {
		agent = routes.Protocol
	}
	if cni == 0 {
		cni = routes.CNIProtocol
	}
	all := []namedProtocol{{agent, "agent"}, {cni, "CNI plugin"}}
	if !ps.NoLegacy {
		all = append(all, namedProtocol{routes.LegacyProtocol, "agent, former number"},
			namedProtocol{routes.LegacyCNIProtocol, "CNI plugin, former number"})
	}
	var out []namedProtocol
	for _, p := range all {
		if !slices.ContainsFunc(out, func(o namedProtocol) bool { return o.proto == p.proto }) {
			out = append(out, p)
		}
	}
	return out
}

// Own reports whether a kernel route protocol number is one uninstall removes.
func (ps Protocols) Own(p int) bool {
	return slices.ContainsFunc(ps.named(), func(n namedProtocol) bool { return n.proto == p })
}

// KernelRoute is one route found in the kernel, as uninstall counts it. Ref is whatever
// the RouteKernel needs to delete exactly that route.
type KernelRoute struct {
	Family   int // 4 or 6
	Protocol int
	Table    int
	Dst      string
	Ref      any
}

// RouteKernel is the narrow view of the kernel's routing tables uninstall needs.
type RouteKernel interface {
	// OwnRoutes lists every route whose protocol own accepts, in every table, IPv4 and
	// IPv6.
	OwnRoutes(own func(protocol int) bool) ([]KernelRoute, error)
	// DeleteRoute deletes one; gone=false when it was already gone (someone else was
	// faster, e.g. the runtime deleting a pod's veth).
	DeleteRoute(KernelRoute) (deleted bool, err error)
}

// NATTable is the nftables side: node/nat's Manager.
type NATTable interface {
	// Remove deletes `table inet hostroute` and reports whether it existed.
	Remove() (bool, error)
}

// UninstallOptions says where the CNI files are and which route protocols are ours.
type UninstallOptions struct {
	BinDir, ConfDir string
	Protocols       Protocols
}

// Uninstall takes hostroute off the node: its conflist (only if the file at its path is
// hostroute's network), the plugin binary, every route with one of o.Protocols in any
// table of both families (the configured numbers and, unless NoLegacy, the former 196 and
// 197), and `table inet hostroute`. It returns one Action per thing it
// removed (or deliberately kept); none means there was nothing to remove, so a second run
// reports nothing. It goes on after an error and returns them all joined: a half-removed
// node is worse than one with a reported leftover.
//
// Run it after the DaemonSet is gone: a running agent would put its routes and table back
// within a resync, and a running runtime would try to use a plugin that is no longer
// there for new pods. Pods still on the node lose their network (their /32 routes go);
// their veths go with them when the runtime deletes the pods. Nothing in the API is
// touched: the controller releases the node's blocks when its Node object is deleted.
func Uninstall(o UninstallOptions, k RouteKernel, nat NATTable) ([]Action, error) {
	var acts []Action
	var errs []error

	// The conflist first: from then on the runtime starts no pod with hostroute.
	conf := filepath.Join(o.ConfDir, ConflistName)
	switch data, _, ok, err := readIfExists(conf); {
	case err != nil:
		errs = append(errs, err)
	case !ok:
	default:
		net, perr := NetworkOf(data)
		if perr != nil || net != NetworkName {
			f := ConfFile{Name: ConflistName, Network: net, Err: perr}
			acts = append(acts, Action{Verb: Kept, Path: conf, Detail: f.describe() + " is not hostroute's"})
			break
		}
		if err := os.Remove(conf); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", conf, err))
		} else {
			acts = append(acts, Action{Verb: Removed, Path: conf})
		}
	}
	if dis, err := filepath.Glob(filepath.Join(o.ConfDir, "*"+DisabledSuffix)); err == nil {
		for _, d := range dis {
			orig := strings.TrimSuffix(filepath.Base(d), DisabledSuffix)
			acts = append(acts, Action{Verb: Kept, Path: d,
				Detail: "moved aside by install-cni --force; rename it back to " + orig + " to use that network again"})
		}
	}

	plugin := filepath.Join(o.BinDir, PluginName)
	if err := os.Remove(plugin); err == nil {
		acts = append(acts, Action{Verb: Removed, Path: plugin})
	} else if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", plugin, err))
	}
	for _, t := range [][2]string{{o.BinDir, PluginName}, {o.ConfDir, ConflistName}} {
		left, err := sweepTemps(t[0], t[1])
		for _, p := range left {
			acts = append(acts, Action{Verb: Removed, Path: p, Detail: "left over by an interrupted install"})
		}
		if err != nil {
			errs = append(errs, err)
		}
	}

	a, err := removeRoutes(k, o.Protocols)
	if a != nil {
		acts = append(acts, *a)
	}
	if err != nil {
		errs = append(errs, err)
	}

	switch had, err := nat.Remove(); {
	case err != nil:
		errs = append(errs, err)
	case had:
		acts = append(acts, Action{Verb: Removed, Path: "nftables table inet hostroute"})
	}
	return acts, errors.Join(errs...)
}

// removeRoutes deletes hostroute's routes; nil Action when there were none.
func removeRoutes(k RouteKernel, ps Protocols) (*Action, error) {
	rs, err := k.OwnRoutes(ps.Own)
	if err != nil {
		return nil, fmt.Errorf("list hostroute's kernel routes: %w", err)
	}
	var done []KernelRoute
	var errs []error
	for _, r := range rs {
		ok, err := k.DeleteRoute(r)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("delete route %s (table %d, protocol %d): %w", r.Dst, r.Table, r.Protocol, err))
		case ok:
			done = append(done, r)
		}
	}
	var a *Action
	if len(done) > 0 {
		a = &Action{Verb: Removed, Path: fmt.Sprintf("%d kernel routes", len(done)), Detail: RouteSummary(done, ps)}
	}
	return a, errors.Join(errs...)
}

// RouteSummary counts routes per protocol of ps and family, e.g.
// "protocol 211 (agent): 2 IPv4, 1 IPv6; protocol 212 (CNI plugin): 3 IPv4, 0 IPv6".
// A protocol with no routes is left out.
func RouteSummary(rs []KernelRoute, ps Protocols) string {
	var parts []string
	for _, p := range ps.named() {
		var v4, v6 int
		for _, r := range rs {
			if r.Protocol != p.proto {
				continue
			}
			if r.Family == 6 {
				v6++
			} else {
				v4++
			}
		}
		if v4+v6 > 0 {
			parts = append(parts, fmt.Sprintf("protocol %d (%s): %d IPv4, %d IPv6", p.proto, p.who, v4, v6))
		}
	}
	return strings.Join(parts, "; ")
}

// AnyRemoved reports whether any action removed something ("kept" lines do not count).
func AnyRemoved(acts []Action) bool {
	for _, a := range acts {
		if a.Verb == Removed {
			return true
		}
	}
	return false
}
