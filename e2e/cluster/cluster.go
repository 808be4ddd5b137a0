// Package cluster runs a real etcd and a real kube-apiserver for hostroute's
// integration tests and its lab, and tears them down again.
//
// A real control plane, rather than a fake client, is what lets the tests see
// what users see: CRD schema and CEL validation, admission, RBAC, watches and
// resourceVersion conflicts all come from the same code that runs in a cluster.
// The binaries are built once by `make tools` (e2e/tools/ensure.sh); no kubelet,
// scheduler or controller-manager is started, so pods are never run.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
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
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
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
	ownerFile = "owner.pid"

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
	// Log receives both processes' stdout and stderr, each line prefixed with
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
	// URL is the apiserver's https URL. Its certificate is self-signed, so
	// clients must skip verification (RESTConfig and Kubeconfig do).
	URL string
	// Token is the admin bearer token (user "admin", group system:masters).
	// Every client needs it: anonymous requests get nothing useful.
	Token string
	// EtcdURL is etcd's client URL, for debugging what the apiserver stored.
	EtcdURL string

	logFile *os.File // non-nil when Log defaulted to a file in Dir
	spawner *spawner
	procs   []*proc // in start order: etcd, then kube-apiserver

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
	for _, bin := range []string{apiserverBin, etcdBin} {
		if err := checkExecutable(bin); err != nil {
			return nil, fmt.Errorf("%w: %w (run `make tools`, or set HOSTROUTE_TOOLS_DIR to a directory holding kube-apiserver %s and etcd)",
				ErrToolsMissing, err, KubernetesVersion)
		}
	}

	// Leftovers from killed test binaries hold ports and memory; clearing
	// them here keeps a developer's machine from filling up over time.
	sweepLeftovers(os.TempDir(), map[string]bool{etcdName: true, apiserverName: true})

	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("creating cluster dir: %w", err)
	}
	c := &Cluster{
		Dir:        dir,
		Kubeconfig: filepath.Join(dir, "kubeconfig"),
		spawner:    newSpawner(),
	}
	ok := false
	defer func() {
		if !ok {
			_ = c.Stop()
		}
	}()
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("writing owner PID: %w", err)
	}

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
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(token+`,admin,admin,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("writing token file: %w", err)
	}
	saKeyFile := filepath.Join(dir, "sa.key")
	if err := writeRSAKey(saKeyFile); err != nil {
		return nil, fmt.Errorf("writing service-account key: %w", err)
	}

	// On loopback, ports are picked free and may be taken by someone else
	// between the check and etcd's bind, so one retry with fresh ports covers
	// that race. In a network namespace the fixed well-known ports are ours.
	attempts := 1
	if o.NetNS == "" {
		attempts = 2
	}
	for attempt := 1; ; attempt++ {
		err = c.startProcesses(ctx, o, sink, etcdBin, apiserverBin, tokenFile, saKeyFile)
		if err == nil {
			break
		}
		c.killAll()
		if attempt >= attempts || !errors.Is(err, errAddrInUse) || ctx.Err() != nil {
			return nil, err
		}
		c.procs = nil
		for _, sub := range []string{"etcd", "certs"} {
			if rerr := os.RemoveAll(filepath.Join(dir, sub)); rerr != nil {
				return nil, fmt.Errorf("retrying after %w: cleaning %s: %w", err, sub, rerr)
			}
		}
	}

	if err := c.writeKubeconfig(); err != nil {
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
func (c *Cluster) startProcesses(ctx context.Context, o Options, sink io.Writer, etcdBin, apiserverBin, tokenFile, saKeyFile string) error {
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
	apiserver, err := c.spawn(o.NetNS, sink, apiserverName, apiserverBin,
		"--etcd-servers", clientURL,
		"--bind-address", o.Address,
		"--advertise-address", o.Address,
		"--secure-port", strconv.Itoa(apiPort),
		// The apiserver self-signs a serving certificate here.
		"--cert-dir", filepath.Join(c.Dir, "certs"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", saKeyFile,
		"--service-account-signing-key-file", saKeyFile,
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--authorization-mode", o.Authorization,
		"--token-auth-file", tokenFile,
		// No controller-manager runs, so nothing would create the default
		// ServiceAccount that this plugin insists on.
		"--disable-admission-plugins", "ServiceAccount",
		// Nothing here uses the endpoints of the `kubernetes` Service, and
		// keeping them up to date is only start-up and shutdown work.
		"--endpoint-reconciler-type", "none",
		// Request queueing protects a shared server from noisy clients; a
		// test server has one client, and APF's bootstrap writes slow start-up.
		"--enable-priority-and-fairness=false",
	)
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
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             200,
		Burst:           400,
	}
}

// AdminToken returns the bearer token of the admin user (group
// system:masters), for clients that are not built from RESTConfig.
func (c *Cluster) AdminToken() string { return c.Token }

// Stop terminates kube-apiserver, then etcd (so the apiserver never sees its
// storage vanish mid-shutdown), waits for both to exit, and removes Dir. Each
// process gets SIGTERM and, if still running after 10 s, SIGKILL. Stop is
// safe to call more than once; later calls return the first call's result.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.stop() })
	return c.stopErr
}

func (c *Cluster) stop() error {
	var errs []error
	for i := len(c.procs) - 1; i >= 0; i-- {
		if err := c.procs[i].stop(stopTimeout); err != nil {
			errs = append(errs, err)
		}
	}
	// Only now may the spawning thread go: its exit would SIGKILL the children.
	c.spawner.close()
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
		_ = c.procs[i].stop(0)
	}
}

func (c *Cluster) writeKubeconfig() error {
	const name = "hostroute"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: c.URL, InsecureSkipTLSVerify: true}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: c.Token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: "admin"}
	cfg.CurrentContext = name
	if err := clientcmd.WriteToFile(*cfg, c.Kubeconfig); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	return nil
}

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
	dir := filepath.Join(filepath.Dir(file), "..", "..", "manifests", "crds")
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", fmt.Errorf("default CRD dir %s not found (built with -trimpath?); set Options.CRDDir", dir)
	}
	return dir, nil
}

func checkExecutable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// freePorts asks the kernel for n distinct free ports on addr. Holding all
// listeners until every port is known keeps the kernel from handing out the
// same port twice.
func freePorts(addr string, n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err != nil {
			return nil, fmt.Errorf("finding a free port on %s: %w", addr, err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// writeRSAKey writes a fresh RSA key as PKCS#1 PEM. The apiserver signs
// service-account tokens with it and derives the verifying public key from
// the same file, so one file serves both flags.
func writeRSAKey(path string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	block := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}
	return os.WriteFile(path, pem.EncodeToMemory(block), 0o600)
}

func netnsPath(name string) string { return "/run/netns/" + name }
