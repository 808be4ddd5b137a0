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

// releaseBlocks frees the blocks of a node that no longer exists. An empty block goes at
// once. A block that still lists allocations is marked with the time its node was first
// seen gone (an annotation, so a controller restart does not reset the clock) and released
// when the grace period has passed, naming every allocation it drops.
func (c *Controller) releaseBlocks(ctx context.Context, node string) (time.Duration, error) {
	var wait time.Duration
	var errs []error
	for _, b := range c.allBlocks() {
		if b.Spec.Node != node {
			continue
		}
		d, err := c.releaseBlock(ctx, b)
		if err != nil {
			errs = append(errs, err)
		}
		if d > 0 && (wait == 0 || d < wait) {
			wait = d
		}
	}
	return wait, errors.Join(errs...)
}

func (c *Controller) releaseBlock(ctx context.Context, b *v1alpha1.IPAMBlock) (time.Duration, error) {
	now := time.Now()
	if n := len(b.Status.Allocations); n > 0 {
		marked, err := time.Parse(time.RFC3339, b.Annotations[v1alpha1.AnnotationOrphanedAt])
		if err != nil {
			return c.cfg.ReleaseGrace, c.markOrphaned(ctx, b, now)
		}
		if left := c.cfg.ReleaseGrace - now.Sub(marked); left > 0 {
			return left, nil
		}
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
	msg := fmt.Sprintf("released block %s of deleted node %s", b.Spec.CIDR, b.Spec.Node)
	if n := len(b.Status.Allocations); n > 0 {
		msg += fmt.Sprintf(" after the %s grace period, dropping %d allocation(s): %s", c.cfg.ReleaseGrace, n, describeAllocations(b.Status.Allocations, 10))
	}
	c.log.Info(msg, "block", b.Spec.CIDR, "node", b.Spec.Node, "pool", b.Spec.Pool, "allocations", len(b.Status.Allocations))
	if pool, err := c.hr.IPPools.Get(ctx, b.Spec.Pool); err == nil {
		c.recorder.Event(pool, corev1.EventTypeNormal, "BlockReleased", msg)
	}
	return 0, nil
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
	c.log.Info("node is gone but its block still has allocations; releasing after the grace period",
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
