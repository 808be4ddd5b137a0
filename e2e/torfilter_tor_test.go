package e2e_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hostroute/hostroute/e2e/harness"
	"github.com/hostroute/hostroute/internal/testenv/bird"
	"github.com/hostroute/hostroute/internal/testenv/frr"
)

// filterTor is a ToR (BIRD or FRR) whose node sessions take the import filters
// `routectl tor-filters` prints. Its neighbours are the nodes' addresses with their AS.
type filterTor interface {
	format() string // routectl tor-filters --format
	// install loads the filters and makes each node's session use its own.
	install(t *testing.T, filters string, names map[string]string)
	// paths lists the neighbours whose path for exactly prefix the ToR holds.
	paths(t *testing.T, prefix string) []string
	// counts are how many routes the neighbour sent and how many the ToR accepted.
	counts(t *testing.T, neighbor string) (received, accepted int)
	dump(t *testing.T) string
}

// birdTor: one protocol per node from a template; `import none` until the filters are
// installed, then each protocol's channel (ipv4, or ipv6 with v6) takes its node's filter.
type birdTor struct {
	b         *bird.BIRD
	as        uint32
	v6        bool
	neighbors map[string]uint32 // address → AS
}

func startBIRDTor(t *testing.T, e *harness.Env, ns string, as uint32, v6 bool, neighbors map[string]uint32) *birdTor {
	bt := &birdTor{as: as, v6: v6, neighbors: neighbors}
	bt.b = e.StartBIRD(ns, bt.config("", nil))
	return bt
}

func (bt *birdTor) format() string { return "bird" }

// config renders BIRD's configuration; with filters, node address → filter name.
func (bt *birdTor) config(filters string, names map[string]string) string {
	ch, local := "ipv4", harness.FabricGateway
	if bt.v6 {
		ch, local = "ipv6", harness.FabricGateway6
	}
	var b strings.Builder
	fmt.Fprintf(&b, "log stderr all;\nrouter id %s;\nprotocol device {}\n", harness.FabricGateway)
	fmt.Fprintf(&b, "protocol kernel { %s { export where source = RTS_BGP; }; merge paths on; }\n", ch)
	b.WriteString(filters)
	fmt.Fprintf(&b, "\ntemplate bgp node {\n  local %s as %d;\n  passive on;\n  error wait time 1, 5;\n", local, bt.as)
	fmt.Fprintf(&b, "  %s { import none; export where source ~ [ RTS_BGP, RTS_STATIC ]; };\n}\n", ch)
	for _, addr := range slices.Sorted(maps.Keys(bt.neighbors)) {
		imp := ""
		if f, ok := names[addr]; ok {
			imp = fmt.Sprintf(" %s { import filter %s; };", ch, f)
		}
		fmt.Fprintf(&b, "protocol bgp %s from node { neighbor %s as %d;%s }\n", birdName(addr), addr, bt.neighbors[addr], imp)
	}
	return b.String()
}

// birdName names a node's session after its address, as routectl's example does.
func birdName(addr string) string {
	return "n_" + strings.NewReplacer(".", "_", ":", "_").Replace(addr)
}

func (bt *birdTor) install(t *testing.T, filters string, names map[string]string) {
	t.Helper()
	if err := bt.b.Reconfigure(bt.config(filters, names)); err != nil {
		t.Fatalf("birdc configure with the generated filters: %v", err)
	}
}

var tfBIRDRoute = regexp.MustCompile(`unicast \[(n_[0-9a-f_]+) `)

func (bt *birdTor) paths(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := bt.b.Query("show route " + prefix + " all")
	if err != nil && !strings.Contains(out, "Network not found") {
		t.Fatal(err)
	}
	byName := map[string]string{}
	for addr := range bt.neighbors {
		byName[birdName(addr)] = addr
	}
	var from []string
	for _, m := range tfBIRDRoute.FindAllStringSubmatch(out, -1) {
		addr, ok := byName[m[1]]
		if !ok {
			t.Fatalf("BIRD holds %s from a protocol %s that is no node's:\n%s", prefix, m[1], out)
		}
		from = append(from, addr)
	}
	slices.Sort(from)
	return from
}

// counts reads BIRD's route change statistics: "Import updates: received rejected
// filtered ignored accepted".
func (bt *birdTor) counts(t *testing.T, neighbor string) (int, int) {
	t.Helper()
	out, err := bt.b.Query("show protocols all " + birdName(neighbor))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(strings.TrimSpace(l)); len(f) == 7 && f[0] == "Import" && f[1] == "updates:" {
			rec, _ := strconv.Atoi(f[2])
			acc, _ := strconv.Atoi(f[6])
			return rec, acc
		}
	}
	t.Fatalf("no import statistics for %s:\n%s", neighbor, out)
	return 0, 0
}

