package harness

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hostroute/hostroute/internal/testenv/bird"
)

// TorConfig describes the ToR's BGP side.
type TorConfig struct {
	AS        uint32            // the ToR's AS (65000)
	Neighbors map[string]uint32 // node address → AS
	BFD       bool              // BFD on every session (100 ms × 3)
	HoldTime  int               // seconds; 0 = BIRD's default
	// Originate are prefixes the ToR originates (as blackholes) and advertises; IPv6 ones
	// over the IPv6 sessions (Neighbors6).
	Originate []string
	// Password turns on TCP-MD5 on every session.
	Password string
	// Neighbors6 are IPv6 sessions (node IPv6 address → AS) carrying IPv6 routes, from
	// FabricGateway6; their routes go into the ToR's kernel too.
	Neighbors6 map[string]uint32
}

// Config renders the BIRD configuration.
func (c TorConfig) Config() string {
	var b strings.Builder
	fmt.Fprintf(&b, "log stderr all;\nrouter id %s;\nprotocol device {}\n", FabricGateway)
	b.WriteString("protocol kernel { ipv4 { export where source = RTS_BGP; }; merge paths on; }\n")
	if len(c.Neighbors6) > 0 {
		b.WriteString("protocol kernel kernel6 { ipv6 { export where source = RTS_BGP; }; merge paths on; }\n")
	}
	var orig4, orig6 []string
	for _, p := range c.Originate {
		if strings.Contains(p, ":") {
			orig6 = append(orig6, p)
		} else {
			orig4 = append(orig4, p)
		}
	}
	for _, o := range []struct {
		name, channel string
		prefixes      []string
	}{{"originated", "ipv4", orig4}, {"originated6", "ipv6", orig6}} {
		if len(o.prefixes) == 0 {
			continue
		}
		fmt.Fprintf(&b, "protocol static %s { %s;", o.name, o.channel)
		for _, p := range o.prefixes {
			fmt.Fprintf(&b, " route %s blackhole;", p)
		}
		b.WriteString(" }\n")
	}
	if c.BFD {
		b.WriteString(`protocol bfd { interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }` + "\n")
	}
	fmt.Fprintf(&b, "template bgp node {\n  local %s as %d;\n  passive on;\n  error wait time 1, 5;\n", FabricGateway, c.AS)
	if c.HoldTime > 0 {
		fmt.Fprintf(&b, "  hold time %d;\n  keepalive time %d;\n", c.HoldTime, max(1, c.HoldTime/3))
	}
	if c.BFD {
		b.WriteString("  bfd on;\n")
	}
	if c.Password != "" {
		fmt.Fprintf(&b, "  password %q;\n", c.Password)
	}
	b.WriteString("  ipv4 { import all; export where source ~ [ RTS_BGP, RTS_STATIC ]; };\n}\n")
	if len(c.Neighbors6) > 0 {
		fmt.Fprintf(&b, "template bgp node6 {\n  local %s as %d;\n  passive on;\n  error wait time 1, 5;\n", FabricGateway6, c.AS)
		if c.BFD {
			b.WriteString("  bfd on;\n")
		}
		b.WriteString("  ipv6 { import all; export where source ~ [ RTS_BGP, RTS_STATIC ]; };\n}\n")
		addrs6 := make([]string, 0, len(c.Neighbors6))
		for addr := range c.Neighbors6 {
			addrs6 = append(addrs6, addr)
		}
		sort.Strings(addrs6)
		for _, addr := range addrs6 {
			fmt.Fprintf(&b, "protocol bgp n6_%s from node6 { neighbor %s as %d; }\n", strings.ReplaceAll(addr, ":", "_"), addr, c.Neighbors6[addr])
		}
	}
	addrs := make([]string, 0, len(c.Neighbors))
	for addr := range c.Neighbors {
		addrs = append(addrs, addr)
	}
	sort.Strings(addrs)
	for _, addr := range addrs {
		// A neighbour on another segment (AddSegment) is reached from the ToR's address
		// on that segment: BIRD takes a session only on its local address.
		local := ""
		if gw := gateway(addr); gw != FabricGateway {
			local = " local " + gw + ";"
		}
		// Named after the address, so a reconfigure that adds a node leaves the others be.
		fmt.Fprintf(&b, "protocol bgp n_%s from node { neighbor %s as %d;%s }\n", strings.ReplaceAll(addr, ".", "_"), addr, c.Neighbors[addr], local)
	}
	return b.String()
}

// StartBIRD runs bird in the namespace with the configuration and stops it when the test
// ends.
func (e *Env) StartBIRD(ns string, conf string) *bird.BIRD {
	e.T.Helper()
	return bird.Start(e.T, ns, conf)
}
