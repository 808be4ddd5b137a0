package routing

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/hostroute/hostroute/api/v1alpha1"
)

// Community is an RFC 1997 community, ASN in the high 16 bits.
type Community uint32

func (c Community) String() string { return fmt.Sprintf("%d:%d", uint32(c)>>16, uint32(c)&0xffff) }

// LargeCommunity is an RFC 8092 large community.
type LargeCommunity struct{ ASN, Data1, Data2 uint32 }

func (c LargeCommunity) String() string { return fmt.Sprintf("%d:%d:%d", c.ASN, c.Data1, c.Data2) }

// Attrs are BGP attributes added to exported routes; LocalPref counts only with
// HasLocalPref.
type Attrs struct {
	Communities      []Community
	LargeCommunities []LargeCommunity
	LocalPref        uint32
	HasLocalPref     bool
}

// IsZero reports whether a adds nothing.
func (a Attrs) IsZero() bool {
	return len(a.Communities) == 0 && len(a.LargeCommunities) == 0 && !a.HasLocalPref
}

// Merge adds b's communities to a's (sorted, without duplicates); the higher local
// preference wins.
func (a Attrs) Merge(b Attrs) Attrs {
	out := Attrs{
		Communities:      slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(a.Communities), b.Communities...)))),
		LargeCommunities: append(slices.Clone(a.LargeCommunities), b.LargeCommunities...),
		LocalPref:        a.LocalPref, HasLocalPref: a.HasLocalPref,
	}
	slices.SortFunc(out.LargeCommunities, compareLarge)
	out.LargeCommunities = slices.Compact(out.LargeCommunities)
	if b.HasLocalPref && (!a.HasLocalPref || b.LocalPref > a.LocalPref) {
		out.LocalPref, out.HasLocalPref = b.LocalPref, true
	}
	if len(out.Communities) == 0 {
		out.Communities = nil
	}
	if len(out.LargeCommunities) == 0 {
		out.LargeCommunities = nil
	}
	return out
}

func compareLarge(x, y LargeCommunity) int {
	return cmp.Or(cmp.Compare(x.ASN, y.ASN), cmp.Compare(x.Data1, y.Data1), cmp.Compare(x.Data2, y.Data2))
}

// CommunityStrings and LargeCommunityStrings are the communities as "ASN:VALUE" and
// "ASN:DATA1:DATA2", as the API and GoBGP write them.
func (a Attrs) CommunityStrings() []string { return strs(a.Communities) }

// LargeCommunityStrings: see CommunityStrings.
func (a Attrs) LargeCommunityStrings() []string { return strs(a.LargeCommunities) }

func strs[T fmt.Stringer](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.String()
	}
	return out
}

// String is the attributes as routectl shows them: "communities 65000:100 65000:200,
// large 64512:1:2, local-pref 200"; "" when a is zero.
func (a Attrs) String() string {
	var parts []string
	if len(a.Communities) > 0 {
		parts = append(parts, "communities "+strings.Join(a.CommunityStrings(), " "))
	}
	if len(a.LargeCommunities) > 0 {
		parts = append(parts, "large "+strings.Join(a.LargeCommunityStrings(), " "))
	}
	if a.HasLocalPref {
		parts = append(parts, fmt.Sprintf("local-pref %d", a.LocalPref))
	}
	return strings.Join(parts, ", ")
}

// ParseCommunity parses "ASN:VALUE" (both 0–65535).
func ParseCommunity(s string) (Community, error) {
	a, v, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return 0, fmt.Errorf("community %q: want ASN:VALUE such as 65000:100", s)
	}
	hi, err1 := strconv.ParseUint(a, 10, 16)
	lo, err2 := strconv.ParseUint(v, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("community %q: both parts must be 0 to 65535", s)
	}
	return Community(hi<<16 | lo), nil
}

// ParseLargeCommunity parses "ASN:DATA1:DATA2" (each 0–4294967295).
func ParseLargeCommunity(s string) (LargeCommunity, error) {
	f := strings.Split(strings.TrimSpace(s), ":")
	if len(f) != 3 {
		return LargeCommunity{}, fmt.Errorf("large community %q: want ASN:DATA1:DATA2 such as 64512:1:200", s)
	}
	var n [3]uint32
	for i, p := range f {
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return LargeCommunity{}, fmt.Errorf("large community %q: every part must be 0 to 4294967295", s)
		}
		n[i] = uint32(v)
	}
	return LargeCommunity{n[0], n[1], n[2]}, nil
}

