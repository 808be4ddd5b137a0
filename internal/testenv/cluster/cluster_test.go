package cluster

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
)

// TestControlPlane checks the whole life of a cluster: the CRDs are served,
// their CEL validation runs (which needs a real apiserver, not a fake
// client), and Stop leaves no process or directory behind.
func TestControlPlane(t *testing.T) {
	c := StartForTest(t, Options{})
	ctx := t.Context()

	// Start applied the CRDs already; applying again exercises the update path.
	if err := ApplyCRDs(ctx, c.RESTConfig(), mustDefaultCRDDir(t)); err != nil {
		t.Fatalf("re-applying CRDs: %v", err)
	}

	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	crds, err := dyn.Resource(crdGVR()).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing CRDs: %v", err)
	}
	var hostroute int
	for _, crd := range crds.Items {
		if strings.HasSuffix(crd.GetName(), ".hostroute.io") {
			hostroute++
		}
	}
	if hostroute != 6 {
		t.Errorf("got %d hostroute.io CRDs, want 6", hostroute)
	}

	ippools := schema.GroupVersionResource{Group: "hostroute.io", Version: "v1alpha1", Resource: "ippools"}
	pools := dyn.Resource(ippools)
	list, err := pools.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing IPPools: %v", err)
	}
	if len(list.Items) != 0 {
		t.Errorf("got %d IPPools in a new cluster, want none", len(list.Items))
	}

	bad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "hostroute.io/v1alpha1",
		"kind":       "IPPool",
		"metadata":   map[string]any{"name": "bad"},
		"spec":       map[string]any{"cidr": "10.0.0.300/16"},
	}}
	_, err = pools.Create(ctx, bad, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "cidr must be") {
		t.Errorf("creating IPPool with cidr 10.0.0.300/16: got error %v, want Invalid mentioning %q", err, "cidr must be")
	}

	// The kubeconfig must work on its own, for kubectl and --kubeconfig users.
	kc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatalf("loading kubeconfig: %v", err)
	}
	kdyn, err := dynamic.NewForConfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kdyn.Resource(ippools).List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("listing IPPools through the kubeconfig: %v", err)
	}

	pids := make(map[string]int)
	for _, p := range c.procs {
		pids[p.Name] = p.PID()
	}
	if len(pids) != 2 {
		t.Fatalf("got processes %v, want etcd and kube-apiserver", pids)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (PID %d) still exists after Stop (kill -0: %v)", name, pid, err)
		}
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster dir %s still exists after Stop (stat: %v)", c.Dir, err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func mustDefaultCRDDir(t *testing.T) string {
	t.Helper()
	dir, err := defaultCRDDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
