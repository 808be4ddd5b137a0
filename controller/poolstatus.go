package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// syncPool writes a pool's status: effective block size, blocks assigned, and the Ready,
// Overlapping and Exhausted conditions; it emits an Event when a pool turns bad.
func (c *Controller) syncPool(ctx context.Context, name string) error {
	infos := analysePools(c.listPools())
	var pi *poolInfo
	for _, p := range infos {
		if p.pool.Name == name {
			pi = p
		}
	}
	if pi == nil {
		return nil // deleted
	}
	assigned := 0
	for _, b := range c.allBlocks() {
		if b.Spec.Pool == name {
			assigned++
		}
	}
	want := poolStatus(pi, assigned)
	old := pi.pool
	if equality.Semantic.DeepEqual(old.Status, want) {
		return nil
	}
	upd := old.DeepCopy()
	upd.Status = want
	if _, err := c.hr.IPPools.UpdateStatus(ctx, upd); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("update status of IPPool %s: %w", name, err)
	}
	for _, t := range []string{v1alpha1.PoolOverlapping, v1alpha1.PoolExhausted} {
		now := meta.FindStatusCondition(want.Conditions, t)
		if now == nil || now.Status != metav1.ConditionTrue || meta.IsStatusConditionTrue(old.Status.Conditions, t) {
			continue
		}
		c.log.Warn("IPPool "+t, "pool", name, "message", now.Message)
		c.recorder.Event(upd, corev1.EventTypeWarning, t, now.Message)
	}
	return nil
}

// poolStatus computes a pool's status from the old one (to keep transition times).
func poolStatus(pi *poolInfo, assigned int) v1alpha1.IPPoolStatus {
	st := *pi.pool.Status.DeepCopy()
	st.ObservedGeneration = pi.pool.Generation
	gen := pi.pool.Generation
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	st.Blocks = int64(assigned)
	if !pi.prefix.IsValid() {
		st.BlockSize, st.Capacity, st.BlocksSummary = 0, 0, ""
		set(v1alpha1.PoolReady, metav1.ConditionFalse, "InvalidSpec", pi.unusable)
		set(v1alpha1.PoolOverlapping, metav1.ConditionFalse, "InvalidSpec", "")
		set(v1alpha1.PoolExhausted, metav1.ConditionFalse, "InvalidSpec", "")
		return st
	}
	st.BlockSize = int32(pi.blockSize)
	st.Capacity = pi.capacity()
	st.BlocksSummary = blockCount(assigned, pi)
	if pi.overlaps != "" {
		set(v1alpha1.PoolOverlapping, metav1.ConditionTrue, "OverlapsPool", pi.unusable)
	} else {
		set(v1alpha1.PoolOverlapping, metav1.ConditionFalse, "NoOverlap", "")
	}
	exhausted := pi.blockSize-pi.prefix.Bits() <= 62 && int64(assigned) >= pi.capacity()
	if exhausted {
		set(v1alpha1.PoolExhausted, metav1.ConditionTrue, "AllBlocksAssigned",
			fmt.Sprintf("all %d /%d blocks of %s are assigned; add a pool or free blocks", pi.capacity(), pi.blockSize, pi.prefix))
	} else {
		set(v1alpha1.PoolExhausted, metav1.ConditionFalse, "BlocksFree", fmt.Sprintf("%s blocks assigned", blockCount(assigned, pi)))
	}
	switch {
	case pi.overlaps != "":
		set(v1alpha1.PoolReady, metav1.ConditionFalse, "Overlapping", pi.unusable)
	case pi.pool.Spec.Disabled:
		set(v1alpha1.PoolReady, metav1.ConditionFalse, "Disabled", pi.unusable)
	case exhausted:
		set(v1alpha1.PoolReady, metav1.ConditionFalse, "Exhausted", "no free blocks")
	default:
		set(v1alpha1.PoolReady, metav1.ConditionTrue, "Ready", "")
	}
	return st
}
