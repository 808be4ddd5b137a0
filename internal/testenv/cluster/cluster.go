// Package cluster runs a real etcd and a real kube-apiserver for hostroute's
// integration tests and its lab, and tears them down again.
//
// A real control plane, rather than a fake client, is what lets the tests see
// what users see: CRD schema and CEL validation, admission, RBAC, watches and
// resourceVersion conflicts all come from the same code that runs in a cluster.
// The binaries are built once by `make tools` (e2e/tools/ensure.sh). By default
// no scheduler or controller-manager is started and no kubelet is expected;
// Options can add kube-controller-manager (with a chosen set of controllers),
// kube-scheduler, static-token users for kubelets and the ServiceAccount
// admission plugin, for a lab whose node runs real pods.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"

	"github.com/hostroute/hostroute/internal/testenv/proc"
)

// KubernetesVersion is the kube-apiserver version e2e/tools/ensure.sh builds; it
// names the default tools directory so that a version bump never picks up stale
// binaries.
const KubernetesVersion = "v1.35.4"

// ErrToolsMissing is returned (wrapped) by Start when kube-apiserver or etcd is
// not in the tools directory, so callers can tell "not built yet" apart from a
// control plane that failed to come up.
var ErrToolsMissing = errors.New("control-plane binaries missing")

const (
	etcdName      = "etcd"
	apiserverName = "kube-apiserver"

	// dirPrefix marks directories created by Start; the sweep of leftovers only
	// ever looks at directories carrying it.
	dirPrefix = "hostroute-cluster-"

	// readyTimeout bounds one start attempt. kube-apiserver is usually ready
	// 2–3 s after exec, but on a loaded 2-core machine (e.g. while the tools are
	// being compiled) it can take far longer.
	readyTimeout = 60 * time.Second
	// stopTimeout is how long a process gets after SIGTERM before SIGKILL.
	// kube-apiserver's graceful shutdown takes a few seconds.
	stopTimeout = 10 * time.Second
	// tailLines is how much of a process's output is kept in memory, so that
	// errors can show why a process failed even when Log goes elsewhere.
	tailLines = 30
)

// Options configures Start. The zero value runs on loopback with free ports,
// the repository's CRDs and Node,RBAC authorization.
type Options struct {
	// ToolsDir holds the kube-apiserver and etcd binaries. Default:
	// $HOSTROUTE_TOOLS_DIR, else $HOME/.cache/hostroute/<KubernetesVersion>,
	// which is where `make tools` puts them.
	ToolsDir string
	// NetNS, if set, names a network namespace (/run/netns/NAME) to run both
	// processes in, so the lab's control plane sits on the same simulated
	// network as its nodes. The processes are started with nsenter rather than
	// `ip netns exec`, because the latter also unshares the mount namespace and
	// remounts /sys, which the control plane has no use for.
	NetNS string
	// Address is the IP both processes bind to. Default 127.0.0.1. With NetNS
	// set it must be an address inside that namespace, and it must be reachable
	// from the calling process: Start polls readiness there and the returned
	// URL and kubeconfig point at it.
	Address string
	// CRDDir is a directory of CRD YAML files applied once the apiserver is
	// ready. Default: the repository's manifests/crds, found relative to this
	// source file. "-" applies none.
	CRDDir string
	// Authorization is kube-apiserver's --authorization-mode. Default
	// "Node,RBAC", as in a real cluster, so RBAC mistakes in manifests show up
	// in tests.
	Authorization string
	// Users are identities besides admin, each given a static bearer token and a
	// kubeconfig (Cluster.Users). A kubelet for node N must be NodeUser(N) in
	// group NodesGroup, or the Node authorizer refuses it.
	Users []User
	// ServiceAccountAdmission turns the ServiceAccount admission plugin on, so
	// pods get the projected, pod-bound token volume a kubelet mounts. Off by
	// default: every pod create then needs the namespace's `default`
	// ServiceAccount, which only the controller-manager's serviceaccount
	// controller creates.
	ServiceAccountAdmission bool
	// Controllers, when not empty, starts kube-controller-manager with only these
	// controllers (--controllers), e.g. MinimalControllers().
	Controllers []string
	// Scheduler starts kube-scheduler (DaemonSet pods are bound by it).
	Scheduler bool
	// Log receives every process's stdout and stderr, each line prefixed with
	// the process name. Default: DIR/cluster.log, which Stop removes with the
	// rest of DIR. Writes to it are serialised, so it need not be safe for
	// concurrent use.
	Log io.Writer
}

