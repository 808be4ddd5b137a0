package routing

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

func TestParseCommunity(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Community
		err  bool
	}{
		{"65000:100", 65000<<16 | 100, false},
		{"0:0", 0, false},
		{"65535:65535", 0xffffffff, false},
		{" 65000:100 ", 65000<<16 | 100, false}, // surrounding spaces trimmed
		{"65536:1", 0, true},
		{"1:65536", 0, true},
		{"65000", 0, true}, // missing colon
		{"65000 100", 0, true},
		{"65000: 100", 0, true}, // spaces inside
		{"65000 :100", 0, true},
		{":100", 0, true},
		{"65000:", 0, true},
		{"-1:5", 0, true},
		{"1:2:3", 0, true},
		{"", 0, true},
	} {
		got, err := ParseCommunity(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ParseCommunity(%q) = %v (%d), %v; want %d, error %v", c.in, got, uint32(got), err, uint32(c.want), c.err)
		}
		if err == nil && got.String() != strings.TrimSpace(c.in) {
			t.Errorf("ParseCommunity(%q).String() = %q", c.in, got.String())
		}
	}
}

func TestParseLargeCommunity(t *testing.T) {
	for _, c := range []struct {
		in   string
		want LargeCommunity
		err  bool
	}{
		{"64512:1:200", LargeCommunity{64512, 1, 200}, false},
		{"4294967295:4294967295:4294967295", LargeCommunity{4294967295, 4294967295, 4294967295}, false},
		{" 1:2:3 ", LargeCommunity{1, 2, 3}, false},
		{"4294967296:1:1", LargeCommunity{}, true},
		{"1:4294967296:1", LargeCommunity{}, true},
		{"1:1:4294967296", LargeCommunity{}, true},
		{"1:2", LargeCommunity{}, true},
		{"1:2:3:4", LargeCommunity{}, true},
		{"1: 2:3", LargeCommunity{}, true},
		{"1::3", LargeCommunity{}, true},
		{"a:b:c", LargeCommunity{}, true},
		{"", LargeCommunity{}, true},
	} {
		got, err := ParseLargeCommunity(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ParseLargeCommunity(%q) = %v, %v; want %v, error %v", c.in, got, err, c.want, c.err)
		}
		if err == nil && got.String() != strings.TrimSpace(c.in) {
			t.Errorf("ParseLargeCommunity(%q).String() = %q", c.in, got.String())
		}
	}
}

