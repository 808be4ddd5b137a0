package torfilter

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
)

// Formats are the configuration languages Render writes.
var Formats = []string{"bird", "frr"}

// Render writes f in format ("bird" or "frr"): a comment header that says how to apply
// the filters and what was left out, then one filter per node.
func Render(w io.Writer, format string, f Filters) error {
	var b strings.Builder
	switch format {
	case "bird":
		renderBIRD(&b, f)
	case "frr":
		renderFRR(&b, f)
	default:
		return fmt.Errorf("format %q: want bird or frr", format)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// summary is the header's count of what the filters hold.
func summary(f Filters) string {
	blocks := 0
	for _, n := range f.Nodes {
		blocks += len(n.Blocks)
	}
	s := fmt.Sprintf("%d %s, %d %s", len(f.Nodes), plural(len(f.Nodes), "node"), blocks, plural(blocks, "block"))
	if len(f.Services) > 0 {
		s += fmt.Sprintf(", %d Service %s any node may announce", len(f.Services), plural(len(f.Services), "range"))
	}
	return s
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func comments(b *strings.Builder, mark string, lines ...string) {
	for _, l := range lines {
		if l == "" {
			b.WriteString(mark + "\n")
			continue
		}
		b.WriteString(mark + " " + l + "\n")
	}
}

func problems(b *strings.Builder, mark string, f Filters) {
	if len(f.Problems) == 0 {
		return
	}
	comments(b, mark, "", "Left out:")
	for _, p := range f.Problems {
		comments(b, mark, "  "+p)
	}
}

func sessions(n Node) string {
	var s []string
	for _, a := range []string{n.Address.String(), n.Address6.String()} {
		if a != "invalid IP" {
			s = append(s, a)
		}
	}
	return strings.Join(s, ", ")
}

// renderBIRD writes one filter per node. `net = P` compares the whole prefix, so a
// more specific never matches; bgp_path.last is the origin AS (0 for an empty path or
// one ending in an AS_SET).
func renderBIRD(b *strings.Builder, f Filters) {
	ex := exampleOf(f)
	comments(b, "#",
		"hostroute: ToR import filters for BIRD 2 (routectl tor-filters --format bird).",
		"A node may announce only its own blocks (exact prefixes, no more specifics),",
		"originated in its own AS. Use each node's filter as the import filter of that",
		"node's session, in every channel it has (ipv4, ipv6), e.g.",
		"  protocol bgp "+birdProto(ex.addr)+" from node {",
		fmt.Sprintf("    neighbor %s as %d;", ex.addr, ex.n.AS),
		fmt.Sprintf("    %s { import filter %s; };", ex.channel, ex.n.BIRDName),
		"  }",
		"Regenerate and `birdc configure` whenever a block is assigned or released: until",
		"then the ToR refuses a node's new block. For eBGP sessions (the ToR in another AS",
		"than the node): over iBGP the path is empty and the filter refuses everything.",
		"",
		summary(f)+".")
	problems(b, "#", f)
	for _, n := range f.Nodes {
		fmt.Fprintf(b, "\n# %s: %s, AS %d, %d %s\n", n.Name, sessions(n), n.AS, len(n.Blocks), plural(len(n.Blocks), "block"))
		fmt.Fprintf(b, "filter %s {\n", n.BIRDName)
		if len(n.Blocks)+len(f.Services) > 0 {
			fmt.Fprintf(b, "  if bgp_path.last != %d then reject;\n", n.AS)
		}
		for _, p := range n.Blocks {
			fmt.Fprintf(b, "  if net = %s then accept;\n", p)
		}
		for _, r := range f.Services {
			if r.Exact {
				fmt.Fprintf(b, "  if net = %s then accept; # Service range\n", r.Prefix)
			}
			if r.HostRoutes {
				typ := "NET_IP4"
				if r.Prefix.Addr().Is6() {
					typ = "NET_IP6"
				}
				fmt.Fprintf(b, "  if net.type = %s && net ~ [ %s{%d,%d} ] then accept; # Service addresses\n", typ, r.Prefix, r.Prefix.Addr().BitLen(), r.Prefix.Addr().BitLen())
			}
		}
		b.WriteString("  reject;\n}\n")
	}
}

// renderFRR writes an as-path access-list per AS and, per node, an IPv4 and an IPv6
// prefix-list (a prefix-list entry without ge/le matches the exact prefix only) and a
// route-map that needs both the prefix and the origin AS. Every prefix-list and
// route-map is deleted before it is written, so loading a newer output also drops
// released blocks (FRR deletes an absent one silently; an absent as-path list would be
// an error, and each has one fixed entry, so those are only re-added). The route-map's
// implicit deny refuses the rest.
func renderFRR(b *strings.Builder, f Filters) {
	ex := exampleOf(f)
	comments(b, "!",
		"hostroute: ToR import filters for FRR 8.4 (routectl tor-filters --format frr).",
		"A node may announce only its own blocks (exact prefixes, no more specifics),",
		"originated in its own AS. Apply each node's route-map inbound on that node's",
		"session, in each address family it carries (a neighbour's own route-map",
		"overrides its peer-group's):",
		"  router bgp TOR-AS",
		"   address-family "+ex.channel+" unicast",
		fmt.Sprintf("    neighbor %s route-map %s in", ex.addr, ex.n.FRRName),
		"   exit-address-family",
		"Load it with `vtysh -f FILE` (or paste it into `configure terminal`), then",
		"`clear bgp * soft in`. Regenerate whenever a block is assigned or released: until",
		"then the ToR refuses a node's new block. For eBGP sessions (the ToR in another AS",
		"than the node): over iBGP the path is empty and the route-map refuses everything.",
		"",
		summary(f)+".")
	problems(b, "!", f)
	var ases []uint32
	for _, n := range f.Nodes {
		if len(n.Blocks) > 0 {
			ases = append(ases, n.AS)
		}
	}
	slices.Sort(ases)
	if ases = slices.Compact(ases); len(ases) > 0 {
		b.WriteString("!\n")
	}
	for _, as := range ases {
		fmt.Fprintf(b, "bgp as-path access-list %s seq 5 permit _%d$\n", asList(as), as)
	}
	for _, n := range f.Nodes {
		fmt.Fprintf(b, "!\n! %s: %s, AS %d, %d %s\n", n.Name, sessions(n), n.AS, len(n.Blocks), plural(len(n.Blocks), "block"))
		fmt.Fprintf(b, "no route-map %s\n", n.FRRName)
		seq := 10
		for _, fam := range []struct {
			v4         bool
			list, addr string
		}{{true, "ip prefix-list", "ip address"}, {false, "ipv6 prefix-list", "ipv6 address"}} {
			var ps []string
			for _, p := range n.Blocks {
				if p.Addr().Is4() == fam.v4 {
					ps = append(ps, p.String())
				}
			}
			for _, r := range f.Services {
				if r.Prefix.Addr().Is4() != fam.v4 {
					continue
				}
				if r.Exact {
					ps = append(ps, r.Prefix.String())
				}
				if bits := r.Prefix.Addr().BitLen(); r.HostRoutes {
					ps = append(ps, fmt.Sprintf("%s ge %d le %d", r.Prefix, bits, bits))
				}
			}
			if len(ps) == 0 {
				continue
			}
			fmt.Fprintf(b, "no %s %s\n", fam.list, n.FRRName)
			for i, p := range ps {
				fmt.Fprintf(b, "%s %s seq %d permit %s\n", fam.list, n.FRRName, 5*(i+1), p)
			}
			fmt.Fprintf(b, "route-map %s permit %d\n match %s prefix-list %s\n match as-path %s\nexit\n",
				n.FRRName, seq, fam.addr, n.FRRName, asList(n.AS))
			seq += 10
		}
		if seq == 10 {
			fmt.Fprintf(b, "route-map %s deny 10\nexit\n", n.FRRName)
		}
	}
}

func asList(as uint32) string { return fmt.Sprintf("hostroute-origin-%d", as) }

// example is the session the header's example applies a filter to.
type example struct {
	n       Node
	addr    netip.Addr
	channel string // ipv4 or ipv6
}

// exampleOf picks the first node (a made-up one when there is none).
func exampleOf(f Filters) example {
	if len(f.Nodes) == 0 {
		return example{n: Node{AS: 64512, BIRDName: "hostroute_import_node_1", FRRName: "hostroute-node-1"},
			addr: netip.MustParseAddr("192.0.2.1"), channel: "ipv4"}
	}
	n := f.Nodes[0]
	if n.Address.IsValid() {
		return example{n, n.Address, "ipv4"}
	}
	return example{n, n.Address6, "ipv6"}
}

// birdProto names a session after the neighbour's address, as the tests' ToR does.
func birdProto(a netip.Addr) string {
	return "n_" + strings.NewReplacer(".", "_", ":", "_").Replace(a.String())
}
