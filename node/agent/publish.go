package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/cache"

	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/node/ipam"
)

// publisher copies the allocator's state into IPAMBlock.status. It is batched: many ADDs
// in a burst become one status write per block per interval, so pod start-up never waits
// on the API server. An urgent trigger (the node ran out of addresses) publishes at once.
type publisher struct {
	log      *slog.Logger
	hr       *client.Client
	alloc    *ipam.Allocator
	blocks   cache.Store
	interval time.Duration

	mu     sync.Mutex
	urgent bool
	signal chan struct{}
	last   time.Time
}

func newPublisher(log *slog.Logger, hr *client.Client, alloc *ipam.Allocator, blocks cache.Store, interval time.Duration) *publisher {
	return &publisher{log: log, hr: hr, alloc: alloc, blocks: blocks, interval: interval, signal: make(chan struct{}, 1)}
}

func (p *publisher) trigger(urgent bool) {
	p.mu.Lock()
	p.urgent = p.urgent || urgent
	p.mu.Unlock()
	select {
	case p.signal <- struct{}{}:
	default:
	}
}

func (p *publisher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.signal:
		}
		p.mu.Lock()
		urgent := p.urgent
		wait := p.interval - time.Since(p.last)
		p.mu.Unlock()
		if !urgent && wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			case <-p.signal: // possibly urgent now; re-read below
			}
		}
		p.mu.Lock()
		p.urgent = false
		p.last = time.Now()
		p.mu.Unlock()
		if err := p.flush(ctx); err != nil {
			p.log.Warn("publishing allocations failed; retrying", "err", err)
			time.AfterFunc(p.interval, func() { p.trigger(false) })
		}
	}
}

// flush writes every block whose published allocations differ from the allocator's.
func (p *publisher) flush(ctx context.Context) error {
	snap, draining := p.alloc.SnapshotDraining()
	var errs []error
	for _, o := range p.blocks.List() {
		b := o.(*v1alpha1.IPAMBlock)
		pfx, err := netip.ParsePrefix(b.Spec.CIDR)
		if err != nil {
			continue
		}
		want := statusFor(pfx, snap[pfx])
		// Drained answers the controller's draining mark once the allocator has closed the
		// block and holds nothing in it: from then on nothing can be allocated there.
		want.Drained = b.Spec.Draining && draining[pfx] && len(snap[pfx]) == 0
		if equality.Semantic.DeepEqual(b.Status, want) {
			continue
		}
		upd := b.DeepCopy()
		upd.Status = want
		_, err = p.hr.IPAMBlocks.UpdateStatus(ctx, upd)
		if apierrors.IsConflict(err) {
			// Our cache lags our own last write: write on top of the current version.
			// Only this agent writes the status, so nothing is lost — but only while the
			// name still means the block we computed the status for. The block may have
			// been released and re-created (new UID) or handed to another node since the
			// cache saw it, and our allocations written there would make the controller
			// and the new owner believe addresses are in use that are not, or hide the
			// owner's own. b comes from an informer selecting spec.node == this node, so
			// b.Spec.Node is this node.
			if cur, gerr := p.hr.IPAMBlocks.Get(ctx, b.Name); gerr == nil {
				if why := notSameBlock(b, cur); why != "" {
					p.log.Info("not publishing allocations: the block is no longer the one this node has",
						"block", b.Name, "cidr", b.Spec.CIDR, "reason", why)
					continue
				}
				cur.Status = want
				_, err = p.hr.IPAMBlocks.UpdateStatus(ctx, cur)
			}
		}
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("publish %s: %w", b.Spec.CIDR, err))
			continue
		}
		p.log.Debug("published allocations", "block", b.Spec.CIDR, "inUse", want.InUse)
	}
	return errors.Join(errs...)
}

// notSameBlock says why cur (fresh from the API) is not the object cached was read
// from, or "" if it is: the same UID, the same node and the same CIDR.
func notSameBlock(cached, cur *v1alpha1.IPAMBlock) string {
	switch {
	case cur.UID != cached.UID:
		return fmt.Sprintf("re-created (uid %s, was %s)", cur.UID, cached.UID)
	case cur.Spec.Node != cached.Spec.Node:
		return fmt.Sprintf("now assigned to node %q", cur.Spec.Node)
	case cur.Spec.CIDR != cached.Spec.CIDR:
		return fmt.Sprintf("now has cidr %s", cur.Spec.CIDR)
	}
	return ""
}

func statusFor(block netip.Prefix, allocs []ipam.Allocation) v1alpha1.IPAMBlockStatus {
	st := v1alpha1.IPAMBlockStatus{InUse: int32(len(allocs)), Capacity: v1alpha1.BlockCapacity(block)}
	for _, a := range allocs {
		st.Allocations = append(st.Allocations, v1alpha1.Allocation{
			Address: a.Addr.String(), PodUID: a.Owner.PodUID, Namespace: a.Owner.Namespace,
			Pod: a.Owner.Pod, ContainerID: a.Owner.ContainerID, Interface: a.Owner.IfName,
		})
	}
	return st
}
