package routes

import (
	"net/netip"
	"strconv"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/hostroute/hostroute/internal/testenv/netns"
)

func r(dst string, hops ...string) Route {
	rt := Route{Dst: netip.MustParsePrefix(dst)}
	if len(hops) == 0 {
		rt.Blackhole = true
	}
	for _, h := range hops {
		rt.NextHops = append(rt.NextHops, netip.MustParseAddr(h))
	}
	return rt
}

func TestCompute(t *testing.T) {
	for _, tc := range []struct {
		name            string
		desired, kernel []Route
		replace, delete []string
	}{
		{"nothing", nil, nil, nil, nil},
		{"add", []Route{r("10.0.0.0/26")}, nil, []string{"blackhole 10.0.0.0/26"}, nil},
		{"keep", []Route{r("10.0.0.0/26")}, []Route{r("10.0.0.0/26")}, nil, nil},
		{"stale", nil, []Route{r("10.0.0.0/26")}, nil, []string{"blackhole 10.0.0.0/26"}},
		{"changed next hop", []Route{r("10.0.1.0/26", "192.0.2.2")}, []Route{r("10.0.1.0/26", "192.0.2.3")},
			[]string{"10.0.1.0/26 via 192.0.2.2"}, nil},
		{"ecmp order irrelevant", []Route{r("10.0.1.0/26", "192.0.2.3", "192.0.2.2")}, []Route{r("10.0.1.0/26", "192.0.2.2", "192.0.2.3")}, nil, nil},
		{"blackhole to unicast", []Route{r("10.0.1.0/26", "192.0.2.2")}, []Route{r("10.0.1.0/26")},
			[]string{"10.0.1.0/26 via 192.0.2.2"}, nil},
		{"duplicate in kernel", []Route{r("10.0.0.0/26")}, []Route{r("10.0.0.0/26"), r("10.0.0.0/26")}, nil, []string{"blackhole 10.0.0.0/26"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Compute(tc.desired, tc.kernel)
			check := func(what string, got []Route, want []string) {
				if len(got) != len(want) {
					t.Fatalf("%s = %v, want %v", what, got, want)
				}
				for i := range got {
					if got[i].String() != want[i] {
						t.Fatalf("%s = %v, want %v", what, got, want)
					}
				}
			}
			check("replace", d.Replace, tc.replace)
			check("delete", d.Delete, tc.delete)
		})
	}
}

// TestReconcileRealKernel runs the reconciler against a kernel in a namespace of its own:
// installs blackholes and an ECMP route, leaves a foreign route alone, removes a stale
// route of its own, and does nothing on the second pass.
func TestReconcileRealKernel(t *testing.T) {
	k, ns := kernelNS(t,
		[]string{"ip", "route", "add", "10.9.0.0/24", "via", "192.0.2.9"},                                  // someone else's
		[]string{"ip", "route", "add", "10.8.0.0/24", "via", "192.0.2.8", "proto", strconv.Itoa(Protocol)}, // ours, stale
	)
	h := k.H
	desired := []Route{r("10.0.0.0/26"), r("10.0.1.0/26", "192.0.2.2", "192.0.2.3"), r("10.0.2.0/26", "192.0.2.2")}
	d, err := Reconcile(k, desired)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Replace) != 3 || len(d.Delete) != 1 || d.Delete[0].Dst.String() != "10.8.0.0/24" {
		t.Fatalf("first pass = %+v", d)
	}
	d, err = Reconcile(k, desired)
	if err != nil || !d.Empty() {
		t.Fatalf("second pass changed %+v (err %v)", d, err)
	}
	out, _ := netns.Output(ns, "ip", "route", "show")
	t.Logf("kernel after reconcile:\n%s", out)
	all, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	foreign := false
	for _, rt := range all {
		if rt.Dst != nil && rt.Dst.String() == "10.9.0.0/24" {
			foreign = true
		}
	}
	if !foreign {
		t.Fatal("the reconciler removed a route it does not own")
	}
	if _, err := Reconcile(k, nil); err != nil {
		t.Fatal(err)
	}
	if left, _ := k.List(); len(left) != 0 {
		t.Fatalf("routes left after reconciling to nothing: %v", left)
	}
}
