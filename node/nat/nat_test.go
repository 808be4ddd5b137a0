package nat

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
)

func prefixes(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

// elemStrings renders set elements as "addr" or "end addr" for comparison.
func elemStrings(elems []nftables.SetElement) []string {
	var out []string
	for _, e := range elems {
		a, ok := netip.AddrFromSlice(e.Key)
		s := a.String()
		if !ok {
			s = fmt.Sprintf("bad key %x", e.Key)
		}
		if e.IntervalEnd {
			s = "end " + s
		}
		out = append(out, s)
	}
	return out
}

func TestIntervalElements(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		v4   bool
		want []string
	}{
		{"empty v4", nil, true, nil},
		{"empty v6", nil, false, nil},
		{"one /16", []string{"10.244.0.0/16"}, true, []string{"10.244.0.0", "end 10.245.0.0"}},
		{"host bits are masked", []string{"10.244.1.5/16"}, true, []string{"10.244.0.0", "end 10.245.0.0"}},
		{"/32", []string{"192.0.2.7/32"}, true, []string{"192.0.2.7", "end 192.0.2.8"}},
		{"/31 carries into the next byte", []string{"192.0.2.254/31"}, true, []string{"192.0.2.254", "end 192.0.3.0"}},
		{"/9 not byte aligned", []string{"10.0.0.0/9"}, true, []string{"10.0.0.0", "end 10.128.0.0"}},
		{"/0 has no end", []string{"0.0.0.0/0"}, true, []string{"0.0.0.0"}},
		{"top /24 has no end", []string{"255.255.255.0/24"}, true, []string{"255.255.255.0"}},
		{"top /32 has no end", []string{"255.255.255.255/32"}, true, []string{"255.255.255.255"}},
		{"/1 upper half has no end", []string{"128.0.0.0/1"}, true, []string{"128.0.0.0"}},
		{"sorted", []string{"192.168.0.0/16", "10.0.0.0/8"}, true,
			[]string{"10.0.0.0", "end 11.0.0.0", "192.168.0.0", "end 192.169.0.0"}},
		{"duplicates", []string{"10.0.0.0/8", "10.0.0.0/8"}, true, []string{"10.0.0.0", "end 11.0.0.0"}},
		{"nested prefixes merge", []string{"10.1.0.0/16", "10.0.0.0/8"}, true, []string{"10.0.0.0", "end 11.0.0.0"}},
		{"adjacent prefixes merge", []string{"10.0.0.128/25", "10.0.0.0/25"}, true, []string{"10.0.0.0", "end 10.0.1.0"}},
		{"partial overlap chain", []string{"10.0.0.0/24", "10.0.1.0/24", "10.0.3.0/24"}, true,
			[]string{"10.0.0.0", "end 10.0.2.0", "10.0.3.0", "end 10.0.4.0"}},
		{"/0 swallows everything", []string{"10.0.0.0/8", "0.0.0.0/0", "255.255.255.255/32"}, true, []string{"0.0.0.0"}},
		{"merge at the top", []string{"255.255.255.128/25", "255.255.255.0/24", "255.255.254.0/24"}, true,
			[]string{"255.255.254.0"}},
		{"v6 /48", []string{"2001:db8:1::/48"}, false, []string{"2001:db8:1::", "end 2001:db8:2::"}},
		{"v6 /56 carries", []string{"2001:db8:0:ff00::/56"}, false, []string{"2001:db8:0:ff00::", "end 2001:db8:1::"}},
		{"v6 /128", []string{"2001:db8::1/128"}, false, []string{"2001:db8::1", "end 2001:db8::2"}},
		{"v6 /0 has no end", []string{"::/0"}, false, []string{"::"}},
		{"v6 top has no end", []string{"ffff::/16"}, false, []string{"ffff::"}},
		{"v6 top /128 has no end", []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"}, false,
			[]string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			elems, err := intervalElements(prefixes(tc.in...), tc.v4)
			if err != nil {
				t.Fatal(err)
			}
			if got := elemStrings(elems); !slices.Equal(got, tc.want) {
				t.Errorf("intervalElements(%v) = %q, want %q", tc.in, got, tc.want)
			}
			for _, e := range elems {
				if want := map[bool]int{true: 4, false: 16}[tc.v4]; len(e.Key) != want {
					t.Errorf("key %x has %d bytes, want %d", e.Key, len(e.Key), want)
				}
			}
		})
	}
}

func TestIntervalElementsErrors(t *testing.T) {
	if _, err := intervalElements(prefixes("2001:db8::/32"), true); err == nil {
		t.Error("v6 prefix in a v4 set: want error")
	}
	if _, err := intervalElements(prefixes("10.0.0.0/8"), false); err == nil {
		t.Error("v4 prefix in a v6 set: want error")
	}
	if _, err := intervalElements([]netip.Prefix{{}}, true); err == nil {
		t.Error("invalid prefix: want error")
	}
}

