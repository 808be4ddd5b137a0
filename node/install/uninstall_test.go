package install

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hostroute/hostroute/node/routes"
)

func TestOwnProtocolAndSummary(t *testing.T) {
	var def Protocols
	for p, want := range map[int]bool{routes.Protocol: true, routes.CNIProtocol: true, 196: true, 197: true,
		0: false, 2: false, 3: false, 4: false, 12: false, 186: false, 195: false, 198: false, 230: false} {
		if def.Own(p) != want {
			t.Errorf("Own(%d) = %v", p, !want)
		}
	}
	conf := Protocols{Agent: 230, CNI: 231, NoLegacy: true}
	for p, want := range map[int]bool{230: true, 231: true, routes.Protocol: false, routes.CNIProtocol: false, 196: false, 197: false} {
		if conf.Own(p) != want {
			t.Errorf("configured: Own(%d) = %v", p, !want)
		}
	}
	rs := []KernelRoute{{Family: 4, Protocol: routes.Protocol}, {Family: 6, Protocol: routes.Protocol}, {Family: 4, Protocol: routes.Protocol},
		{Family: 4, Protocol: routes.CNIProtocol}, {Family: 6, Protocol: 196}, {Family: 4, Protocol: 197}}
	if got, want := RouteSummary(rs, def), fmt.Sprintf("protocol %d (agent): 2 IPv4, 1 IPv6; protocol %d (CNI plugin): 1 IPv4, 0 IPv6; "+
		"protocol 196 (agent, former number): 0 IPv4, 1 IPv6; protocol 197 (CNI plugin, former number): 1 IPv4, 0 IPv6", routes.Protocol, routes.CNIProtocol); got != want {
		t.Errorf("RouteSummary = %q, want %q", got, want)
	}
	if got, want := RouteSummary(rs[3:4], def), fmt.Sprintf("protocol %d (CNI plugin): 1 IPv4, 0 IPv6", routes.CNIProtocol); got != want {
		t.Errorf("RouteSummary = %q, want %q", got, want)
	}
	// Configured with the old numbers: each is named once.
	if got, want := RouteSummary(rs[4:], Protocols{Agent: 196, CNI: 197}), "protocol 196 (agent): 0 IPv4, 1 IPv6; protocol 197 (CNI plugin): 1 IPv4, 0 IPv6"; got != want {
		t.Errorf("RouteSummary = %q, want %q", got, want)
	}
}

// fakeKernel is a RouteKernel over a slice.
type fakeKernel struct {
	routes  []KernelRoute
	gone    map[string]bool  // deleted by someone else between the dump and the delete
	failing map[string]error // delete fails
	listErr error
}

func (k *fakeKernel) OwnRoutes(own func(int) bool) ([]KernelRoute, error) {
	var out []KernelRoute
	for _, r := range k.routes {
		if own(r.Protocol) {
			out = append(out, r)
		}
	}
	return out, k.listErr
}

func (k *fakeKernel) DeleteRoute(r KernelRoute) (bool, error) {
	if err := k.failing[r.Dst]; err != nil {
		return false, err
	}
	i := slices.IndexFunc(k.routes, func(x KernelRoute) bool { return x.Dst == r.Dst && x.Table == r.Table })
	if i < 0 {
		return false, nil
	}
	k.routes = slices.Delete(k.routes, i, i+1)
	return !k.gone[r.Dst], nil
}

type fakeNAT struct{ present bool }

func (n *fakeNAT) Remove() (bool, error) {
	had := n.present
	n.present = false
	return had, nil
}

func TestUninstallFake(t *testing.T) {
	n := newNode(t, "p")
	n.mustInstall(false)
	n.write(n.conf, "10-calico.conflist"+DisabledSuffix, "{}", 0o644)
	n.write(n.conf, "99-loopback.conf", `{"cniVersion":"0.3.1","name":"lo","type":"loopback"}`, 0o644)
	n.write(n.bin, ".hostroute-cni.tmp-9", "half", 0o600)
	n.write(n.bin, "portmap", "the host's", 0o755)
	k := &fakeKernel{
		routes: []KernelRoute{
			{Family: 4, Protocol: routes.Protocol, Dst: "10.0.0.0/26"}, {Family: 6, Protocol: routes.Protocol, Dst: "fd00::/120"},
			{Family: 4, Protocol: routes.CNIProtocol, Dst: "10.0.0.7/32"}, {Family: 4, Protocol: routes.CNIProtocol, Dst: "10.0.0.8/32"},
		},
		gone: map[string]bool{"10.0.0.8/32": true},
	}
	nat := &fakeNAT{present: true}
	o := UninstallOptions{BinDir: n.bin, ConfDir: n.conf}

	acts, err := Uninstall(o, k, nat)
	if err != nil {
		t.Fatal(err)
	}
	wantVerbs(t, acts, "removed 10-hostroute.conflist", "kept 10-calico.conflist.hostroute-disabled",
		"removed hostroute-cni", "removed .hostroute-cni.tmp-9", "removed 3 kernel routes", "removed nftables table inet hostroute")
	if got, want := acts[4].String(), fmt.Sprintf("removed 3 kernel routes (protocol %d (agent): 1 IPv4, 1 IPv6; protocol %d (CNI plugin): 1 IPv4, 0 IPv6)", routes.Protocol, routes.CNIProtocol); got != want {
		t.Errorf("routes line %q, want %q", got, want)
	}
	if got, want := n.listing(n.conf), []string{"10-calico.conflist.hostroute-disabled -rw-r--r--", "99-loopback.conf -rw-r--r--"}; !slices.Equal(got, want) {
		t.Errorf("conf dir %v, want %v", got, want)
	}
	if got, want := n.listing(n.bin), []string{"portmap -rwxr-xr-x"}; !slices.Equal(got, want) {
		t.Errorf("bin dir %v, want %v", got, want)
	}

	acts, err = Uninstall(o, k, nat)
	if err != nil {
		t.Fatal(err)
	}
	if AnyRemoved(acts) {
		t.Fatalf("second run removed %v", acts)
	}
}

// TestUninstallKeepsForeignAndGoesOn: another network's file at our path stays; a failing
// route delete is reported but does not stop the rest.
func TestUninstallKeepsForeignAndGoesOn(t *testing.T) {
	n := newNode(t, "p")
	foreign := `{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"calico"}]}`
	n.write(n.conf, ConflistName, foreign, 0o644)
	k := &fakeKernel{
		routes:  []KernelRoute{{Family: 4, Protocol: routes.Protocol, Dst: "10.0.0.0/26"}, {Family: 4, Protocol: routes.Protocol, Dst: "10.0.1.0/26"}},
		failing: map[string]error{"10.0.0.0/26": errors.New("operation not permitted")},
	}
	acts, err := Uninstall(UninstallOptions{BinDir: n.bin, ConfDir: n.conf}, k, &fakeNAT{present: true})
	if err == nil || !strings.Contains(err.Error(), "10.0.0.0/26") || !strings.Contains(err.Error(), "operation not permitted") {
		t.Fatalf("error %v, want the failed route", err)
	}
	wantVerbs(t, acts, "kept 10-hostroute.conflist", "removed 1 kernel routes", "removed nftables table inet hostroute")
	if !strings.Contains(acts[0].Detail, `network "k8s-pod-network" is not hostroute's`) {
		t.Errorf("kept line %q", acts[0])
	}
	n.wantFile(filepath.Join(n.conf, ConflistName), foreign, 0o644)
}
