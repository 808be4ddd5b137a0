package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// Block hygiene: a live node's extra block that stays empty for the empty-block grace goes
// back to its pool, so a node that once ran many pods does not keep its blocks forever.
// Taking a block back from a running agent is a handshake, because the agent hands out
// addresses without asking anyone:
//
//  1. the controller marks the block empty (annotation, the time it first saw it so);
//  2. after the grace it sets spec.draining: the agent stops handing out addresses from
//     it and, if it holds none there, answers status.drained;
//  3. the controller deletes the block, on the version that carries that answer (a
//     resourceVersion precondition), so an allocation published meanwhile stops it.
//
// A block in use again is unmarked and un-drained. The node always keeps one block of
// each family, one of the pools serving every namespace, and one of each pool its pods
// need.

// hygieneStep is what to do to one block now.
type hygieneStep int

const (
	stepNone        hygieneStep = iota
	stepMarkEmpty               // set the empty-since annotation to now
	stepUnmark                  // remove the empty-since annotation (and draining)
	stepDrain                   // set spec.draining
	stepRelease                 // delete the block (drained)
	stepWaitDrained             // draining, the agent has not confirmed yet
)

// hygieneAction is a step for one block.
type hygieneAction struct {
	block *v1alpha1.IPAMBlock
	step  hygieneStep
}

// planHygiene decides the steps for a live node's blocks and when to look again (0: no
// timer needed). grace <= 0 turns hygiene off (only unmarking is still done). A block goes
// back only if another block that stays can take its place: one of the family, and, if it
// is of a pool serving every namespace or of a needed pool, one of those below the
// watermark (else planNode would assign a new block at once).
func planHygiene(node *corev1.Node, pools []*poolInfo, blocks []*v1alpha1.IPAMBlock, needs nodeNeeds, watermark float64, now time.Time, grace time.Duration) ([]hygieneAction, time.Duration) {
	var mine []*v1alpha1.IPAMBlock
	for _, b := range blocks {
		if b.Spec.Node == node.Name {
			mine = append(mine, b)
		}
	}
	// Keep the lowest blocks: consider releasing from the highest address down.
	sort.Slice(mine, func(i, j int) bool {
		pi, _ := netip.ParsePrefix(mine[i].Spec.CIDR)
		pj, _ := netip.ParsePrefix(mine[j].Spec.CIDR)
		return pj.Addr().Less(pi.Addr())
	})
	general := map[string]bool{}
	for _, fam := range []int{4, 6} {
		for _, c := range generalPools(node, pools, fam) {
			general[c.pool.Name] = true
		}
	}
	needed := map[string]bool{}
	for _, n := range needs.pools {
		needed[n] = true
	}
	kept := map[*v1alpha1.IPAMBlock]bool{}
	for _, b := range mine {
		kept[b] = !b.Spec.Draining
	}
	// others reports whether another kept block of the family matches.
	others := func(self *v1alpha1.IPAMBlock, match func(*v1alpha1.IPAMBlock) bool) bool {
		pfx, _ := netip.ParsePrefix(self.Spec.CIDR)
		for _, o := range mine {
			if o == self || !kept[o] {
				continue
			}
			op, err := netip.ParsePrefix(o.Spec.CIDR)
			if err != nil || family(op) != family(pfx) {
				continue
			}
			if match(o) {
				return true
			}
		}
		return false
	}
	var out []hygieneAction
	var wait time.Duration
	later := func(d time.Duration) {
		if d > 0 && (wait == 0 || d < wait) {
			wait = d
		}
	}
	for _, b := range mine {
		if _, err := netip.ParsePrefix(b.Spec.CIDR); err != nil {
			continue
		}
		empty := len(b.Status.Allocations) == 0
		_, marked := b.Annotations[v1alpha1.AnnotationEmptySince]
		releasable := empty && grace > 0 && !holdsAny(b, needs.addrs) &&
			others(b, func(*v1alpha1.IPAMBlock) bool { return true }) &&
			(!general[b.Spec.Pool] || others(b, func(o *v1alpha1.IPAMBlock) bool {
				return general[o.Spec.Pool] && !atWatermark(o, watermark, needs.reserved)
			})) &&
			(!needed[b.Spec.Pool] || others(b, func(o *v1alpha1.IPAMBlock) bool {
				return o.Spec.Pool == b.Spec.Pool && !atWatermark(o, watermark, needs.reserved)
			}))
		if !releasable {
			if marked || b.Spec.Draining {
				out = append(out, hygieneAction{b, stepUnmark})
				kept[b] = true
			}
			continue
		}
		kept[b] = false // counted as gone for the blocks after it
		since, err := time.Parse(time.RFC3339Nano, b.Annotations[v1alpha1.AnnotationEmptySince])
		switch {
		case !marked || err != nil:
			out = append(out, hygieneAction{b, stepMarkEmpty})
			later(grace)
		case now.Sub(since) < grace:
			later(grace - now.Sub(since))
		case !b.Spec.Draining:
			out = append(out, hygieneAction{b, stepDrain})
			later(time.Second)
		case b.Status.Drained:
			out = append(out, hygieneAction{b, stepRelease})
		default:
			out = append(out, hygieneAction{b, stepWaitDrained})
			later(5 * time.Second)
		}
	}
	return out, wait
}