func TestSplitFamilies(t *testing.T) {
	v4, v6, err := splitFamilies(prefixes("2001:db8::1/32", "10.244.3.0/16", "10.0.0.0/8", "10.244.0.0/16", "::ffff:10.0.0.0/104"))
	if err != nil {
		t.Fatal(err)
	}
	if want := prefixes("10.0.0.0/8", "10.244.0.0/16"); !slices.Equal(v4, want) {
		t.Errorf("v4 = %v, want %v", v4, want)
	}
	if want := prefixes("::ffff:10.0.0.0/104", "2001:db8::/32"); !slices.Equal(v6, want) {
		t.Errorf("v6 = %v, want %v", v6, want)
	}
	if _, _, err := splitFamilies([]netip.Prefix{{}}); err == nil {
		t.Error("invalid prefix: want error")
	}
	if err := New(nil, -1).Apply(Config{NATPools: []netip.Prefix{{}}}); err == nil {
		t.Error("Apply with an invalid prefix: want error before touching the kernel")
	}
}

// nftSet and nftRule are the parts of `nft -j list` output the tests look at.
type nftSet struct {
	Name  string            `json:"name"`
	Type  string            `json:"type"`
	Flags []string          `json:"flags"`
	Elem  []json.RawMessage `json:"elem"`
}

type nftChain struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Hook   string `json:"hook"`
	Prio   int    `json:"prio"`
	Policy string `json:"policy"`
}

type nftRule struct {
	Chain string                       `json:"chain"`
	Expr  []map[string]json.RawMessage `json:"expr"`
}

// elements renders a set's elements as nft prints them: "addr/len" for a prefix,
// "addr" for a single address, "a-b" for a range that is not a prefix.
func (s nftSet) elements(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, raw := range s.Elem {
		var v struct {
			Prefix *struct {
				Addr string `json:"addr"`
				Len  int    `json:"len"`
			} `json:"prefix"`
			Range []string `json:"range"`
		}
		var addr string
		switch {
		case json.Unmarshal(raw, &addr) == nil:
			out = append(out, addr)
		case json.Unmarshal(raw, &v) == nil && v.Prefix != nil:
			out = append(out, fmt.Sprintf("%s/%d", v.Prefix.Addr, v.Prefix.Len))
		case v.Range != nil:
			out = append(out, strings.Join(v.Range, "-"))
		default:
			t.Fatalf("set %s: unexpected element %s", s.Name, raw)
		}
	}
	slices.Sort(out)
	return out
}

// summary renders a rule as "ip saddr == @set; ip daddr != @set; masquerade".
func (r nftRule) summary(t *testing.T) string {
	t.Helper()
	var parts []string
	for _, e := range r.Expr {
		for k, raw := range e {
			switch k {
			case "match":
				var m struct {
					Op   string `json:"op"`
					Left struct {
						Payload struct {
							Protocol string `json:"protocol"`
							Field    string `json:"field"`
						} `json:"payload"`
					} `json:"left"`
					Right any `json:"right"`
				}
				if err := json.Unmarshal(raw, &m); err != nil {
					t.Fatalf("decode match %s: %v", raw, err)
				}
				parts = append(parts, fmt.Sprintf("%s %s %s %v", m.Left.Payload.Protocol, m.Left.Payload.Field, m.Op, m.Right))
			default:
				parts = append(parts, k)
			}
		}
	}
	return strings.Join(parts, "; ")
}

// checkTable asserts that `table inet hostroute` in ns holds exactly the given set
// contents and the masquerade chain.
func checkTable(t *testing.T, ns string, wantSets map[string][]string) {
	t.Helper()
	objs := nftJSON(t, ns, "table", "inet", TableName)

	sets := all[nftSet](t, objs, "set")
	if len(sets) != len(wantSets) {
		t.Errorf("table has %d sets, want %d", len(sets), len(wantSets))
	}
	for _, s := range sets {
		want, ok := wantSets[s.Name]
		if !ok {
			t.Errorf("unexpected set %s", s.Name)
			continue
		}
		if wantType := map[bool]string{true: "ipv4_addr", false: "ipv6_addr"}[strings.HasSuffix(s.Name, "-v4")]; s.Type != wantType {
			t.Errorf("set %s has type %s, want %s", s.Name, s.Type, wantType)
		}
		if !slices.Equal(s.Flags, []string{"interval"}) {
			t.Errorf("set %s has flags %v, want [interval]", s.Name, s.Flags)
		}
		want = slices.Sorted(slices.Values(want))
		if got := s.elements(t); !slices.Equal(got, want) {
			t.Errorf("set %s holds %q, want %q", s.Name, got, want)
		}
	}

	chains := all[nftChain](t, objs, "chain")
	wantChains := []nftChain{
		{Name: ChainName, Type: "nat", Hook: "postrouting", Prio: 100, Policy: "accept"},
		{Name: ChainPodPrerouting, Type: "filter", Hook: "prerouting", Prio: -300, Policy: "accept"},
		{Name: ChainPodInput, Type: "filter", Hook: "input", Prio: 0, Policy: "accept"},
	}
	if !slices.Equal(chains, wantChains) {
		t.Errorf("chains = %+v, want %+v", chains, wantChains)
	}

	// The guard chains' rules are checked by checkGuard; here only NAT's.
	var rules []string
	for _, r := range all[nftRule](t, objs, "rule") {
		if r.Chain == ChainName {
			rules = append(rules, r.Chain+": "+r.summary(t))
		}
	}
	wantRules := []string{
		"postrouting: ip saddr == @nat-pools-v4; ip daddr != @all-pools-v4; masquerade",
		"postrouting: ip6 saddr == @nat-pools-v6; ip6 daddr != @all-pools-v6; masquerade",
	}
	if !slices.Equal(rules, wantRules) {
		t.Errorf("rules =\n\t%s\nwant\n\t%s", strings.Join(rules, "\n\t"), strings.Join(wantRules, "\n\t"))
	}
}

