package ipam

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestConcurrentAllocateOneAttachment: many Allocates for one attachment at once, each
// under the attachment lock as the agent does, all get the one address, and exactly one
// allocation exists; a Release then frees it.
func TestConcurrentAllocateOneAttachment(t *testing.T) {
	a := mustNew(t, &MemStore{}, "10.0.0.0/28")
	o := owner(1)
	const n = 20
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			unlock, err := a.LockAttachment(context.Background(), o.attachment())
			if err != nil {
				t.Error(err)
				return
			}
			defer unlock()
			ps, err := a.Allocate(o)
			if err != nil || len(ps) != 1 {
				t.Errorf("allocate %d: %v %v", i, ps, err)
				return
			}
			got[i] = ps[0].String()
		})
	}
	wg.Wait()
	for i, g := range got {
		if g != got[0] {
			t.Fatalf("allocate %d got %s, allocate 0 got %s: want one address", i, g, got[0])
		}
	}
	if c := len(a.Snapshot()[mustPrefix(t, "10.0.0.0/28")]); c != 1 {
		t.Fatalf("%d allocations, want 1", c)
	}
	rel, err := a.Release(o.attachment())
	if err != nil || len(rel) != 1 || rel[0].String()+"/32" != got[0] {
		t.Fatalf("release: %v %v, want [%s]", rel, err, got[0])
	}
}

// TestLockAttachmentOrders: a second caller for the same attachment waits for the
// first (and gives up with its context), another attachment does not wait, and the
// table forgets attachments with no call in flight.
func TestLockAttachmentOrders(t *testing.T) {
	a := mustNew(t, &MemStore{}, "10.0.0.0/30")
	at := owner(1).attachment()
	unlock, err := a.LockAttachment(context.Background(), at)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := a.LockAttachment(ctx, at); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock of a held attachment: %v, want a deadline error", err)
	}
	other, err := a.LockAttachment(context.Background(), owner(2).attachment())
	if err != nil {
		t.Fatalf("another attachment must not wait: %v", err)
	}
	other()

	acquired := make(chan func())
	go func() {
		u, err := a.LockAttachment(context.Background(), at)
		if err != nil {
			t.Error(err)
		}
		acquired <- u
	}()
	select {
	case <-acquired:
		t.Fatal("a waiter got the lock while it was held")
	case <-time.After(30 * time.Millisecond):
	}
	unlock()
	select {
	case u := <-acquired:
		u()
	case <-time.After(2 * time.Second):
		t.Fatal("the waiter did not get the lock after unlock")
	}
	a.attach.mu.Lock()
	left := len(a.attach.m)
	a.attach.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d lock entries left with no call in flight, want 0", left)
	}
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
