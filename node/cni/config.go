package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/hostroute/hostroute/node/podif"
	"github.com/hostroute/hostroute/node/routes"
)

// Defaults for the plugin-specific keys of the network config.
const (
	DefaultAgentSocket = "/run/hostroute/agent.sock"
	DefaultMTU         = 1500
	// DefaultTimeout is long on purpose: Allocate may have to wait for the controller to
	// hand the node a new address block, and failing an ADD costs kubelet a full sandbox
	// retry, which is slower than waiting.
	DefaultTimeout = 30 * time.Second

	minMTU     = 68 // the IPv4 minimum; the kernel refuses less on a veth
	maxMTU     = 65535
	maxTimeout = 10 * time.Minute // anything longer outlives every runtime's own timeout
)

// supportedVersions are the CNI spec versions this plugin speaks. 0.4.0 is the first with
// CHECK; STATUS and GC exist from 1.1.0 (skel refuses them for older configs).
func supportedVersions() []string { return []string{"0.4.0", "1.0.0", "1.1.0"} }

// Config is one parsed network config. It is not a struct embedding types.NetConf on
// purpose: types.PluginConf has a pointer MarshalJSON that would be promoted and silently
// drop every hostroute key when a Config is marshalled.
type Config struct {
	Std types.NetConf // the standard keys (cniVersion, name, type, prevResult, GC list)

	AgentSocket string        // absolute path of the node agent's unix socket
	MTU         int           // MTU of both veth ends; 0: the uplink's (see detectMTU)
	Timeout     time.Duration // deadline of each agent call
	LogFile     string        // absolute path; empty means no log
	// RouteProtocol is the protocol number of the node's routes to the pod (key
	// routeProtocol, default routes.CNIProtocol). It must match the agent's
	// --cni-route-protocol, and never be the agent's own number: the agent deletes routes
	// of its number it does not want.
	RouteProtocol int
}

// rawConfig is the hostroute part of the JSON. Timeout is a Go duration string ("30s").
type rawConfig struct {
	AgentSocket *string `json:"agentSocket"`
	MTU         *int    `json:"mtu"`
	Timeout     *string `json:"timeout"`
	LogFile     *string `json:"logFile"`
	// RouteProtocol is a number, not a name: names depend on the host's rt_protos files.
	RouteProtocol *int `json:"routeProtocol"`
}

// ParseConfig decodes and validates the network config the runtime gives on stdin.
// Malformed JSON is ErrDecodingFailure (6), an unsupported cniVersion is
// ErrIncompatibleCNIVersion (1), anything else that is wrong is ErrInvalidNetworkConfig
// (7), and the message names the key. Unknown keys are ignored: runtimes and chaining
// add keys of their own (runtimeConfig, args, ...), and refusing them would break pods.
func ParseConfig(data []byte) (*Config, error) {
	var std types.NetConf
	if err := json.Unmarshal(data, &std); err != nil {
		return nil, decodeError(err)
	}
	var raw rawConfig
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, decodeError(err)
	}
	c := &Config{Std: std, AgentSocket: DefaultAgentSocket, Timeout: DefaultTimeout, RouteProtocol: routes.CNIProtocol}

	switch {
	case std.CNIVersion == "":
		return nil, withCode(types.ErrIncompatibleCNIVersion, fmt.Errorf(
			"network config has no cniVersion; this plugin supports %s", strings.Join(supportedVersions(), ", ")))
	case !slices.Contains(supportedVersions(), std.CNIVersion):
		return nil, withCode(types.ErrIncompatibleCNIVersion, fmt.Errorf(
			"network config has cniVersion %q; this plugin supports %s", std.CNIVersion, strings.Join(supportedVersions(), ", ")))
	case std.Name == "":
		return nil, invalidConfig("network config has no name")
	case std.IPAM.Type != "":
		return nil, invalidConfig("network config has an ipam section (type %q); hostroute-cni allocates addresses through the node agent, remove the ipam section", std.IPAM.Type)
	}
	if raw.AgentSocket != nil {
		p := *raw.AgentSocket
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return nil, invalidConfig("agentSocket %q: want a clean absolute path such as %q", p, DefaultAgentSocket)
		}
		c.AgentSocket = p
	}
	if raw.MTU != nil {
		if *raw.MTU < minMTU || *raw.MTU > maxMTU {
			return nil, invalidConfig("mtu %d: want %d..%d (or leave it out for the MTU of the node's uplink)", *raw.MTU, minMTU, maxMTU)
		}
		c.MTU = *raw.MTU
	}
	if raw.Timeout != nil {
		d, err := time.ParseDuration(*raw.Timeout)
		if err != nil {
			return nil, invalidConfig("timeout %q: want a duration such as \"30s\": %w", *raw.Timeout, err)
		}
		if d <= 0 || d > maxTimeout {
			return nil, invalidConfig("timeout %q: want more than 0 and at most %s", *raw.Timeout, maxTimeout)
		}
		c.Timeout = d
	}
	if raw.RouteProtocol != nil {
		p := *raw.RouteProtocol
		if err := routes.CheckProtocol(p); err != nil {
			return nil, invalidConfig("routeProtocol %w (or leave it out for %d)", err, routes.CNIProtocol)
		}
		if p == routes.Protocol || p == routes.LegacyProtocol {
			return nil, invalidConfig("routeProtocol %d is an agent route protocol: the agent would delete the pod routes; leave it out for %d", p, routes.CNIProtocol)
		}
		c.RouteProtocol = p
	}
	if raw.LogFile != nil && *raw.LogFile != "" {
		p := *raw.LogFile
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return nil, invalidConfig("logFile %q: want a clean absolute path", p)
		}
		c.LogFile = p
	}
	return c, nil
}

