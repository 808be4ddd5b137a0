package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// releaseBlocks frees the blocks of a node that no longer exists, but only once its
// owner is known to be gone: a Node object can be deleted (by a user, by a cloud
// controller) while its agent still runs and serves pods from the block, and a block's
// published status can be stale. The evidence is the node's NodeNetworkStatus, which
// its agent rewrites at least once a minute (see releaseDecision).
//
// The first time a node is seen gone its blocks are marked with that time (an
// annotation, so a controller restart does not reset the clock).
func (c *Controller) releaseBlocks(ctx context.Context, node string) (time.Duration, error) {
	var mine []*v1alpha1.IPAMBlock
	for _, b := range c.allBlocks() {
		if b.Spec.Node == node {
			mine = append(mine, b)
		}
	}
	if len(mine) == 0 {
		return 0, nil
	}
	nns, err := c.hr.NodeNetworkStatuses.Get(ctx, node)
	if apierrors.IsNotFound(err) {
		nns, err = nil, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the NodeNetworkStatus of deleted node %s: %w", node, err)
	}
	var wait time.Duration
	var errs []error
	for _, b := range mine {
		d, err := c.releaseBlock(ctx, b, nns)
		if err != nil {
			errs = append(errs, err)
		}
		if d > 0 && (wait == 0 || d < wait) {
			wait = d
		}
	}
	return wait, errors.Join(errs...)
}

func (c *Controller) releaseBlock(ctx context.Context, b *v1alpha1.IPAMBlock, nns *v1alpha1.NodeNetworkStatus) (time.Duration, error) {
	now := time.Now()
	marked, _ := time.Parse(time.RFC3339, b.Annotations[v1alpha1.AnnotationOrphanedAt]) // zero when unmarked
	d := releaseDecision(b, nns, marked, now, c.cfg.ReleaseGrace)
	if !d.release {
		if marked.IsZero() {
			return d.wait, c.markOrphaned(ctx, b, now)
		}
		return d.wait, nil
	}
	if err := c.hr.IPAMBlocks.Delete(ctx, b.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &b.UID, ResourceVersion: &b.ResourceVersion},
	}); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, nil
		}
		// A conflict means the block changed (new allocations published, or reassigned):
		// the retry looks at the new version.
		return 0, fmt.Errorf("release block %s of deleted node %s: %w", b.Spec.CIDR, b.Spec.Node, err)
	}
	msg := fmt.Sprintf("released block %s of deleted node %s (%s)", b.Spec.CIDR, b.Spec.Node, d.reason)
	if n := len(b.Status.Allocations); n > 0 {
		msg += fmt.Sprintf(", dropping %d allocation(s): %s", n, describeAllocations(b.Status.Allocations, 10))
	}
	c.log.Info(msg, "block", b.Spec.CIDR, "node", b.Spec.Node, "pool", b.Spec.Pool, "allocations", len(b.Status.Allocations))
	if pool, err := c.hr.IPPools.Get(ctx, b.Spec.Pool); err == nil {
		c.recorder.Event(pool, corev1.EventTypeNormal, "BlockReleased", msg)
	}
	return 0, nil
}

// freshStatus is how recent a NodeNetworkStatus must be for its block usage to count as
// current although it was written before the node was seen gone (twice the agent's
// default status interval).
const freshStatus = 10 * time.Second

// decision is whether to release a deleted node's block now, and if not, when to look
// again.
type decision struct {
	release bool
	reason  string
	wait    time.Duration
}