// Cluster is a running etcd + kube-apiserver pair. Its fields are read-only.
type Cluster struct {
	// Dir is the private working directory (etcd data, certificates, keys,
	// kubeconfig, PID files). Stop removes it.
	Dir string
	// Kubeconfig is the path of a kubeconfig file for the admin user, for
	// kubectl and for processes that take --kubeconfig.
	Kubeconfig string
	// URL is the apiserver's https URL. Its certificate is signed by CAFile and
	// valid for 127.0.0.1, the bind address, 10.96.0.1 and kubernetes.default.svc.
	URL string
	// CAFile is the PEM file of the CA that signed the serving certificate
	// (kube-controller-manager's --root-ca-file, so pods get it as ca.crt).
	CAFile string
	// Users holds the credentials of Options.Users and of the components
	// started, by user name.
	Users map[string]Credential
	// Token is the admin bearer token (user "admin", group system:masters).
	// Every client needs it: anonymous requests get nothing useful.
	Token string
	// EtcdURL is etcd's client URL, for debugging what the apiserver stored.
	EtcdURL string
	// ToolsDir is where the binaries came from; kubectl and the kubelet, built
	// by the same `make tools`, are there too.
	ToolsDir string

	logFile   *os.File // non-nil when Log defaulted to a file in Dir
	spawner   *proc.Spawner
	procs     []*member // in start order: etcd, kube-apiserver, then the components
	caPEM     []byte
	saKeyFile string

	stopOnce sync.Once
	stopErr  error
}

// Start launches etcd and kube-apiserver, waits until the apiserver reports
// ready, writes a kubeconfig and applies the CRDs. ctx bounds only the start:
// the processes keep running after ctx is done, until Stop, because tests
// commonly start a cluster with a short-lived context. On error nothing is
// left running.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	etcdBin := filepath.Join(o.ToolsDir, etcdName)
	apiserverBin := filepath.Join(o.ToolsDir, apiserverName)
	bins := []string{apiserverBin, etcdBin}
	for _, name := range o.componentBinaries() {
		bins = append(bins, filepath.Join(o.ToolsDir, name))
	}
	for _, bin := range bins {
		if err := checkExecutable(bin); err != nil {
			return nil, fmt.Errorf("%w: %w (run `make tools`, or set HOSTROUTE_TOOLS_DIR to a directory holding %s %s and etcd)",
				ErrToolsMissing, err, filepath.Base(bin), KubernetesVersion)
		}
	}
	users := o.users()
	if err := validateUsers(users); err != nil {
		return nil, err
	}

	// Leftovers from killed test binaries hold ports and memory; clearing
	// them here keeps a developer's machine from filling up over time.
	sweepLeftovers([]string{etcdName, apiserverName, controllerManagerName, schedulerName})

	dir, err := proc.MakeDir(dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("creating cluster dir: %w", err)
	}
	c := &Cluster{
		Dir:        dir,
		Kubeconfig: filepath.Join(dir, "kubeconfig"),
		Users:      map[string]Credential{},
		ToolsDir:   o.ToolsDir,
		spawner:    proc.NewSpawner(),
	}
	ok := false
	defer func() {
		if !ok {
			_ = c.Stop()
		}
	}()
	logw := o.Log
	if logw == nil {
		f, err := os.Create(filepath.Join(dir, "cluster.log"))
		if err != nil {
			return nil, fmt.Errorf("creating log file: %w", err)
		}
		c.logFile = f
		logw = f
	}
	sink := &lockedWriter{w: logw}

	token, err := randomHex(24)
	if err != nil {
		return nil, fmt.Errorf("generating admin token: %w", err)
	}
	c.Token = token
	tokens := tokenLine(token, "admin", []string{"system:masters"})
	for _, u := range users {
		t, err := randomHex(24)
		if err != nil {
			return nil, fmt.Errorf("generating token for %s: %w", u.Name, err)
		}
		c.Users[u.Name] = Credential{Token: t, Kubeconfig: filepath.Join(dir, kubeconfigFileName(u.Name))}
		tokens += tokenLine(t, u.Name, u.Groups)
	}
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(tokens), 0o600); err != nil {
		return nil, fmt.Errorf("writing token file: %w", err)
	}
	saKeyFile := filepath.Join(dir, "sa.key")
	if err := writeRSAKey(saKeyFile); err != nil {
		return nil, fmt.Errorf("writing service-account key: %w", err)
	}
	c.saKeyFile = saKeyFile
	certs, err := writePKI(dir, o.Address)
	if err != nil {
		return nil, fmt.Errorf("writing certificates: %w", err)
	}
	c.CAFile, c.caPEM = certs.CAFile, certs.CAPEM

	// On loopback, ports are picked free and may be taken by someone else
	// between the check and etcd's bind, so one retry with fresh ports covers
	// that race. In a network namespace the fixed well-known ports are ours.
	attempts := 1
	if o.NetNS == "" {
		attempts = 2
	}
	for attempt := 1; ; attempt++ {
		err = c.startProcesses(ctx, o, sink, etcdBin, apiserverBin, tokenFile, saKeyFile, certs)
		if err == nil {
			break
		}
		c.killAll()
		if attempt >= attempts || !errors.Is(err, errAddrInUse) || ctx.Err() != nil {
			return nil, err
		}
		c.procs = nil
		for _, sub := range []string{"etcd"} {
			if rerr := os.RemoveAll(filepath.Join(dir, sub)); rerr != nil {
				return nil, fmt.Errorf("retrying after %w: cleaning %s: %w", err, sub, rerr)
			}
		}
	}

	if err := c.writeKubeconfig(); err != nil {
		return nil, err
	}
	for _, u := range users {
		if err := c.WriteKubeconfig(c.Users[u.Name].Kubeconfig, "", u.Name); err != nil {
			return nil, err
		}
	}
	if err := c.startComponents(ctx, o, sink); err != nil {
		return nil, err
	}
	if o.CRDDir != "-" {
		if err := ApplyCRDs(ctx, c.RESTConfig(), o.CRDDir); err != nil {
			return nil, fmt.Errorf("applying CRDs from %s: %w", o.CRDDir, err)
		}
	}
	ok = true
	return c, nil
}

