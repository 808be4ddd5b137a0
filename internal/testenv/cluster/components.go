package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	controllerManagerName = "kube-controller-manager"
	schedulerName         = "kube-scheduler"

	// ControllerManagerUser is the identity kube-controller-manager runs as. It is
	// in group system:masters: with --use-service-account-credentials=false every
	// controller acts as this one user, and the bootstrap role of that name only
	// lets it list and watch (the daemon-set controller could not create a pod).
	ControllerManagerUser = "system:kube-controller-manager"
	// SchedulerUser is kube-scheduler's identity; the bootstrap RBAC policy binds
	// exactly what it needs to this name.
	SchedulerUser = "system:kube-scheduler"
	// NodesGroup is the group the Node authorizer requires of a kubelet, whose user
	// must be NodeUser(name).
	NodesGroup = "system:nodes"
)

// NodeUser is the user name a kubelet for node name must authenticate as: the
// Node authorizer grants it access to that node's pods, secrets and tokens only.
func NodeUser(name string) string { return "system:node:" + name }

// MinimalControllers are the kube-controller-manager controllers a lab with one
// kubelet needs: DaemonSet pods, the `default` ServiceAccount of every namespace
// and the kube-root-ca.crt ConfigMap the projected token volumes read.
//
// Hazard: nodelifecycle and podgc must stay off. The lab's other nodes are Node
// objects with no kubelet behind them; those controllers would mark them
// NotReady, taint them and delete their pods.
func MinimalControllers() []string {
	return []string{"daemonset", "serviceaccount", "root-ca-cert-publisher"}
}

// User is an identity with a static bearer token, besides admin.
type User struct {
	Name   string
	Groups []string
}

// Credential is what Start made for a User.
type Credential struct {
	Token string
	// Kubeconfig points at the apiserver's own address (Cluster.URL) and
	// verifies it against Cluster.CAFile.
	Kubeconfig string
}

// tokenLine is one line of the apiserver's --token-auth-file:
// token,user,uid,"group1,group2".
func tokenLine(token, user string, groups []string) string {
	line := token + "," + user + "," + user
	if len(groups) > 0 {
		line += `,"` + strings.Join(groups, ",") + `"`
	}
	return line + "\n"
}

// users returns every static-token user Start must create: the caller's, plus
// the identities of the components it starts.
func (o Options) users() []User {
	users := append([]User(nil), o.Users...)
	if len(o.Controllers) > 0 {
		users = append(users, User{Name: ControllerManagerUser, Groups: []string{"system:masters"}})
	}
	if o.Scheduler {
		users = append(users, User{Name: SchedulerUser})
	}
	return users
}

// validateUsers refuses duplicate or reserved names and characters that would
// break the CSV token file.
func validateUsers(users []User) error {
	seen := map[string]bool{"admin": true}
	for _, u := range users {
		if u.Name == "" || strings.ContainsAny(u.Name, ",\"\n") {
			return fmt.Errorf("user name %q: want a non-empty name without commas, quotes or newlines", u.Name)
		}
		if seen[u.Name] {
			return fmt.Errorf("user %q given twice (or reserved)", u.Name)
		}
		seen[u.Name] = true
		for _, g := range u.Groups {
			if g == "" || strings.ContainsAny(g, ",\"\n") {
				return fmt.Errorf("user %q: group %q: want a non-empty name without commas, quotes or newlines", u.Name, g)
			}
		}
	}
	return nil
}

// kubeconfigFileName turns a user name such as system:node:n1 into a file name.
func kubeconfigFileName(user string) string {
	return "kubeconfig-" + strings.NewReplacer(":", "_", "/", "_").Replace(user)
}

