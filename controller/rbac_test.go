package controller_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/internal/manifest"
)

// applyRBAC applies the shipped namespace and manifests/controller/rbac.yaml.
func (e *env) applyRBAC() {
	e.t.Helper()
	a, err := manifest.NewApplier(e.cl.RESTConfig())
	if err != nil {
		e.t.Fatal(err)
	}
	if err := a.ApplyFiles(e.ctx, "namespace.yaml", "controller/rbac.yaml"); err != nil {
		e.t.Fatal(err)
	}
}

// TestControllerRBAC runs the controller with the shipped ServiceAccount's permissions
// (apiserver in Node,RBAC mode), so a missing rule in the manifests fails here.
func TestControllerRBAC(t *testing.T) {
	e := newEnv(t)
	e.applyRBAC()
	tok, err := e.kube.CoreV1().ServiceAccounts("hostroute-system").CreateToken(e.ctx, "hostroute-controller",
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.cl.RESTConfig()
	cfg.BearerToken = tok.Status.Token
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hr, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.mustPool("p", "10.90.0.0/24", 26)
	e.createNode("n1")

	ctx, cancel := context.WithCancel(e.ctx)
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	done := make(chan error, 1)
	go func() {
		done <- controller.RunAsLeader(ctx, log, kube, controller.LeaderConfig{
			Namespace: "hostroute-system", Name: "hostroute-controller", Identity: "rbac-test",
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond,
		}, controller.New(log, kube, hr, controller.Config{}).Run)
	}()
	t.Cleanup(func() { cancel(); <-done })

	e.eventually(20*time.Second, "block assigned, pool status and Event written with the ServiceAccount", func() string {
		if len(e.blocksOf("n1")) != 1 {
			return "no block for n1"
		}
		if c := e.condition("p", v1alpha1.PoolReady); c == nil {
			return "no pool status"
		}
		if len(e.events("Node", "n1", "BlockAssigned")) == 0 {
			return "no BlockAssigned event"
		}
		return ""
	})
	// The agent reports the block empty: the controller reads that (nodenetworkstatuses
	// get) with its ServiceAccount and releases at once.
	if err := e.reportStatus("n1", e.blocksOf("n1")[0].Spec.CIDR, 0); err != nil {
		t.Fatal(err)
	}
	e.deleteNode("n1")
	e.eventually(10*time.Second, "block released with the ServiceAccount", func() string {
		if n := len(e.blocks()); n != 0 {
			return fmt.Sprintf("%d blocks", n)
		}
		return ""
	})
}

// controllerKubeconfig applies the shipped RBAC and writes a kubeconfig that holds a
// token of the controller's ServiceAccount, for controller processes.
func (e *env) controllerKubeconfig() string {
	e.t.Helper()
	e.applyRBAC()
	tok, err := e.kube.CoreV1().ServiceAccounts("hostroute-system").CreateToken(e.ctx, "hostroute-controller",
		&authv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: e.cl.URL, InsecureSkipTLSVerify: true}
	kc.AuthInfos["controller"] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "controller"}
	kc.CurrentContext = "test"
	path := filepath.Join(e.t.TempDir(), "controller.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		e.t.Fatal(err)
	}
	return path
}