// startProcesses runs one start attempt: etcd and kube-apiserver together,
// then waits for etcd's /health and the apiserver's /readyz. Starting both at
// once saves the ~0.4 s etcd needs to come up; the apiserver retries its etcd
// connection for about 20 s before giving up, far longer than etcd ever takes.
// Checking etcd's health first still turns an etcd failure into an etcd error
// rather than an apiserver one.
func (c *Cluster) startProcesses(ctx context.Context, o Options, sink io.Writer, etcdBin, apiserverBin, tokenFile, saKeyFile string, certs *pki) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()

	var etcdPort, peerPort, apiPort int
	if o.NetNS != "" {
		etcdPort, peerPort, apiPort = 2379, 2380, 6443
	} else {
		ports, err := freePorts(o.Address, 3)
		if err != nil {
			return err
		}
		etcdPort, peerPort, apiPort = ports[0], ports[1], ports[2]
	}
	clientURL := "http://" + net.JoinHostPort(o.Address, strconv.Itoa(etcdPort))
	peerURL := "http://" + net.JoinHostPort(o.Address, strconv.Itoa(peerPort))
	c.EtcdURL = clientURL
	c.URL = "https://" + net.JoinHostPort(o.Address, strconv.Itoa(apiPort))

	etcd, err := c.spawn(o.NetNS, sink, etcdName, etcdBin,
		"--name", "default",
		"--data-dir", filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls", clientURL,
		"--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
		// Test data is disposable; fsync would dominate the run time.
		"--unsafe-no-fsync",
		"--quota-backend-bytes", "2147483648",
		"--log-level", "warn",
	)
	if err != nil {
		return err
	}
	args := []string{
		"--etcd-servers", clientURL,
		"--bind-address", o.Address,
		"--advertise-address", o.Address,
		"--secure-port", strconv.Itoa(apiPort),
		"--tls-cert-file", certs.CertFile,
		"--tls-private-key-file", certs.KeyFile,
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", saKeyFile,
		"--service-account-signing-key-file", saKeyFile,
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--authorization-mode", o.Authorization,
		"--token-auth-file", tokenFile,
		// Nothing here uses the endpoints of the `kubernetes` Service, and
		// keeping them up to date is only start-up and shutdown work.
		"--endpoint-reconciler-type", "none",
		// Request queueing protects a shared server from noisy clients; a
		// test server has one client, and APF's bootstrap writes slow start-up.
		"--enable-priority-and-fairness=false",
		// As kubeadm and other distributions set it: the default (false) refuses
		// privileged containers, such as the node DaemonSet's sysctls init container.
		"--allow-privileged=true",
	}
	if !o.ServiceAccountAdmission {
		// Without the controller-manager's serviceaccount controller nothing
		// would create the default ServiceAccount this plugin insists on.
		args = append(args, "--disable-admission-plugins", "ServiceAccount")
	}
	apiserver, err := c.spawn(o.NetNS, sink, apiserverName, apiserverBin, args...)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, etcd, clientURL+"/health", "", c.procs); err != nil {
		return err
	}
	return waitHTTP(ctx, apiserver, c.URL+"/readyz", c.Token, c.procs)
}