// WriteKubeconfig writes a kubeconfig for user ("" or "admin": the admin user)
// that reaches the apiserver at server ("": Cluster.URL) and verifies its
// certificate against the cluster CA. Use it for clients that reach the
// apiserver through another address, such as a lab node's 127.0.0.1:6443.
func (c *Cluster) WriteKubeconfig(path, server, user string) error {
	if server == "" {
		server = c.URL
	}
	token := c.Token
	if user == "" {
		user = "admin"
	}
	if user != "admin" {
		cred, ok := c.Users[user]
		if !ok {
			return fmt.Errorf("kubeconfig for %q: no such user (add it to Options.Users)", user)
		}
		token = cred.Token
	}
	const name = "hostroute"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: c.caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: user}
	cfg.CurrentContext = name
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing kubeconfig for %s: %w", user, err)
	}
	return nil
}

// startComponents starts kube-controller-manager and kube-scheduler as Options
// ask, each waited for on its /healthz. They need a ready apiserver and their
// kubeconfigs, so they come after both.
func (c *Cluster) startComponents(ctx context.Context, o Options, sink io.Writer) error {
	// Neither component gets --authentication-kubeconfig or
	// --authorization-kubeconfig: their own endpoints then serve only the
	// always-allowed /healthz, /readyz and /livez, which is all that is asked of
	// them, and they do not poll for the front-proxy CA this apiserver never has.
	if len(o.Controllers) > 0 {
		kc := c.Users[ControllerManagerUser].Kubeconfig
		err := c.startComponent(ctx, o, sink, controllerManagerName, 10257, func(port int) []string {
			return []string{
				"--kubeconfig", kc,
				"--bind-address", o.Address,
				"--secure-port", strconv.Itoa(port),
				"--cert-dir", filepath.Join(c.Dir, "kcm-certs"),
				"--controllers", strings.Join(o.Controllers, ","),
				// The CA every pod's projected token volume gets as ca.crt.
				"--root-ca-file", c.CAFile,
				"--service-account-private-key-file", c.saKeyFile,
				"--use-service-account-credentials=false",
				"--leader-elect=false",
				// Defaults are tuned for thousands of objects; a lab wants
				// reactions within a second.
				"--concurrent-daemonset-syncs", "2",
				"--v", "1",
			}
		})
		if err != nil {
			return err
		}
	}
	if o.Scheduler {
		kc := c.Users[SchedulerUser].Kubeconfig
		err := c.startComponent(ctx, o, sink, schedulerName, 10259, func(port int) []string {
			return []string{
				"--kubeconfig", kc,
				"--bind-address", o.Address,
				"--secure-port", strconv.Itoa(port),
				"--cert-dir", filepath.Join(c.Dir, "scheduler-certs"),
				"--leader-elect=false",
				"--v", "1",
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// startComponent runs one component and waits for its /healthz. On loopback
// the port is picked free; a bind race costs one retry with a new port, as for
// the apiserver. In a network namespace the well-known port is used.
func (c *Cluster) startComponent(ctx context.Context, o Options, sink io.Writer, name string, nsPort int, args func(port int) []string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	bin := filepath.Join(o.ToolsDir, name)
	for attempt := 1; ; attempt++ {
		port := nsPort
		if o.NetNS == "" {
			ports, err := freePorts(o.Address, 1)
			if err != nil {
				return err
			}
			port = ports[0]
		}
		p, err := c.spawn(o.NetNS, sink, name, bin, args(port)...)
		if err != nil {
			return err
		}
		url := "https://" + net.JoinHostPort(o.Address, strconv.Itoa(port)) + "/healthz"
		err = waitHTTP(ctx, p, url, "", c.procs)
		if err == nil {
			return nil
		}
		_ = p.Stop(0)
		c.procs = c.procs[:len(c.procs)-1]
		if attempt >= 2 || o.NetNS != "" || !errors.Is(err, errAddrInUse) {
			return err
		}
	}
}

// componentBinaries are the binaries Options o needs besides etcd and
// kube-apiserver.
func (o Options) componentBinaries() []string {
	var bins []string
	if len(o.Controllers) > 0 {
		bins = append(bins, controllerManagerName)
	}
	if o.Scheduler {
		bins = append(bins, schedulerName)
	}
	return bins
}
