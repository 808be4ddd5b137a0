// Package client is a small typed client for the hostroute.io/v1alpha1 resources, built on
// client-go's REST client. It gives controllers and tools typed Get/List/Create/Update and
// ListWatch sources for informers without generated clientsets.
package client

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// NewScheme returns a scheme with the Kubernetes built-in types and hostroute's.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := scheme.AddToScheme(s); err != nil {
		panic(err) // static registration; cannot fail at run time
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// Client gives typed access to every hostroute.io resource.
type Client struct {
	IPPools             Resource[v1alpha1.IPPool, v1alpha1.IPPoolList, *v1alpha1.IPPool, *v1alpha1.IPPoolList]
	IPAMBlocks          Resource[v1alpha1.IPAMBlock, v1alpha1.IPAMBlockList, *v1alpha1.IPAMBlock, *v1alpha1.IPAMBlockList]
	BGPConfigurations   Resource[v1alpha1.BGPConfiguration, v1alpha1.BGPConfigurationList, *v1alpha1.BGPConfiguration, *v1alpha1.BGPConfigurationList]
	BGPPeers            Resource[v1alpha1.BGPPeer, v1alpha1.BGPPeerList, *v1alpha1.BGPPeer, *v1alpha1.BGPPeerList]
	NodeNetworkStatuses Resource[v1alpha1.NodeNetworkStatus, v1alpha1.NodeNetworkStatusList, *v1alpha1.NodeNetworkStatus, *v1alpha1.NodeNetworkStatusList]
	IPReservations      Resource[v1alpha1.IPReservation, v1alpha1.IPReservationList, *v1alpha1.IPReservation, *v1alpha1.IPReservationList]
}

// New builds a Client from a REST config.
func New(cfg *rest.Config) (*Client, error) {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &v1alpha1.SchemeGroupVersion
	c.APIPath = "/apis"
	c.NegotiatedSerializer = serializer.NewCodecFactory(NewScheme()).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("hostroute.io client: %w", err)
	}
	return &Client{
		IPPools:             Resource[v1alpha1.IPPool, v1alpha1.IPPoolList, *v1alpha1.IPPool, *v1alpha1.IPPoolList]{rc, v1alpha1.ResourceIPPools},
		IPAMBlocks:          Resource[v1alpha1.IPAMBlock, v1alpha1.IPAMBlockList, *v1alpha1.IPAMBlock, *v1alpha1.IPAMBlockList]{rc, v1alpha1.ResourceIPAMBlocks},
		BGPConfigurations:   Resource[v1alpha1.BGPConfiguration, v1alpha1.BGPConfigurationList, *v1alpha1.BGPConfiguration, *v1alpha1.BGPConfigurationList]{rc, v1alpha1.ResourceBGPConfigurations},
		BGPPeers:            Resource[v1alpha1.BGPPeer, v1alpha1.BGPPeerList, *v1alpha1.BGPPeer, *v1alpha1.BGPPeerList]{rc, v1alpha1.ResourceBGPPeers},
		NodeNetworkStatuses: Resource[v1alpha1.NodeNetworkStatus, v1alpha1.NodeNetworkStatusList, *v1alpha1.NodeNetworkStatus, *v1alpha1.NodeNetworkStatusList]{rc, v1alpha1.ResourceNodeNetworkStatuss},
		IPReservations:      Resource[v1alpha1.IPReservation, v1alpha1.IPReservationList, *v1alpha1.IPReservation, *v1alpha1.IPReservationList]{rc, v1alpha1.ResourceIPReservations},
	}, nil
}

// object is a pointer to T that is a runtime.Object (the generated deepcopy makes it one).
type object[T any] interface {
	*T
	runtime.Object
}

// Resource is the typed client of one cluster-scoped resource.
type Resource[T, L any, PT object[T], PL object[L]] struct {
	rc       rest.Interface
	resource string
}

// Get fetches one object by name.
func (r Resource[T, L, PT, PL]) Get(ctx context.Context, name string) (PT, error) {
	out := PT(new(T))
	err := r.rc.Get().Resource(r.resource).Name(name).Do(ctx).Into(out)
	return out, err
}

// List lists the objects that match opts.
func (r Resource[T, L, PT, PL]) List(ctx context.Context, opts metav1.ListOptions) (PL, error) {
	out := PL(new(L))
	err := r.rc.Get().Resource(r.resource).VersionedParams(&opts, metav1.ParameterCodec).Do(ctx).Into(out)
	return out, err
}

// Watch watches the objects that match opts.
func (r Resource[T, L, PT, PL]) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return r.rc.Get().Resource(r.resource).VersionedParams(&opts, metav1.ParameterCodec).Watch(ctx)
}

// Create creates obj and returns the stored object.
func (r Resource[T, L, PT, PL]) Create(ctx context.Context, obj PT) (PT, error) {
	out := PT(new(T))
	err := r.rc.Post().Resource(r.resource).Body(obj).Do(ctx).Into(out)
	return out, err
}

// Update replaces obj (optimistic concurrency on its resourceVersion).
func (r Resource[T, L, PT, PL]) Update(ctx context.Context, obj PT) (PT, error) {
	out := PT(new(T))
	name, err := nameOf(obj)
	if err != nil {
		return nil, err
	}
	err = r.rc.Put().Resource(r.resource).Name(name).Body(obj).Do(ctx).Into(out)
	return out, err
}

// UpdateStatus replaces obj's status subresource.
func (r Resource[T, L, PT, PL]) UpdateStatus(ctx context.Context, obj PT) (PT, error) {
	out := PT(new(T))
	name, err := nameOf(obj)
	if err != nil {
		return nil, err
	}
	err = r.rc.Put().Resource(r.resource).Name(name).SubResource("status").Body(obj).Do(ctx).Into(out)
	return out, err
}

// Delete deletes one object; opts may carry preconditions.
func (r Resource[T, L, PT, PL]) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	return r.rc.Delete().Resource(r.resource).Name(name).Body(&opts).Do(ctx).Error()
}

// ListWatch is an informer source for the objects that match fieldSelector ("" for all).
func (r Resource[T, L, PT, PL]) ListWatch(fieldSelector string) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = fieldSelector
			return r.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = fieldSelector
			return r.Watch(ctx, opts)
		},
	}
}

// Informer returns a shared informer for the resource; resync 0 disables resyncs.
func (r Resource[T, L, PT, PL]) Informer(fieldSelector string, resync time.Duration) cache.SharedIndexInformer {
	return cache.NewSharedIndexInformer(r.ListWatch(fieldSelector), PT(new(T)), resync, cache.Indexers{})
}

func nameOf(obj runtime.Object) (string, error) {
	m, err := metaAccessor(obj)
	if err != nil {
		return "", err
	}
	if m.GetName() == "" {
		return "", fmt.Errorf("object has no name")
	}
	return m.GetName(), nil
}

func metaAccessor(obj runtime.Object) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return m, nil
}
