// Package cni is hostroute's CNI plugin: it gives a pod one veth whose host end is a
// routed port of the node (no bridge, no overlay), with addresses from the node agent.
//
// The pod sees a /32 (and /128) on eth0 and a default route via 169.254.1.1 (fe80::1),
// which the host end answers for. The node reaches the pod through a /32 route on the
// host veth with the config's routeProtocol (default routes.CNIProtocol, 212); deleting
// the veth removes the route with it. Pods wired before the upgrade from 197 keep routes
// of 197 (routes.LegacyCNIProtocol), which CHECK accepts as the plugin's.
//
// Every call is one short-lived process: stdin carries the network config, stdout the
// CNI result or error JSON (and nothing else — logging goes to logFile only), and the
// node agent is reached over its unix socket for the addresses.
package cni

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// Main runs one CNI command and exits. It is all of cmd/hostroute-cni's main.
//
// It uses skel.PluginMainFuncsWithError rather than PluginMainFuncs only to reword the
// errors skel raises before any plugin code runs (missing env, bad cniVersion, broken
// JSON) so that they name the plugin and the fix; printing and exit status are the same.
func Main(about string) {
	// One command lives a few milliseconds and allocates little: a collection would only
	// add latency to pod start-up.
	debug.SetGCPercent(-1)
	funcs := skel.CNIFuncs{
		Add: command("ADD", true, cmdAdd), Del: command("DEL", true, cmdDel), Check: command("CHECK", true, cmdCheck),
		GC: command("GC", false, cmdGC), Status: command("STATUS", false, cmdStatus),
	}
	e := skel.PluginMainFuncsWithError(funcs, version.PluginSupports(supportedVersions()...), about)
	if e == nil {
		return
	}
	if err := explainSkelError(e).Print(); err != nil {
		fmt.Fprintf(os.Stderr, "hostroute-cni: writing the error JSON to stdout: %v\n", err)
	}
	os.Exit(1)
}

// call is one invocation of a CNI command: its arguments, its parsed config and its log.
type call struct {
	args  *skel.CmdArgs
	conf  *Config
	log   *slog.Logger
	start time.Time
}

// command makes a skel handler of a command body: it parses the config, opens logFile
// (with the attachment's IDs for the commands that have one) and logs how the command
// ended and how long it took, after the body's own deferred rollbacks have run, so the
// logged error is the one the runtime gets.
func command(name string, attachment bool, body func(*call) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) (retErr error) {
		start := time.Now()
		conf, err := ParseConfig(args.StdinData)
		if err != nil {
			return toCNI(err)
		}
		logArgs := args
		if !attachment {
			logArgs = nil
		}
		log, closeLog := openLog(conf.LogFile, name, logArgs)
		defer closeLog()
		defer func() { logDone(log, start, retErr) }()
		return body(&call{args: args, conf: conf, log: log, start: start})
	}
}

// openLog returns a logger writing to path, or a discarding one. A log file that cannot
// be opened is reported on stderr (runtimes keep it) and otherwise ignored: failing
// every pod on the node over a log path would be the worse outcome.
func openLog(path, cmd string, args *skel.CmdArgs) (*slog.Logger, func()) {
	if path == "" {
		return slog.New(slog.DiscardHandler), func() {}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hostroute-cni: cannot open logFile: %v\n", err)
		return slog.New(slog.DiscardHandler), func() {}
	}
	l := slog.New(slog.NewTextHandler(f, nil)).With("cmd", cmd, "pid", os.Getpid())
	if args != nil {
		l = l.With("containerID", args.ContainerID, "ifname", args.IfName, "netns", args.Netns)
	}
	return l, func() { _ = f.Close() }
}

// logDone records how a command ended and how long it took.
func logDone(l *slog.Logger, start time.Time, err error) {
	if err != nil {
		l.Error("failed", "took", time.Since(start), "err", err)
		return
	}
	l.Info("done", "took", time.Since(start))
}

// appendDetails adds a note to a CNI error's details (used when a rollback fails too).
func appendDetails(err error, note string) {
	te, ok := err.(*types.Error)
	if !ok {
		return
	}
	te.Details = strings.TrimPrefix(te.Details+"; "+note, "; ")
}