func TestApplyDeleteKernel(t *testing.T) {
	requireRoot(t)
	ns, fd := newNetns(t, "tbl")

	// Someone else's table, which hostroute must never touch.
	nftScript(t, ns, `table inet other {
	chain input { type filter hook input priority 0; policy accept; tcp dport 9 drop; }
}`)
	other := mustExec(t, ns, "nft", "list", "table", "inet", "other")

	m := New(testLogger(t), fd)
	cfg := Config{
		NATPools: prefixes("10.244.0.0/16", "2001:db8:1::/48"),
		AllPools: prefixes("10.244.0.0/16", "10.250.0.0/16", "192.0.2.7/32", "2001:db8:1::/48", "2001:db8:3::/48"),
	}
	if err := m.Apply(cfg); err != nil {
		t.Fatalf("first Apply: %v", err)
	}
	first := mustExec(t, ns, "nft", "list", "table", "inet", TableName)
	t.Logf("nft list table inet %s:\n%s", TableName, first)
	if err := m.Apply(cfg); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	if second := mustExec(t, ns, "nft", "list", "table", "inet", TableName); second != first {
		t.Errorf("second Apply changed the ruleset:\n%s\nwant\n%s", second, first)
	}
	checkTable(t, ns, map[string][]string{
		SetNATPoolsV4: {"10.244.0.0/16"},
		SetAllPoolsV4: {"10.244.0.0/16", "10.250.0.0/16", "192.0.2.7"},
		SetNATPoolsV6: {"2001:db8:1::/48"},
		SetAllPoolsV6: {"2001:db8:1::/48", "2001:db8:3::/48"},
	})
	checkGuard(t, ns)

	// A changed config replaces the elements: the old prefixes are gone. Pools that
	// touch are stored merged (10.96.0.0/12 + 10.112.0.0/12 = 10.96.0.0/11).
	cfg = Config{
		NATPools: prefixes("10.96.0.0/12"),
		AllPools: prefixes("10.96.0.0/12", "10.112.0.0/12", "fd00::/8"),
	}
	if err := m.Apply(cfg); err != nil {
		t.Fatalf("Apply changed config: %v", err)
	}
	checkTable(t, ns, map[string][]string{
		SetNATPoolsV4: {"10.96.0.0/12"},
		SetAllPoolsV4: {"10.96.0.0/11"},
		SetNATPoolsV6: nil,
		SetAllPoolsV6: {"fd00::/8"},
	})

	// Intervals that reach the top of the address space have no end element.
	cfg = Config{
		NATPools: prefixes("255.255.255.0/24", "ffff::/16"),
		AllPools: prefixes("0.0.0.0/0", "::/0"),
	}
	if err := m.Apply(cfg); err != nil {
		t.Fatalf("Apply top of address space: %v", err)
	}
	checkTable(t, ns, map[string][]string{
		SetNATPoolsV4: {"255.255.255.0/24"},
		SetAllPoolsV4: {"0.0.0.0/0"},
		SetNATPoolsV6: {"ffff::/16"},
		SetAllPoolsV6: {"::/0"},
	})

	// An empty config keeps the table, with empty sets.
	if err := m.Apply(Config{}); err != nil {
		t.Fatalf("Apply empty config: %v", err)
	}
	checkTable(t, ns, map[string][]string{SetNATPoolsV4: nil, SetAllPoolsV4: nil, SetNATPoolsV6: nil, SetAllPoolsV6: nil})
	checkGuard(t, ns)

	if err := m.Delete(); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if out, err := nsExec(ns, "", "nft", "list", "table", "inet", TableName); err == nil {
		t.Errorf("table still there after Delete:\n%s", out)
	}
	if err := m.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if got := mustExec(t, ns, "nft", "list", "table", "inet", "other"); got != other {
		t.Errorf("foreign table changed:\n%s\nwant\n%s", got, other)
	}
}