// ParseAttrs reads the API's attributes. A bad entry is an error naming it (the CRD's
// patterns catch most; the ranges are checked here).
func ParseAttrs(ra v1alpha1.RouteAttributes) (Attrs, error) {
	var a Attrs
	for _, s := range ra.Communities {
		c, err := ParseCommunity(s)
		if err != nil {
			return Attrs{}, err
		}
		a.Communities = append(a.Communities, c)
	}
	for _, s := range ra.LargeCommunities {
		c, err := ParseLargeCommunity(s)
		if err != nil {
			return Attrs{}, err
		}
		a.LargeCommunities = append(a.LargeCommunities, c)
	}
	if ra.LocalPreference != nil {
		if *ra.LocalPreference < 0 || *ra.LocalPreference > 1<<32-1 {
			return Attrs{}, fmt.Errorf("localPreference %d: want 0 to 4294967295", *ra.LocalPreference)
		}
		a.LocalPref, a.HasLocalPref = uint32(*ra.LocalPreference), true
	}
	return Attrs{}.Merge(a), nil
}

// Tag adds Attrs to the exported routes inside any of Prefixes (every route when nil),
// sent to any of Neighbors (every neighbour when nil). Source names it for routectl
// ("pool blue", "BGPPeer tor").
type Tag struct {
	Source    string
	Prefixes  []netip.Prefix
	Neighbors []netip.Addr
	Attrs     Attrs
}

func (t Tag) applies(neighbor netip.Addr, prefix netip.Prefix) bool {
	if t.Neighbors != nil && !slices.Contains(t.Neighbors, neighbor) {
		return false
	}
	if t.Prefixes == nil {
		return true
	}
	return slices.ContainsFunc(t.Prefixes, func(p netip.Prefix) bool { return covers(p, prefix) })
}

// Filter is one rule of a BGPPeer's export or import filter: prefix inside Prefix with
// a length from MinLen to MaxLen, and Community on the route when HasCommunity.
type Filter struct {
	Prefix         netip.Prefix
	MinLen, MaxLen int
	Community      Community
	HasCommunity   bool
	Accept         bool
}

// Matches reports whether the rule matches prefix carrying communities.
func (f Filter) Matches(prefix netip.Prefix, communities []Community) bool {
	if !covers(f.Prefix, prefix) || prefix.Bits() < f.MinLen || prefix.Bits() > f.MaxLen {
		return false
	}
	return !f.HasCommunity || slices.Contains(communities, f.Community)
}

func (f Filter) String() string {
	verb := "reject"
	if f.Accept {
		verb = "accept"
	}
	s := fmt.Sprintf("%s %s ge %d le %d", verb, f.Prefix.Masked(), f.MinLen, f.MaxLen)
	if f.HasCommunity {
		s += " community " + f.Community.String()
	}
	return s
}

// ParseFilters reads a BGPPeer's filter rules. Lengths default to the CIDR's own (exact
// match); minLength alone extends maxLength to the family's longest.
func ParseFilters(rs []v1alpha1.RouteFilter) ([]Filter, error) {
	var out []Filter
	for i, r := range rs {
		p, err := netip.ParsePrefix(r.CIDR)
		if err != nil {
			return nil, fmt.Errorf("rule %d: cidr %q: %w", i+1, r.CIDR, err)
		}
		f := Filter{Prefix: p.Masked(), MinLen: p.Bits(), MaxLen: p.Bits(), Accept: r.Action != v1alpha1.FilterReject}
		if r.MinLength != nil {
			f.MinLen, f.MaxLen = int(*r.MinLength), p.Addr().BitLen()
		}
		if r.MaxLength != nil {
			f.MaxLen = int(*r.MaxLength)
		}
		if f.MinLen < p.Bits() || f.MaxLen > p.Addr().BitLen() || f.MinLen > f.MaxLen {
			return nil, fmt.Errorf("rule %d (%s): lengths %d to %d do not fit the prefix", i+1, r.CIDR, f.MinLen, f.MaxLen)
		}
		if r.Action != v1alpha1.FilterAccept && r.Action != v1alpha1.FilterReject {
			return nil, fmt.Errorf("rule %d (%s): action %q: want Accept or Reject", i+1, r.CIDR, r.Action)
		}
		if r.Community != "" {
			c, err := ParseCommunity(r.Community)
			if err != nil {
				return nil, fmt.Errorf("rule %d (%s): %w", i+1, r.CIDR, err)
			}
			f.Community, f.HasCommunity = c, true
		}
		out = append(out, f)
	}
	return out, nil
}

// firstMatch is the first rule matching prefix with communities (ok false: none).
func firstMatch(fs []Filter, prefix netip.Prefix, communities []Community) (Filter, bool) {
	for _, f := range fs {
		if f.Matches(prefix, communities) {
			return f, true
		}
	}
	return Filter{}, false
}
