package ipam

import (
	"context"
	"sync"
)

// attachLocks is one lock per attachment (container ID + interface name).
//
// Why: the allocator's mutex makes each call atomic, but an Allocate that waits for a
// block spans many calls, and a Release arriving in between would be undone by the
// Allocate that succeeds after it (the address then leaks until GC). Holding the
// attachment's lock for the whole of an Allocate or Release orders them as the runtime
// sent them. Entries are dropped when their last holder or waiter leaves, so the map
// holds only attachments with a call in flight.
type attachLocks struct {
	mu sync.Mutex
	m  map[Attachment]*attachLock
}

type attachLock struct {
	sem  chan struct{} // capacity 1: a token in it means held
	refs int           // holders and waiters
}

// lock takes at's lock, or gives up when ctx ends. The returned func releases it.
func (l *attachLocks) lock(ctx context.Context, at Attachment) (func(), error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[Attachment]*attachLock{}
	}
	e := l.m[at]
	if e == nil {
		e = &attachLock{sem: make(chan struct{}, 1)}
		l.m[at] = e
	}
	e.refs++
	l.mu.Unlock()

	select {
	case e.sem <- struct{}{}:
		return func() { <-e.sem; l.leave(at, e) }, nil
	case <-ctx.Done():
		l.leave(at, e)
		return nil, ctx.Err()
	}
}

func (l *attachLocks) leave(at Attachment, e *attachLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.refs--
	if e.refs == 0 {
		delete(l.m, at)
	}
}

// LockAttachment serialises the callers for one attachment: an Allocate or Release holds
// it from the request's arrival to its answer, so a second Allocate for the attachment
// sees the first's addresses (and gets them back) and a Release racing an Allocate runs
// wholly before or after it. It returns ctx's error if ctx ends first.
func (a *Allocator) LockAttachment(ctx context.Context, at Attachment) (unlock func(), err error) {
	return a.attach.lock(ctx, at)
}