// RESTConfig returns a new client config for the admin user on every call, so
// callers may modify it (user agent, timeouts, impersonation) freely. QPS and
// Burst are raised well above client-go's defaults (5/10) because tests create
// objects in bursts and client-side throttling would only slow them down.
func (c *Cluster) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     c.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: append([]byte(nil), c.caPEM...)},
		QPS:             200,
		Burst:           400,
	}
}

// AdminToken returns the bearer token of the admin user (group
// system:masters), for clients that are not built from RESTConfig.
func (c *Cluster) AdminToken() string { return c.Token }

// Stop terminates the scheduler and controller-manager if any, then
// kube-apiserver, then etcd (so the apiserver never sees its storage vanish
// mid-shutdown), waits for each to exit, and removes Dir. Each
// process gets SIGTERM and, if still running after 10 s, SIGKILL. Stop is
// safe to call more than once; later calls return the first call's result.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.stop() })
	return c.stopErr
}

func (c *Cluster) stop() error {
	var errs []error
	for i := len(c.procs) - 1; i >= 0; i-- {
		if err := c.procs[i].Stop(stopTimeout); err != nil {
			errs = append(errs, err)
		}
	}
	// Only now may the spawning thread go: its exit would SIGKILL the children.
	c.spawner.Close()
	if c.logFile != nil {
		if err := c.logFile.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing log: %w", err))
		}
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		errs = append(errs, fmt.Errorf("removing cluster dir: %w", err))
	}
	return errors.Join(errs...)
}

// killAll ends a failed start attempt at once; a process that failed to
// become ready has nothing worth shutting down gracefully.
func (c *Cluster) killAll() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		_ = c.procs[i].Stop(0)
	}
}

func (c *Cluster) writeKubeconfig() error { return c.WriteKubeconfig(c.Kubeconfig, "", "admin") }

func (o Options) withDefaults() (Options, error) {
	if o.ToolsDir == "" {
		o.ToolsDir = os.Getenv("HOSTROUTE_TOOLS_DIR")
	}
	if o.ToolsDir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return o, fmt.Errorf("finding tools dir: set Options.ToolsDir or HOSTROUTE_TOOLS_DIR: %w", err)
		}
		o.ToolsDir = filepath.Join(home, ".cache", "hostroute", KubernetesVersion)
	}
	if o.Address == "" {
		o.Address = "127.0.0.1"
	}
	if net.ParseIP(o.Address) == nil {
		return o, fmt.Errorf("address %q is not an IP", o.Address)
	}
	if o.NetNS != "" {
		if strings.ContainsRune(o.NetNS, '/') {
			return o, fmt.Errorf("network namespace %q: want a name under /run/netns, not a path", o.NetNS)
		}
		if _, err := os.Stat(netnsPath(o.NetNS)); err != nil {
			return o, fmt.Errorf("network namespace %q: %w", o.NetNS, err)
		}
	}
	if o.Authorization == "" {
		o.Authorization = "Node,RBAC"
	}
	if o.CRDDir == "" {
		dir, err := defaultCRDDir()
		if err != nil {
			return o, err
		}
		o.CRDDir = dir
	}
	return o, nil
}

// defaultCRDDir finds manifests/crds from this source file's location, so
// tests in any package of the repository get the CRDs without knowing the
// repository root. It fails under -trimpath, where the path is not real.
func defaultCRDDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("locating default CRD dir: no caller information; set Options.CRDDir")
	}
	dir := filepath.Join(filepath.Dir(file), "..", "..", "..", "manifests", "crds")
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", fmt.Errorf("default CRD dir %s not found (built with -trimpath?); set Options.CRDDir", dir)
	}
	return dir, nil
}