func (bt *birdTor) dump(t *testing.T) string {
	out, _ := bt.b.Query("show route all")
	return out
}

// frrTor: the nodes in a peer-group, each with its own inbound route-map (missing until
// installed: FRR then refuses everything) and soft-reconfiguration to see what it sent.
// With v6 the sessions carry IPv6 unicast alone.
type frrTor struct {
	f         *frr.FRR
	afi       string // ipv4 or ipv6
	neighbors map[string]uint32
}

func startFRRTor(t *testing.T, ns string, as uint32, v6 bool, neighbors map[string]uint32, routeMaps map[string]string) *frrTor {
	ft := &frrTor{afi: "ipv4", neighbors: neighbors}
	if v6 {
		ft.afi = "ipv6"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults traditional\nhostname tor\nlog stdout\nrouter bgp %d\n bgp router-id %s\n", as, harness.FabricGateway)
	b.WriteString(" no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n")
	b.WriteString(" neighbor NODES peer-group\n neighbor NODES remote-as external\n neighbor NODES passive\n")
	addrs := slices.Sorted(maps.Keys(neighbors))
	for _, a := range addrs {
		fmt.Fprintf(&b, " neighbor %s peer-group NODES\n", a)
	}
	fmt.Fprintf(&b, " address-family %s unicast\n  neighbor NODES activate\n  neighbor NODES soft-reconfiguration inbound\n", ft.afi)
	for _, a := range addrs {
		fmt.Fprintf(&b, "  neighbor %s route-map %s in\n", a, routeMaps[a])
	}
	b.WriteString(" exit-address-family\n")
	ft.f = frr.Start(t, ns, b.String(), frr.Options{})
	return ft
}

func (ft *frrTor) format() string { return "frr" }

func (ft *frrTor) install(t *testing.T, filters string, _ map[string]string) {
	t.Helper()
	if err := ft.f.Apply(filters); err != nil {
		t.Fatalf("loading the generated filters: %v", err)
	}
	if _, err := ft.f.VTY("clear bgp " + ft.afi + " unicast * soft in"); err != nil {
		t.Fatal(err)
	}
}

func (ft *frrTor) paths(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := ft.f.VTY("show bgp " + ft.afi + " unicast " + prefix + " json")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Paths []struct {
			Peer struct {
				PeerID string `json:"peerId"`
			} `json:"peer"`
		} `json:"paths"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var from []string
	for _, p := range r.Paths {
		from = append(from, p.Peer.PeerID)
	}
	slices.Sort(from)
	return from
}

func (ft *frrTor) counts(t *testing.T, neighbor string) (int, int) {
	t.Helper()
	out, err := ft.f.VTY("show bgp " + ft.afi + " unicast neighbors " + neighbor + " received-routes json")
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Routes map[string]json.RawMessage `json:"receivedRoutes"`
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	out, err = ft.f.VTY("show bgp neighbors " + neighbor + " json")
	if err != nil {
		t.Fatal(err)
	}
	var nb map[string]struct {
		AFI map[string]struct {
			Accepted int `json:"acceptedPrefixCounter"`
		} `json:"addressFamilyInfo"`
	}
	if err := json.Unmarshal([]byte(out), &nb); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return len(rec.Routes), nb[neighbor].AFI[ft.afi+"Unicast"].Accepted
}

func (ft *frrTor) dump(t *testing.T) string {
	out, _ := ft.f.VTY("show bgp " + ft.afi + " unicast")
	return out
}

// The rogue speaker (e2e/rogue), built once per test binary.
var (
	rogueOnce sync.Once
	rogueBin  string
	rogueErr  error
)

func buildRogue(t *testing.T) string {
	t.Helper()
	rogueOnce.Do(func() {
		rogueBin = filepath.Join(bin, "rogue")
		cmd := exec.Command("go", "build", "-o", rogueBin, "./e2e/rogue")
		cmd.Dir = harness.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			rogueErr = fmt.Errorf("go build ./e2e/rogue: %w\n%s", err, out)
		}
	})
	if rogueErr != nil {
		t.Fatal(rogueErr)
	}
	return rogueBin
}

// moreSpecific is the prefix two bits longer than block at the start of its second
// quarter (the .16/28 of a /26, the ::10/124 of a /122): inside it, longer than it.
func moreSpecific(t *testing.T, block string) string {
	t.Helper()
	p := netip.MustParsePrefix(block)
	a := p.Addr().AsSlice()
	host := len(a)*8 - p.Bits() - 2 // the quarter is 2^host addresses
	if host < 0 || host > 7 {
		t.Fatalf("moreSpecific: block %s: want a quarter of 1 to 128 addresses", block)
	}
	a[len(a)-1] += 1 << host
	q, _ := netip.AddrFromSlice(a)
	return netip.PrefixFrom(q, p.Bits()+2).String()
}