func TestParseAttrs(t *testing.T) {
	for _, c := range []struct {
		name string
		in   v1alpha1.RouteAttributes
		want Attrs
		err  string // substring; "" = no error
	}{
		{name: "empty", in: v1alpha1.RouteAttributes{}, want: Attrs{}},
		{name: "sorted and deduplicated", in: v1alpha1.RouteAttributes{
			Communities:      []string{"65000:200", "65000:100", "65000:200"},
			LargeCommunities: []string{"64512:2:1", "64512:1:9", "64512:2:1"},
		}, want: Attrs{
			Communities:      []Community{65000<<16 | 100, 65000<<16 | 200},
			LargeCommunities: []LargeCommunity{{64512, 1, 9}, {64512, 2, 1}},
		}},
		{name: "local preference 0 is set", in: v1alpha1.RouteAttributes{LocalPreference: ptr[int64](0)},
			want: Attrs{LocalPref: 0, HasLocalPref: true}},
		{name: "local preference at the top", in: v1alpha1.RouteAttributes{LocalPreference: ptr[int64](4294967295)},
			want: Attrs{LocalPref: 4294967295, HasLocalPref: true}},
		{name: "local preference too high", in: v1alpha1.RouteAttributes{LocalPreference: ptr[int64](4294967296)},
			err: "localPreference 4294967296"},
		{name: "local preference negative", in: v1alpha1.RouteAttributes{LocalPreference: ptr[int64](-1)},
			err: "localPreference -1"},
		{name: "bad community", in: v1alpha1.RouteAttributes{Communities: []string{"65000:1", "70000:1"}},
			err: `community "70000:1"`},
		{name: "bad large community", in: v1alpha1.RouteAttributes{LargeCommunities: []string{"1:2"}},
			err: `large community "1:2"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseAttrs(c.in)
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("error %v", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("error %v, want one with %q", err, c.err)
			case c.err != "" && !got.IsZero():
				t.Errorf("attributes %+v with an error", got)
			case !reflect.DeepEqual(got, c.want):
				t.Errorf("= %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestAttrsMerge(t *testing.T) {
	lp := func(v uint32) Attrs { return Attrs{LocalPref: v, HasLocalPref: true} }
	c := func(cs ...Community) Attrs { return Attrs{Communities: cs} }
	for _, tc := range []struct {
		name string
		a, b Attrs
		want Attrs
	}{
		{"zero", Attrs{}, Attrs{}, Attrs{}},
		{"communities deduplicated and sorted", c(3, 1), c(2, 3, 1), c(1, 2, 3)},
		{"large communities deduplicated and sorted",
			Attrs{LargeCommunities: []LargeCommunity{{2, 0, 0}, {1, 5, 0}}},
			Attrs{LargeCommunities: []LargeCommunity{{1, 4, 9}, {2, 0, 0}, {1, 5, 1}}},
			Attrs{LargeCommunities: []LargeCommunity{{1, 4, 9}, {1, 5, 0}, {1, 5, 1}, {2, 0, 0}}}},
		{"higher local preference wins (b)", lp(100), lp(200), lp(200)},
		{"higher local preference wins (a)", lp(300), lp(200), lp(300)},
		{"local preference 0 beats none", Attrs{}, lp(0), lp(0)},
		{"none keeps a's", lp(50), Attrs{}, lp(50)},
		{"everything", Attrs{Communities: []Community{5}, LocalPref: 10, HasLocalPref: true},
			Attrs{Communities: []Community{4}, LargeCommunities: []LargeCommunity{{1, 1, 1}}},
			Attrs{Communities: []Community{4, 5}, LargeCommunities: []LargeCommunity{{1, 1, 1}}, LocalPref: 10, HasLocalPref: true}},
	} {
		if got := tc.a.Merge(tc.b); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v.Merge(%+v) = %+v, want %+v", tc.name, tc.a, tc.b, got, tc.want)
		}
	}
	// Merge does not change its operands.
	a := c(3, 1)
	_ = a.Merge(c(2))
	if !reflect.DeepEqual(a, c(3, 1)) {
		t.Errorf("Merge changed its receiver: %+v", a)
	}
}

func TestAttrsString(t *testing.T) {
	a := Attrs{Communities: []Community{65000<<16 | 100, 65000<<16 | 200}, LargeCommunities: []LargeCommunity{{64512, 1, 2}},
		LocalPref: 200, HasLocalPref: true}
	if got, want := a.String(), "communities 65000:100 65000:200, large 64512:1:2, local-pref 200"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := (Attrs{}).String(); got != "" {
		t.Errorf("zero String() = %q", got)
	}
	if !(Attrs{}).IsZero() || (Attrs{HasLocalPref: true}).IsZero() || (Attrs{Communities: []Community{1}}).IsZero() {
		t.Error("IsZero is wrong")
	}
}

func TestParseFilters(t *testing.T) {
	p := netip.MustParsePrefix
	i32 := func(v int32) *int32 { return &v }
	for _, c := range []struct {
		name string
		in   v1alpha1.RouteFilter
		want Filter
		err  string
	}{
		{name: "defaults: exact match", in: v1alpha1.RouteFilter{CIDR: "10.0.0.0/8", Action: v1alpha1.FilterAccept},
			want: Filter{Prefix: p("10.0.0.0/8"), MinLen: 8, MaxLen: 8, Accept: true}},
		{name: "masked", in: v1alpha1.RouteFilter{CIDR: "10.1.2.3/8", Action: v1alpha1.FilterReject},
			want: Filter{Prefix: p("10.0.0.0/8"), MinLen: 8, MaxLen: 8}},
		{name: "minLength alone: up to a host route", in: v1alpha1.RouteFilter{CIDR: "10.0.0.0/8", MinLength: i32(16), Action: v1alpha1.FilterReject},
			want: Filter{Prefix: p("10.0.0.0/8"), MinLen: 16, MaxLen: 32}},
		{name: "minLength alone, IPv6: up to /128", in: v1alpha1.RouteFilter{CIDR: "2001:db8::/32", MinLength: i32(48), Action: v1alpha1.FilterAccept},
			want: Filter{Prefix: p("2001:db8::/32"), MinLen: 48, MaxLen: 128, Accept: true}},
		{name: "maxLength alone", in: v1alpha1.RouteFilter{CIDR: "10.0.0.0/8", MaxLength: i32(24), Action: v1alpha1.FilterAccept},
			want: Filter{Prefix: p("10.0.0.0/8"), MinLen: 8, MaxLen: 24, Accept: true}},
		{name: "both", in: v1alpha1.RouteFilter{CIDR: "10.0.0.0/8", MinLength: i32(16), MaxLength: i32(24), Action: v1alpha1.FilterAccept},
			want: Filter{Prefix: p("10.0.0.0/8"), MinLen: 16, MaxLen: 24, Accept: true}},
		{name: "community", in: v1alpha1.RouteFilter{CIDR: "0.0.0.0/0", MaxLength: i32(32), Community: "65000:666", Action: v1alpha1.FilterReject},
			want: Filter{Prefix: p("0.0.0.0/0"), MinLen: 0, MaxLen: 32, Community: 65000<<16 | 666, HasCommunity: true}},
		{name: "maxLength shorter than the prefix", in: v1alpha1.RouteFilter{CIDR: "10.0.0.0/16", MaxLength: i32(8), Action: v1alpha1.FilterAccept},
			err: "rule 1 (10.0.0.0/16): lengths 16 to 8"},
		{name: "minLength shorter than the prefix", in: v1alpha1.RouteFilter{CIDR: "10.0.0.0/16", MinLength: i32(8), Action: v1alpha1.FilterAccept},
			err: "rule 1 (10.0.0.0/16): lengths 8 to 32"},
		{name: "minLength above maxLength", in: v1alpha1.RouteFilter{CIDR: "10.0.0.0/8", MinLength: i32(24), MaxLength: i32(16), Action: v1alpha1.FilterAccept},
			err: "lengths 24 to 16"},
		{name: "maxLength beyond the family", in: v1alpha1.RouteFilter{CIDR: "10.0.0.0/8", MaxLength: i32(33), Action: v1alpha1.FilterAccept},
			err: "lengths 8 to 33"},
		{name: "bad action", in: v1alpha1.RouteFilter{CIDR: "10.0.0.0/8", Action: "Drop"}, err: `action "Drop": want Accept or Reject`},
		{name: "no action", in: v1alpha1.RouteFilter{CIDR: "10.0.0.0/8"}, err: `action "": want Accept or Reject`},
		{name: "bad community", in: v1alpha1.RouteFilter{CIDR: "10.0.0.0/8", Community: "65000", Action: v1alpha1.FilterReject},
			err: `rule 1 (10.0.0.0/8): community "65000"`},
		{name: "bad cidr", in: v1alpha1.RouteFilter{CIDR: "10.0.0.0", Action: v1alpha1.FilterReject}, err: `rule 1: cidr "10.0.0.0"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseFilters([]v1alpha1.RouteFilter{c.in})
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one with %q", err, c.err)
				}
				if got != nil {
					t.Errorf("rules %v with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0] != c.want {
				t.Errorf("= %+v, want %+v", got, c.want)
			}
		})
	}
	// A bad rule among good ones is named by its position.
	_, err := ParseFilters([]v1alpha1.RouteFilter{{CIDR: "10.0.0.0/8", Action: v1alpha1.FilterAccept}, {CIDR: "10.0.0.0/8", Action: "x"}})
	if err == nil || !strings.HasPrefix(err.Error(), "rule 2 ") {
		t.Errorf("error %v, want rule 2's", err)
	}
	fs, err := ParseFilters(nil)
	if err != nil || fs != nil {
		t.Errorf("ParseFilters(nil) = %v, %v", fs, err)
	}
}

