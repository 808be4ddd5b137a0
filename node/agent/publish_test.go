package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/node/ipam"
)

// fakeBlockAPI serves one IPAMBlock: every status PUT whose resourceVersion is not the
// current one is a conflict (as the API server does), GET returns cur.
type fakeBlockAPI struct {
	mu   sync.Mutex
	cur  v1alpha1.IPAMBlock
	puts []v1alpha1.IPAMBlock // accepted status writes
}

func (f *fakeBlockAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	base := "/apis/hostroute.io/v1alpha1/ipamblocks/" + f.cur.Name
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == base:
		_ = json.NewEncoder(w).Encode(&f.cur)
	case r.Method == http.MethodPut && r.URL.Path == base+"/status":
		body, _ := io.ReadAll(r.Body)
		var b v1alpha1.IPAMBlock
		if err := json.Unmarshal(body, &b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if b.ResourceVersion != f.cur.ResourceVersion {
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(&metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
				Status: metav1.StatusFailure, Reason: metav1.StatusReasonConflict, Code: http.StatusConflict,
				Message: "the object has been modified"})
			return
		}
		f.puts = append(f.puts, b)
		f.cur.Status = b.Status
		_ = json.NewEncoder(w).Encode(&f.cur)
	default:
		http.NotFound(w, r)
	}
}

func block(uid, node, rv string) v1alpha1.IPAMBlock {
	return v1alpha1.IPAMBlock{
		TypeMeta:   metav1.TypeMeta{APIVersion: "hostroute.io/v1alpha1", Kind: "IPAMBlock"},
		ObjectMeta: metav1.ObjectMeta{Name: "b-10-0-0-0-30", UID: types.UID(uid), ResourceVersion: rv},
		Spec:       v1alpha1.IPAMBlockSpec{CIDR: "10.0.0.0/30", Node: node},
	}
}

// TestPublishAfterConflictChecksIdentity: after a conflict the publisher re-reads the
// block and writes on top only if it is still the same object (UID) for the same node;
// a re-created block or one now assigned elsewhere is left alone.
func TestPublishAfterConflictChecksIdentity(t *testing.T) {
	cached := block("uid-1", "node-a", "1")
	for _, tc := range []struct {
		name      string
		cur       v1alpha1.IPAMBlock
		wantWrite bool
	}{
		{"same block, newer version", block("uid-1", "node-a", "2"), true},
		{"re-created block", block("uid-2", "node-a", "5"), false},
		{"assigned to another node", block("uid-1", "node-b", "6"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := &fakeBlockAPI{cur: tc.cur}
			srv := httptest.NewServer(api)
			defer srv.Close()
			hr, err := client.New(&rest.Config{Host: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			alloc, err := ipam.New(&ipam.MemStore{})
			if err != nil {
				t.Fatal(err)
			}
			alloc.SetBlocks([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/30")})
			if _, err := alloc.Allocate(ipam.Owner{ContainerID: "c1", IfName: "eth0"}); err != nil {
				t.Fatal(err)
			}
			store := cache.NewStore(cache.MetaNamespaceKeyFunc)
			c := cached
			if err := store.Add(&c); err != nil {
				t.Fatal(err)
			}
			p := newPublisher(slog.New(slog.DiscardHandler), hr, alloc, store, time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := p.flush(ctx); err != nil {
				t.Fatalf("flush: %v", err)
			}
			api.mu.Lock()
			defer api.mu.Unlock()
			if got := len(api.puts) > 0; got != tc.wantWrite {
				t.Fatalf("status written: %v, want %v (puts %+v)", got, tc.wantWrite, api.puts)
			}
			if tc.wantWrite && api.puts[0].Status.InUse != 1 {
				t.Fatalf("written status inUse %d, want 1", api.puts[0].Status.InUse)
			}
		})
	}
}