// releaseDecision decides on one block of a deleted node. nns is the node's
// NodeNetworkStatus (nil if there is none); marked is when the node was first seen gone
// (zero: now). The block is released when
//   - the agent is silent: its status was last updated at least grace ago, or there is
//     no status and grace has passed since the node was first seen gone; or
//   - its status is fresh (written after the node was seen gone, or within freshStatus)
//     and shows the block empty, and the block's own status lists no allocation.
//
// Otherwise the agent may still be serving pods from the block, whatever the block's
// status says, and it is kept.
func releaseDecision(b *v1alpha1.IPAMBlock, nns *v1alpha1.NodeNetworkStatus, marked, now time.Time, grace time.Duration) decision {
	if marked.IsZero() {
		marked = now
	}
	recheck := func(left time.Duration) decision {
		return decision{wait: min(max(left, time.Second), freshStatus)}
	}
	if nns == nil || nns.Status.Updated == nil {
		if gone := now.Sub(marked); gone >= grace {
			return decision{release: true, reason: fmt.Sprintf("its agent never reported a status and the node has been gone for %s", gone.Round(time.Second))}
		}
		return recheck(grace - now.Sub(marked))
	}
	// metav1.Time goes over the wire in whole seconds: count from the end of that second,
	// so the agent is never taken for silent sooner than grace after its last write.
	// (The agent's and the controller's clocks are compared here: skew adds to or takes
	// from the grace, which is why the grace is minutes.)
	updated := nns.Status.Updated.Time.Truncate(time.Second).Add(time.Second)
	silent := now.Sub(updated)
	if silent >= grace {
		return decision{release: true, reason: fmt.Sprintf("its agent last reported %s ago, the grace is %s", silent.Round(time.Second), grace)}
	}
	fresh := !updated.Before(marked) || silent <= freshStatus
	if fresh && len(b.Status.Allocations) == 0 && reportsEmpty(nns, b.Spec.CIDR) {
		return decision{release: true, reason: "its agent reports the block empty"}
	}
	return recheck(grace - silent)
}

// reportsEmpty: the status lists the block with nothing in use (a block it does not list
// is one the agent has not seen yet, which says nothing).
func reportsEmpty(nns *v1alpha1.NodeNetworkStatus, cidr string) bool {
	for _, u := range nns.Status.Blocks {
		if u.CIDR == cidr {
			return u.InUse == 0
		}
	}
	return false
}

func (c *Controller) markOrphaned(ctx context.Context, b *v1alpha1.IPAMBlock, now time.Time) error {
	upd := b.DeepCopy()
	if upd.Annotations == nil {
		upd.Annotations = map[string]string{}
	}
	upd.Annotations[v1alpha1.AnnotationOrphanedAt] = now.UTC().Format(time.RFC3339Nano)
	if _, err := c.hr.IPAMBlocks.Update(ctx, upd); err != nil {
		return fmt.Errorf("mark block %s orphaned: %w", b.Name, err)
	}
	c.log.Info("node is gone; keeping its block until its agent reports it empty or is silent for the grace period",
		"node", b.Spec.Node, "block", b.Spec.CIDR, "allocations", len(b.Status.Allocations), "grace", c.cfg.ReleaseGrace)
	return nil
}

// clearOrphanMarks removes the orphan mark from the blocks of a node that came back.
func (c *Controller) clearOrphanMarks(ctx context.Context, node string, blocks []*v1alpha1.IPAMBlock) error {
	var errs []error
	for _, b := range blocks {
		if b.Spec.Node != node {
			continue
		}
		if _, ok := b.Annotations[v1alpha1.AnnotationOrphanedAt]; !ok {
			continue
		}
		upd := b.DeepCopy()
		delete(upd.Annotations, v1alpha1.AnnotationOrphanedAt)
		if _, err := c.hr.IPAMBlocks.Update(ctx, upd); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("unmark block %s: %w", b.Name, err))
		}
	}
	return errors.Join(errs...)
}

func describeAllocations(as []v1alpha1.Allocation, max int) string {
	var parts []string
	for i, a := range as {
		if i == max {
			parts = append(parts, fmt.Sprintf("and %d more", len(as)-max))
			break
		}
		who := a.ContainerID
		if a.Pod != "" {
			who = a.Namespace + "/" + a.Pod
		}
		parts = append(parts, fmt.Sprintf("%s (%s)", a.Address, who))
	}
	return strings.Join(parts, ", ")
}
