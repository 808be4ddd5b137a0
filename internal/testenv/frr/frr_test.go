package frr

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hostroute/hostroute/internal/testenv"
	"github.com/hostroute/hostroute/internal/testenv/bird"
	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// frrConf is read by every daemon, each complaining about the others' lines: an
// unknown block ended with "exit" would take a daemon out of configuration mode for the
// rest of the file, so the bfd block comes last and has no exits.
const frrConf = `frr defaults traditional
hostname tor
log stdout
router bgp 65000
 bgp router-id 192.0.2.254
 no bgp ebgp-requires-policy
 neighbor 192.0.2.1 remote-as 64512
 neighbor 192.0.2.1 timers connect 1
 address-family ipv4 unicast
  neighbor 192.0.2.1 route-map from-bird in
 exit-address-family
!
bfd
 peer 192.0.2.1
  receive-interval 100
  transmit-interval 100
`

const birdConf = `log stderr all;
router id 192.0.2.1;
protocol device {}
protocol static originated { ipv4; route 198.51.100.0/24 blackhole; route 203.0.113.0/24 blackhole; }
protocol bgp tor {
  local 192.0.2.1 as 64512;
  neighbor 192.0.2.254 as 65000;
  ipv4 { import none; export all; };
}
`

// filters lets only 198.51.100.0/24 in from BIRD; the "no" lines delete objects that do
// not exist yet, which vtysh takes silently.
const filters = `no route-map from-bird
no ip prefix-list from-bird
ip prefix-list from-bird seq 5 permit 198.51.100.0/24
route-map from-bird permit 10
 match ip address prefix-list from-bird
exit
`

// FRR (with bfdd) peers with BIRD over a veth between two namespaces: nothing comes in
// while the neighbour's route-map is missing, the route-map loaded with Apply lets in
// exactly its prefix, and the daemons are gone once the test's cleanups ran.
func TestFRRPeersWithBIRD(t *testing.T) {
	var pids map[string]int
	t.Run("lab", func(t *testing.T) {
		torNS := netns.ForTest(t, netns.OwnedPrefix("hrtest-frr-"))
		peerNS := netns.ForTest(t, netns.OwnedPrefix("hrtest-frr-"))
		for _, c := range []struct {
			ns   string
			args []string
		}{
			{torNS, []string{"ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", peerNS}},
			{torNS, []string{"ip", "addr", "add", "192.0.2.254/24", "dev", "v0"}},
			{torNS, []string{"ip", "link", "set", "v0", "up"}},
			{torNS, []string{"ip", "link", "set", "lo", "up"}},
			{peerNS, []string{"ip", "addr", "add", "192.0.2.1/24", "dev", "v1"}},
			{peerNS, []string{"ip", "link", "set", "v1", "up"}},
		} {
			if err := netns.Exec(c.ns, c.args...); err != nil {
				t.Fatal(err)
			}
		}
		f := Start(t, torNS, frrConf, Options{BFD: true})
		pids = f.PIDs()
		if len(pids) != 3 || pids["bfdd"] == 0 {
			t.Fatalf("PIDs = %v, want zebra, bfdd and bgpd", pids)
		}
		bird.Start(t, peerNS, birdConf)
		testenv.Eventually(t, 20*time.Second, "session Established", func() string {
			out, _ := f.VTY("show bgp ipv4 unicast summary json")
			if !strings.Contains(out, `"state":"Established"`) {
				return out
			}
			return ""
		})
		prefixes := func() []string {
			out, err := f.VTY("show bgp ipv4 unicast json")
			if err != nil {
				t.Fatal(err)
			}
			var rib struct {
				Routes map[string]json.RawMessage `json:"routes"`
			}
			if err := json.Unmarshal([]byte(out), &rib); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			var ps []string
			for p := range rib.Routes {
				ps = append(ps, p)
			}
			return ps
		}
		time.Sleep(time.Second) // BIRD's routes had time to arrive: a missing route-map denies them
		if ps := prefixes(); len(ps) != 0 {
			t.Fatalf("with the route-map missing FRR accepted %v", ps)
		}
		if err := f.Apply(filters); err != nil {
			t.Fatal(err)
		}
		if _, err := f.VTY("clear bgp ipv4 unicast * soft in"); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, "exactly 198.51.100.0/24 accepted", func() string {
			if ps := prefixes(); len(ps) != 1 || ps[0] != "198.51.100.0/24" {
				return strings.Join(ps, " ")
			}
			return ""
		})
		if err := f.Apply("ip prefix-list broken seq 5 permit 10.0.0.0/33\n"); err == nil {
			t.Error("Apply of a bad line: no error")
		}
	})
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("%s (PID %d) still runs after the test's cleanups", name, pid)
		}
	}
}
