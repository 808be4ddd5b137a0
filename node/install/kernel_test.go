package install

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/hostroute/hostroute/internal/testenv/netns"
	"github.com/hostroute/hostroute/node/nat"
	"github.com/hostroute/hostroute/node/routes"
)

// The kernel test works only inside a network namespace it creates ("hrtest-uninst-…",
// deleted at the end, pass or fail; netns.ForTest fails the test when not root). Nothing
// is changed in the root namespace.

// kroute is a route read back from the kernel, as numbers.
type kroute struct {
	family, table, protocol, metric int
	dst, gw                         string
}

func (r kroute) String() string {
	return fmt.Sprintf("v%d table %d proto %d metric %d %s via %s", r.family, r.table, r.protocol, r.metric, r.dst, r.gw)
}

// dumpAll reads every route of every table, both families, except those the kernel makes
// itself (protocol 2: connected and local routes, fe80::/64, multicast).
func dumpAll(t *testing.T, h *netlink.Handle) []kroute {
	t.Helper()
	var out []kroute
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatalf("route dump: %v", err)
		}
		for _, r := range rs {
			if r.Protocol == unix.RTPROT_KERNEL {
				continue
			}
			k := kroute{family: 4, table: r.Table, protocol: int(r.Protocol), metric: r.Priority, dst: "default", gw: "-"}
			if fam == netlink.FAMILY_V6 {
				k.family = 6
			}
			if r.Dst != nil {
				k.dst = r.Dst.String()
			}
			if r.Gw != nil {
				k.gw = r.Gw.String()
			}
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b kroute) int { return strings.Compare(a.String(), b.String()) })
	return out
}

func nftTables(t *testing.T, fd int) []string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tb := range ts {
		out = append(out, tb.Name)
	}
	slices.Sort(out)
	return out
}

// TestUninstallRealKernel: hostroute's routes (routes.Protocol and routes.CNIProtocol and
// the former 196 and 197, several tables, both families, ECMP, one sharing its
// destination with a foreign route) and its nftables table go; foreign routes and tables
// stay; a second run finds nothing.
func TestUninstallRealKernel(t *testing.T) {
	ns := netns.ForTest(t, "hrtest-uninst-")
	protocols := strings.NewReplacer("{agent}", strconv.Itoa(routes.Protocol), "{cni}", strconv.Itoa(routes.CNIProtocol))
	for _, c := range []string{
		"ip link add v0 type veth peer name v1",
		"ip link set v0 up", "ip link set v1 up",
		"ip addr add 192.0.2.1/24 dev v0",
		"ip -6 addr add 2001:db8::1/64 dev v0 nodad",
		// ours
		"ip route add blackhole 10.9.0.0/26 proto {agent}",
		"ip route add 10.9.1.0/26 via 192.0.2.2 proto {agent}",
		"ip route add 10.9.2.0/26 via 192.0.2.2 proto {agent} table 100",
		"ip -6 route add blackhole fd00:9::/120 proto {agent}",
		"ip route add 10.9.4.0/26 proto {agent} nexthop via 192.0.2.2 nexthop via 192.0.2.4",
		"ip -6 route add fd00:9:2::/120 proto {agent} nexthop via 2001:db8::2 nexthop via 2001:db8::4",
		"ip route add 10.9.3.7/32 dev v0 proto {cni} scope link",
		"ip -6 route add fd00:9:1::7/128 dev v0 proto {cni}",
		"ip -6 route add fd00:9:1::8/128 dev v0 proto {cni} table 200",
		"ip route add blackhole 10.9.5.0/26 proto 196",
		"ip route add 10.9.3.9/32 dev v0 proto 197 scope link",
		// someone else's, one with the same destination as ours
		"ip route add 10.9.1.0/26 via 192.0.2.3 proto static metric 50",
		"ip route add 10.8.0.0/24 via 192.0.2.8 proto static",
		"ip route add 10.7.0.0/24 via 192.0.2.7",
		"ip route add 10.6.0.0/24 via 192.0.2.6 proto 12 table 100",
		"ip -6 route add fd00:8::/64 via 2001:db8::8 proto static",
		"ip -6 route add fd00:9:1::9/128 dev v0 proto 198",
	} {
		if err := netns.Exec(ns, strings.Fields(protocols.Replace(c))...); err != nil {
			t.Fatal(err)
		}
	}
	h, err := netns.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	m := nat.New(log, fd)
	if err := m.Apply(nat.Config{}); err != nil {
		t.Fatalf("create table inet hostroute: %v", err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	c.AddTable(&nftables.Table{Name: "other", Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}

	var foreign []kroute
	for _, r := range dumpAll(t, h) {
		if !(Protocols{}).Own(r.protocol) {
			foreign = append(foreign, r)
		}
	}
	if len(foreign) != 6 {
		t.Fatalf("set-up: %d foreign routes, want 6: %v", len(foreign), foreign)
	}

	n := newNode(t, "p")
	n.mustInstall(false)
	o := UninstallOptions{BinDir: n.bin, ConfDir: n.conf}
	acts, err := Uninstall(o, NetlinkRoutes{H: h}, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acts {
		t.Log(a)
	}
	wantVerbs(t, acts, "removed 10-hostroute.conflist", "removed hostroute-cni", "removed 11 kernel routes", "removed nftables table inet hostroute")
	if got, want := acts[2].Detail, fmt.Sprintf("protocol %d (agent): 4 IPv4, 2 IPv6; protocol %d (CNI plugin): 1 IPv4, 2 IPv6; "+
		"protocol 196 (agent, former number): 1 IPv4, 0 IPv6; protocol 197 (CNI plugin, former number): 1 IPv4, 0 IPv6", routes.Protocol, routes.CNIProtocol); got != want {
		t.Errorf("routes %q, want %q", got, want)
	}
	if got := dumpAll(t, h); !slices.Equal(got, foreign) {
		t.Fatalf("routes after uninstall:\n%v\nwant only the foreign ones:\n%v", got, foreign)
	}
	if got := nftTables(t, fd); !slices.Equal(got, []string{"other"}) {
		t.Fatalf("inet tables after uninstall: %v, want [other]", got)
	}

	acts, err = Uninstall(o, NetlinkRoutes{H: h}, m)
	if err != nil {
		t.Fatal(err)
	}
	if AnyRemoved(acts) {
		t.Fatalf("second run removed %v", acts)
	}
	if got := dumpAll(t, h); !slices.Equal(got, foreign) {
		t.Fatalf("second run changed routes: %v", got)
	}
}
