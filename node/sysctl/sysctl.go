// Package sysctl sets the node-level kernel settings hostroute needs: forwarding, without
// which the node is no router. It is shared by `hostroute-node sysctls` (a privileged init
// container: /proc/sys is read-only in unprivileged containers, and with host networking
// these are the host's settings) and by the agent's own --sysctls (on by default, for
// running the agent directly on a host or in a lab namespace).
//
// Per-interface settings of the pods' host veths (forwarding, proxy_arp, proxy_delay,
// accept_ra) are not here: the CNI plugin sets them on each veth it creates, running on
// the host as the container runtime.
//
// Sysctls under /proc/sys/net belong to the network namespace of the thread that opens
// the file, so a caller that wants another namespace's must run on a thread locked into
// it.
package sysctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ProcSys is where the kernel exposes sysctls.
const ProcSys = "/proc/sys"

// Setting is one sysctl and the value hostroute needs.
type Setting struct {
	Key   string // dotted, as sysctl(8) writes it: net.ipv4.ip_forward
	Value string
	// Needs is a directory (relative to the sysctl root, slash-separated) whose absence
	// means the setting does not apply, e.g. "net/ipv6" on a host booted with
	// ipv6.disable=1. Empty: the setting is required.
	Needs string
}

// Node returns the node-level settings. net.ipv4.ip_forward is IPv4 forwarding on every
// interface (it also sets net.ipv4.conf.all.forwarding); net.ipv6.conf.all.forwarding
// likewise for IPv6, and it has a side effect to know about: an interface with
// accept_ra=1 stops taking router advertisements (see IgnoredRA).
func Node() []Setting {
	return []Setting{
		{Key: "net.ipv4.ip_forward", Value: "1"},
		{Key: "net.ipv6.conf.all.forwarding", Value: "1", Needs: "net/ipv6"},
	}
}

// Status of one setting after Apply.
type Status int

// The outcomes of a setting.
const (
	Changed    Status = iota // written: it had another value
	AlreadySet               // it had the value already: nothing written
	Absent                   // does not apply (Setting.Needs missing)
)

// Result is what Apply did with one setting.
type Result struct {
	Setting
	Status Status
	Was    string // the value before (empty for Absent)
}

func (r Result) String() string {
	switch r.Status {
	case Changed:
		return fmt.Sprintf("set %s = %s (was %s)", r.Key, r.Value, r.Was)
	case AlreadySet:
		return fmt.Sprintf("already set %s = %s", r.Key, r.Value)
	default:
		return fmt.Sprintf("skipped %s: this host has no %s", r.Key, strings.ReplaceAll(r.Needs, "/", "."))
	}
}

// path maps a dotted key to its file. Interface names may contain dots; they do not
// occur in the keys of Node, and per-interface keys are the CNI plugin's business.
func path(root, key string) string {
	return filepath.Join(root, strings.ReplaceAll(key, ".", "/"))
}

// Apply reads each setting under root (ProcSys, or a directory in tests) and writes the
// ones that differ. It stops at the first error, naming the setting, so a host where
// forwarding cannot be turned on fails loudly rather than running as a black hole.
func Apply(root string, settings []Setting) ([]Result, error) {
	var out []Result
	for _, s := range settings {
		if s.Needs != "" {
			if _, err := os.Stat(filepath.Join(root, s.Needs)); errors.Is(err, fs.ErrNotExist) {
				out = append(out, Result{Setting: s, Status: Absent})
				continue
			}
		}
		p := path(root, s.Key)
		b, err := os.ReadFile(p)
		if err != nil {
			return out, fmt.Errorf("read sysctl %s: %w", s.Key, err)
		}
		was := strings.TrimSpace(string(b))
		if was == s.Value {
			out = append(out, Result{Setting: s, Status: AlreadySet, Was: was})
			continue
		}
		// O_WRONLY without O_CREATE or O_TRUNC: a sysctl file always exists, and a
		// typo in a key must fail instead of creating a file under a test root.
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.WriteString(s.Value)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			return out, fmt.Errorf("set sysctl %s = %s (it is %s): %w", s.Key, s.Value, was, err)
		}
		out = append(out, Result{Setting: s, Status: Changed, Was: was})
	}
	return out, nil
}

// IgnoredRA lists the interfaces (other than lo and the "all"/"default" entries) whose
// accept_ra is 1, which the kernel ignores while IPv6 forwarding is on: such an interface
// stops learning its default route and prefixes from router advertisements. Where the
// host's IPv6 uplink is configured by RA, set its accept_ra to 2 (accept even when
// forwarding). Nothing is changed here: which interface is the uplink is the operator's
// knowledge.
func IgnoredRA(root string) ([]string, error) {
	dir := filepath.Join(root, "net", "ipv6", "conf")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var out []string
	for _, e := range entries {
		switch e.Name() {
		case "all", "default", "lo":
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "accept_ra"))
		if err != nil {
			continue // the interface went away meanwhile
		}
		if strings.TrimSpace(string(b)) == "1" {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
