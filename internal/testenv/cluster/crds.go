package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/hostroute/hostroute/internal/manifest"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
)

// crdGVR is addressed through the dynamic client so that this package does
// not pull in k8s.io/apiextensions-apiserver just to create CRDs.
func crdGVR() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
}

// establishTimeout caps the wait for Established when ctx has no deadline; a
// CRD normally becomes established within a second.
const establishTimeout = 60 * time.Second

// ApplyCRDs creates, or updates if it exists, every CustomResourceDefinition
// in the *.yaml files of dir (several documents per file are allowed), then
// waits until each one is Established, because only then does the apiserver
// serve its resource and a test's first create would otherwise get a 404.
// Any document that is not an apiextensions.k8s.io/v1 CRD is an error rather
// than skipped, so a stray manifest in the directory is noticed.
func ApplyCRDs(ctx context.Context, cfg *rest.Config, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return fmt.Errorf("listing CRDs: %w", err)
	}
	if len(files) == 0 {
		return fmt.Errorf("no *.yaml files in %s", dir)
	}
	sort.Strings(files)
	var crds []*unstructured.Unstructured
	for _, f := range files {
		objs, err := readCRDs(f)
		if err != nil {
			return err
		}
		crds = append(crds, objs...)
	}

	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating dynamic client: %w", err)
	}
	api := client.Resource(crdGVR())
	// Every CRD is tried even after a failure, so that one run reports all
	// the broken manifests rather than the first.
	var errs []error
	for _, crd := range crds {
		if err := applyOne(ctx, api, crd); err != nil {
			errs = append(errs, fmt.Errorf("applying CRD %s: %w", crd.GetName(), err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, establishTimeout)
		defer cancel()
	}
	for _, crd := range crds {
		if err := waitEstablished(ctx, api, crd.GetName()); err != nil {
			return fmt.Errorf("waiting for CRD %s: %w", crd.GetName(), err)
		}
	}
	return nil
}

func readCRDs(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading CRDs: %w", err)
	}
	objs, err := manifest.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	for _, u := range objs {
		if gvk := u.GroupVersionKind(); gvk.Group != crdGVR().Group || gvk.Version != crdGVR().Version || gvk.Kind != "CustomResourceDefinition" {
			return nil, fmt.Errorf("%s: document %q is a %s, want an apiextensions.k8s.io/v1 CustomResourceDefinition", path, u.GetName(), gvk)
		}
		if u.GetName() == "" {
			return nil, fmt.Errorf("%s: CustomResourceDefinition without a name", path)
		}
	}
	return objs, nil
}

// applyOne creates crd, or replaces the spec of an existing one. Replacing
// (rather than server-side apply) keeps the behaviour of `kubectl replace`:
// the file is the whole truth.
func applyOne(ctx context.Context, api dynamic.NamespaceableResourceInterface, crd *unstructured.Unstructured) error {
	_, err := api.Create(ctx, crd.DeepCopy(), metav1.CreateOptions{})
	if err == nil || !apierrors.IsAlreadyExists(err) {
		return err
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := api.Get(ctx, crd.GetName(), metav1.GetOptions{})
		if err != nil {
			return err
		}
		next := crd.DeepCopy()
		next.SetResourceVersion(cur.GetResourceVersion())
		_, err = api.Update(ctx, next, metav1.UpdateOptions{})
		return err
	})
}

func waitEstablished(ctx context.Context, api dynamic.NamespaceableResourceInterface, name string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		u, err := api.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
		} else {
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			last = "no conditions yet"
			for _, c := range conds {
				m, _ := c.(map[string]any)
				typ, _ := m["type"].(string)
				status, _ := m["status"].(string)
				switch {
				case typ == "Established" && status == "True":
					return nil
				case typ == "NamesAccepted" && status == "False":
					// The names clash with another CRD; waiting will not help.
					return fmt.Errorf("names not accepted: %v", m["message"])
				case typ == "Established":
					last = fmt.Sprintf("Established=%s: %v", status, m["message"])
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last seen: %s)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}