func TestFilterMatches(t *testing.T) {
	p := netip.MustParsePrefix
	const cm, other = Community(65000<<16 | 666), Community(65000<<16 | 1)
	exact := Filter{Prefix: p("10.0.0.0/8"), MinLen: 8, MaxLen: 8}
	ranged := Filter{Prefix: p("10.0.0.0/8"), MinLen: 16, MaxLen: 24}
	tagged := Filter{Prefix: p("0.0.0.0/0"), MinLen: 0, MaxLen: 32, Community: cm, HasCommunity: true}
	v6 := Filter{Prefix: p("2001:db8::/32"), MinLen: 32, MaxLen: 128}
	for _, c := range []struct {
		f    Filter
		pfx  string
		cs   []Community
		want bool
	}{
		{exact, "10.0.0.0/8", nil, true},
		{exact, "10.1.0.0/16", nil, false},
		{exact, "11.0.0.0/8", nil, false},
		{ranged, "10.0.0.0/8", nil, false}, // shorter than minLength
		{ranged, "10.1.0.0/16", nil, true},
		{ranged, "10.1.2.0/24", nil, true},
		{ranged, "10.1.2.128/25", nil, false}, // longer than maxLength
		{ranged, "11.1.0.0/16", nil, false},
		{tagged, "198.51.100.0/24", []Community{other, cm}, true},
		{tagged, "198.51.100.0/24", []Community{other}, false},
		{tagged, "198.51.100.0/24", nil, false},
		{tagged, "2001:db8::/32", []Community{cm}, false}, // another family
		{v6, "2001:db8:1::/48", nil, true},
		{v6, "2001:db9::/32", nil, false},
		{v6, "::ffff:10.0.0.0/104", nil, false},
	} {
		if got := c.f.Matches(p(c.pfx), c.cs); got != c.want {
			t.Errorf("%s matches %s %v = %v, want %v", c.f, c.pfx, c.cs, got, c.want)
		}
	}
	if got, want := tagged.String(), "reject 0.0.0.0/0 ge 0 le 32 community 65000:666"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := (Filter{Prefix: p("10.0.0.0/8"), MinLen: 8, MaxLen: 8, Accept: true}).String(), "accept 10.0.0.0/8 ge 8 le 8"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
