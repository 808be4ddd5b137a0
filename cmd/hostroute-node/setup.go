package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/hostroute/hostroute/node/install"
	"github.com/hostroute/hostroute/node/nat"
	"github.com/hostroute/hostroute/node/routes"
	"github.com/hostroute/hostroute/node/sysctl"
)

// parse parses a subcommand's flags; -h prints them and ends the command successfully.
func parse(fs *flag.FlagSet, args []string) (done bool, err error) {
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return true, err
	}
	if fs.NArg() > 0 {
		return true, fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return false, nil
}

func printActions(acts []install.Action) {
	for _, a := range acts {
		fmt.Println(a)
	}
}

// installCNI is the DaemonSet's install-cni init container.
func installCNI(args []string) error {
	fs := flag.NewFlagSet("install-cni", flag.ContinueOnError)
	var o install.CNIOptions
	fs.StringVar(&o.BinDir, "bin-dir", install.DefaultInstallBinDir, "the host's CNI bin dir, as mounted in this container")
	fs.StringVar(&o.ConfDir, "conf-dir", install.DefaultInstallConfDir, "the host's CNI conf dir, as mounted in this container")
	fs.StringVar(&o.PluginSource, "plugin", install.DefaultPluginSource, "the plugin binary to install as "+install.PluginName)
	conflist := fs.String("conflist", "", "the conflist to install as "+install.ConflistName+" (default: the one built into this binary)")
	fs.BoolVar(&o.Force, "force", false, "replace another network's config at our path, and rename configs that sort before ours to *"+install.DisabledSuffix)
	if done, err := parse(fs, args); done {
		return err
	}
	if *conflist != "" {
		b, err := os.ReadFile(*conflist)
		if err != nil {
			return fmt.Errorf("--conflist: %w", err)
		}
		o.Conflist = b
	}
	acts, err := install.InstallCNI(o)
	printActions(acts)
	return err
}

// sysctls is the DaemonSet's privileged sysctls init container.
func sysctls(args []string) error {
	fs := flag.NewFlagSet("sysctls", flag.ContinueOnError)
	root := fs.String("proc-sys", sysctl.ProcSys, "where the sysctls are")
	if done, err := parse(fs, args); done {
		return err
	}
	res, err := sysctl.Apply(*root, sysctl.Node())
	for _, r := range res {
		fmt.Println(r)
		if r.Key == "net.ipv6.conf.all.forwarding" && r.Status == sysctl.Changed {
			ifs, ierr := sysctl.IgnoredRA(*root)
			if ierr != nil {
				fmt.Fprintln(os.Stderr, "warning:", ierr)
			}
			for _, i := range ifs {
				fmt.Printf("warning: %s has accept_ra=1, ignored now that IPv6 forwarding is on; "+
					"if it takes its IPv6 default route from router advertisements, set net.ipv6.conf.%s.accept_ra=2\n", i, i)
			}
		}
	}
	return err
}

// uninstall removes hostroute from the node it runs on (host network namespace).
func uninstall(args []string) error {
	fs := flag.NewFlagSet("uninstall", flag.ContinueOnError)
	var o install.UninstallOptions
	fs.StringVar(&o.BinDir, "bin-dir", install.DefaultUninstallBinDir, "the host's CNI bin dir")
	fs.StringVar(&o.ConfDir, "conf-dir", install.DefaultUninstallConfDir, "the host's CNI conf dir")
	fs.IntVar(&o.Protocols.Agent, "route-protocol", routes.Protocol, "the agent's route protocol number, as it ran with")
	fs.IntVar(&o.Protocols.CNI, "cni-route-protocol", routes.CNIProtocol, "the CNI plugin's route protocol number, as its conflist had")
	legacy := fs.Bool("legacy-routes", false, "also remove routes of the former numbers 196 and 197 (only where no FRR runs: they are FRR's static and openfabric routes); a running agent of this version already rewrote its own")
	if done, err := parse(fs, args); done {
		return err
	}
	o.Protocols.NoLegacy = !*legacy
	nl, err := routes.NewNetlink()
	if err != nil {
		return err
	}
	defer nl.H.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil)) // the printed lines say it all
	acts, err := install.Uninstall(o, install.NetlinkRoutes{H: nl.H}, nat.New(log, -1))
	printActions(acts)
	if !install.AnyRemoved(acts) && err == nil {
		fmt.Println("nothing to remove")
	}
	return err
}
