package controller_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"

	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
)

// applyRBAC creates the objects of manifests/controller/rbac.yaml.
func (e *env) applyRBAC() {
	e.t.Helper()
	_, file, _, _ := runtime.Caller(0)
	f, err := os.Open(filepath.Join(filepath.Dir(file), "..", "manifests", "controller", "rbac.yaml"))
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	dec := serializer.NewCodecFactory(client.NewScheme()).UniversalDeserializer()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			e.t.Fatal(err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			e.t.Fatalf("decode rbac.yaml: %v", err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			_, err = e.kube.CoreV1().ServiceAccounts(o.Namespace).Create(e.ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = e.kube.RbacV1().ClusterRoles().Create(e.ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = e.kube.RbacV1().ClusterRoleBindings().Create(e.ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = e.kube.RbacV1().Roles(o.Namespace).Create(e.ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = e.kube.RbacV1().RoleBindings(o.Namespace).Create(e.ctx, o, metav1.CreateOptions{})
		default:
			e.t.Fatalf("unexpected %T in rbac.yaml", obj)
		}
		if err != nil {
			e.t.Fatalf("apply %T: %v", obj, err)
		}
	}
}

// TestControllerRBAC runs the controller with the shipped ServiceAccount's permissions
// (apiserver in Node,RBAC mode), so a missing rule in the manifests fails here.
func TestControllerRBAC(t *testing.T) {
	e := newEnv(t)
	e.applyRBAC()
	tok, err := e.kube.CoreV1().ServiceAccounts("kube-system").CreateToken(e.ctx, "hostroute-controller",
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
			Namespace: "kube-system", Name: "hostroute-controller", Identity: "rbac-test",
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
	e.deleteNode("n1")
	e.eventually(10*time.Second, "block released with the ServiceAccount", func() string {
		if n := len(e.blocks()); n != 0 {
			return fmt.Sprintf("%d blocks", n)
		}
		return ""
	})
}
