package cni

import (
	"strconv"
	"testing"

	"github.com/hostroute/hostroute/node/routes"
)

// TestPluginRouteProtocol: the pod route carries the conflist's routeProtocol (read as a
// number), CHECK accepts it and the plugin's former 197 (a pod wired before the upgrade),
// and refuses any other number. Needs root; fails without it.
func TestPluginRouteProtocol(t *testing.T) {
	e := newKEnv(t, buildPlugin(t))
	const id, proto = "c0ffee77", 230
	conf := e.conf("1.0.0", map[string]any{"routeProtocol": proto})
	host := HostVethName(id, "eth0")
	_, run := e.add(id, conf, nil)
	want := map[string]string{"dst": "10.99.0.1", "dev": host, "protocol": strconv.Itoa(proto), "scope": scopeLink()}
	if r := e.ipJSON(e.node, "route", "show", "10.99.0.1/32"); !has(r, want) {
		t.Fatalf("host route: %v, want protocol %d", r, proto)
	}
	if r := e.ipJSON(e.node, "route", "show", "proto", strconv.Itoa(routes.CNIProtocol)); len(r) != 0 {
		t.Fatalf("routes of the default protocol %d although routeProtocol is %d: %v", routes.CNIProtocol, proto, r)
	}
	e.mustSucceed("CHECK", e.run("CHECK", id, withPrev(conf, run.stdout), nil))

	e.ip(e.node, "route", "replace", "10.99.0.1/32", "dev", host, "scope", "link", "proto", strconv.Itoa(routes.LegacyCNIProtocol))
	e.mustSucceed("CHECK of a route of the former number", e.run("CHECK", id, withPrev(conf, run.stdout), nil))

	e.ip(e.node, "route", "replace", "10.99.0.1/32", "dev", host, "scope", "link", "proto", "4")
	e.mustFail("CHECK of a route of protocol 4", e.run("CHECK", id, withPrev(conf, run.stdout), nil), ErrCheckFailed,
		"host route 10.99.0.1/32 dev "+host+" has protocol 4, not hostroute's 230")

	e.ip(e.node, "route", "replace", "10.99.0.1/32", "dev", host, "scope", "link", "proto", strconv.Itoa(routes.LegacyCNIProtocol))
	e.mustSucceed("DEL", e.run("DEL", id, withPrev(conf, run.stdout), nil))
	e.assertClean("after DEL")
	if r := e.ipJSON(e.node, "route", "show", "proto", strconv.Itoa(routes.LegacyCNIProtocol)); len(r) != 0 {
		t.Errorf("routes of protocol %d left after DEL: %v", routes.LegacyCNIProtocol, r)
	}
}