// applyHygiene carries the steps out.
func (c *Controller) applyHygiene(ctx context.Context, node *corev1.Node, actions []hygieneAction) error {
	var errs []error
	for _, a := range actions {
		b := a.block
		var err error
		switch a.step {
		case stepMarkEmpty:
			upd := b.DeepCopy()
			if upd.Annotations == nil {
				upd.Annotations = map[string]string{}
			}
			upd.Annotations[v1alpha1.AnnotationEmptySince] = time.Now().UTC().Format(time.RFC3339Nano)
			_, err = c.hr.IPAMBlocks.Update(ctx, upd)
		case stepUnmark:
			upd := b.DeepCopy()
			delete(upd.Annotations, v1alpha1.AnnotationEmptySince)
			upd.Spec.Draining = false
			_, err = c.hr.IPAMBlocks.Update(ctx, upd)
			if err == nil && b.Spec.Draining {
				c.log.Info("block in use or needed again; no longer draining", "node", node.Name, "block", b.Spec.CIDR)
			}
		case stepDrain:
			upd := b.DeepCopy()
			upd.Spec.Draining = true
			_, err = c.hr.IPAMBlocks.Update(ctx, upd)
			if err == nil {
				c.log.Info("draining an extra block that stayed empty", "node", node.Name, "block", b.Spec.CIDR, "grace", c.cfg.EmptyBlockGrace)
			}
		case stepRelease:
			err = c.hr.IPAMBlocks.Delete(ctx, b.Name, metav1.DeleteOptions{
				Preconditions: &metav1.Preconditions{UID: &b.UID, ResourceVersion: &b.ResourceVersion},
			})
			if apierrors.IsNotFound(err) {
				err = nil
				break
			}
			if err == nil {
				msg := fmt.Sprintf("returned block %s to IPPool %s: empty for %s and drained by the node's agent", b.Spec.CIDR, b.Spec.Pool, c.cfg.EmptyBlockGrace)
				c.log.Info(msg, "node", node.Name)
				c.metrics.returned.Inc()
				c.recorder.Event(node, corev1.EventTypeNormal, "BlockReturned", msg)
			}
		}
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("block %s of node %s: %w", b.Spec.CIDR, node.Name, err))
		}
	}
	return errors.Join(errs...)
}

// holdsAny reports whether the block holds one of the addresses (fixed addresses a pod of
// its node waits for).
func holdsAny(b *v1alpha1.IPAMBlock, addrs []string) bool {
	pfx, err := netip.ParsePrefix(b.Spec.CIDR)
	if err != nil {
		return false
	}
	for _, s := range addrs {
		if a, err := netip.ParseAddr(s); err == nil && pfx.Contains(a) {
			return true
		}
	}
	return false
}
