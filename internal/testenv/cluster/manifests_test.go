package cluster

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hostroute/hostroute/internal/manifest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// TestManifestsApply creates every resource `kubectl apply -k manifests/` would, on a
// real apiserver, so a typo in a probe, a bad RBAC verb or a pool the CRD schema refuses
// fails here rather than on a user's cluster.
func TestManifestsApply(t *testing.T) {
	c := StartForTest(t, Options{})
	cfg := c.RESTConfig()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	root := filepath.Dir(mustDefaultCRDDir(t))
	var kust struct {
		Resources []string `json:"resources"`
	}
	b, err := os.ReadFile(filepath.Join(root, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &kust); err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	created := 0
	for _, res := range kust.Resources {
		data, err := os.ReadFile(filepath.Join(root, res))
		if err != nil {
			t.Fatalf("kustomization lists %s: %v", res, err)
		}
		objs, err := manifest.Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", res, err)
		}
		for _, u := range objs {
			gvk := u.GroupVersionKind()
			if gvk.Kind == "CustomResourceDefinition" {
				continue // applied by StartForTest
			}
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Fatalf("%s: %s: %v", res, gvk, err)
			}
			ri := dyn.Resource(m.Resource)
			var rerr error
			if ns := u.GetNamespace(); ns != "" {
				_, rerr = ri.Namespace(ns).Create(ctx, u, metav1.CreateOptions{})
			} else {
				_, rerr = ri.Create(ctx, u, metav1.CreateOptions{})
			}
			if rerr != nil {
				t.Errorf("%s: creating %s %s: %v", res, gvk.Kind, u.GetName(), rerr)
				continue
			}
			created++
		}
	}
	if created < 10 {
		t.Fatalf("created only %d objects from the manifests", created)
	}
	t.Logf("created %d objects from manifests/kustomization.yaml", created)
}
