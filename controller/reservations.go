package controller

import (
	"context"
	"fmt"
	"net/netip"
	"sort"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// maxHolders is the most holders an IPReservation's status lists (all are counted).
const maxHolders = 100

// reservedPrefixes are the prefixes of every IPReservation (bad entries, which the schema
// refuses, are skipped).
func (c *Controller) reservedPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, o := range c.reservations.GetStore().List() {
		ps, _ := o.(*v1alpha1.IPReservation).Prefixes()
		out = append(out, ps...)
	}
	return out
}

// reservationStatus lists the allocations inside a reservation's CIDRs.
func reservationStatus(r *v1alpha1.IPReservation, blocks []*v1alpha1.IPAMBlock) v1alpha1.IPReservationStatus {
	prefixes, _ := r.Prefixes()
	st := v1alpha1.IPReservationStatus{ObservedGeneration: r.Generation}
	var holders []v1alpha1.ReservedHolder
	for _, b := range blocks {
		bp, err := netip.ParsePrefix(b.Spec.CIDR)
		if err != nil || !overlapsAny(bp, prefixes) {
			continue
		}
		for _, a := range b.Status.Allocations {
			addr, err := netip.ParseAddr(a.Address)
			if err != nil || !containsAny(addr, prefixes) {
				continue
			}
			holders = append(holders, v1alpha1.ReservedHolder{Address: a.Address, Node: b.Spec.Node, Block: b.Spec.CIDR, Namespace: a.Namespace, Pod: a.Pod})
		}
	}
	sort.Slice(holders, func(i, j int) bool {
		ai, _ := netip.ParseAddr(holders[i].Address)
		aj, _ := netip.ParseAddr(holders[j].Address)
		return ai.Less(aj)
	})
	st.HolderCount = int32(len(holders))
	if len(holders) > maxHolders {
		holders = holders[:maxHolders]
	}
	st.Holders = holders
	return st
}

func overlapsAny(p netip.Prefix, ps []netip.Prefix) bool {
	for _, q := range ps {
		if q.Overlaps(p) {
			return true
		}
	}
	return false
}

func containsAny(a netip.Addr, ps []netip.Prefix) bool {
	for _, q := range ps {
		if q.Contains(a) {
			return true
		}
	}
	return false
}

// syncReservation writes a reservation's holders when they changed.
func (c *Controller) syncReservation(ctx context.Context, name string) error {
	o, ok, err := c.reservations.GetStore().GetByKey(name)
	if err != nil || !ok {
		return err
	}
	r := o.(*v1alpha1.IPReservation)
	want := reservationStatus(r, c.allBlocks())
	if equality.Semantic.DeepEqual(r.Status, want) {
		return nil
	}
	upd := r.DeepCopy()
	upd.Status = want
	if _, err := c.hr.IPReservations.UpdateStatus(ctx, upd); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("update IPReservation %s status: %w", name, err)
	}
	if want.HolderCount > 0 {
		c.log.Info("reserved addresses still held by pods made before the reservation", "reservation", name, "holders", want.HolderCount)
	}
	return nil
}
