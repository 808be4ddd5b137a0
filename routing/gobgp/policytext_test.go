package gobgp

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// policyText renders a GoBGP policy configuration as the golden files hold it: the
// assignments, the defined sets sorted by type and name, then each policy (sorted by
// name) with its statements in order, since the first match wins. Sets, statements
// and assignments have a compact layout; every field that layout does not show is
// printed generically after it (name=value in field-number order), so no populated
// field can be left out of a golden file unseen.
func policyText(req *api.SetPoliciesRequest, as []*api.PolicyAssignment) string {
	var b strings.Builder
	for _, a := range as {
		var pols []string
		for _, p := range a.GetPolicies() {
			pols = append(pols, p.GetName()+rest(p, "name"))
		}
		fmt.Fprintf(&b, "assignment %s %s: %s, default %s%s\n", a.GetName(), a.GetDirection(),
			strings.Join(pols, " "), a.GetDefaultAction(), rest(a, "name", "direction", "policies", "default_action"))
	}
	sets := slices.Clone(req.GetDefinedSets())
	slices.SortStableFunc(sets, func(x, y *api.DefinedSet) int {
		if c := int(x.GetDefinedType()) - int(y.GetDefinedType()); c != 0 {
			return c
		}
		return strings.Compare(x.GetName(), y.GetName())
	})
	b.WriteString("\n")
	for _, s := range sets {
		var entries []string
		entries = append(entries, s.GetList()...)
		for _, p := range s.GetPrefixes() {
			entries = append(entries, fmt.Sprintf("%s %d..%d%s", p.GetIpPrefix(), p.GetMaskLengthMin(), p.GetMaskLengthMax(),
				rest(p, "ip_prefix", "mask_length_min", "mask_length_max")))
		}
		fmt.Fprintf(&b, "%s-set %s%s: %s\n", strings.ToLower(s.GetDefinedType().String()), s.GetName(),
			rest(s, "defined_type", "name", "list", "prefixes"), strings.Join(entries, ", "))
	}
	pols := slices.Clone(req.GetPolicies())
	slices.SortStableFunc(pols, func(x, y *api.Policy) int { return strings.Compare(x.GetName(), y.GetName()) })
	for _, p := range pols {
		fmt.Fprintf(&b, "\npolicy %s%s:\n", p.GetName(), rest(p, "name", "statements"))
		for i, s := range p.GetStatements() {
			fmt.Fprintf(&b, "  %2d %s: if %s then %s%s\n", i+1, s.GetName(), fieldsText(s.GetConditions()),
				fieldsText(s.GetActions()), rest(s, "name", "conditions", "actions"))
		}
	}
	if extra := rest(req, "defined_sets", "policies"); extra != "" {
		fmt.Fprintf(&b, "\nrequest%s\n", extra)
	}
	return b.String()
}

// rest renders the populated fields of m other than shown, as " {k=v ...}", or "".
func rest(m proto.Message, shown ...protoreflect.Name) string {
	if s := fieldsText(m, shown...); s != "" {
		return " {" + s + "}"
	}
	return ""
}

// fieldsText renders the populated fields of m, except skip, in field-number order.
func fieldsText(m proto.Message, skip ...protoreflect.Name) string {
	if m == nil {
		return ""
	}
	r := m.ProtoReflect()
	if !r.IsValid() {
		return ""
	}
	fds := r.Descriptor().Fields()
	var set []protoreflect.FieldDescriptor
	for i := range fds.Len() {
		if fd := fds.Get(i); r.Has(fd) && !slices.Contains(skip, fd.Name()) {
			set = append(set, fd)
		}
	}
	slices.SortFunc(set, func(x, y protoreflect.FieldDescriptor) int { return int(x.Number()) - int(y.Number()) })
	parts := make([]string, len(set))
	for i, fd := range set {
		parts[i] = string(fd.Name()) + "=" + valueText(fd, r.Get(fd))
	}
	return strings.Join(parts, " ")
}

func valueText(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch {
	case fd.IsList():
		l := v.List()
		items := make([]string, l.Len())
		for i := range l.Len() {
			items[i] = scalarText(fd, l.Get(i))
		}
		return "[" + strings.Join(items, " ") + "]"
	case fd.IsMap():
		var items []string
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			items = append(items, k.String()+":"+scalarText(fd.MapValue(), mv))
			return true
		})
		slices.Sort(items)
		return "{" + strings.Join(items, " ") + "}"
	}
	return scalarText(fd, v)
}

func scalarText(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		m := v.Message().Interface()
		if ms, ok := m.(*api.MatchSet); ok { // its zero type ANY is worth seeing
			return fmt.Sprintf("%s(%s)%s", ms.GetType(), ms.GetName(), rest(ms, "type", "name"))
		}
		return "{" + fieldsText(m) + "}"
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
		return strconv.Itoa(int(v.Enum()))
	case protoreflect.StringKind:
		if s := v.String(); s == "" || strings.ContainsAny(s, " \t\n\"{}[]") {
			return strconv.Quote(s)
		}
		return v.String()
	}
	return fmt.Sprint(v.Interface())
}
