package cni

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Plugin-specific CNI error codes (the spec leaves 100 and up to plugins).
const (
	// ErrPoolExhausted: the agent has no free address and got no new block in time.
	// Not 11 (try again later): it does not clear up by itself; someone has to enlarge
	// or add an IPPool or delete pods, and a distinct code makes that greppable.
	ErrPoolExhausted uint = 100
	// ErrCheckFailed: CHECK found the attachment not as ADD left it.
	ErrCheckFailed uint = 101
	// ErrPoolChoice: the pod's or its namespace's pool annotation names an IPPool that
	// cannot serve it (unknown, other family, does not select the node or namespace).
	ErrPoolChoice uint = 102
	// ErrAddressTaken: the pod's fixed address (hostroute.io/ip-addrs) is held by another
	// pod, or lies in a block another node holds.
	ErrAddressTaken uint = 103
	// ErrPluginNotAvailable is the spec's STATUS code 50 (cannot service ADD).
	ErrPluginNotAvailable uint = 50
)

const msgPrefix = "hostroute-cni: "

// codedError carries a CNI error code through %w chains. msg is what a human reads;
// cause keeps the original error for errors.Is/As (e.g. a gRPC status).
type codedError struct {
	code  uint
	msg   string
	cause error
}

func (e *codedError) Error() string { return e.msg }
func (e *codedError) Unwrap() error { return e.cause }

// withCode tags err with a CNI error code, keeping its message.
func withCode(code uint, err error) error {
	return &codedError{code: code, msg: err.Error(), cause: err}
}

// toCNI turns an error chain into the *types.Error skel prints. The outermost message
// is kept whole (it carries the context); the code is the first one found in the chain,
// ErrInternal if none. nil stays an untyped nil so skel sees success.
func toCNI(err error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	code := types.ErrInternal
	var ce *codedError
	if errors.As(err, &ce) {
		code = ce.code
	}
	// errors.Join separates with newlines; the runtime shows msg on one line.
	return types.NewError(code, msgPrefix+strings.ReplaceAll(err.Error(), "\n", "; "), "")
}

// explainSkelError rewrites the errors skel produces before our code runs (bad
// environment, unsupported version, undecodable stdin) so they say which plugin
// failed and what to do. Our own errors already start with msgPrefix.
func explainSkelError(e *types.Error) *types.Error {
	if strings.HasPrefix(e.Msg, msgPrefix) {
		return e
	}
	out := *e
	switch e.Code {
	case types.ErrIncompatibleCNIVersion:
		out.Msg = msgPrefix + "unsupported cniVersion in the network config: " + e.Msg
		if e.Details != "" {
			out.Msg += " (" + e.Details + ")"
		}
		out.Details = fmt.Sprintf("set \"cniVersion\" to one of %s; STATUS and GC need 1.1.0",
			strings.Join(supportedVersions(), ", "))
	case types.ErrInvalidEnvironmentVariables:
		out.Msg = msgPrefix + e.Msg
		out.Details = "the container runtime must set CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME, CNI_PATH, " +
			"and for ADD and CHECK CNI_NETNS (the pod's network namespace path, e.g. /run/netns/<name>)"
	case types.ErrDecodingFailure:
		out.Msg = msgPrefix + "cannot decode the network config on stdin: " + e.Msg
	default:
		out.Msg = msgPrefix + e.Msg
	}
	return &out
}