// decodeError sorts a json error: broken JSON (or not an object at all) is a decoding
// failure (6); a key of the wrong type is an invalid config (7) naming the key.
func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return invalidConfig("network config key %q: want a %s, got a JSON %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	}
	return withCode(types.ErrDecodingFailure, fmt.Errorf("cannot decode the network config on stdin: %w", err))
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int64", "uint", "float64":
		return "number"
	case "map", "struct":
		return "object"
	case "slice":
		return "array"
	}
	return goKind
}

func invalidConfig(format string, a ...any) error {
	return withCode(types.ErrInvalidNetworkConfig, fmt.Errorf(format, a...))
}

// PodArgs are the Kubernetes keys of CNI_ARGS. All may be empty: CNI_ARGS is optional,
// and a runtime that is not kubelet (or a test) may leave them out.
type PodArgs struct {
	Namespace, Name, UID string
}

// podArgs is the LoadArgs target. Field names are the CNI_ARGS keys, hence the style.
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString
	K8S_POD_NAME               types.UnmarshallableString
	K8S_POD_UID                types.UnmarshallableString
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString
}

// ParsePodArgs parses CNI_ARGS ("K=V;K2=V2"). Unknown keys are ignored even without
// IgnoreUnknown=1: the args belong to the runtime, and failing a pod because a runtime
// added a key helps nobody. A malformed pair is an error naming CNI_ARGS (code 4).
func ParsePodArgs(s string) (PodArgs, error) {
	a := podArgs{CommonArgs: types.CommonArgs{IgnoreUnknown: true}}
	if err := types.LoadArgs(s, &a); err != nil {
		return PodArgs{}, &codedError{code: types.ErrInvalidEnvironmentVariables, cause: err,
			msg: "CNI_ARGS: " + strings.TrimPrefix(err.Error(), "ARGS: ")}
	}
	return PodArgs{Namespace: string(a.K8S_POD_NAMESPACE), Name: string(a.K8S_POD_NAME), UID: string(a.K8S_POD_UID)}, nil
}

// HostVethName is the host-side interface name of an attachment. It is derived, not
// stored, so DEL and GC find the interface from (container ID, ifname) alone, even after
// the pod's netns is gone. 13 characters fit IFNAMSIZ (15); 44 bits of hash make a
// collision between two live pods on one node negligible.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return hostVethPrefix + hex.EncodeToString(sum[:])[:11]
}

const hostVethPrefix = podif.HostVethPrefix

// isHostVethName reports whether name has the shape HostVethName produces.
func isHostVethName(name string) bool {
	if len(name) != len(hostVethPrefix)+11 || !strings.HasPrefix(name, hostVethPrefix) {
		return false
	}
	for _, r := range name[len(hostVethPrefix):] {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}
